/*
 * pcap -> RTP streams -> G.711 -> PCM -> WAV. See ccq_pcap.h.
 */
#include "ccq_pcap.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct ccq_pcap_pkt {
	uint64_t off;         /* payload offset in the file */
	int64_t ts;           /* extended RTP timestamp */
	int64_t seq;          /* extended sequence number */
	uint32_t len;         /* payload bytes = samples */
	uint16_t stream;
	uint8_t codec;        /* CODEC_ULAW / CODEC_ALAW */
};

enum { CODEC_ULAW = 0, CODEC_ALAW = 1, CODEC_SKIP = 2, CODEC_BAD = 3 };

#define RENDER_BLOCK 4096u

/* ---- small helpers -------------------------------------------------------- */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void note(ccq_pcap *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(ccq_pcap *p, const char *fmt, ...)
{
	va_list ap;
	size_t room = sizeof(p->notes) - p->notes_len;
	int n;
	if (room < 2)
		return;
	va_start(ap, fmt);
	n = vsnprintf(p->notes + p->notes_len, room - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= room - 1)
		n = (int)(room - 2);
	p->notes_len += (size_t)n;
	p->notes[p->notes_len++] = '\n';
	p->notes[p->notes_len] = '\0';
}

static uint16_t be16(const uint8_t *b)
{
	return (uint16_t)(b[0] << 8 | b[1]);
}

static uint32_t be32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static uint32_t rd32(const uint8_t *b, int swap)
{
	return swap ? be32(b) : ((uint32_t)b[3] << 24 | (uint32_t)b[2] << 16
		| (uint32_t)b[1] << 8 | b[0]);
}

static void addr_text(uint8_t fam, const uint8_t *a, uint16_t port, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN];
	if (!inet_ntop(fam == 4 ? AF_INET : AF_INET6, a, ip, sizeof(ip)))
		snprintf(ip, sizeof(ip), "?");
	if (fam == 4)
		snprintf(buf, size, "%s:%u", ip, port);
	else
		snprintf(buf, size, "[%s]:%u", ip, port);
}

/* ---- G.711 ------------------------------------------------------------------ */

/*
 * µ-law: the byte is stored inverted; sign, 3-bit segment, 4-bit step.
 * The magnitude is ((step << 3) + 132) << segment, less the bias 132, on
 * the 16-bit scale (0x80 -> 32124, 0xFF -> 0).
 */
int16_t ccq_ulaw_decode(uint8_t u)
{
	int v;
	u = (uint8_t)~u;
	v = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 7)) - 0x84;
	return (int16_t)((u & 0x80) ? -v : v);
}

uint8_t ccq_ulaw_encode(int16_t pcm)
{
	int v = pcm, sign = 0, seg = 0;
	if (v < 0) {
		v = -v;
		sign = 0x80;
	}
	if (v > 32635)
		v = 32635;
	v += 0x84;
	while (seg < 7 && v >= (0x100 << seg))
		seg++;
	return (uint8_t)~(sign | seg << 4 | ((v >> (seg + 3)) & 0x0F));
}

/*
 * A-law: the byte is stored with the even bits inverted (xor 0x55); the
 * sign bit set means positive. Segment 0 is linear: (step << 4) + 8; segment
 * s > 0: ((step << 4) + 0x108) << (s - 1) (0xD5 -> 8, 0x2A -> -32256).
 */
int16_t ccq_alaw_decode(uint8_t a)
{
	int v, seg;
	a ^= 0x55;
	seg = (a >> 4) & 7;
	v = ((a & 0x0F) << 4) + 8;
	if (seg)
		v = (v + 0x100) << (seg - 1);
	return (int16_t)((a & 0x80) ? v : -v);
}

uint8_t ccq_alaw_encode(int16_t pcm)
{
	int v = pcm, sign = 0x80, seg = 0, step;
	if (v < 0) {
		v = -v - 1; /* -1 -> 0: the negative side is one step lower */
		sign = 0;
	}
	if (v > 32767)
		v = 32767;
	while (seg < 7 && v >= (0x100 << seg))
		seg++;
	step = (v >> (seg ? seg + 3 : 4)) & 0x0F;
	return (uint8_t)((sign | seg << 4 | step) ^ 0x55);
}

/* ---- codec names ------------------------------------------------------------ */

static const char *static_name(unsigned pt)
{
	static const char *const names[35] = {
		[0] = "PCMU", [3] = "GSM", [4] = "G723", [5] = "DVI4", [6] = "DVI4", [7] = "LPC",
		[8] = "PCMA", [9] = "G722", [10] = "L16", [11] = "L16", [12] = "QCELP", [13] = "CN",
		[14] = "MPA", [15] = "G728", [16] = "DVI4", [17] = "DVI4", [18] = "G729",
		[25] = "CelB", [26] = "JPEG", [28] = "nv", [31] = "H261", [32] = "MPV",
		[33] = "MP2T", [34] = "H263",
	};
	return pt < 35 && names[pt] ? names[pt] : "";
}

/* The name an rtpmap line gives pt ("a=rtpmap:9 G722/8000"), or 0 if none. */
static int rtpmap_name(const char *t, size_t len, unsigned pt, char *buf, size_t size)
{
	static const char key[] = "a=rtpmap:";
	const size_t kl = sizeof(key) - 1;
	size_t i = 0;

	if (!t || size == 0)
		return 0;
	while (i + kl <= len) {
		const char *hit = memchr(t + i, 'a', len - i);
		size_t j, n;
		unsigned v = 0;
		if (!hit)
			break;
		i = (size_t)(hit - t);
		if (i + kl > len)
			break;
		if (memcmp(t + i, key, kl) != 0 || (i > 0 && t[i - 1] != '\n')) {
			i++;
			continue;
		}
		j = i + kl;
		n = 0;
		while (j < len && t[j] >= '0' && t[j] <= '9' && n < 4) {
			v = v * 10 + (unsigned)(t[j] - '0');
			j++;
			n++;
		}
		i = j;
		if (n == 0 || v != pt)
			continue;
		while (j < len && (t[j] == ' ' || t[j] == '\t'))
			j++;
		for (n = 0; j < len && n + 1 < size && t[j] != '/' && t[j] != '\r' && t[j] != '\n'
				&& t[j] != ' ' && (unsigned char)t[j] >= 0x20; j++)
			buf[n++] = t[j];
		buf[n] = '\0';
		return n > 0;
	}
	return 0;
}

const char *ccq_rtp_codec_name(const char *rtpmap, size_t rtpmap_len, unsigned pt,
		char *buf, size_t size)
{
	if (!size)
		return buf;
	if (!rtpmap_name(rtpmap, rtpmap_len, pt, buf, size))
		snprintf(buf, size, "%s", static_name(pt));
	return buf;
}

/* What to do with packets of payload type pt. */
static int classify(const struct ccq_pcap_opts *o, unsigned pt, char *name, size_t size)
{
	name[0] = '\0';
	if (o && o->rtpmap && rtpmap_name(o->rtpmap, o->rtpmap_len, pt, name, size)) {
		if (strcasecmp(name, "PCMU") == 0)
			return CODEC_ULAW;
		if (strcasecmp(name, "PCMA") == 0)
			return CODEC_ALAW;
		if (strcasecmp(name, "telephone-event") == 0 || strcasecmp(name, "CN") == 0)
			return CODEC_SKIP;
		return CODEC_BAD;
	}
	snprintf(name, size, "%s", static_name(pt));
	if (pt == 0)
		return CODEC_ULAW;
	if (pt == 8)
		return CODEC_ALAW;
	if (pt == 13 || pt >= 101)
		return CODEC_SKIP;
	return CODEC_BAD;
}

/* ---- reading the file -------------------------------------------------------- */

/* Count a packet that is skipped; NULL. */
static const uint8_t *drop(uint64_t *counter)
{
	(*counter)++;
	return NULL;
}

struct ep {                 /* one packet's addresses */
	uint8_t fam;
	uint8_t sa[16], da[16];
	uint16_t sp, dp;
};

/*
 * The UDP payload of one IP packet in b[0..len), or NULL (counted). The
 * pointer stays inside b.
 */
static const uint8_t *ip_udp(ccq_pcap *p, const uint8_t *b, size_t len, struct ep *e,
		size_t *plen)
{
	const uint8_t *u;
	size_t avail;
	uint16_t ulen;

	if (len < 1)
		return drop(&p->counts.not_udp);
	memset(e, 0, sizeof(*e));
	if ((b[0] >> 4) == 4) {
		size_t ihl, tot;
		if (len < 20)
			return drop(&p->counts.truncated);
		ihl = (size_t)(b[0] & 0x0F) * 4;
		tot = be16(b + 2);
		if (ihl < 20 || tot < ihl)
			return drop(&p->counts.not_udp);
		if (tot > len || ihl > len)
			return drop(&p->counts.truncated);
		if (be16(b + 6) & 0x3FFF) /* more fragments, or an offset */
			return drop(&p->counts.fragments);
		if (b[9] != 17)
			return drop(&p->counts.not_udp);
		e->fam = 4;
		memcpy(e->sa, b + 12, 4);
		memcpy(e->da, b + 16, 4);
		u = b + ihl;
		avail = tot - ihl;
	} else if ((b[0] >> 4) == 6) {
		size_t off = 40, tot;
		uint8_t nh;
		int hops = 0;
		if (len < 40)
			return drop(&p->counts.truncated);
		tot = 40 + (size_t)be16(b + 4);
		if (tot == 40) /* jumbogram or nothing */
			return drop(&p->counts.not_udp);
		if (tot > len)
			return drop(&p->counts.truncated);
		nh = b[6];
		while (nh == 0 || nh == 43 || nh == 60 || nh == 44) {
			if (nh == 44)
				return drop(&p->counts.fragments);
			if (++hops > 8 || off + 8 > tot)
				return drop(&p->counts.not_udp);
			nh = b[off];
			off += ((size_t)b[off + 1] + 1) * 8;
		}
		if (nh != 17 || off > tot)
			return drop(&p->counts.not_udp);
		e->fam = 6;
		memcpy(e->sa, b + 8, 16);
		memcpy(e->da, b + 24, 16);
		u = b + off;
		avail = tot - off;
	} else {
		return drop(&p->counts.not_udp);
	}
	if (avail < 8)
		return drop(&p->counts.truncated);
	e->sp = be16(u);
	e->dp = be16(u + 2);
	ulen = be16(u + 4);
	if (ulen < 8)
		return drop(&p->counts.not_udp);
	if (ulen > avail)
		return drop(&p->counts.truncated);
	*plen = (size_t)ulen - 8;
	return u + 8;
}

/* The network-layer packet inside one link-layer frame, or NULL (counted). */
static const uint8_t *link_ip(ccq_pcap *p, const uint8_t *b, size_t len, size_t *iplen)
{
	size_t off, at = 0;    /* the IP header; the EtherType-like protocol field */
	uint16_t proto;

	switch (p->linktype) {
	case 101: case 12: case 228: case 229:
		*iplen = len;
		return b;
	case 0:   /* BSD loopback: a 4-byte family in the writer's byte order */
		off = 4;
		break;
	case 1:   /* Ethernet */
		off = 14;
		at = 12;
		break;
	case 113: /* Linux cooked v1 */
		off = 16;
		at = 14;
		break;
	case 276: /* Linux cooked v2 */
		off = 20;
		break;
	default:
		p->counts.not_udp++;
		return NULL;
	}
	if (len < off)
		return drop(&p->counts.truncated);
	if (p->linktype != 0) {
		proto = be16(b + at);
		/* up to two VLAN tags on Ethernet */
		for (int k = 0; p->linktype == 1 && k < 2 && (proto == 0x8100 || proto == 0x88A8);
				k++) {
			if (len < off + 4)
				return drop(&p->counts.truncated);
			proto = be16(b + off + 2);
			off += 4;
		}
		if (proto != 0x0800 && proto != 0x86DD)
			return drop(&p->counts.not_udp);
	}
	*iplen = len - off;
	return b + off;
}

static int stream_find(ccq_pcap *p, const struct ep *e, uint32_t ssrc, unsigned *last)
{
	size_t al = e->fam == 4 ? 4 : 16;
	for (unsigned k = 0; k < p->nstreams; k++) {
		unsigned i = (*last + k) % p->nstreams;
		const struct ccq_pcap_stream *s = &p->streams[i];
		if (s->ssrc == ssrc && s->fam_ == e->fam && s->sp_ == e->sp
				&& memcmp(s->sa_, e->sa, al) == 0) {
			*last = i;
			return (int)i;
		}
	}
	return -1;
}

static int stream_add(ccq_pcap *p, const struct ep *e, uint32_t ssrc, uint8_t pt,
		int64_t cap_ns, uint32_t ts, uint16_t seq, char *err, size_t errlen)
{
	struct ccq_pcap_stream *s;
	if (p->nstreams >= CCQ_PCAP_MAX_STREAMS) {
		seterr(err, errlen, "more than %u RTP streams in the file: not a call recording",
			CCQ_PCAP_MAX_STREAMS);
		return -1;
	}
	if (!p->streams) {
		p->streams = calloc(CCQ_PCAP_MAX_STREAMS, sizeof(*p->streams));
		if (!p->streams) {
			seterr(err, errlen, "out of memory");
			return -1;
		}
	}
	s = &p->streams[p->nstreams];
	memset(s, 0, sizeof(*s));
	s->fam_ = e->fam;
	memcpy(s->sa_, e->sa, 16);
	memcpy(s->da_, e->da, 16);
	s->sp_ = e->sp;
	s->dp_ = e->dp;
	addr_text(e->fam, e->sa, e->sp, s->src, sizeof(s->src));
	addr_text(e->fam, e->da, e->dp, s->dst, sizeof(s->dst));
	s->ssrc = ssrc;
	s->pt = pt;
	s->party = -1;
	s->cap_ns_ = cap_ns;
	s->ts0_ = s->ts_last_ = ts;
	s->seq_last_ = s->seq_min_ = s->seq_max_ = seq;
	return (int)p->nstreams++;
}

static int pkt_push(ccq_pcap *p, const struct ccq_pcap_pkt *k, char *err, size_t errlen)
{
	if (p->npkts == p->pkts_cap) {
		size_t cap = p->pkts_cap ? p->pkts_cap * 2 : 1024;
		struct ccq_pcap_pkt *n;
		if (p->npkts >= CCQ_PCAP_MAX_PACKETS) {
			seterr(err, errlen, "more than %u RTP packets in the file: refused",
				CCQ_PCAP_MAX_PACKETS);
			return -1;
		}
		if (cap > CCQ_PCAP_MAX_PACKETS)
			cap = CCQ_PCAP_MAX_PACKETS;
		n = realloc(p->pkts, cap * sizeof(*n));
		if (!n) {
			seterr(err, errlen, "out of memory (%zu RTP packets)", p->npkts);
			return -1;
		}
		p->pkts = n;
		p->pkts_cap = cap;
	}
	p->pkts[p->npkts++] = *k;
	return 0;
}

/* One UDP payload: RTP audio is indexed, the rest counted. 0, or -1 (err). */
static int rtp_packet(ccq_pcap *p, const struct ccq_pcap_opts *o, const uint8_t *b,
		size_t len, const struct ep *e, int64_t cap_ns, unsigned *last,
		char *err, size_t errlen)
{
	size_t hdr;
	unsigned pt;
	uint32_t ssrc, ts;
	uint16_t seq;
	char name[48];
	int codec, si;
	struct ccq_pcap_stream *s;
	struct ccq_pcap_pkt k;

	if (len < 12 || (b[0] >> 6) != 2) {
		p->counts.not_rtp++;
		return 0;
	}
	if (b[1] >= 192 && b[1] <= 223) { /* RTCP (RFC 5761) */
		p->counts.rtcp++;
		return 0;
	}
	hdr = 12 + (size_t)(b[0] & 0x0F) * 4;
	if ((b[0] & 0x10) && hdr + 4 <= len)
		hdr += 4 + (size_t)be16(b + hdr + 2) * 4;
	else if (b[0] & 0x10)
		hdr = len + 1;
	if (hdr > len) {
		p->counts.not_rtp++;
		return 0;
	}
	len -= hdr;
	if (b[0] & 0x20) { /* padding: the count is the last byte */
		if (len == 0 || b[hdr + len - 1] == 0 || b[hdr + len - 1] > len) {
			p->counts.not_rtp++;
			return 0;
		}
		len -= b[hdr + len - 1];
	}
	pt = b[1] & 0x7F;
	seq = be16(b + 2);
	ts = be32(b + 4);
	ssrc = be32(b + 8);
	codec = classify(o, pt, name, sizeof(name));
	si = stream_find(p, e, ssrc, last);
	if (codec == CODEC_BAD) {
		char from[64];
		addr_text(e->fam, e->sa, e->sp, from, sizeof(from));
		if (name[0])
			seterr(err, errlen, "unsupported codec %s (PT %u) from %s (SSRC 0x%08x): "
				"only G.711 PCMU (PT 0) and PCMA (PT 8) can be decoded", name, pt, from,
				ssrc);
		else
			seterr(err, errlen, "unsupported codec: payload type %u from %s (SSRC 0x%08x), "
				"not named by the SDP: only G.711 PCMU (PT 0) and PCMA (PT 8) can be "
				"decoded", pt, from, ssrc);
		return -1;
	}
	if (codec == CODEC_SKIP) {
		p->counts.skipped++;
		if (si >= 0)
			p->streams[si].skipped++;
		return 0;
	}
	if (len == 0) {
		p->counts.not_rtp++;
		return 0;
	}
	if (si < 0 && (si = stream_add(p, e, ssrc, (uint8_t)pt, cap_ns, ts, seq, err,
			errlen)) < 0)
		return -1;
	s = &p->streams[si];
	/* unwrap against the last packet of the stream, in capture order */
	s->ts_last_ += (int32_t)(ts - (uint32_t)s->ts_last_);
	s->seq_last_ += (int16_t)(uint16_t)(seq - (uint16_t)s->seq_last_);
	if (s->seq_last_ < s->seq_min_)
		s->seq_min_ = s->seq_last_;
	if (s->seq_last_ > s->seq_max_)
		s->seq_max_ = s->seq_last_;
	k.off = (uint64_t)(b + hdr - p->buf);
	k.ts = s->ts_last_;
	k.seq = s->seq_last_;
	k.len = (uint32_t)len;
	k.stream = (uint16_t)si;
	k.codec = (uint8_t)codec;
	return pkt_push(p, &k, err, errlen);
}

static int pkt_cmp(const void *a, const void *b)
{
	const struct ccq_pcap_pkt *x = a, *y = b;
	if (x->stream != y->stream)
		return x->stream < y->stream ? -1 : 1;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* ---- parties ------------------------------------------------------------------ */

struct want {
	int set;
	uint8_t fam;
	uint8_t a[16];
	uint16_t port;      /* 0: any */
};

/* "IP:PORT", "[v6]:PORT", "IP" or "v6" -> w; -1 if unparseable. */
static int want_parse(const char *s, struct want *w)
{
	char ip[INET6_ADDRSTRLEN + 2];
	const char *colon, *ipend;
	unsigned long port = 0;

	memset(w, 0, sizeof(*w));
	if (!s || !*s)
		return 0;
	if (s[0] == '[') {
		ipend = strchr(s, ']');
		if (!ipend)
			return -1;
		colon = ipend[1] == ':' ? ipend + 1 : NULL;
		if (ipend[1] && !colon)
			return -1;
		s++;
	} else {
		colon = strchr(s, ':');
		if (colon && strchr(colon + 1, ':')) /* a bare IPv6 address */
			colon = NULL;
		ipend = colon ? colon : s + strlen(s);
	}
	if ((size_t)(ipend - s) >= sizeof(ip))
		return -1;
	memcpy(ip, s, (size_t)(ipend - s));
	ip[ipend - s] = '\0';
	if (colon) {
		char *end;
		if (!colon[1])
			return -1;
		port = strtoul(colon + 1, &end, 10);
		if (*end || port == 0 || port > 65535)
			return -1;
	}
	if (inet_pton(AF_INET, ip, w->a) == 1)
		w->fam = 4;
	else if (inet_pton(AF_INET6, ip, w->a) == 1)
		w->fam = 6;
	else
		return -1;
	w->port = (uint16_t)port;
	w->set = 1;
	return 0;
}

/* 2: the stream's source or destination is w exactly; 1: same IP, w has no port. */
static int want_match(const struct want *w, const struct ccq_pcap_stream *s)
{
	size_t al = s->fam_ == 4 ? 4 : 16;
	if (!w->set || w->fam != s->fam_)
		return 0;
	if (memcmp(w->a, s->sa_, al) == 0 && (!w->port || w->port == s->sp_))
		return w->port ? 2 : 1;
	if (memcmp(w->a, s->da_, al) == 0 && (!w->port || w->port == s->dp_))
		return w->port ? 2 : 1;
	return 0;
}

static const char *party_name(int party)
{
	return party == CCQ_PARTY_CALLER ? "caller" : "agent";
}

static int assign_parties(ccq_pcap *p, const struct ccq_pcap_opts *o, char *err, size_t errlen)
{
	struct want w[2];
	const char *given[2] = { o ? o->caller : NULL, o ? o->agent : NULL };
	unsigned matched[2] = { 0, 0 };

	for (int k = 0; k < 2; k++)
		if (want_parse(given[k], &w[k]) < 0) {
			seterr(err, errlen, "the %s's address '%s' is not IP:PORT", party_name(k),
				given[k]);
			return -1;
		}
	for (unsigned i = 0; i < p->nstreams; i++) {
		struct ccq_pcap_stream *s = &p->streams[i];
		int mc = want_match(&w[0], s), ma = want_match(&w[1], s);
		if (mc > ma)
			s->party = CCQ_PARTY_CALLER;
		else if (ma > mc)
			s->party = CCQ_PARTY_AGENT;
		if (s->party >= 0)
			matched[s->party]++;
	}
	for (int k = 0; k < 2; k++)
		if (w[k].set && !matched[k])
			note(p, "the %s's address %s matches no RTP stream", party_name(k), given[k]);
	if (!w[0].set && !w[1].set && p->nstreams > 0)
		note(p, "the parties' addresses are not known: the first source address is taken "
			"as the caller, the next as the agent");
	for (unsigned i = 0; i < p->nstreams; i++) {
		struct ccq_pcap_stream *s = &p->streams[i];
		int party = -1;
		if (s->party >= 0)
			continue;
		/* another SSRC from the same address belongs to the same party */
		for (unsigned j = 0; j < i && party < 0; j++) {
			const struct ccq_pcap_stream *t = &p->streams[j];
			if (t->party >= 0 && t->fam_ == s->fam_ && t->sp_ == s->sp_
					&& memcmp(t->sa_, s->sa_, 16) == 0)
				party = t->party;
		}
		if (party < 0)
			party = matched[CCQ_PARTY_CALLER] ? CCQ_PARTY_AGENT : CCQ_PARTY_CALLER;
		s->party = party;
		matched[party]++;
		if (w[0].set || w[1].set || i > 1)
			note(p, "the stream from %s (SSRC 0x%08x) matches no given address: taken as "
				"the %s's (order of first appearance)", s->src, s->ssrc, party_name(party));
	}
	return 0;
}

/* ---- the index --------------------------------------------------------------- */

static int layout(ccq_pcap *p, const struct ccq_pcap_opts *o, char *err, size_t errlen)
{
	uint64_t max_s = (o && o->max_seconds) ? o->max_seconds : CCQ_PCAP_DEFAULT_MAX_SECONDS;
	int64_t max_frames = (int64_t)(max_s * CCQ_PCAP_RATE);
	int64_t cap0 = 0, lo = 0, hi = 0;
	size_t out = 0;

	/* sort each stream's packets by timestamp, drop repeated sequence numbers */
	if (p->npkts > 1)
		qsort(p->pkts, p->npkts, sizeof(*p->pkts), pkt_cmp);
	for (size_t i = 0; i < p->npkts; i++) {
		struct ccq_pcap_pkt *k = &p->pkts[i];
		struct ccq_pcap_stream *s = &p->streams[k->stream];
		if (out > 0 && p->pkts[out - 1].stream == k->stream && p->pkts[out - 1].seq == k->seq
				&& p->pkts[out - 1].ts == k->ts) {
			s->duplicates++;
			continue;
		}
		if (s->count_ == 0)
			s->first_ = out;
		s->count_++;
		p->pkts[out++] = *k;
	}
	p->npkts = out;
	for (unsigned i = 0; i < p->nstreams; i++)
		if (i == 0 || p->streams[i].cap_ns_ < cap0)
			cap0 = p->streams[i].cap_ns_;
	for (unsigned i = 0; i < p->nstreams; i++) {
		struct ccq_pcap_stream *s = &p->streams[i];
		int64_t off = (s->cap_ns_ - cap0) / 125000; /* ns -> samples at 8 kHz */
		int64_t span, slo, shi = INT64_MIN;
		s->packets = (uint32_t)s->count_;
		span = s->seq_max_ - s->seq_min_ + 1;
		if (span > (int64_t)s->packets + s->skipped)
			s->lost = (uint32_t)(span - s->packets - s->skipped > UINT32_MAX ? UINT32_MAX
				: span - s->packets - s->skipped);
		s->base_ = off - s->ts0_;
		slo = s->base_ + p->pkts[s->first_].ts;
		for (size_t j = s->first_; j < s->first_ + s->count_; j++) {
			int64_t e = s->base_ + p->pkts[j].ts + p->pkts[j].len;
			if (e > shi)
				shi = e;
		}
		if (shi - slo > max_frames || off > max_frames) {
			seterr(err, errlen, "the recording would be longer than %llu h %02llu min "
				"(the stream from %s, SSRC 0x%08x, spans %lld s of RTP timestamps from "
				"%lld s after the start): refused",
				(unsigned long long)(max_s / 3600), (unsigned long long)(max_s % 3600 / 60),
				s->src, s->ssrc, (long long)((shi - slo) / CCQ_PCAP_RATE),
				(long long)(off / CCQ_PCAP_RATE));
			return -1;
		}
		if (i == 0 || slo < lo)
			lo = slo;
		if (i == 0 || shi > hi)
			hi = shi;
	}
	/* a reordered first packet may start before its stream's anchor */
	for (unsigned i = 0; i < p->nstreams; i++) {
		struct ccq_pcap_stream *s = &p->streams[i];
		s->base_ -= lo;
		s->start = (uint64_t)(s->base_ + p->pkts[s->first_].ts);
		s->end = 0;
		for (size_t j = s->first_; j < s->first_ + s->count_; j++) {
			uint64_t e = (uint64_t)(s->base_ + p->pkts[j].ts) + p->pkts[j].len;
			if (e > s->end)
				s->end = e;
		}
	}
	if (hi - lo > max_frames) {
		seterr(err, errlen, "the recording would last %lld h %02lld min, longer than the "
			"limit of %llu h %02llu min: refused",
			(long long)((hi - lo) / CCQ_PCAP_RATE / 3600),
			(long long)((hi - lo) / CCQ_PCAP_RATE % 3600 / 60),
			(unsigned long long)(max_s / 3600), (unsigned long long)(max_s % 3600 / 60));
		return -1;
	}
	p->frames = (uint64_t)(hi - lo);
	return 0;
}

int64_t ccq_pcap_start_ns(const ccq_pcap *p)
{
	const struct ccq_pcap_stream *a = NULL;
	/* the earliest stream anchors the timeline exactly (the others are
	 * rounded to a sample): its first packet by capture time lies at
	 * base_ + ts0_ */
	for (unsigned i = 0; i < p->nstreams; i++)
		if (!a || p->streams[i].cap_ns_ < a->cap_ns_)
			a = &p->streams[i];
	if (!a)
		return 0;
	return a->cap_ns_ - (a->base_ + a->ts0_) * 125000;
}

int ccq_pcap_open(ccq_pcap *p, const uint8_t *buf, size_t len,
		const struct ccq_pcap_opts *o, char *err, size_t errlen)
{
	uint32_t magic;
	uint16_t major;
	int swap;
	size_t pos = 24;
	unsigned last = 0;

	memset(p, 0, sizeof(*p));
	p->buf = buf;
	p->len = len;
	if (len < 24 || !buf) {
		seterr(err, errlen, "not a pcap file: %zu bytes, shorter than the 24-byte header", len);
		return -1;
	}
	magic = be32(buf);
	if (magic == 0xA1B2C3D4u || magic == 0xA1B23C4Du)
		swap = 1;
	else if (magic == 0xD4C3B2A1u || magic == 0x4D3CB2A1u)
		swap = 0;
	else if (magic == 0x0A0D0D0Au) {
		seterr(err, errlen, "a pcapng file: only the classic pcap format is read");
		return -1;
	} else {
		seterr(err, errlen, "not a pcap file (magic number 0x%08x)", magic);
		return -1;
	}
	p->nanosec = rd32(buf, swap) == 0xA1B23C4Du;
	major = swap ? be16(buf + 4) : (uint16_t)(buf[5] << 8 | buf[4]);
	if (major != 2) {
		seterr(err, errlen, "pcap version %u is not supported (2 is)", major);
		return -1;
	}
	p->linktype = rd32(buf + 20, swap) & 0xFFFF;
	switch (p->linktype) {
	case 0: case 1: case 12: case 101: case 113: case 228: case 229: case 276:
		break;
	default:
		seterr(err, errlen, "unsupported pcap link type %u (raw IP, Ethernet and Linux "
			"cooked captures are read)", p->linktype);
		return -1;
	}
	while (pos < len) {
		uint32_t sec, frac, incl;
		int64_t cap_ns;
		const uint8_t *ip, *udp;
		size_t iplen, udplen;
		struct ep e;

		if (len - pos < 16) {
			seterr(err, errlen, "truncated pcap file: record %llu at byte %zu has only %zu "
				"of its 16 header bytes", (unsigned long long)p->counts.records + 1, pos,
				len - pos);
			return -1;
		}
		sec = rd32(buf + pos, swap);
		frac = rd32(buf + pos + 4, swap);
		incl = rd32(buf + pos + 8, swap);
		pos += 16;
		p->counts.records++;
		if (incl > CCQ_PCAP_MAX_PACKET) {
			seterr(err, errlen, "pcap record %llu at byte %zu claims %u bytes: packets "
				"above 64 KiB are refused", (unsigned long long)p->counts.records,
				pos - 16, incl);
			return -1;
		}
		if (incl > len - pos) {
			seterr(err, errlen, "truncated pcap file: record %llu at byte %zu needs %u "
				"bytes, %zu are left", (unsigned long long)p->counts.records, pos - 16,
				incl, len - pos);
			return -1;
		}
		if (p->nanosec)
			cap_ns = (int64_t)sec * 1000000000 + (frac < 1000000000u ? frac : 999999999);
		else
			cap_ns = (int64_t)sec * 1000000000 + (int64_t)(frac < 1000000u ? frac : 999999)
				* 1000;
		ip = link_ip(p, buf + pos, incl, &iplen);
		udp = ip ? ip_udp(p, ip, iplen, &e, &udplen) : NULL;
		if (udp && rtp_packet(p, o, udp, udplen, &e, cap_ns, &last, err, errlen) < 0)
			return -1;
		pos += incl;
	}
	if (p->nstreams == 0) {
		seterr(err, errlen, "no RTP audio in the recording (%llu packets: %llu not UDP, "
			"%llu not RTP, %llu RTCP, %llu comfort noise or telephone events, %llu IP "
			"fragments, %llu cut short)",
			(unsigned long long)p->counts.records, (unsigned long long)p->counts.not_udp,
			(unsigned long long)p->counts.not_rtp, (unsigned long long)p->counts.rtcp,
			(unsigned long long)p->counts.skipped, (unsigned long long)p->counts.fragments,
			(unsigned long long)p->counts.truncated);
		return -1;
	}
	if (p->counts.fragments)
		note(p, "%llu IP fragments skipped (fragmented RTP is not reassembled)",
			(unsigned long long)p->counts.fragments);
	if (p->counts.truncated)
		note(p, "%llu packets captured shorter than their headers say: skipped",
			(unsigned long long)p->counts.truncated);
	if (assign_parties(p, o, err, errlen) < 0)
		return -1;
	return layout(p, o, err, errlen);
}

void ccq_pcap_free(ccq_pcap *p)
{
	free(p->streams);
	free(p->pkts);
	p->streams = NULL;
	p->pkts = NULL;
	p->nstreams = 0;
	p->npkts = p->pkts_cap = 0;
}

/* ---- rendering ---------------------------------------------------------------- */

int ccq_pcap_render(const ccq_pcap *p, unsigned channels, ccq_pcap_sink sink, void *ctx,
		char *err, size_t errlen)
{
	size_t *cur;
	int32_t *acc;
	int16_t *tmp, *out;
	int rc = 0;

	if (channels != 1 && channels != 2) {
		seterr(err, errlen, "1 or 2 channels, not %u", channels);
		return -1;
	}
	cur = calloc(p->nstreams ? p->nstreams : 1, sizeof(*cur));
	acc = malloc(RENDER_BLOCK * 2 * sizeof(*acc));
	tmp = malloc(RENDER_BLOCK * sizeof(*tmp));
	out = malloc(RENDER_BLOCK * 2 * sizeof(*out));
	if (!cur || !acc || !tmp || !out) {
		seterr(err, errlen, "out of memory");
		rc = -1;
		goto done;
	}
	for (unsigned i = 0; i < p->nstreams; i++)
		cur[i] = p->streams[i].first_;
	for (uint64_t c0 = 0; c0 < p->frames && rc == 0; c0 += RENDER_BLOCK) {
		uint64_t c1 = c0 + RENDER_BLOCK < p->frames ? c0 + RENDER_BLOCK : p->frames;
		size_t n = (size_t)(c1 - c0);

		memset(acc, 0, n * channels * sizeof(*acc));
		for (unsigned i = 0; i < p->nstreams; i++) {
			const struct ccq_pcap_stream *s = &p->streams[i];
			size_t endk = s->first_ + s->count_;
			unsigned ch = channels == 2 && s->party == CCQ_PARTY_AGENT ? 1 : 0;
			int any = 0;

			if (s->start >= c1 || s->end <= c0)
				continue;
			/* packets are in timestamp order: skip those that ended before c0 */
			while (cur[i] < endk && (uint64_t)(s->base_ + p->pkts[cur[i]].ts)
					+ p->pkts[cur[i]].len <= c0)
				cur[i]++;
			memset(tmp, 0, n * sizeof(*tmp));
			for (size_t k = cur[i]; k < endk; k++) {
				const struct ccq_pcap_pkt *pk = &p->pkts[k];
				uint64_t ps = (uint64_t)(s->base_ + pk->ts), pe = ps + pk->len;
				uint64_t a = ps > c0 ? ps : c0, b = pe < c1 ? pe : c1;
				const uint8_t *src = p->buf + pk->off;
				if (ps >= c1)
					break;
				for (uint64_t t = a; t < b; t++)
					tmp[t - c0] = pk->codec == CODEC_ALAW ? ccq_alaw_decode(src[t - ps])
						: ccq_ulaw_decode(src[t - ps]);
				any |= a < b;
			}
			if (any)
				for (size_t t = 0; t < n; t++)
					acc[t * channels + ch] += tmp[t];
		}
		for (size_t t = 0; t < n * channels; t++)
			out[t] = (int16_t)(acc[t] > 32767 ? 32767 : acc[t] < -32768 ? -32768 : acc[t]);
		rc = sink(ctx, out, n, channels);
		if (rc != 0)
			seterr(err, errlen, "writing the audio failed");
	}
done:
	free(cur);
	free(acc);
	free(tmp);
	free(out);
	return rc;
}

struct mem_sink {
	int16_t *pcm;
	size_t at;
};

static int mem_put(void *ctx, const int16_t *frames, size_t n, unsigned channels)
{
	struct mem_sink *m = ctx;
	memcpy(m->pcm + m->at, frames, n * channels * sizeof(*frames));
	m->at += n * channels;
	return 0;
}

int ccq_pcap_render_mem(const ccq_pcap *p, unsigned channels, int16_t **pcm,
		char *err, size_t errlen)
{
	struct mem_sink m = { NULL, 0 };
	size_t n = (size_t)p->frames * (channels == 2 ? 2 : 1);

	*pcm = NULL;
	m.pcm = malloc(n ? n * sizeof(int16_t) : 1);
	if (!m.pcm) {
		seterr(err, errlen, "out of memory (%zu samples)", n);
		return -1;
	}
	if (ccq_pcap_render(p, channels, mem_put, &m, err, errlen) != 0) {
		free(m.pcm);
		return -1;
	}
	*pcm = m.pcm;
	return 0;
}

/* ---- WAV ------------------------------------------------------------------------ */

static void le32(uint8_t *b, uint32_t v)
{
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

static void le16(uint8_t *b, uint16_t v)
{
	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
}

int ccq_wav_header(uint8_t h[44], uint64_t frames, unsigned channels)
{
	uint64_t data = frames * channels * 2;
	if (channels < 1 || channels > 2 || data > 0xFFFFFFFFull - 36)
		return -1;
	memcpy(h, "RIFF", 4);
	le32(h + 4, (uint32_t)(36 + data));
	memcpy(h + 8, "WAVEfmt ", 8);
	le32(h + 16, 16);
	le16(h + 20, 1); /* PCM */
	le16(h + 22, (uint16_t)channels);
	le32(h + 24, CCQ_PCAP_RATE);
	le32(h + 28, CCQ_PCAP_RATE * channels * 2);
	le16(h + 32, (uint16_t)(channels * 2));
	le16(h + 34, 16);
	memcpy(h + 36, "data", 4);
	le32(h + 40, (uint32_t)data);
	return 0;
}

static int file_put(void *ctx, const int16_t *frames, size_t n, unsigned channels)
{
	uint8_t b[RENDER_BLOCK * 2 * 2];
	size_t k = n * channels;
	for (size_t i = 0; i < k; i++)
		le16(b + 2 * i, (uint16_t)frames[i]);
	return fwrite(b, 2, k, (FILE *)ctx) == k ? 0 : -1;
}

int ccq_pcap_write_wav(const ccq_pcap *p, unsigned channels, FILE *f, char *err,
		size_t errlen)
{
	uint8_t h[44];
	if (ccq_wav_header(h, p->frames, channels) < 0) {
		seterr(err, errlen, "%llu samples do not fit in a WAV file",
			(unsigned long long)p->frames);
		return -1;
	}
	if (fwrite(h, 1, sizeof(h), f) != sizeof(h)) {
		seterr(err, errlen, "writing the WAV header failed");
		return -1;
	}
	return ccq_pcap_render(p, channels, file_put, f, err, errlen);
}
