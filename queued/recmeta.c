/* rtpengine's recording metadata files; see recmeta.h. */
#define _GNU_SOURCE /* strptime */
#include "recmeta.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- worker side: the metadata file ------------------------------------------ */

/* Codecs with a static payload type that an SDP may list without rtpmap. */
static const char *static_codec(int pt)
{
	switch (pt) {
	case 0: return "PCMU/8000";
	case 3: return "GSM/8000";
	case 4: return "G723/8000";
	case 8: return "PCMA/8000";
	case 9: return "G722/8000";
	case 18: return "G729/8000";
	default: return NULL;
	}
}

/* The first audio stream of one SDP. */
struct sdp_audio {
	char sess_addr[48], media_addr[48];
	int ip6_sess, ip6_media;
	long port;
	int pt;
	char codec[40];
	int in_audio, done_audio;
};

static void sdp_line(struct sdp_audio *s, const char *l)
{
	if (strncmp(l, "c=IN IP", 7) == 0 && (l[7] == '4' || l[7] == '6') && l[8] == ' ') {
		char addr[48];
		size_t n = strcspn(l + 9, " /");
		if (n == 0 || n >= sizeof(addr))
			return;
		memcpy(addr, l + 9, n);
		addr[n] = '\0';
		if (s->in_audio) {
			snprintf(s->media_addr, sizeof(s->media_addr), "%s", addr);
			s->ip6_media = l[7] == '6';
		} else if (!s->done_audio) {
			snprintf(s->sess_addr, sizeof(s->sess_addr), "%s", addr);
			s->ip6_sess = l[7] == '6';
		}
		return;
	}
	if (strncmp(l, "m=", 2) == 0) {
		if (s->in_audio) {
			s->in_audio = 0;
			s->done_audio = 1;
		}
		if (!s->done_audio && strncmp(l, "m=audio ", 8) == 0) {
			const char *p = l + 8, *fmt;
			char *end;
			s->port = strtol(p, &end, 10);
			/* "m=audio PORT PROTO PT PT ..." */
			fmt = strchr(end, ' ');
			fmt = fmt ? strchr(fmt + 1, ' ') : NULL;
			s->pt = fmt ? atoi(fmt + 1) : -1;
			s->in_audio = 1;
		}
		return;
	}
	if (s->in_audio && !s->codec[0] && strncmp(l, "a=rtpmap:", 9) == 0) {
		char *end;
		long pt = strtol(l + 9, &end, 10);
		if (pt == s->pt && *end == ' ')
			snprintf(s->codec, sizeof(s->codec), "%.39s", end + 1);
	}
}

static void sdp_finish(const struct sdp_audio *s, char *addr, size_t asize, char *codec,
		size_t csize)
{
	const char *a = s->media_addr[0] ? s->media_addr : s->sess_addr;
	int v6 = s->media_addr[0] ? s->ip6_media : s->ip6_sess;

	if (s->port > 0 && s->port < 65536 && a[0])
		snprintf(addr, asize, v6 ? "[%s]:%ld" : "%s:%ld", a, s->port);
	if (s->codec[0])
		snprintf(codec, csize, "%s", s->codec);
	else if (s->pt >= 0 && static_codec(s->pt))
		snprintf(codec, csize, "%s", static_codec(s->pt));
	else if (s->pt >= 0)
		snprintf(codec, csize, "payload type %d", s->pt);
}

/* "2026-11-24T05:58:31" in the local time zone -> Unix seconds; 0 if not. */
static long long local_time(const char *v)
{
	struct tm tm;
	char *end;
	time_t t;

	memset(&tm, 0, sizeof(tm));
	end = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end || *end)
		return 0;
	tm.tm_isdst = -1;
	t = mktime(&tm);
	return t == (time_t)-1 ? 0 : (long long)t;
}

static int prefix(const char *l, const char *p, const char **rest)
{
	size_t n = strlen(p);
	if (strncmp(l, p, n) != 0)
		return 0;
	*rest = l + n;
	return 1;
}

int recmeta_parse(const char *text, size_t len, struct recmeta *out, char *err, size_t errlen)
{
	enum { TOP, SDP_GAP, SDP } state = TOP;
	char mode[16] = "", line[1024];
	struct sdp_audio sdp;
	int have_offer = 0, have_answer = 0, after_end = 0;
	size_t pos = 0, lineno = 0;

	memset(out, 0, sizeof(*out));
	memset(&sdp, 0, sizeof(sdp));
	while (pos <= len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - (text + pos)) : len - pos;
		const char *v;

		if (!nl && n == 0)
			break;
		snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : sizeof(line) - 1),
			text + pos);
		pos += n + 1;
		n = strlen(line);
		while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' '))
			line[--n] = '\0';
		if (lineno++ == 0) {
			if (!line[0] || memchr(line, '\0', n) || n >= sizeof(out->pcap_path)) {
				snprintf(err, errlen, "not an rtpengine metadata file (no pcap path on the "
					"first line)");
				return -1;
			}
			snprintf(out->pcap_path, sizeof(out->pcap_path), "%s", line);
			continue;
		}
		if (state == SDP_GAP) {
			/* the blank line between "SDP before RTP packet" and the SDP */
			state = line[0] ? SDP : SDP_GAP;
			if (!line[0])
				continue;
		}
		if (state == SDP) {
			if (line[0] && line[1] == '=') {
				sdp_line(&sdp, line);
				continue;
			}
			/* the end of one SDP (a blank line, or rtpengine's next line):
			 * the first offer, then the first answer */
			if (strcmp(mode, "offer") == 0 && !have_offer) {
				sdp_finish(&sdp, out->offer_addr, sizeof(out->offer_addr), out->offer_codec,
					sizeof(out->offer_codec));
				have_offer = 1;
			} else if (strcmp(mode, "answer") == 0 && have_offer && !have_answer) {
				sdp_finish(&sdp, out->answer_addr, sizeof(out->answer_addr),
					out->answer_codec, sizeof(out->answer_codec));
				have_answer = 1;
			}
			state = TOP;
		}
		if (!line[0])
			continue;
		if (prefix(line, "Timestamp started ms: ", &v)) {
			if (out->started_ms == 0)
				out->started_ms = strtod(v, NULL);
		} else if (prefix(line, "SDP mode: ", &v)) {
			snprintf(mode, sizeof(mode), "%.15s", v);
		} else if (prefix(line, "SDP before RTP packet: ", &v)) {
			memset(&sdp, 0, sizeof(sdp));
			state = SDP_GAP;
		} else if (prefix(line, "Timestamp terminated ms(first monologue): ", &v)) {
			out->ended_ms = strtod(v, NULL);
		} else if (prefix(line, "call start time: ", &v)) {
			out->start_local = local_time(v);
		} else if (prefix(line, "call end time: ", &v)) {
			out->end_local = local_time(v);
			after_end = 1;
		} else if (after_end) {
			/* the metadata string of the offer ("ccq_txn:1|..."): the last line */
			snprintf(out->meta, sizeof(out->meta), "%s", line);
		}
	}
	return 0;
}

int recmeta_call_id(const char *name, char *out, size_t size)
{
	static const char pre[] = "rtpengine-meta-";
	size_t n = strlen(name), o = 0, end;

	/* rtpengine-meta-<Call-ID>-<16 hex>.txt */
	if (size == 0 || n < sizeof(pre) - 1 + 1 + 17 + 4 || strncmp(name, pre, sizeof(pre) - 1) != 0
			|| strcmp(name + n - 4, ".txt") != 0 || name[n - 4 - 17] != '-')
		return -1;
	for (size_t i = n - 4 - 16; i < n - 4; i++)
		if (!isxdigit((unsigned char)name[i]))
			return -1;
	end = n - 4 - 17;
	for (size_t i = sizeof(pre) - 1; i < end && o + 1 < size; i++) {
		if (name[i] == '%' && i + 2 < end && isxdigit((unsigned char)name[i + 1])
				&& isxdigit((unsigned char)name[i + 2])) {
			char hex[3] = { name[i + 1], name[i + 2], '\0' };
			out[o++] = (char)strtol(hex, NULL, 16);
			i += 2;
		} else {
			out[o++] = name[i];
		}
	}
	out[o] = '\0';
	return o ? 0 : -1;
}

void recmeta_field(const char *meta, const char *key, char *out, size_t size)
{
	size_t kl = strlen(key);

	out[0] = '\0';
	for (const char *p = meta; *p;) {
		size_t n = strcspn(p, "|");
		if (n > kl && strncmp(p, key, kl) == 0 && p[kl] == ':') {
			snprintf(out, size, "%.*s", (int)(n - kl - 1), p + kl + 1);
			return;
		}
		p += n;
		if (*p)
			p++;
	}
}

