/* Loop-side state of callbacks; see callbacks.h. */
#include "callbacks.h"
#include "calls.h"
#include "ops.h"
#include "server.h"
#include "log.h"
#include "ccq_token.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A Kamailio node's connection that places callback calls for us. */
struct dialer {
	struct conn *c;
	char node[65];
	struct dialer *next;
};

static struct ev_loop *g_loop;
static struct dialer *g_dialers;
static unsigned g_rr;             /* round robin over the dialers */
static ev_timer g_tick, g_kick;
static int g_running;             /* a dispatch is on the worker */
static int g_again;               /* asked for again while it ran */
static int g_ok;                  /* the running dispatch succeeded */
static ev_tstamp g_pause_until;   /* after a failed dispatch (MySQL away) */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cb_settings g_set;  /* guarded by g_mu: the worker reads it */

static void dispatch(void);

void callbacks_settings(struct cb_settings *out)
{
	pthread_mutex_lock(&g_mu);
	*out = g_set;
	pthread_mutex_unlock(&g_mu);
}

int callbacks_ext_ok(const char *ext)
{
	size_t n = strlen(ext);
	if (n < 1 || n > 32)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((ext[i] >= '0' && ext[i] <= '9') || (ext[i] >= 'a' && ext[i] <= 'z')
				|| (ext[i] >= 'A' && ext[i] <= 'Z') || ext[i] == '_' || ext[i] == '-'))
			return 0;
	return 1;
}

void callbacks_reconfigure(const struct queued_config *cfg)
{
	pthread_mutex_lock(&g_mu);
	snprintf(g_set.secret, sizeof(g_set.secret), "%s", cfg->callback_secret);
	g_set.ring_timeout = cfg->callback_ring_timeout;
	g_set.attempts = cfg->callback_attempts;
	g_set.retry_delay = cfg->callback_retry_delay;
	g_set.expiry = cfg->callback_expiry;
	g_set.schedule_grace = cfg->schedule_grace;
	pthread_mutex_unlock(&g_mu);
	if (!cfg->callback_secret[0])
		LOG_N("callbacks are off: no callback_secret (or callback_secret_file) is set");
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	dispatch();
}

/* A dialer's connection closed (server.c): forget it. */
static void on_conn_closed(struct conn *c)
{
	for (struct dialer **pp = &g_dialers; *pp; pp = &(*pp)->next) {
		if ((*pp)->c == c) {
			struct dialer *d = *pp;
			*pp = d->next;
			LOG_N("dialer %s detached (%s closed)", d->node, conn_name(c));
			conn_release(d->c);
			free(d);
			return;
		}
	}
}

void callbacks_init(struct ev_loop *loop, const struct queued_config *cfg)
{
	g_loop = loop;
	callbacks_reconfigure(cfg);
	server_on_close(on_conn_closed);
	/* schedules, retries and expiry are noticed within a second */
	ev_timer_init(&g_tick, on_tick, 1.0, 1.0);
	ev_timer_start(loop, &g_tick);
	ev_timer_init(&g_kick, on_tick, 0.0, 0.0);
}

void callbacks_stop(void)
{
	ev_timer_stop(g_loop, &g_tick);
	ev_timer_stop(g_loop, &g_kick);
	while (g_dialers) {
		struct dialer *d = g_dialers;
		g_dialers = d->next;
		conn_release(d->c);
		free(d);
	}
}

void callbacks_kick(void)
{
	/* kicks within 200 ms make one dispatch: every call that ends kicks,
	 * and a dispatch is several queries */
	if (g_loop && !ev_is_active(&g_kick)) {
		ev_timer_set(&g_kick, 0.2, 0.0);
		ev_timer_start(g_loop, &g_kick);
	}
}

void callbacks_op_attach(struct conn *c, uint64_t id, const msgpack_object *args)
{
	char node[65] = "";
	struct dialer *d;
	ccq_enc e;
	int rc = ccq_map_strcpy(args, "node", node, sizeof(node));

	if (!conn_actor(c)->operator) {
		conn_reply_err(c, id, CCQ_E_DENIED, "callback.attach is for the SIP proxy (local operator)");
		return;
	}
	if (rc != 1 || !node[0]) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST,
			"argument 'node' is required: a string of 1 to %zu bytes", sizeof(node) - 1);
		return;
	}
	for (d = g_dialers; d; d = d->next)
		if (d->c == c)
			break;
	if (!d) {
		if (!(d = calloc(1, sizeof(*d)))) {
			conn_reply_err(c, id, CCQ_E_INTERNAL, "out of memory");
			return;
		}
		d->c = c;
		conn_hold(c);
		d->next = g_dialers;
		g_dialers = d;
		LOG_N("dialer %s attached (%s)", node, conn_name(c));
	}
	snprintf(d->node, sizeof(d->node), "%s", node);
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, id);
	msgpack_pack_map(&e.pk, 1);
	ccq_pack_kv_bool(&e.pk, "attached", 1);
	conn_send(c, &e);
	callbacks_kick();
}

static int sign(const char *secret, char purpose, const struct cb_dial *d, const char *flags,
		uint64_t exp, char *out)
{
	struct ccq_token t;
	int rc;

	memset(&t, 0, sizeof(t));
	t.purpose = purpose;
	t.txn = d->txn;
	t.exp = exp;
	snprintf(t.ext, sizeof(t.ext), "%s", d->ext);
	/* d->number is "+" and at most 15 digits */
	snprintf(t.digits, sizeof(t.digits), "%.15s", d->number + (d->number[0] == '+'));
	snprintf(t.flags, sizeof(t.flags), "%s", flags);
	rc = ccq_token_sign(secret, strlen(secret), &t, out, CCQ_TOKEN_MAX);
	if (rc != CCQ_TOKEN_OK)
		LOG_E("callback %llu: cannot sign its token (%s): extension '%s', number %s",
			(unsigned long long)d->cb, ccq_token_strerror(rc), d->ext, d->number);
	return rc == CCQ_TOKEN_OK ? 0 : -1;
}

int callbacks_push_dial(const struct cb_dial *d)
{
	struct cb_settings s;
	struct dialer *dl;
	char tok_a[CCQ_TOKEN_MAX], tok_c[CCQ_TOKEN_MAX], pretty[40], display[64], cflags[8];
	uint64_t now = (uint64_t)time(NULL);
	unsigned n = 0, k;
	ccq_enc e;
	int rc = -1;

	callbacks_settings(&s);
	for (dl = g_dialers; dl; dl = dl->next)
		n++;
	/* without a dialer or a secret the attempt is left to time out (no news
	 * from the proxy) and is retried like any other failed attempt */
	if (!s.secret[0]) {
		LOG_W("callback %llu: callback_secret was removed; the attempt will time out",
			(unsigned long long)d->cb);
		goto out;
	}
	if (!n) {
		LOG_W("callback %llu: no dialer attached any more; the attempt will time out",
			(unsigned long long)d->cb);
		goto out;
	}
	for (dl = g_dialers, k = g_rr++ % n; k > 0; k--)
		dl = dl->next;
	/* the agent leg must be answered within the ring timeout; the customer
	 * leg follows the prompt and the REFER, so it may come a little later */
	/* the customer leg's token carries the PIN check and the recording
	 * decided with the callback's inbox (ccq_token.h) */
	snprintf(cflags, sizeof(cflags), "%s%c%c", d->pin_ok ? "p" : "", d->record ? 'r' : 'n',
		d->rec_rule ? d->rec_rule : 'o');
	if (sign(s.secret, 'a', d, "-", now + s.ring_timeout + 120, tok_a) < 0
			|| sign(s.secret, 'c', d, cflags, now + s.ring_timeout + 300, tok_c) < 0)
		goto out;
	calls_pretty_number(d->number, pretty, sizeof(pretty));
	snprintf(display, sizeof(display), "Callback %s", pretty);
	ccq_enc_init(&e);
	msgpack_pack_map(&e.pk, 12);
	ccq_pack_kv_uint(&e.pk, "cb", d->cb);
	ccq_pack_kv_uint(&e.pk, "attempt", d->attempt);
	ccq_pack_kv_uint(&e.pk, "txn", d->txn);
	ccq_pack_kv_str(&e.pk, "ext", d->ext);
	ccq_pack_kv_str(&e.pk, "agent", d->agent);
	ccq_pack_kv_str(&e.pk, "device", d->device);
	ccq_pack_kv_str(&e.pk, "device_name", d->device_name);
	ccq_pack_kv_str(&e.pk, "number", d->number);
	ccq_pack_kv_str(&e.pk, "display", display);
	ccq_pack_kv_str(&e.pk, "agent_token", tok_a);
	ccq_pack_kv_str(&e.pk, "customer_token", tok_c);
	ccq_pack_kv_uint(&e.pk, "ring_timeout", s.ring_timeout);
	conn_push_event(dl->c, "callback.dial", (const uint8_t *)e.sb.data + CCQ_FRAME_HDR,
		e.sb.size - CCQ_FRAME_HDR);
	ccq_enc_free(&e);
	LOG_I("callback %llu attempt %u (TXN %llu): dialling extension %s on %s through %s",
		(unsigned long long)d->cb, d->attempt, (unsigned long long)d->txn, d->ext, d->device,
		dl->node);
	rc = 0;
out:
	memset(s.secret, 0, sizeof(s.secret));
	return rc;
}

/* The dispatch's after() ran: it succeeded; more: run again at once. */
void callbacks_dispatched(int more)
{
	g_ok = 1;
	if (more)
		g_again = 1;
}

static void dispatch_done(void)
{
	g_running = 0;
	if (!g_ok) {
		/* MySQL is away (the failure is logged): try again in 10 s rather
		 * than log it every second */
		g_pause_until = ev_now(g_loop) + 10.;
		return;
	}
	if (g_again) {
		g_again = 0;
		callbacks_kick();
	}
}

static void dispatch(void)
{
	struct cb_settings s;
	ccq_enc e;

	if (g_running) {
		g_again = 1;
		return;
	}
	if (server_shutting_down() || ev_now(g_loop) < g_pause_until)
		return;
	callbacks_settings(&s);
	ccq_enc_init(&e);
	ccq_enc_request(&e, 0, "callback.dispatch", 1);
	/* calls are only placed with a dialer to place them and a key to sign them */
	ccq_pack_kv_bool(&e.pk, "dial", g_dialers && s.secret[0]);
	memset(s.secret, 0, sizeof(s.secret));
	g_running = 1;
	g_ok = 0;
	if (ops_submit_internal(&callbacks_dispatch_op, &e, dispatch_done) < 0)
		g_running = 0;
	ccq_enc_free(&e);
}
