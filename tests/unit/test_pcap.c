/*
 * Recordings: pcap files built here (a small writer below) and one real
 * rtpengine recording are decoded and compared sample by sample.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "ccq_pcap.h"

/* ---- a tiny pcap writer -------------------------------------------------------- */

struct pb {
	uint8_t *b;
	size_t len, cap;
	int be;         /* big-endian file */
	int ns;         /* nanosecond timestamps */
	uint32_t link;
};

static void put(struct pb *p, const void *d, size_t n)
{
	if (p->len + n > p->cap) {
		p->cap = (p->len + n) * 2 + 256;
		p->b = realloc(p->b, p->cap);
		assert_non_null(p->b);
	}
	memcpy(p->b + p->len, d, n);
	p->len += n;
}

static void put32(struct pb *p, uint32_t v)
{
	uint8_t b[4];
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(p->be ? v >> (24 - 8 * i) : v >> (8 * i));
	put(p, b, 4);
}

static void put16(struct pb *p, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)(p->be ? v >> 8 : v), (uint8_t)(p->be ? v : v >> 8) };
	put(p, b, 2);
}

static void pb_init(struct pb *p, uint32_t link, int be, int ns)
{
	memset(p, 0, sizeof(*p));
	p->be = be;
	p->ns = ns;
	p->link = link;
	put32(p, ns ? 0xA1B23C4Du : 0xA1B2C3D4u);
	put16(p, 2);
	put16(p, 4);
	put32(p, 0);
	put32(p, 0);
	put32(p, 65535);
	put32(p, link);
}

static void pb_record(struct pb *p, uint64_t t_ns, const uint8_t *d, size_t n)
{
	put32(p, (uint32_t)(t_ns / 1000000000u));
	put32(p, (uint32_t)(p->ns ? t_ns % 1000000000u : t_ns % 1000000000u / 1000u));
	put32(p, (uint32_t)n);
	put32(p, (uint32_t)n);
	put(p, d, n);
}

/* Link header + IPv4/IPv6 + UDP around payload into out; returns the length. */
static size_t frame(uint8_t *out, uint32_t link, const char *src, uint16_t sp, const char *dst,
		uint16_t dp, const uint8_t *pl, size_t pn, int frag)
{
	uint8_t sa[16], da[16];
	int v6 = strchr(src, ':') != NULL;
	size_t o = 0, ip, iph = v6 ? 40 : 20;
	uint16_t ulen = (uint16_t)(8 + pn);

	assert_int_equal(inet_pton(v6 ? AF_INET6 : AF_INET, src, sa), 1);
	assert_int_equal(inet_pton(v6 ? AF_INET6 : AF_INET, dst, da), 1);
	if (link == 1) {
		memset(out, 0x02, 12);
		out[12] = v6 ? 0x86 : 0x08;
		out[13] = v6 ? 0xDD : 0x00;
		o = 14;
	} else if (link == 113) {
		memset(out, 0, 14);
		out[14] = v6 ? 0x86 : 0x08;
		out[15] = v6 ? 0xDD : 0x00;
		o = 16;
	}
	ip = o;
	memset(out + ip, 0, iph);
	if (v6) {
		out[ip] = 0x60;
		out[ip + 4] = (uint8_t)(ulen >> 8);
		out[ip + 5] = (uint8_t)ulen;
		out[ip + 6] = 17;
		out[ip + 7] = 64;
		memcpy(out + ip + 8, sa, 16);
		memcpy(out + ip + 24, da, 16);
	} else {
		uint16_t tot = (uint16_t)(20 + ulen);
		out[ip] = 0x45;
		out[ip + 2] = (uint8_t)(tot >> 8);
		out[ip + 3] = (uint8_t)tot;
		if (frag)
			out[ip + 6] = 0x20; /* more fragments */
		out[ip + 8] = 64;
		out[ip + 9] = 17;
		memcpy(out + ip + 12, sa, 4);
		memcpy(out + ip + 16, da, 4);
	}
	o = ip + iph;
	out[o] = (uint8_t)(sp >> 8);
	out[o + 1] = (uint8_t)sp;
	out[o + 2] = (uint8_t)(dp >> 8);
	out[o + 3] = (uint8_t)dp;
	out[o + 4] = (uint8_t)(ulen >> 8);
	out[o + 5] = (uint8_t)ulen;
	out[o + 6] = out[o + 7] = 0;
	memcpy(out + o + 8, pl, pn);
	return o + 8 + pn;
}

/* An RTP packet: cc CSRCs, ext 32-bit words of header extension, pad bytes. */
static size_t rtp(uint8_t *out, uint8_t pt, uint16_t seq, uint32_t ts, uint32_t ssrc,
		const uint8_t *pl, size_t pn, int cc, int ext, int pad)
{
	size_t o = 12;
	out[0] = (uint8_t)(0x80 | (pad ? 0x20 : 0) | (ext ? 0x10 : 0) | cc);
	out[1] = pt;
	out[2] = (uint8_t)(seq >> 8);
	out[3] = (uint8_t)seq;
	for (int i = 0; i < 4; i++) {
		out[4 + i] = (uint8_t)(ts >> (24 - 8 * i));
		out[8 + i] = (uint8_t)(ssrc >> (24 - 8 * i));
	}
	for (int i = 0; i < cc; i++, o += 4)
		memset(out + o, 0xCC, 4);
	if (ext) {
		out[o] = 0xBE;
		out[o + 1] = 0xDE;
		out[o + 2] = 0;
		out[o + 3] = (uint8_t)ext;
		memset(out + o + 4, 0xEE, (size_t)ext * 4);
		o += 4 + (size_t)ext * 4;
	}
	memcpy(out + o, pl, pn);
	o += pn;
	if (pad) {
		memset(out + o, 0, (size_t)pad - 1);
		out[o + (size_t)pad - 1] = (uint8_t)pad;
		o += (size_t)pad;
	}
	return o;
}

/* ---- the parties' audio ----------------------------------------------------------- */

typedef int16_t (*wave_fn)(long n);

static int16_t sine(long n)
{
	return (int16_t)(12000 * sin(2 * M_PI * 400.0 * (double)n / 8000.0));
}

static int16_t ramp(long n)
{
	return (int16_t)((n * 37) % 20000 - 10000);
}

static int16_t loud(long n)
{
	return (int16_t)(n % 2 ? 30000 : 29000);
}

/* PT 8, and 98 in the test's SDP, are A-law; everything else µ-law */
static int is_alaw(uint8_t pt)
{
	return pt == 8 || pt == 98;
}

static int16_t g711(uint8_t pt, int16_t v)
{
	return is_alaw(pt) ? ccq_alaw_decode(ccq_alaw_encode(v)) : ccq_ulaw_decode(ccq_ulaw_encode(v));
}

struct party {
	const char *src, *dst;
	uint16_t sp, dp;
	uint32_t ssrc;
	uint8_t pt;
	uint16_t seq0;
	uint32_t ts0;
	wave_fn wave;
	int cc, ext, pad;
};

/* Packet i (20 ms, samples i*160...) of a party, captured at t_ns. */
static void add(struct pb *p, const struct party *w, long i, uint64_t t_ns)
{
	uint8_t pl[160], r[400], f[600];
	size_t rn, fn;
	for (int k = 0; k < 160; k++) {
		int16_t v = w->wave(i * 160 + k);
		pl[k] = is_alaw(w->pt) ? ccq_alaw_encode(v) : ccq_ulaw_encode(v);
	}
	rn = rtp(r, w->pt, (uint16_t)(w->seq0 + i), w->ts0 + (uint32_t)(i * 160), w->ssrc, pl,
		sizeof(pl), w->cc, w->ext, w->pad);
	fn = frame(f, p->link, w->src, w->sp, w->dst, w->dp, r, rn, 0);
	pb_record(p, t_ns, f, fn);
}

static const uint64_t T0 = 1790000000ull * 1000000000ull; /* a capture time */
#define MS 1000000ull

static const struct party CALLER = { "192.0.2.10", "198.51.100.1", 40000, 30000, 0x1234,
	0, 100, 5000, sine, 0, 0, 0 };
static const struct party AGENT = { "192.0.2.20", "198.51.100.1", 42000, 30002, 0xabcd,
	8, 65500, 0xFFFFF000u, ramp, 0, 0, 0 };

/* The caller talks 50 packets from 0 ms, the agent 40 packets from 200 ms. */
static void two_parties(struct pb *p, const struct party *c, const struct party *a)
{
	for (long i = 0; i < 50; i++) {
		add(p, c, i, T0 + (uint64_t)i * 20 * MS);
		if (i >= 10)
			add(p, a, i - 10, T0 + (uint64_t)i * 20 * MS + 3 * MS);
	}
}

static int open_pb(ccq_pcap *cp, struct pb *p, const char *caller, const char *agent,
		char *err, size_t errlen)
{
	struct ccq_pcap_opts o = { 0 };
	o.caller = caller;
	o.agent = agent;
	return ccq_pcap_open(cp, p->b, p->len, &o, err, errlen);
}

/* Opening p (with o, or the parties' addresses) fails with a reason containing needle. */
static void expect_error(const struct pb *p, const struct ccq_pcap_opts *o, size_t len,
		const char *needle)
{
	ccq_pcap cp;
	char err[512] = "";
	if (ccq_pcap_open(&cp, p->b, len, o, err, sizeof(err)) != -1)
		fail_msg("opened, expected an error with \"%s\"", needle);
	if (!strstr(err, needle))
		fail_msg("error \"%s\" does not say \"%s\"", err, needle);
	ccq_pcap_free(&cp);
}

static void expect_error_parties(const struct pb *p, const char *caller, const char *agent,
		const char *needle)
{
	struct ccq_pcap_opts o = { 0 };
	o.caller = caller;
	o.agent = agent;
	expect_error(p, &o, p->len, needle);
}

/* Check a channel (0/1 of stereo) against a party's wave from sample `at`. */
static void expect_channel(const int16_t *pcm, unsigned ch, unsigned nch, uint64_t frames,
		const struct party *w, uint64_t at, long nsamples)
{
	for (uint64_t t = 0; t < frames; t++) {
		int16_t want = 0;
		if (t >= at && (long)(t - at) < nsamples)
			want = g711(w->pt, w->wave((long)(t - at)));
		if (pcm[t * nch + ch] != want)
			fail_msg("channel %u sample %llu: %d, expected %d", ch, (unsigned long long)t,
				pcm[t * nch + ch], want);
	}
}

/* Render p in stereo: the left channel is party l from sample la (ln samples), the right r. */
static void expect_stereo(const ccq_pcap *cp, const struct party *l, uint64_t la, long ln,
		const struct party *r, uint64_t ra, long rn)
{
	int16_t *pcm;
	char err[512];
	assert_int_equal(ccq_pcap_render_mem(cp, 2, &pcm, err, sizeof(err)), 0);
	expect_channel(pcm, 0, 2, cp->frames, l, la, ln);
	expect_channel(pcm, 1, 2, cp->frames, r, ra, rn);
	free(pcm);
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_g711_points(void **state)
{
	(void)state;
	/* µ-law: 0xFF and 0x7F are the two zeros; 0x80/0x00 the extremes */
	assert_int_equal(ccq_ulaw_decode(0xFF), 0);
	assert_int_equal(ccq_ulaw_decode(0x7F), 0);
	assert_int_equal(ccq_ulaw_decode(0x80), 32124);
	assert_int_equal(ccq_ulaw_decode(0x00), -32124);
	assert_int_equal(ccq_ulaw_decode(0xFE), 8);
	assert_int_equal(ccq_ulaw_decode(0xEF), 132);
	assert_int_equal(ccq_ulaw_encode(0), 0xFF);
	assert_int_equal(ccq_ulaw_encode(32767), 0x80);
	assert_int_equal(ccq_ulaw_encode(-32768), 0x00);
	/* A-law: 0xD5/0x55 are +8/-8; 0xAA/0x2A the extremes */
	assert_int_equal(ccq_alaw_decode(0xD5), 8);
	assert_int_equal(ccq_alaw_decode(0x55), -8);
	assert_int_equal(ccq_alaw_decode(0x2A), -32256);
	assert_int_equal(ccq_alaw_decode(0xAA), 32256);
	assert_int_equal(ccq_alaw_decode(0xC5), 264);
	assert_int_equal(ccq_alaw_encode(0), 0xD5);
	assert_int_equal(ccq_alaw_encode(-1), 0x55);
	assert_int_equal(ccq_alaw_encode(32767), 0xAA);
	assert_int_equal(ccq_alaw_encode(-32768), 0x2A);
	/* every code decodes to a value that encodes back to a code of the same value */
	for (int b = 0; b < 256; b++) {
		int16_t u = ccq_ulaw_decode((uint8_t)b), a = ccq_alaw_decode((uint8_t)b);
		assert_int_equal(ccq_ulaw_decode(ccq_ulaw_encode(u)), u);
		assert_int_equal(ccq_alaw_decode(ccq_alaw_encode(a)), a);
	}
	/* the quantisation is monotonic and close */
	for (int v = -32768; v + 7 <= 32767; v += 7) {
		int16_t a = (int16_t)v, b = (int16_t)(v + 7);
		assert_true(ccq_ulaw_decode(ccq_ulaw_encode(a)) <= ccq_ulaw_decode(ccq_ulaw_encode(b)));
		assert_true(ccq_alaw_decode(ccq_alaw_encode(a)) <= ccq_alaw_decode(ccq_alaw_encode(b)));
		assert_true(abs(ccq_ulaw_decode(ccq_ulaw_encode(a)) - v) <= 1100);
		assert_true(abs(ccq_alaw_decode(ccq_alaw_encode(a)) - v) <= 1100);
	}
}

static void test_stereo_ulaw_alaw(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	int16_t *pcm;
	(void)state;

	pb_init(&p, 101, 0, 0);
	two_parties(&p, &CALLER, &AGENT);
	assert_int_equal(open_pb(&cp, &p, "192.0.2.10:40000", "192.0.2.20:42000", err,
		sizeof(err)), 0);
	assert_int_equal(cp.nstreams, 2);
	assert_int_equal(cp.frames, 1624 + 6400);
	assert_int_equal(cp.streams[0].party, CCQ_PARTY_CALLER);
	assert_int_equal(cp.streams[1].party, CCQ_PARTY_AGENT);
	assert_int_equal(cp.streams[1].start, 1600 + 24); /* 200 ms + 3 ms */
	assert_int_equal(cp.streams[1].pt, 8);
	assert_string_equal(cp.streams[0].src, "192.0.2.10:40000");
	assert_string_equal(cp.notes, "");
	expect_stereo(&cp, &CALLER, 0, 8000, &AGENT, 1624, 40 * 160);
	/* mono: the sum */
	assert_int_equal(ccq_pcap_render_mem(&cp, 1, &pcm, err, sizeof(err)), 0);
	for (long t = 0; t < 1624 + 6400; t++) {
		int want = (t < 8000 ? g711(0, sine(t)) : 0) + (t >= 1624 ? g711(8, ramp(t - 1624)) : 0);
		assert_int_equal(pcm[t], want);
	}
	free(pcm);
	ccq_pcap_free(&cp);
	/* the parties the other way round: the channels swap */
	assert_int_equal(open_pb(&cp, &p, "192.0.2.20:42000", "192.0.2.10:40000", err,
		sizeof(err)), 0);
	expect_stereo(&cp, &AGENT, 1624, 40 * 160, &CALLER, 0, 8000);
	ccq_pcap_free(&cp);
	free(p.b);
}

static void test_mono_clips(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	int16_t *pcm;
	struct party a = CALLER, b = AGENT;
	(void)state;

	a.wave = b.wave = loud;
	b.pt = 0;
	pb_init(&p, 101, 0, 0);
	for (long i = 0; i < 5; i++) {
		add(&p, &a, i, T0 + (uint64_t)i * 20 * MS);
		add(&p, &b, i, T0 + (uint64_t)i * 20 * MS);
	}
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(ccq_pcap_render_mem(&cp, 1, &pcm, err, sizeof(err)), 0);
	for (uint64_t t = 0; t < cp.frames; t++)
		assert_int_equal(pcm[t], 32767);
	free(pcm);
	ccq_pcap_free(&cp);
	free(p.b);
}

static void test_lost_packet_is_silence(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	int16_t *pcm;
	(void)state;

	pb_init(&p, 101, 0, 0);
	for (long i = 0; i < 20; i++)
		if (i != 7 && i != 8)
			add(&p, &CALLER, i, T0 + (uint64_t)i * 20 * MS);
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(cp.frames, 20 * 160);
	assert_int_equal(cp.streams[0].lost, 2);
	assert_int_equal(cp.streams[0].packets, 18);
	assert_int_equal(ccq_pcap_render_mem(&cp, 2, &pcm, err, sizeof(err)), 0);
	for (long t = 0; t < 20 * 160; t++) {
		int16_t want = t >= 7 * 160 && t < 9 * 160 ? 0 : g711(0, sine(t));
		assert_int_equal(pcm[2 * t], want);
		assert_int_equal(pcm[2 * t + 1], 0);
	}
	free(pcm);
	ccq_pcap_free(&cp);
	free(p.b);
}

static void test_reordered_and_duplicated(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	int16_t *pcm;
	static const long order[] = { 1, 0, 2, 3, 5, 4, 6, 6, 7, 9, 8, 9, 10, 11 };
	(void)state;

	/* the first packet arrives second: the timeline still starts with it */
	pb_init(&p, 101, 0, 0);
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		add(&p, &AGENT, order[i], T0 + (uint64_t)i * 20 * MS);
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(cp.nstreams, 1);
	assert_int_equal(cp.streams[0].duplicates, 2);
	assert_int_equal(cp.streams[0].lost, 0);
	assert_int_equal(cp.streams[0].packets, 12);
	assert_int_equal(cp.frames, 12 * 160);
	/* packet 0, captured 20 ms after packet 1, is the timeline's start */
	assert_int_equal(ccq_pcap_start_ns(&cp), (int64_t)(T0 - 20 * MS));
	assert_int_equal(ccq_pcap_render_mem(&cp, 1, &pcm, err, sizeof(err)), 0);
	for (long t = 0; t < 12 * 160; t++)
		assert_int_equal(pcm[t], g711(8, ramp(t)));
	free(pcm);
	ccq_pcap_free(&cp);
	free(p.b);
}

static void test_timestamp_wraps(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	int16_t *pcm;
	struct party w = CALLER;
	(void)state;

	w.ts0 = 0xFFFFFFFFu - 500; /* wraps inside the 4th packet */
	w.seq0 = 65533;            /* and the sequence number too */
	pb_init(&p, 101, 0, 0);
	for (long i = 0; i < 10; i++)
		add(&p, &w, i, T0 + (uint64_t)i * 20 * MS);
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(cp.frames, 1600);
	assert_int_equal(cp.streams[0].lost, 0);
	assert_int_equal(ccq_pcap_render_mem(&cp, 1, &pcm, err, sizeof(err)), 0);
	for (long t = 0; t < 1600; t++)
		assert_int_equal(pcm[t], g711(0, sine(t)));
	free(pcm);
	ccq_pcap_free(&cp);
	free(p.b);
}

/* Capture time places a stream; its RTP timestamps, not arrival jitter, place packets. */
static void test_alignment_by_capture_time(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	(void)state;

	pb_init(&p, 101, 0, 0);
	for (long i = 0; i < 10; i++) {
		/* jittery arrival: the timeline does not move */
		add(&p, &CALLER, i, T0 + (uint64_t)i * 20 * MS + (uint64_t)(i % 3) * 7 * MS);
		add(&p, &AGENT, i, T0 + 500 * MS + (uint64_t)i * 20 * MS);
	}
	assert_int_equal(open_pb(&cp, &p, "192.0.2.10:40000", "192.0.2.20:42000", err,
		sizeof(err)), 0);
	assert_int_equal(cp.streams[1].start, 4000);
	assert_int_equal(cp.frames, 4000 + 1600);
	assert_int_equal(ccq_pcap_start_ns(&cp), (int64_t)T0);
	expect_stereo(&cp, &CALLER, 0, 1600, &AGENT, 4000, 1600);
	ccq_pcap_free(&cp);
	free(p.b);

	/* the agent's stream first: it anchors the timeline at its capture time */
	pb_init(&p, 101, 0, 0);
	for (long i = 0; i < 10; i++) {
		add(&p, &AGENT, i, T0 + 300 * MS + (uint64_t)i * 20 * MS);
		add(&p, &CALLER, i, T0 + 700 * MS + (uint64_t)i * 20 * MS);
	}
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(ccq_pcap_start_ns(&cp), (int64_t)(T0 + 300 * MS));
	assert_int_equal(cp.frames, 3200 + 1600);
	ccq_pcap_free(&cp);
	free(p.b);
}

static void test_parties(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	(void)state;

	pb_init(&p, 101, 0, 0);
	two_parties(&p, &CALLER, &AGENT);
	/* no addresses: order of first appearance, and a note says so */
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	assert_int_equal(cp.streams[0].party, CCQ_PARTY_CALLER);
	assert_int_equal(cp.streams[1].party, CCQ_PARTY_AGENT);
	assert_non_null(strstr(cp.notes, "first source address"));
	ccq_pcap_free(&cp);
	/* rtpengine's side of the call: its ports, the packets' destinations */
	assert_int_equal(open_pb(&cp, &p, "198.51.100.1:30002", "198.51.100.1:30000", err,
		sizeof(err)), 0);
	assert_int_equal(cp.streams[0].party, CCQ_PARTY_AGENT);
	assert_int_equal(cp.streams[1].party, CCQ_PARTY_CALLER);
	assert_string_equal(cp.notes, "");
	ccq_pcap_free(&cp);
	/* only the agent known: the other stream is the caller's */
	assert_int_equal(open_pb(&cp, &p, "", "192.0.2.10", err, sizeof(err)), 0);
	assert_int_equal(cp.streams[0].party, CCQ_PARTY_AGENT);
	assert_int_equal(cp.streams[1].party, CCQ_PARTY_CALLER);
	assert_non_null(strstr(cp.notes, "192.0.2.20:42000 (SSRC 0x0000abcd) matches no given "
		"address: taken as the caller's"));
	ccq_pcap_free(&cp);
	/* an address that matches nothing is said */
	assert_int_equal(open_pb(&cp, &p, "203.0.113.5:4000", "192.0.2.20:42000", err,
		sizeof(err)), 0);
	assert_int_equal(cp.streams[0].party, CCQ_PARTY_CALLER);
	assert_non_null(strstr(cp.notes, "the caller's address 203.0.113.5:4000 matches no RTP "
		"stream"));
	ccq_pcap_free(&cp);
	/* garbage */
	expect_error_parties(&p, "nonsense", NULL, "'nonsense' is not IP:PORT");
	free(p.b);
}

static void test_other_codec_is_named(void **state)
{
	struct pb p;
	struct party w = CALLER;
	struct ccq_pcap_opts o = { 0 };
	static const char sdp[] = "v=0\r\nm=audio 4000 RTP/AVP 96 101\r\n"
		"a=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n";
	(void)state;

	w.pt = 9;
	pb_init(&p, 101, 0, 0);
	add(&p, &CALLER, 0, T0);
	add(&p, &w, 1, T0 + 20 * MS);
	expect_error_parties(&p, NULL, NULL, "unsupported codec G722 (PT 9)");
	free(p.b);

	w.pt = 96;
	pb_init(&p, 101, 0, 0);
	add(&p, &w, 0, T0);
	expect_error_parties(&p, NULL, NULL, "payload type 96");
	o.rtpmap = sdp;
	o.rtpmap_len = strlen(sdp);
	expect_error(&p, &o, p.len, "unsupported codec opus (PT 96)");
	free(p.b);

	{
		char name[32];
		assert_string_equal(ccq_rtp_codec_name(NULL, 0, 18, name, sizeof(name)), "G729");
		assert_string_equal(ccq_rtp_codec_name(sdp, strlen(sdp), 101, name, sizeof(name)),
			"telephone-event");
		assert_string_equal(ccq_rtp_codec_name(sdp, strlen(sdp), 97, name, sizeof(name)), "");
	}
}

/* Telephone events and comfort noise are skipped; a dynamic PCMA is decoded. */
static void test_skipped_payloads(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	int16_t *pcm;
	struct party dtmf = CALLER, cn = CALLER, dyn = AGENT;
	struct ccq_pcap_opts o = { 0 };
	static const char sdp[] = "m=audio 4000 RTP/AVP 0 98\r\na=rtpmap:98 PCMA/8000\r\n";
	(void)state;

	dtmf.pt = 101;
	cn.pt = 13;
	dyn.pt = 98;
	pb_init(&p, 101, 0, 0);
	for (long i = 0; i < 10; i++)
		add(&p, i == 4 ? &dtmf : i == 5 ? &cn : &CALLER, i, T0 + (uint64_t)i * 20 * MS);
	for (long i = 0; i < 10; i++)
		add(&p, &dyn, i, T0 + (uint64_t)(i + 10) * 20 * MS);
	o.rtpmap = sdp;
	o.rtpmap_len = strlen(sdp);
	assert_int_equal(ccq_pcap_open(&cp, p.b, p.len, &o, err, sizeof(err)), 0);
	assert_int_equal(cp.counts.skipped, 2);
	assert_int_equal(cp.streams[0].skipped, 2);
	assert_int_equal(cp.streams[0].lost, 0);
	assert_int_equal(cp.nstreams, 2);
	assert_int_equal(ccq_pcap_render_mem(&cp, 2, &pcm, err, sizeof(err)), 0);
	for (long t = 0; t < 1600; t++)
		assert_int_equal(pcm[2 * t], t >= 640 && t < 960 ? 0 : g711(0, sine(t)));
	for (long t = 1600; t < 3200; t++)
		assert_int_equal(pcm[2 * t + 1], g711(8, ramp(t - 1600)));
	free(pcm);
	ccq_pcap_free(&cp);
	free(p.b);
}

/* Big-endian, nanoseconds, Ethernet, Linux cooked, IPv6, CSRC/extension/padding. */
static void test_formats(void **state)
{
	static const struct { uint32_t link; int be, ns, v6; } fm[] = {
		{ 101, 1, 0, 0 }, { 101, 0, 1, 1 }, { 12, 1, 1, 0 }, { 1, 0, 0, 0 }, { 1, 1, 1, 1 },
		{ 113, 0, 0, 1 }, { 113, 1, 0, 0 }, { 228, 0, 0, 0 }, { 229, 1, 0, 1 },
	};
	(void)state;
	for (size_t f = 0; f < sizeof(fm) / sizeof(fm[0]); f++) {
		struct pb p;
		ccq_pcap cp;
		char err[512];
		struct party c = CALLER, a = AGENT;
		if (fm[f].v6) {
			c.src = "2001:db8::10";
			a.src = "2001:db8::20";
			c.dst = a.dst = "2001:db8::1";
		}
		c.cc = 2;
		c.ext = 3;
		a.pad = 4;
		pb_init(&p, fm[f].link, fm[f].be, fm[f].ns);
		two_parties(&p, &c, &a);
		assert_int_equal(open_pb(&cp, &p, fm[f].v6 ? "[2001:db8::10]:40000"
			: "192.0.2.10:40000", fm[f].v6 ? "2001:db8::20" : "192.0.2.20", err,
			sizeof(err)), 0);
		assert_int_equal(cp.linktype, fm[f].link);
		assert_int_equal(cp.nanosec, fm[f].ns);
		assert_int_equal(cp.nstreams, 2);
		assert_string_equal(cp.notes, "");
		if (fm[f].v6)
			assert_string_equal(cp.streams[0].src, "[2001:db8::10]:40000");
		expect_stereo(&cp, &c, 0, 8000, &a, 1624, 40 * 160);
		ccq_pcap_free(&cp);
		free(p.b);
	}
}

static void test_not_audio(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	uint8_t f[300], r[200], pl[64] = { 0 };
	size_t n;
	(void)state;

	pb_init(&p, 101, 0, 0);
	/* a fragment, RTCP, STUN, a lone DTMF event: no audio at all */
	n = rtp(r, 0, 1, 1, 1, pl, 20, 0, 0, 0);
	pb_record(&p, T0, f, frame(f, 101, "192.0.2.1", 1, "192.0.2.2", 2, r, n, 1));
	r[1] = 200; /* RTCP sender report */
	pb_record(&p, T0, f, frame(f, 101, "192.0.2.1", 1, "192.0.2.2", 2, r, n, 0));
	memset(r, 0, 20); /* STUN starts with 0b00 */
	pb_record(&p, T0, f, frame(f, 101, "192.0.2.1", 1, "192.0.2.2", 2, r, 20, 0));
	n = rtp(r, 101, 1, 1, 1, pl, 4, 0, 0, 0);
	pb_record(&p, T0, f, frame(f, 101, "192.0.2.1", 1, "192.0.2.2", 2, r, n, 0));
	f[0] = 0x45;
	f[2] = 0;
	f[3] = 40;
	f[9] = 6; /* TCP */
	pb_record(&p, T0, f, 40);
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no RTP audio in the recording (5 packets: 1 not UDP, "
		"1 not RTP, 1 RTCP, 1 comfort noise or telephone events, 1 IP fragments"));
	assert_int_equal(cp.counts.fragments, 1);
	ccq_pcap_free(&cp);
	/* a fragment next to audio: a note */
	add(&p, &CALLER, 0, T0);
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	assert_non_null(strstr(cp.notes, "1 IP fragments skipped"));
	ccq_pcap_free(&cp);
	free(p.b);
}

static void test_bad_files(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	uint8_t big[80000];
	(void)state;

	pb_init(&p, 101, 0, 0);
	for (long i = 0; i < 3; i++)
		add(&p, &CALLER, i, T0 + (uint64_t)i * 20 * MS);
	/* every cut: a record boundary is a shorter file, anything else an error */
	for (size_t cut = 0; cut < p.len; cut++) {
		if (cut < 24) {
			expect_error(&p, NULL, cut, "shorter than the 24-byte header");
		} else if (cut == 24) {
			expect_error(&p, NULL, cut, "no RTP audio");
		} else if ((cut - 24) % (16 + 20 + 8 + 12 + 160) == 0) {
			assert_int_equal(ccq_pcap_open(&cp, p.b, cut, NULL, err, sizeof(err)), 0);
			ccq_pcap_free(&cp);
		} else {
			expect_error(&p, NULL, cut, "truncated pcap file");
		}
	}
	/* wrong magic, pcapng, another version, an unknown link type */
	p.b[0] ^= 0xFF;
	expect_error(&p, NULL, p.len, "not a pcap file (magic number 0x2bc3b2a1)");
	memcpy(p.b, "\x0a\x0d\x0d\x0a", 4);
	expect_error(&p, NULL, p.len, "pcapng");
	memcpy(p.b, "\xd4\xc3\xb2\xa1", 4);
	p.b[4] = 3;
	expect_error(&p, NULL, p.len, "pcap version 3");
	p.b[4] = 2;
	p.b[20] = 105; /* 802.11 */
	expect_error(&p, NULL, p.len, "unsupported pcap link type 105");
	free(p.b);
	/* a record above 64 KiB */
	pb_init(&p, 101, 0, 0);
	memset(big, 0, sizeof(big));
	pb_record(&p, T0, big, sizeof(big));
	expect_error(&p, NULL, p.len, "claims 80000 bytes: packets above 64 KiB are refused");
	free(p.b);
}

static void test_limits(void **state)
{
	struct pb p;
	struct party w = CALLER;
	struct ccq_pcap_opts o = { 0 };
	(void)state;

	/* a timestamp jump past the limit */
	pb_init(&p, 101, 0, 0);
	add(&p, &w, 0, T0);
	w.ts0 += 13u * 3600u * 8000u % 0x80000000u; /* within one 31-bit step */
	add(&p, &w, 1, T0 + 20 * MS);
	o.max_seconds = 60;
	expect_error(&p, &o, p.len, "longer than 0 h 01 min");
	free(p.b);
	/* two streams 13 hours apart */
	pb_init(&p, 101, 0, 0);
	add(&p, &CALLER, 0, T0);
	add(&p, &AGENT, 0, T0 + 13ull * 3600 * 1000 * MS);
	expect_error(&p, NULL, p.len, "longer than 12 h 00 min");
	free(p.b);
	/* too many streams */
	pb_init(&p, 101, 0, 0);
	w = CALLER;
	for (unsigned i = 0; i <= CCQ_PCAP_MAX_STREAMS; i++) {
		w.ssrc = i;
		add(&p, &w, 0, T0);
	}
	expect_error(&p, NULL, p.len, "more than 256 RTP streams");
	free(p.b);
}

static int count_sink(void *ctx, const int16_t *f, size_t n, unsigned ch)
{
	(void)f;
	(void)ch;
	*(size_t *)ctx += n;
	return *(size_t *)ctx > 4000 ? 7 : 0;
}

static void test_wav(void **state)
{
	struct pb p;
	ccq_pcap cp;
	char err[512];
	uint8_t h[44], *wav;
	size_t n = 0, wl;
	FILE *f;
	(void)state;

	assert_int_equal(ccq_wav_header(h, 8000, 2), 0);
	assert_memory_equal(h, "RIFF\x24\x7d\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00"
		"\x40\x1f\x00\x00\x00\x7d\x00\x00\x04\x00\x10\x00" "data\x00\x7d\x00\x00", 44);
	assert_int_equal(ccq_wav_header(h, 0x7FFFFFFFull, 2), -1);
	assert_int_equal(ccq_wav_header(h, 1, 3), -1);

	pb_init(&p, 101, 0, 0);
	two_parties(&p, &CALLER, &AGENT);
	assert_int_equal(open_pb(&cp, &p, NULL, NULL, err, sizeof(err)), 0);
	/* a sink that fails stops the rendering */
	assert_int_equal(ccq_pcap_render(&cp, 1, count_sink, &n, err, sizeof(err)), 7);
	assert_int_equal(n, 4096); /* one block, then it stopped */
	/* the file: header, then little-endian frames */
	f = tmpfile();
	assert_non_null(f);
	assert_int_equal(ccq_pcap_write_wav(&cp, 2, f, err, sizeof(err)), 0);
	wl = (size_t)ftell(f);
	assert_int_equal(wl, 44 + 8024 * 4);
	wav = malloc(wl);
	rewind(f);
	assert_int_equal(fread(wav, 1, wl, f), wl);
	fclose(f);
	assert_memory_equal(wav, "RIFF", 4);
	for (long t = 0; t < 8000; t += 333) {
		int16_t l = (int16_t)(wav[44 + 4 * t] | wav[45 + 4 * t] << 8);
		assert_int_equal(l, g711(0, sine(t)));
	}
	free(wav);
	ccq_pcap_free(&cp);
	free(p.b);
}

/* ---- a real recording ---------------------------------------------------------------- */

static uint8_t *slurp(const char *name, size_t *len)
{
	char path[512];
	FILE *f;
	uint8_t *b;
	long n;
	snprintf(path, sizeof(path), "%s/pcap/%s", TEST_DATA_DIR, name);
	f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	b[n] = 0;
	*len = (size_t)n;
	return b;
}

/*
 * rtpengine 10.5 (--recording-method=pcap), driven over its ng port: A
 * (127.0.0.1:47705, SSRC 0x11111111) sent 50 packets of a 400 Hz sine at
 * amplitude 8000 (seq 100..., ts 1000...; packet 10 not sent); B
 * (127.0.0.1:59151, SSRC 0x22222222) 30 packets of 1000 Hz from 300 ms on
 * (seq 65530..., ts 0xFFFFF9BF...: both wrap). The offer SDP that rtpengine
 * wrote in its metadata has port 34000 (where B sent), the answer 34010
 * (where A sent).
 */
static int16_t real_a(long n)
{
	return (int16_t)(8000 * sin(2 * M_PI * 400.0 * (double)n / 8000.0));
}

static int16_t real_b(long n)
{
	return (int16_t)(8000 * sin(2 * M_PI * 1000.0 * (double)n / 8000.0));
}

static void test_real_rtpengine(void **state)
{
	size_t len, mlen;
	uint8_t *b = slurp("rtpengine-pcmu.pcap", &len), *meta = slurp("rtpengine-pcmu.meta", &mlen);
	ccq_pcap cp;
	char err[512];
	int16_t *pcm;
	struct ccq_pcap_opts o = { 0 };
	struct party bb = { 0 };
	(void)state;

	bb.wave = real_b;
	o.caller = "127.0.0.1:34010"; /* rtpengine's ports from the SDPs */
	o.agent = "127.0.0.1:34000";
	o.rtpmap = (const char *)meta;
	o.rtpmap_len = mlen;
	assert_int_equal(ccq_pcap_open(&cp, b, len, &o, err, sizeof(err)), 0);
	assert_int_equal(cp.linktype, 101);
	assert_int_equal(cp.nstreams, 2);
	assert_string_equal(cp.notes, "");
	assert_string_equal(cp.streams[0].src, "127.0.0.1:47705");
	assert_string_equal(cp.streams[0].dst, "127.0.0.1:34010");
	assert_int_equal(cp.streams[0].ssrc, 0x11111111);
	assert_int_equal(cp.streams[0].party, CCQ_PARTY_CALLER);
	assert_int_equal(cp.streams[0].lost, 1);
	assert_int_equal(cp.streams[1].ssrc, 0x22222222);
	assert_int_equal(cp.streams[1].party, CCQ_PARTY_AGENT);
	assert_int_equal(cp.streams[1].packets, 30);
	/* B started 300 ms after A, give or take the sender's scheduling */
	assert_true(cp.streams[1].start >= 2400 && cp.streams[1].start < 2440);
	assert_int_equal(cp.frames, 8000);
	assert_int_equal(ccq_pcap_render_mem(&cp, 2, &pcm, err, sizeof(err)), 0);
	for (long t = 0; t < 8000; t++) {
		int16_t want = t >= 1600 && t < 1760 ? 0 : g711(0, real_a(t));
		assert_int_equal(pcm[2 * t], want);
	}
	expect_channel(pcm, 1, 2, cp.frames, &bb, cp.streams[1].start, 30 * 160);
	free(pcm);
	ccq_pcap_free(&cp);
	/* the parties' own addresses work as well */
	o.caller = "127.0.0.1:59151";
	o.agent = "127.0.0.1:47705";
	assert_int_equal(ccq_pcap_open(&cp, b, len, &o, err, sizeof(err)), 0);
	assert_int_equal(cp.streams[0].party, CCQ_PARTY_AGENT);
	assert_int_equal(cp.streams[1].party, CCQ_PARTY_CALLER);
	ccq_pcap_free(&cp);
	free(b);
	free(meta);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_g711_points),
		cmocka_unit_test(test_stereo_ulaw_alaw),
		cmocka_unit_test(test_mono_clips),
		cmocka_unit_test(test_lost_packet_is_silence),
		cmocka_unit_test(test_reordered_and_duplicated),
		cmocka_unit_test(test_timestamp_wraps),
		cmocka_unit_test(test_alignment_by_capture_time),
		cmocka_unit_test(test_parties),
		cmocka_unit_test(test_other_codec_is_named),
		cmocka_unit_test(test_skipped_payloads),
		cmocka_unit_test(test_formats),
		cmocka_unit_test(test_not_audio),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_wav),
		cmocka_unit_test(test_real_rtpengine),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
