/*
 * Hold music for callers waiting in an inbox queue, through rtpengine's ng
 * control protocol (bencode over UDP).
 *
 * A waiting call has no callee yet, so the module plays the callee itself:
 * it offers the caller's SDP to rtpengine, answers with a placeholder SDP
 * under its own to-tag, sends the caller a 183 Session Progress carrying
 * rtpengine's SDP (early media), and asks rtpengine to play the hold music
 * to the caller. When an agent is found the music stops and the call is
 * offered again to the agent's devices as usual; the agent's 200 OK (another
 * to-tag) becomes the real answer.
 *
 * The requests are short (one UDP round trip each, bounded by
 * CCQ_NG_TIMEOUT_MS) and only made for calls that are being queued.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "core/dprint.h"
#include "core/mem/shm_mem.h"
#include "core/parser/msg_parser.h"
#include "core/parser/parse_from.h"
#include "modules/tm/tm_load.h"

#include "ccq_media.h"
#include "ccq_client.h"

#define CCQ_NG_TIMEOUT_MS 500
#define HOLD_TAG "ccq-hold"

static struct tm_binds tmb;
static char g_ng_addr[128];
static char g_hold_file[512];
static int g_fd = -1;
static unsigned g_cookie;

/* Calls on hold, by Call-ID hash, in shared memory: a call's ccq_hold() and
 * its ccq_unhold() run in resumed routes, which may be in different ccq
 * resume processes (ccq_async.h). Slots are claimed and freed with atomic
 * compare-and-swap; one call's hold and unhold never run at the same time
 * (tm continues a transaction in one process at a time). */
#define HELD_MAX 4096
static uint64_t *g_held;

static uint64_t hash_callid(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h ? h : 1;
}

static void held_set(const char *callid, int on)
{
	uint64_t h = hash_callid(callid);
	if (!g_held)
		return;
	for (int i = 0; i < HELD_MAX; i++) {
		if (__atomic_load_n(&g_held[i], __ATOMIC_ACQUIRE) == h) {
			if (!on)
				__atomic_store_n(&g_held[i], 0, __ATOMIC_RELEASE);
			return;
		}
	}
	if (!on)
		return;
	for (int i = 0; i < HELD_MAX; i++) {
		uint64_t zero = 0;
		if (__atomic_compare_exchange_n(&g_held[i], &zero, h, 0, __ATOMIC_ACQ_REL,
				__ATOMIC_ACQUIRE))
			return;
	}
}

static int held(const char *callid)
{
	uint64_t h = hash_callid(callid);
	if (!g_held)
		return 0;
	for (int i = 0; i < HELD_MAX; i++)
		if (__atomic_load_n(&g_held[i], __ATOMIC_ACQUIRE) == h)
			return 1;
	return 0;
}

int ccq_media_init(const char *ng_addr, const char *hold_file)
{
	snprintf(g_ng_addr, sizeof(g_ng_addr), "%s", ng_addr ? ng_addr : "");
	snprintf(g_hold_file, sizeof(g_hold_file), "%s", hold_file ? hold_file : "");
	if (!g_ng_addr[0])
		return 0;
	if (load_tm_api(&tmb) < 0)
		return -1;
	if (!(g_held = shm_malloc(HELD_MAX * sizeof(*g_held)))) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(g_held, 0, HELD_MAX * sizeof(*g_held));
	if (g_hold_file[0] && access(g_hold_file, R_OK) != 0) {
		/* queued callers then get a plain 182 without media */
		LM_WARN("hold music file %s is not readable (%s): no hold music; make one with "
			"e.g. sox -n -r 8000 -c 1 -b 16 %s synth 20 sine 440 vol 0.2\n", g_hold_file,
			strerror(errno), g_hold_file);
		g_hold_file[0] = '\0';
	}
	return 0;
}

int ccq_media_enabled(void)
{
	return g_ng_addr[0] && g_hold_file[0];
}

/* ---- bencode ------------------------------------------------------------- */

struct bbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void b_raw(struct bbuf *b, const char *s, size_t n)
{
	if (b->err || b->len + n > b->cap) {
		b->err = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void b_str(struct bbuf *b, const char *s, size_t n)
{
	char hdr[24];
	int h = snprintf(hdr, sizeof(hdr), "%zu:", n);
	b_raw(b, hdr, (size_t)h);
	b_raw(b, s, n);
}

static void b_cstr(struct bbuf *b, const char *s)
{
	b_str(b, s, strlen(s));
}

static void b_kv(struct bbuf *b, const char *k, const char *v, size_t vn)
{
	b_cstr(b, k);
	b_str(b, v, vn);
}

/*
 * Find key in the top-level dictionary of a bencoded reply and return its
 * string value (not NUL-terminated). Lists/dicts/integers are skipped.
 */
static int b_skip(const char *p, const char *end, const char **next);

static int b_skip_str(const char *p, const char *end, const char **next, const char **s, size_t *n)
{
	size_t len = 0;
	while (p < end && *p >= '0' && *p <= '9') {
		len = len * 10 + (size_t)(*p - '0');
		if (len > (size_t)(end - p))
			return -1;
		p++;
	}
	if (p >= end || *p != ':' || (size_t)(end - p - 1) < len)
		return -1;
	p++;
	if (s)
		*s = p;
	if (n)
		*n = len;
	*next = p + len;
	return 0;
}

static int b_skip(const char *p, const char *end, const char **next)
{
	if (p >= end)
		return -1;
	if (*p == 'i') {
		const char *e = memchr(p, 'e', (size_t)(end - p));
		if (!e)
			return -1;
		*next = e + 1;
		return 0;
	}
	if (*p == 'l' || *p == 'd') {
		p++;
		while (p < end && *p != 'e')
			if (b_skip(p, end, &p) < 0)
				return -1;
		if (p >= end)
			return -1;
		*next = p + 1;
		return 0;
	}
	return b_skip_str(p, end, next, NULL, NULL);
}

/* The raw value of key in the top-level dictionary (any type); -1 if absent. */
static int b_value(const char *p, const char *end, const char *key, const char **val)
{
	size_t kl = strlen(key);
	if (p >= end || *p != 'd')
		return -1;
	p++;
	while (p < end && *p != 'e') {
		const char *k, *v;
		size_t kn;
		if (b_skip_str(p, end, &p, &k, &kn) < 0)
			return -1;
		v = p;
		if (b_skip(p, end, &p) < 0)
			return -1;
		if (kn == kl && memcmp(k, key, kl) == 0) {
			*val = v;
			return 0;
		}
	}
	return -1;
}

static int b_find(const char *p, const char *end, const char *key, const char **v, size_t *vn)
{
	const char *val;
	if (b_value(p, end, key, &val) < 0)
		return -1;
	return b_skip_str(val, end, &val, v, vn);
}

/* ---- the ng exchange ------------------------------------------------------ */

static int ng_open(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char err[200];
	const char *a = g_ng_addr;

	if (g_fd >= 0)
		return 0;
	if (strncmp(a, "udp:", 4) == 0)
		a += 4;
	if (ccq_addr_parse(a, &ss, &sl, err, sizeof(err)) < 0) {
		LM_ERR("rtpengine_ng address '%s': %s\n", g_ng_addr, err);
		return -1;
	}
	g_fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (g_fd < 0 || connect(g_fd, (struct sockaddr *)&ss, sl) < 0) {
		LM_ERR("rtpengine_ng socket: %s\n", strerror(errno));
		if (g_fd >= 0)
			close(g_fd);
		g_fd = -1;
		return -1;
	}
	return 0;
}

/* Send one command (a bencoded dict in b) and wait for its answer. */
static int ng_call(struct bbuf *cmd, char *reply, size_t rsize, size_t *rlen)
{
	char msg[16384], ck[32];
	int cl, n;
	struct pollfd pfd;
	struct timespec t0, t1;

	if (cmd->err || ng_open() < 0)
		return -1;
	cl = snprintf(ck, sizeof(ck), "%d_%u ", (int)getpid(), ++g_cookie);
	if ((size_t)cl + cmd->len > sizeof(msg))
		return -1;
	memcpy(msg, ck, cl);
	memcpy(msg + cl, cmd->p, cmd->len);
	if (send(g_fd, msg, cl + cmd->len, 0) < 0) {
		LM_WARN("rtpengine ng send: %s\n", strerror(errno));
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		int left;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		left = CCQ_NG_TIMEOUT_MS - (int)((t1.tv_sec - t0.tv_sec) * 1000
			+ (t1.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0) {
			LM_WARN("rtpengine did not answer within %d ms\n", CCQ_NG_TIMEOUT_MS);
			return -1;
		}
		pfd.fd = g_fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, left) <= 0)
			continue;
		n = (int)recv(g_fd, reply, rsize, 0);
		if (n <= cl || memcmp(reply, ck, cl) != 0)
			continue; /* a late answer to an earlier cookie */
		memmove(reply, reply + cl, (size_t)(n - cl));
		*rlen = (size_t)(n - cl);
		return 0;
	}
}

static int ng_ok(const char *r, size_t n, const char *what)
{
	const char *v;
	size_t vn;
	if (b_find(r, r + n, "result", &v, &vn) < 0 || vn != 2 || memcmp(v, "ok", 2) != 0) {
		const char *why = "?";
		size_t wn = 1;
		b_find(r, r + n, "error-reason", &why, &wn);
		LM_WARN("rtpengine refused %s: %.*s\n", what, (int)wn, why);
		return -1;
	}
	return 0;
}

/* The caller's m=audio payload types, for a placeholder answer that accepts them. */
static void payload_types(const char *sdp, size_t n, char *out, size_t size)
{
	const char *m = NULL;
	for (size_t i = 0; i + 8 <= n; i++)
		if ((i == 0 || sdp[i - 1] == '\n') && memcmp(sdp + i, "m=audio ", 8) == 0) {
			m = sdp + i + 8;
			break;
		}
	snprintf(out, size, "0 8");
	if (m) {
		/* skip port and protocol */
		const char *e = memchr(m, '\n', n - (size_t)(m - sdp));
		const char *p = m;
		int field = 0;
		if (!e)
			e = sdp + n;
		while (p < e && field < 2) {
			if (*p == ' ')
				field++;
			p++;
		}
		if (p < e) {
			size_t l = (size_t)(e - p);
			while (l > 0 && (p[l - 1] == '\r' || p[l - 1] == ' '))
				l--;
			if (l > 0 && l < size)
				snprintf(out, size, "%.*s", (int)l, p);
		}
	}
}

int ccq_media_hold(struct sip_msg *msg)
{
	struct bbuf b;
	char cbuf[16384], reply[16384], fake[512], pts[128], callid[256], ftag[128];
	const char *sdp, *asdp;
	size_t sdplen, rlen, alen;
	struct to_body *fb;
	struct cell *t;
	str code_txt = str_init("Queued"), body, hdr = str_init("Content-Type: application/sdp\r\n"),
		totag = str_init(HOLD_TAG);

	if (!ccq_media_enabled())
		return -1;
	sdp = get_body(msg);
	if (!sdp || !msg->callid || parse_from_header(msg) < 0)
		return -1;
	sdplen = (size_t)(msg->len - (sdp - msg->buf));
	if (sdplen == 0 || sdplen > 8000) {
		LM_WARN("call without a usable SDP offer: no hold music\n");
		return -1;
	}
	fb = get_from(msg);
	snprintf(callid, sizeof(callid), "%.*s", msg->callid->body.len, msg->callid->body.s);
	snprintf(ftag, sizeof(ftag), "%.*s", fb->tag_value.len, fb->tag_value.s);

	/* 1. offer the caller's SDP */
	b.p = cbuf; b.len = 0; b.cap = sizeof(cbuf); b.err = 0;
	b_raw(&b, "d", 1);
	b_kv(&b, "command", "offer", 5);
	b_kv(&b, "call-id", callid, strlen(callid));
	b_kv(&b, "from-tag", ftag, strlen(ftag));
	b_kv(&b, "sdp", sdp, sdplen);
	b_cstr(&b, "replace");
	b_raw(&b, "l", 1);
	b_cstr(&b, "origin");
	b_cstr(&b, "session-connection");
	b_raw(&b, "e", 1);
	b_raw(&b, "e", 1);
	if (ng_call(&b, reply, sizeof(reply), &rlen) < 0 || ng_ok(reply, rlen, "the hold offer") < 0)
		return -1;

	/* 2. answer for a placeholder callee: rtpengine returns the caller's SDP */
	payload_types(sdp, sdplen, pts, sizeof(pts));
	snprintf(fake, sizeof(fake), "v=0\r\no=ccq 1 1 IN IP4 127.0.0.1\r\ns=ccq hold\r\n"
		"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP %s\r\na=sendrecv\r\n", pts);
	b.len = 0;
	b_raw(&b, "d", 1);
	b_kv(&b, "command", "answer", 6);
	b_kv(&b, "call-id", callid, strlen(callid));
	b_kv(&b, "from-tag", ftag, strlen(ftag));
	b_kv(&b, "to-tag", HOLD_TAG, strlen(HOLD_TAG));
	b_kv(&b, "sdp", fake, strlen(fake));
	b_raw(&b, "e", 1);
	if (ng_call(&b, reply, sizeof(reply), &rlen) < 0 || ng_ok(reply, rlen, "the hold answer") < 0)
		return -1;
	if (b_find(reply, reply + rlen, "sdp", &asdp, &alen) < 0) {
		LM_WARN("rtpengine's answer has no SDP\n");
		return -1;
	}

	/* 3. early media to the caller */
	t = tmb.t_gett();
	if (t == NULL || t == T_UNDEFINED) {
		LM_WARN("no transaction for the hold reply\n");
		return -1;
	}
	body.s = (char *)asdp;
	body.len = (int)alen;
	/* t_reply_with_body() drops one reference to the transaction: take one
	 * first (t_lookup_ident does), or the suspended call would be freed */
	{
		struct cell *ref = NULL;
		if (tmb.t_lookup_ident(&ref, t->hash_index, t->label) < 0 || ref != t) {
			LM_WARN("cannot reference the transaction for the hold reply\n");
			return -1;
		}
	}
	if (tmb.t_reply_with_body(t, 183, &code_txt, &body, &hdr, &totag) < 0) {
		LM_WARN("cannot send 183 with the hold SDP\n");
		return -1;
	}

	/* 4. the music, to the caller */
	b.len = 0;
	b_raw(&b, "d", 1);
	b_kv(&b, "command", "play media", 10);
	b_kv(&b, "call-id", callid, strlen(callid));
	b_kv(&b, "from-tag", ftag, strlen(ftag));
	b_kv(&b, "file", g_hold_file, strlen(g_hold_file));
	b_cstr(&b, "repeat-times");
	b_raw(&b, "i1000e", 6);
	b_raw(&b, "e", 1);
	if (ng_call(&b, reply, sizeof(reply), &rlen) < 0 || ng_ok(reply, rlen, "play media") < 0)
		return 2; /* the caller has early media, just no music */
	held_set(callid, 1);
	return 1;
}

int ccq_media_unhold(struct sip_msg *msg)
{
	struct bbuf b;
	char cbuf[2048], reply[4096], callid[256], ftag[128];
	size_t rlen;
	struct to_body *fb;

	if (!ccq_media_enabled() || !msg->callid || parse_from_header(msg) < 0)
		return -1;
	fb = get_from(msg);
	snprintf(callid, sizeof(callid), "%.*s", msg->callid->body.len, msg->callid->body.s);
	snprintf(ftag, sizeof(ftag), "%.*s", fb->tag_value.len, fb->tag_value.s);
	if (!held(callid))
		return 1; /* never held: nothing to stop */
	held_set(callid, 0);
	b.p = cbuf; b.len = 0; b.cap = sizeof(cbuf); b.err = 0;
	b_raw(&b, "d", 1);
	b_kv(&b, "command", "stop media", 10);
	b_kv(&b, "call-id", callid, strlen(callid));
	b_kv(&b, "from-tag", ftag, strlen(ftag));
	b_raw(&b, "e", 1);
	if (ng_call(&b, reply, sizeof(reply), &rlen) < 0)
		return -1;
	return ng_ok(reply, rlen, "stop media") < 0 ? -1 : 1;
}

/* ---- the callback prompt ------------------------------------------------- */

/* An integer value of the top-level dictionary; -1 when absent. */
static int b_find_int(const char *p, const char *end, const char *key, long *out)
{
	const char *val;
	if (b_value(p, end, key, &val) < 0 || *val != 'i')
		return -1;
	*out = strtol(val + 1, NULL, 10);
	return 0;
}

/* 0 when rtpengine's reply says ok; -1 with its error-reason in why. */
static int ng_result(const char *reply, size_t rlen, const char *command, char *why,
		size_t why_size)
{
	const char *v, *r = "?";
	size_t vn, rn = 1;

	if (b_find(reply, reply + rlen, "result", &v, &vn) == 0 && vn == 2 && memcmp(v, "ok", 2) == 0)
		return 0;
	b_find(reply, reply + rlen, "error-reason", &r, &rn);
	snprintf(why, why_size, "rtpengine refused %s: %.*s", command, (int)(rn > 100 ? 100 : rn), r);
	return -1;
}

int ccq_media_ng_enabled(void)
{
	return g_ng_addr[0] != '\0';
}

int ccq_media_play_to(const char *callid, const char *tag, const char *file, long *duration_ms,
		char *why, size_t why_size)
{
	struct bbuf b;
	char cbuf[2048], reply[4096];
	size_t rlen;

	*duration_ms = 0;
	if (!ccq_media_ng_enabled()) {
		snprintf(why, why_size, "no rtpengine_ng configured");
		return -1;
	}
	b.p = cbuf; b.len = 0; b.cap = sizeof(cbuf); b.err = 0;
	b_raw(&b, "d", 1);
	b_kv(&b, "command", "play media", 10);
	b_kv(&b, "call-id", callid, strlen(callid));
	b_kv(&b, "from-tag", tag, strlen(tag));
	b_kv(&b, "file", file, strlen(file));
	b_raw(&b, "e", 1);
	if (ng_call(&b, reply, sizeof(reply), &rlen) < 0) {
		snprintf(why, why_size, "rtpengine unavailable");
		return -1;
	}
	if (ng_result(reply, rlen, "play media", why, why_size) < 0)
		return -1;
	if (b_find_int(reply, reply + rlen, "duration", duration_ms) < 0 || *duration_ms < 0)
		*duration_ms = 0;
	return 0;
}

int ccq_media_delete_call(const char *callid)
{
	char why[160];
	return ccq_media_ng_command("delete", callid, why, sizeof(why));
}

int ccq_media_ng_command(const char *command, const char *callid, char *why, size_t why_size)
{
	struct bbuf b;
	char cbuf[1024], reply[4096];
	size_t rlen;

	if (!ccq_media_ng_enabled()) {
		snprintf(why, why_size, "no rtpengine_ng configured");
		return -1;
	}
	b.p = cbuf; b.len = 0; b.cap = sizeof(cbuf); b.err = 0;
	b_raw(&b, "d", 1);
	b_kv(&b, "command", command, strlen(command));
	b_kv(&b, "call-id", callid, strlen(callid));
	b_raw(&b, "e", 1);
	if (ng_call(&b, reply, sizeof(reply), &rlen) < 0) {
		snprintf(why, why_size, "rtpengine unavailable");
		return -1;
	}
	if (ng_result(reply, rlen, command, why, why_size) < 0)
		return -1;
	snprintf(why, why_size, "ok");
	return 0;
}
