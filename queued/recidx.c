/* The recording indexer: the loop's timer and the file readers; see recidx.h. */
#define _GNU_SOURCE /* strptime */
#include "recidx.h"
#include "ops.h"
#include "server.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/evp.h>

extern const struct op_def recidx_index_op; /* ops_recording.c */

/* ---- loop side ------------------------------------------------------------- */

static struct ev_loop *g_loop;
static ev_timer g_tick, g_soon;
static char g_dir[PATH_MAX];      /* loop only: the worker gets it in the request */
static int g_running;             /* a run is on the worker */
static int g_ok, g_more;          /* what the running run reported (after()) */
static ev_tstamp g_pause_until;   /* after a failed run (MySQL away) */

static void index_done(void)
{
	g_running = 0;
	if (!g_ok) {
		/* the failure is logged by the framework: not every 2 s */
		g_pause_until = ev_now(g_loop) + 10.;
		return;
	}
	if (g_more && !ev_is_active(&g_soon)) {
		/* a backlog: go on soon, letting other jobs in between */
		ev_timer_set(&g_soon, 0.2, 0.);
		ev_timer_start(g_loop, &g_soon);
	}
}

static void run_index(void)
{
	ccq_enc e;

	if (!g_dir[0] || g_running || server_shutting_down() || ev_now(g_loop) < g_pause_until)
		return;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 0, "recording.index", 1);
	ccq_pack_kv_str(&e.pk, "dir", g_dir);
	g_running = 1;
	g_ok = g_more = 0;
	if (ops_submit_internal(&recidx_index_op, &e, index_done) < 0)
		g_running = 0;
	ccq_enc_free(&e);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	run_index();
}

void recidx_ran(int more)
{
	g_ok = 1;
	g_more = more;
}

void recidx_reconfigure(const struct queued_config *cfg)
{
	if (strcmp(g_dir, cfg->recording_dir) == 0)
		return;
	snprintf(g_dir, sizeof(g_dir), "%s", cfg->recording_dir);
	if (g_dir[0])
		LOG_N("recordings: indexing %s/metadata every 2 s", g_dir);
	else
		LOG_N("recordings: not indexed (no recording_dir)");
}

void recidx_init(struct ev_loop *loop, const struct queued_config *cfg)
{
	g_loop = loop;
	recidx_reconfigure(cfg);
	ev_timer_init(&g_tick, on_tick, 2.0, 2.0);
	ev_timer_start(loop, &g_tick);
	ev_timer_init(&g_soon, on_tick, 0.2, 0.);
}

void recidx_stop(void)
{
	ev_timer_stop(g_loop, &g_tick);
	ev_timer_stop(g_loop, &g_soon);
}

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

int rec_hash_file(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen)
{
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx;
	struct stat st;
	ssize_t n;
	int fd, e = 0;

	*size = 0;
	hex[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return e;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode)) {
		e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return e;
	}
	if (!(ctx = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(ctx);
		close(fd);
		snprintf(err, errlen, "%s: SHA-256 is not available", path);
		return ENOMEM;
	}
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			e = errno;
			snprintf(err, errlen, "%s: read: %s", path, strerror(e));
			break;
		}
		*size += (uint64_t)n;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	}
	close(fd);
	if (!e && !EVP_DigestFinal_ex(ctx, md, &mdlen)) {
		e = EIO;
		snprintf(err, errlen, "%s: SHA-256 failed", path);
	}
	EVP_MD_CTX_free(ctx);
	if (e)
		return e;
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}
