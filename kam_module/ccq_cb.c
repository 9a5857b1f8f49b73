/*
 * The callback controller; see ccq_cb.h and doc/callbacks.md.
 *
 * One leg per callback attempt: the controller is the UAC of an INVITE to
 * the agent's device, sent through the proxy itself (the routing script
 * rings the device and anchors the media in rtpengine). Its states:
 *
 *   RINGING      INVITE sent; the proxy's ring timeout ends it
 *   PROMPT       answered; rtpengine plays the prompt to the agent
 *   REFERRING    REFER sent (Refer-To: the customer, with the 'c' token)
 *   TRANSFERRING REFER accepted; waiting for the phone's NOTIFY or its call
 *   BYE          hanging up our leg
 *   WAIT_LEG     our leg is gone; waiting for the customer leg to show up
 *
 * Everything but the tm callbacks and the requests the agent's phone sends
 * to the controller runs in the "ccq async" process; those run in SIP
 * workers and report here over the internal channel. The slot table is in
 * shared memory so that workers can recognise the controller's Call-IDs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>
#include <openssl/rand.h>

#include "core/dprint.h"
#include "core/ut.h"
#include "core/locking.h"
#include "core/socket_info.h"
#include "core/mem/shm_mem.h"
#include "core/parser/parse_from.h"
#include "core/parser/parse_to.h"
#include "core/parser/parse_cseq.h"
#include "modules/tm/tm_load.h"
#include "modules/sl/sl.h"

#include "ccq_cb.h"
#include "ccq_async.h"
#include "ccq_media.h"

#define CB_SLOTS 64
#define REPLAY_SLOTS 4096
#define CB_MAGIC 0x63636263u /* "ccbc" */

enum cb_state { CB_FREE = 0, CB_RINGING, CB_PROMPT, CB_REFERRING, CB_TRANSFERRING, CB_BYE,
	CB_WAIT_LEG };

/* what a tm callback / worker event is about */
enum cb_what { W_INVITE = 1, W_REFER, W_BYE, W_NOTIFY, W_AGENT_BYE, W_CUSTOMER };

struct cb_slot {
	unsigned gen;             /* bumped on every reuse: stale events are ignored */
	int state;
	uint64_t cb, attempt, txn;
	char callid[128], ltag[40], rtag[128];
	char number[24];          /* +E164 */
	char ctoken[CCQ_TOKEN_MAX];
	dlg_t *dlg;               /* tm's dialog, shm */
	int customer_seen;
	int answered;
	long long deadline;       /* monotonic ms (async process) */
	long long referred_at;
};

struct cb_used {
	char nonce[17];
	char callid[96];
	uint64_t exp;
};

struct cb_shared {
	gen_lock_t lock;
	struct cb_slot s[CB_SLOTS];
	struct cb_used used[REPLAY_SLOTS];
};

struct cb_ev {
	uint32_t magic;
	int slot;
	unsigned gen;
	int what;
	int code;
	uint64_t txn;             /* W_CUSTOMER: by TXN */
};

static struct cb_shared *g_sh;
static struct tm_binds tmb;
static sl_api_t slb;
static char g_secret[256];
static size_t g_secret_len;
static char g_prompt[512];
static char g_proxy[128];     /* host:port */

int ccq_cb_enabled(void)
{
	return g_secret_len > 0;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t wall_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

int ccq_cb_init(const char *secret, const char *secret_file, const char *prompt,
		const char *proxy)
{
	if (secret && secret[0]) {
		snprintf(g_secret, sizeof(g_secret), "%s", secret);
	} else if (secret_file && secret_file[0]) {
		FILE *f = fopen(secret_file, "r");
		size_t n;
		if (!f && errno == ENOENT) {
			/* an install that does not use callbacks */
			LM_WARN("callback_secret_file %s does not exist: callbacks are off\n",
				secret_file);
			secret_file = NULL;
		} else if (!f) {
			LM_ERR("callback_secret_file %s: %s\n", secret_file, strerror(errno));
			return -1;
		}
		n = f ? fread(g_secret, 1, sizeof(g_secret) - 1, f) : 0;
		if (f)
			fclose(f);
		g_secret[n] = '\0';
		/* a trailing newline is not part of the secret */
		while (n > 0 && (g_secret[n - 1] == '\n' || g_secret[n - 1] == '\r'
				|| g_secret[n - 1] == ' '))
			g_secret[--n] = '\0';
	}
	g_secret_len = strlen(g_secret);
	if (!g_secret_len) {
		LM_INFO("no callback_secret: callbacks are off on this proxy, and every"
			" X-CCQ-Callback marker is refused\n");
	} else if (g_secret_len < 16) {
		LM_ERR("callback secret is too short (%zu bytes; use at least 16)\n", g_secret_len);
		return -1;
	}
	snprintf(g_prompt, sizeof(g_prompt), "%s", prompt ? prompt : "");
	if (g_prompt[0] && access(g_prompt, R_OK) != 0) {
		LM_WARN("callback prompt %s is not readable (%s): callbacks connect without it\n",
			g_prompt, strerror(errno));
		g_prompt[0] = '\0';
	}
	snprintf(g_proxy, sizeof(g_proxy), "%s", proxy ? proxy : "");
	if (load_tm_api(&tmb) < 0)
		return -1;
	if (sl_load_api(&slb) < 0) {
		LM_ERR("the ccq module needs the sl module: load sl.so first\n");
		return -1;
	}
	g_sh = shm_malloc(sizeof(*g_sh));
	if (!g_sh) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(g_sh, 0, sizeof(*g_sh));
	return lock_init(&g_sh->lock) ? 0 : -1;
}

/* ---- tokens (workers) ----------------------------------------------------- */

static unsigned hash_s(const char *s)
{
	unsigned h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

int ccq_cb_token_check(const char *tok, size_t len, char purpose, const char *callid,
		struct ccq_token *t, const char **why)
{
	uint64_t now = (uint64_t)time(NULL);
	int rc, i, free_i = -1;
	unsigned h;

	if (!ccq_cb_enabled()) {
		*why = "no callback secret configured on this proxy";
		return -1;
	}
	rc = ccq_token_verify(g_secret, g_secret_len, tok, len, now, t);
	if (rc != CCQ_TOKEN_OK) {
		*why = ccq_token_strerror(rc);
		return -1;
	}
	if (t->purpose != purpose) {
		*why = "token for the other leg";
		return -1;
	}
	/* single use: the first Call-ID that shows a nonce owns it until expiry */
	h = hash_s(t->nonce) % REPLAY_SLOTS;
	lock_get(&g_sh->lock);
	for (i = 0; i < 64; i++) {
		struct cb_used *u = &g_sh->used[(h + i) % REPLAY_SLOTS];
		if (u->nonce[0] && u->exp >= now && strcmp(u->nonce, t->nonce) == 0) {
			int same = strncmp(u->callid, callid, sizeof(u->callid) - 1) == 0;
			lock_release(&g_sh->lock);
			if (same)
				return 0; /* a retransmission, or the same request again */
			*why = "replayed (already used by another call)";
			return -1;
		}
		if (free_i < 0 && (!u->nonce[0] || u->exp < now))
			free_i = (int)((h + i) % REPLAY_SLOTS);
	}
	if (free_i < 0) {
		lock_release(&g_sh->lock);
		*why = "too many tokens in use (replay table full)";
		return -1;
	}
	snprintf(g_sh->used[free_i].nonce, sizeof(g_sh->used[0].nonce), "%s", t->nonce);
	snprintf(g_sh->used[free_i].callid, sizeof(g_sh->used[0].callid), "%s", callid);
	g_sh->used[free_i].exp = t->exp;
	lock_release(&g_sh->lock);
	return 0;
}

/* ---- worker side ---------------------------------------------------------- */

static void ev_send(int slot, unsigned gen, int what, int code, uint64_t txn)
{
	struct cb_ev ev;
	memset(&ev, 0, sizeof(ev));
	ev.magic = CB_MAGIC;
	ev.slot = slot;
	ev.gen = gen;
	ev.what = what;
	ev.code = code;
	ev.txn = txn;
	ccq_async_cb_send(&ev, sizeof(ev));
}

/* the slot of a Call-ID (lock held); -1 none */
static int slot_by_callid(const char *callid, size_t n)
{
	for (int i = 0; i < CB_SLOTS; i++)
		if (g_sh->s[i].state != CB_FREE && strlen(g_sh->s[i].callid) == n
				&& memcmp(g_sh->s[i].callid, callid, n) == 0)
			return i;
	return -1;
}

int ccq_cb_is_agent_leg(const char *callid)
{
	int i;
	if (!g_sh)
		return 0;
	lock_get(&g_sh->lock);
	i = slot_by_callid(callid, strlen(callid));
	lock_release(&g_sh->lock);
	return i >= 0;
}

void ccq_cb_customer_leg(uint64_t txn)
{
	if (!g_sh)
		return;
	ev_send(-1, 0, W_CUSTOMER, 0, txn);
}

/* tm callback param: slot, what and generation in one value (no allocation
 * whose lifetime would depend on the transaction's) */
static void *cbp_make(int slot, int what, unsigned gen)
{
	return (void *)(uintptr_t)(((uintptr_t)gen << 16) | ((uintptr_t)what << 8) | (uintptr_t)slot);
}

static void on_tm_final(struct cell *t, int type, struct tmcb_params *ps)
{
	uintptr_t v = (uintptr_t)*ps->param;
	int slot = (int)(v & 0xff), what = (int)((v >> 8) & 0xff);
	unsigned gen = (unsigned)(v >> 16);
	struct sip_msg *rpl = ps->rpl;

	(void)t;
	(void)type;
	if (slot < 0 || slot >= CB_SLOTS)
		return;
	if (what == W_INVITE && ps->code >= 200 && ps->code < 300 && rpl && rpl != FAKED_REPLY) {
		/* the dialog (to-tag, route set, the phone's Contact) for REFER and BYE */
		lock_get(&g_sh->lock);
		if (g_sh->s[slot].gen == gen && g_sh->s[slot].dlg) {
			struct to_body *tb;
			if (tmb.dlg_response_uac(g_sh->s[slot].dlg, rpl, IS_TARGET_REFRESH) < 0)
				LM_ERR("callback %llu: cannot update the dialog from the 200 OK\n",
					(unsigned long long)g_sh->s[slot].cb);
			if ((rpl->to || parse_headers(rpl, HDR_TO_F, 0) == 0) && rpl->to
					&& (tb = get_to(rpl)) && tb->tag_value.len > 0
					&& tb->tag_value.len < (int)sizeof(g_sh->s[slot].rtag)) {
				memcpy(g_sh->s[slot].rtag, tb->tag_value.s, tb->tag_value.len);
				g_sh->s[slot].rtag[tb->tag_value.len] = '\0';
			}
		}
		lock_release(&g_sh->lock);
	}
	ev_send(slot, gen, what, ps->code, 0);
}

/* "SIP/2.0 200 OK" in a NOTIFY's message/sipfrag body: the status; 0 unknown */
static int sipfrag_code(struct sip_msg *msg)
{
	str b;
	b.s = get_body(msg);
	if (!b.s)
		return 0;
	b.len = msg->len - (int)(b.s - msg->buf);
	if (b.len >= 11 && strncmp(b.s, "SIP/2.0 ", 8) == 0)
		return atoi(b.s + 8);
	return 0;
}

int ccq_cb_own_request(struct sip_msg *msg)
{
	struct to_body *fb;
	int slot, code = 0, what = 0, reply = 200;
	unsigned gen;
	str reason = str_init("OK");

	if (!g_sh || msg->first_line.type != SIP_REQUEST)
		return -1;
	if ((!msg->callid && (parse_headers(msg, HDR_CALLID_F, 0) < 0 || !msg->callid))
			|| parse_from_header(msg) < 0)
		return -1;
	fb = get_from(msg);
	lock_get(&g_sh->lock);
	slot = slot_by_callid(msg->callid->body.s, (size_t)msg->callid->body.len);
	if (slot < 0 || (fb->tag_value.len == (int)strlen(g_sh->s[slot].ltag)
			&& memcmp(fb->tag_value.s, g_sh->s[slot].ltag, fb->tag_value.len) == 0)) {
		/* not ours, or the controller's own request on its way to the phone */
		lock_release(&g_sh->lock);
		return -1;
	}
	gen = g_sh->s[slot].gen;
	lock_release(&g_sh->lock);

	switch (msg->first_line.u.request.method_value) {
	case METHOD_ACK:
		return 1;
	case METHOD_NOTIFY:
		what = W_NOTIFY;
		code = sipfrag_code(msg);
		break;
	case METHOD_BYE:
		what = W_AGENT_BYE;
		break;
	case METHOD_INVITE:
	case METHOD_UPDATE:
		/* no media changes on the controller's leg: it only carries the prompt */
		reply = 488;
		reason.s = "Not Acceptable Here";
		reason.len = strlen(reason.s);
		break;
	default:
		break;
	}
	if (slb.freply(msg, reply, &reason) < 0)
		LM_WARN("cannot answer a request sent to the callback controller\n");
	if (what)
		ev_send(slot, gen, what, code, 0);
	return 1;
}

/* ---- the async process ----------------------------------------------------- */

static void report(struct cb_slot *s, const char *event, int code, const char *detail,
		const char *call_id)
{
	ccq_enc e;
	uint64_t id = ccq_async_next_id();
	size_t n = 5 + (code ? 1 : 0) + (detail ? 1 : 0) + (call_id ? 1 : 0);

	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "callback.progress", n);
	ccq_pack_kv_uint(&e.pk, "cb", s->cb);
	ccq_pack_kv_uint(&e.pk, "attempt", s->attempt);
	ccq_pack_kv_uint(&e.pk, "txn", s->txn);
	ccq_pack_kv_str(&e.pk, "event", event);
	ccq_pack_kv_uint(&e.pk, "at_ms", wall_ms());
	if (code)
		ccq_pack_kv_uint(&e.pk, "code", (uint64_t)code);
	if (detail)
		ccq_pack_kv_str(&e.pk, "detail", detail);
	if (call_id)
		ccq_pack_kv_str(&e.pk, "call_id", call_id);
	LM_INFO("callback %llu (attempt %llu, txn %llu): %s%s%s\n", (unsigned long long)s->cb,
		(unsigned long long)s->attempt, (unsigned long long)s->txn, event,
		detail ? ": " : "", detail ? detail : "");
	ccq_async_report(&e, id);
}

static void report_dial_failed(uint64_t cb, uint64_t attempt, uint64_t txn, const char *why)
{
	struct cb_slot tmp;
	memset(&tmp, 0, sizeof(tmp));
	tmp.cb = cb;
	tmp.attempt = attempt;
	tmp.txn = txn;
	report(&tmp, "dial_failed", 0, why, NULL);
}

static void slot_free(int i)
{
	dlg_t *d;
	lock_get(&g_sh->lock);
	d = g_sh->s[i].dlg;
	g_sh->s[i].dlg = NULL;
	g_sh->s[i].state = CB_FREE;
	g_sh->s[i].gen++;
	lock_release(&g_sh->lock);
	if (d)
		tmb.free_dlg(d);
}

static void set_state(int i, int st, long long deadline)
{
	lock_get(&g_sh->lock);
	g_sh->s[i].state = st;
	lock_release(&g_sh->lock);
	g_sh->s[i].deadline = deadline;
}

static void hex_random(char *out, size_t nbytes)
{
	unsigned char r[32];
	static const char hx[] = "0123456789abcdef";
	if (nbytes > sizeof(r))
		nbytes = sizeof(r);
	if (RAND_bytes(r, (int)nbytes) != 1) {
		/* never fatal: Call-IDs and tags need uniqueness, not secrecy */
		for (size_t i = 0; i < nbytes; i++)
			r[i] = (unsigned char)(rand() ^ (mono_ms() >> (i % 8)));
	}
	for (size_t i = 0; i < nbytes; i++) {
		out[2 * i] = hx[r[i] >> 4];
		out[2 * i + 1] = hx[r[i] & 15];
	}
	out[2 * nbytes] = '\0';
}

/* "host:port" of the proxy: the module parameter, or the first UDP socket */
static const char *proxy_addr(void)
{
	if (!g_proxy[0]) {
		struct socket_info *si = get_first_socket();
		if (si && si->address.af == AF_INET6)
			snprintf(g_proxy, sizeof(g_proxy), "[%.*s]:%d", si->address_str.len,
				si->address_str.s, (int)si->port_no);
		else if (si)
			snprintf(g_proxy, sizeof(g_proxy), "%.*s:%d", si->address_str.len,
				si->address_str.s, (int)si->port_no);
	}
	return g_proxy;
}

static int send_within(int i, const char *method, const char *hdrs, int what)
{
	struct cb_slot *s = &g_sh->s[i];
	str m, h;
	uac_req_t r;

	m.s = (char *)method;
	m.len = strlen(method);
	h.s = (char *)hdrs;
	h.len = hdrs ? strlen(hdrs) : 0;
	set_uac_req(&r, &m, hdrs ? &h : NULL, NULL, s->dlg, TMCB_LOCAL_COMPLETED, on_tm_final,
		cbp_make(i, what, s->gen));
	return tmb.t_request_within(&r) < 0 ? -1 : 0;
}

static void send_bye(int i)
{
	if (send_within(i, "BYE", NULL, W_BYE) < 0) {
		LM_ERR("callback %llu: cannot send BYE to the agent's phone\n",
			(unsigned long long)g_sh->s[i].cb);
		ccq_media_delete_call(g_sh->s[i].callid);
		set_state(i, CB_BYE, 0); /* tick() finishes it */
		return;
	}
	set_state(i, CB_BYE, mono_ms() + 10000);
}

static void send_refer(int i)
{
	struct cb_slot *s = &g_sh->s[i];
	char hdrs[700];
	const char *px = proxy_addr();

	snprintf(hdrs, sizeof(hdrs), "Refer-To: <sip:%s@%s;ccqcb=%s>\r\n"
		"Referred-By: <sip:callback@%s>\r\nContact: <sip:callback@%s>\r\n",
		s->number, px, s->ctoken, px, px);
	if (send_within(i, "REFER", hdrs, W_REFER) < 0) {
		report(s, "refer_failed", 500, "cannot send the REFER", NULL);
		send_bye(i);
		return;
	}
	set_state(i, CB_REFERRING, mono_ms() + 10000);
}

static void start_prompt(int i)
{
	struct cb_slot *s = &g_sh->s[i];
	char why[160], detail[200];
	long ms = 0;

	if (!g_prompt[0]) {
		report(s, "prompt", 0, "skipped: no prompt file configured", NULL);
		set_state(i, CB_PROMPT, mono_ms());
		return;
	}
	if (!s->rtag[0]) {
		report(s, "prompt", 0, "skipped: the agent's answer has no tag", NULL);
		set_state(i, CB_PROMPT, mono_ms());
		return;
	}
	if (ccq_media_play_to(s->callid, s->rtag, g_prompt, &ms, why, sizeof(why)) < 0) {
		snprintf(detail, sizeof(detail), "skipped: %s", why);
		report(s, "prompt", 0, detail, NULL);
		set_state(i, CB_PROMPT, mono_ms());
		return;
	}
	if (ms <= 0)
		ms = 4500; /* rtpengine did not say: about the length of the shipped prompt */
	snprintf(detail, sizeof(detail), "played %ld", ms);
	report(s, "prompt", 0, detail, NULL);
	/* a little slack after the last packet before the phone is moved on */
	set_state(i, CB_PROMPT, mono_ms() + ms + 300);
}

void ccq_cb_dial(const msgpack_object *body)
{
	uint64_t cb = 0, attempt = 0, txn = 0, ring = 30;
	char device[200] = "", number[24] = "", display[120] = "", atok[CCQ_TOKEN_MAX] = "",
		ctok[CCQ_TOKEN_MAX] = "";
	char callid[128], ltag[40], host[64], from_uri[200], hdrs[1024], sdp[512], ip[64];
	const char *px, *colon;
	str s_callid, s_ltag, s_from, s_to, s_invite = str_init("INVITE"), s_hdrs, s_body;
	str s_ldn, s_rdn = { "", 0 };
	dlg_t *dlg = NULL;
	uac_req_t r;
	int i, free_i = -1;
	unsigned gen;

	ccq_map_uint(body, "cb", &cb);
	ccq_map_uint(body, "attempt", &attempt);
	ccq_map_uint(body, "txn", &txn);
	ccq_map_uint(body, "ring_timeout", &ring);
	ccq_map_strcpy(body, "device", device, sizeof(device));
	ccq_map_strcpy(body, "number", number, sizeof(number));
	ccq_map_strcpy(body, "display", display, sizeof(display));
	ccq_map_strcpy(body, "agent_token", atok, sizeof(atok));
	ccq_map_strcpy(body, "customer_token", ctok, sizeof(ctok));
	if (!cb || !attempt || !txn || strncmp(device, "sip:", 4) != 0 || number[0] != '+'
			|| !atok[0] || !ctok[0]) {
		LM_ERR("callback.dial from queued without cb, attempt, txn, device, number or tokens\n");
		if (cb && attempt && txn)
			report_dial_failed(cb, attempt, txn, "incomplete dial request");
		return;
	}
	if (!ccq_cb_enabled()) {
		report_dial_failed(cb, attempt, txn, "callbacks are not configured on the proxy"
			" (callback_secret)");
		return;
	}
	if (ring < 5 || ring > 300)
		ring = 30;
	lock_get(&g_sh->lock);
	for (i = 0; i < CB_SLOTS; i++) {
		if (g_sh->s[i].state != CB_FREE && g_sh->s[i].cb == cb && g_sh->s[i].attempt == attempt)
			break;
		if (g_sh->s[i].state == CB_FREE && free_i < 0)
			free_i = i;
	}
	if (i < CB_SLOTS) {
		lock_release(&g_sh->lock);
		LM_NOTICE("callback %llu attempt %llu is already in progress\n",
			(unsigned long long)cb, (unsigned long long)attempt);
		return;
	}
	if (free_i < 0) {
		lock_release(&g_sh->lock);
		report_dial_failed(cb, attempt, txn, "too many callbacks in progress on this proxy");
		return;
	}
	i = free_i;
	/* claim the slot before anything is sent: a fast answer finds it */
	gen = ++g_sh->s[i].gen;
	g_sh->s[i].state = CB_RINGING;
	lock_release(&g_sh->lock);

	px = proxy_addr();
	colon = strrchr(px, ':');
	snprintf(ip, sizeof(ip), "%.*s", colon ? (int)(colon - px) : (int)strlen(px), px);
	snprintf(host, sizeof(host), "%s", px);
	hex_random(ltag, 8);
	{
		char rnd[24];
		hex_random(rnd, 8);
		snprintf(callid, sizeof(callid), "ccqcb-%llu-%llu-%s@%s", (unsigned long long)cb,
			(unsigned long long)attempt, rnd, ip);
	}
	snprintf(from_uri, sizeof(from_uri), "sip:callback@%s", host);
	{
		struct cb_slot *s = &g_sh->s[i];
		s->cb = cb;
		s->attempt = attempt;
		s->txn = txn;
		snprintf(s->callid, sizeof(s->callid), "%s", callid);
		snprintf(s->ltag, sizeof(s->ltag), "%s", ltag);
		s->rtag[0] = '\0';
		snprintf(s->number, sizeof(s->number), "%s", number);
		snprintf(s->ctoken, sizeof(s->ctoken), "%s", ctok);
		s->customer_seen = 0;
		s->answered = 0;
		s->referred_at = 0;
		s->deadline = mono_ms() + (long long)(ring + 15) * 1000;
	}

	s_callid.s = callid;
	s_callid.len = strlen(callid);
	s_ltag.s = ltag;
	s_ltag.len = strlen(ltag);
	s_from.s = from_uri;
	s_from.len = strlen(from_uri);
	s_to.s = device;
	s_to.len = strlen(device);
	if (tmb.new_dlg_uac(&s_callid, &s_ltag, 1, &s_from, &s_to, &dlg) < 0 || !dlg) {
		report_dial_failed(cb, attempt, txn, "cannot create the dialog");
		slot_free(i);
		return;
	}
	/* through the proxy itself: the script rings the device and anchors media */
	{
		char nh[160];
		int n = snprintf(nh, sizeof(nh), "sip:%s", host);
		dlg->dst_uri.s = shm_malloc(n + 1);
		if (!dlg->dst_uri.s) {
			tmb.free_dlg(dlg);
			report_dial_failed(cb, attempt, txn, "out of shared memory");
			slot_free(i);
			return;
		}
		memcpy(dlg->dst_uri.s, nh, n + 1);
		dlg->dst_uri.len = n;
		tmb.calculate_hooks(dlg);
	}
	if (display[0]) {
		s_ldn.s = display;
		s_ldn.len = strlen(display);
		tmb.dlg_add_extra(dlg, &s_ldn, &s_rdn);
	}
	lock_get(&g_sh->lock);
	g_sh->s[i].dlg = dlg;
	lock_release(&g_sh->lock);

	/* a placeholder offer: rtpengine replaces it with its own address, and
	 * the prompt is played from there; nothing is sent to port 9 (discard) */
	snprintf(sdp, sizeof(sdp), "v=0\r\no=ccq 1 1 IN IP4 %s\r\ns=ccq callback\r\nc=IN IP4 %s\r\n"
		"t=0 0\r\nm=audio 9 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
		"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n", ip, ip);
	snprintf(hdrs, sizeof(hdrs), "Contact: <sip:callback@%s>\r\nX-CCQ-Callback: %s\r\n"
		"X-CCQ-Ring-Timeout: %llu\r\nContent-Type: application/sdp\r\n", host, atok,
		(unsigned long long)ring);
	s_hdrs.s = hdrs;
	s_hdrs.len = strlen(hdrs);
	s_body.s = sdp;
	s_body.len = strlen(sdp);
	set_uac_req(&r, &s_invite, &s_hdrs, &s_body, dlg, TMCB_LOCAL_COMPLETED, on_tm_final,
		cbp_make(i, W_INVITE, gen));
	if (tmb.t_uac(&r) < 0) {
		report_dial_failed(cb, attempt, txn, "cannot send the INVITE to the agent's device");
		slot_free(i);
		return;
	}
	report(&g_sh->s[i], "agent_ringing", 0, NULL, callid);
}

/*
 * Our leg to the agent is gone (our BYE answered or timed out, or the phone
 * hung up after the transfer): done; then wait for the customer leg until
 * 20 s after the 202, or fail the attempt if that time has passed.
 */
static void leg_gone(int i, long long now)
{
	struct cb_slot *s = &g_sh->s[i];

	report(s, "done", 0, NULL, NULL);
	if (s->customer_seen || !s->referred_at) {
		slot_free(i);
	} else if (s->referred_at + 20000 > now) {
		set_state(i, CB_WAIT_LEG, s->referred_at + 20000);
	} else {
		report(s, "transfer_timeout", 0, NULL, NULL);
		slot_free(i);
	}
}

static int slot_by_txn(uint64_t txn)
{
	for (int i = 0; i < CB_SLOTS; i++)
		if (g_sh->s[i].state != CB_FREE && g_sh->s[i].txn == txn)
			return i;
	return -1;
}

void ccq_cb_on_chan(const void *p, size_t n)
{
	struct cb_ev ev;
	struct cb_slot *s;
	int i;

	if (n != sizeof(ev))
		return;
	memcpy(&ev, p, sizeof(ev));
	if (ev.magic != CB_MAGIC)
		return;
	if (ev.what == W_CUSTOMER) {
		i = slot_by_txn(ev.txn);
		if (i < 0)
			return;
	} else {
		i = ev.slot;
		if (i < 0 || i >= CB_SLOTS || g_sh->s[i].gen != ev.gen)
			return; /* about an attempt that is over */
	}
	s = &g_sh->s[i];
	switch (ev.what) {
	case W_INVITE:
		if (s->state != CB_RINGING)
			return;
		if (ev.code >= 200 && ev.code < 300) {
			s->answered = 1;
			report(s, "agent_answered", 0, NULL, NULL);
			start_prompt(i);
		} else {
			report(s, "agent_failed", ev.code ? ev.code : 408, NULL, NULL);
			slot_free(i);
		}
		return;
	case W_REFER:
		if (s->state != CB_REFERRING)
			return;
		if (ev.code >= 200 && ev.code < 300) {
			s->referred_at = mono_ms();
			report(s, "referred", 0, NULL, NULL);
			if (s->customer_seen)
				send_bye(i);
			else
				set_state(i, CB_TRANSFERRING, mono_ms() + 4000);
		} else {
			report(s, "refer_failed", ev.code ? ev.code : 408, NULL, NULL);
			send_bye(i);
		}
		return;
	case W_NOTIFY:
		if (s->state == CB_TRANSFERRING)
			send_bye(i);
		return;
	case W_CUSTOMER:
		s->customer_seen = 1;
		if (s->state == CB_TRANSFERRING)
			send_bye(i);
		else if (s->state == CB_WAIT_LEG)
			slot_free(i);
		return;
	case W_BYE:
		if (s->state != CB_BYE)
			return;
		leg_gone(i, mono_ms());
		return;
	case W_AGENT_BYE:
		if (s->state == CB_PROMPT || s->state == CB_REFERRING) {
			/* the agent hung up before the phone was moved to the customer */
			report(s, "agent_hangup", 0, NULL, NULL);
			ccq_media_delete_call(s->callid);
			slot_free(i);
		} else if (s->state == CB_TRANSFERRING || s->state == CB_BYE) {
			/* the phone left our leg itself after starting the new call */
			ccq_media_delete_call(s->callid);
			leg_gone(i, mono_ms());
		}
		return;
	}
}

void ccq_cb_tick(void)
{
	long long now;

	if (!g_sh)
		return;
	now = mono_ms();
	for (int i = 0; i < CB_SLOTS; i++) {
		struct cb_slot *s = &g_sh->s[i];
		if (s->state == CB_FREE || s->deadline > now)
			continue;
		switch (s->state) {
		case CB_RINGING:
			/* the proxy's ring timeout should have ended it already */
			report(s, "agent_failed", 408, NULL, NULL);
			slot_free(i);
			break;
		case CB_PROMPT:
			send_refer(i);
			break;
		case CB_REFERRING:
			report(s, "refer_failed", 408, NULL, NULL);
			send_bye(i);
			break;
		case CB_TRANSFERRING:
			send_bye(i);
			break;
		case CB_BYE:
			leg_gone(i, now);
			break;
		case CB_WAIT_LEG:
			report(s, "transfer_timeout", 0, NULL, NULL);
			slot_free(i);
			break;
		}
	}
}

void ccq_cb_on_connect(void)
{
	ccq_enc e;
	char node[160], hn[100] = "";

	if (!ccq_cb_enabled())
		return;
	gethostname(hn, sizeof(hn) - 1);
	snprintf(node, sizeof(node), "%s/%s/%d", hn, proxy_addr(), (int)getpid());
	ccq_enc_init(&e);
	ccq_enc_request(&e, ccq_async_next_id(), "callback.attach", 1);
	ccq_pack_kv_str(&e.pk, "node", node);
	ccq_async_send_now(&e);
}

int ccq_cb_active(void)
{
	int n = 0;
	if (!g_sh)
		return 0;
	lock_get(&g_sh->lock);
	for (int i = 0; i < CB_SLOTS; i++)
		if (g_sh->s[i].state != CB_FREE)
			n++;
	lock_release(&g_sh->lock);
	return n;
}
