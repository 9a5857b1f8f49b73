/* Loop-side state of inbound calls; see calls.h. */
#include "calls.h"
#include "ops.h"
#include "server.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

struct waiter {
	char call_id[256];
	struct conn *c;
	ev_tstamp since;
	struct waiter *next;
};

static struct ev_loop *g_loop;
static struct waiter *g_waiters, **g_tail = &g_waiters;
static ev_timer g_tick;
static ev_timer g_kick;
static ev_timer g_janitor;
static int g_sweeping;

static void sweep(void);

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	sweep();
}

static void on_janitor(struct ev_loop *loop, ev_timer *w, int revents)
{
	ccq_enc e;
	(void)loop; (void)w; (void)revents;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 0, "call.janitor", 0);
	ops_submit_internal(&calls_janitor_op, &e, NULL);
	ccq_enc_free(&e);
}

void calls_init(struct ev_loop *loop)
{
	g_loop = loop;
	/* maximum waits and wrap-up ends are noticed within a second */
	ev_timer_init(&g_tick, on_tick, 1.0, 1.0);
	ev_timer_start(loop, &g_tick);
	ev_timer_init(&g_kick, on_tick, 0.0, 0.0);
	ev_timer_init(&g_janitor, on_janitor, 5.0, 30.0);
	ev_timer_start(loop, &g_janitor);
}

void calls_stop(void)
{
	ev_timer_stop(g_loop, &g_tick);
	ev_timer_stop(g_loop, &g_kick);
	ev_timer_stop(g_loop, &g_janitor);
	while (g_waiters) {
		struct waiter *w = g_waiters;
		g_waiters = w->next;
		conn_release(w->c);
		free(w);
	}
	g_tail = &g_waiters;
}

void calls_kick(void)
{
	if (!ev_is_active(&g_kick)) {
		ev_timer_set(&g_kick, 0.0, 0.0);
		ev_timer_start(g_loop, &g_kick);
	}
}

static struct waiter *unlink_waiter(const char *call_id)
{
	for (struct waiter **pp = &g_waiters; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->call_id, call_id) == 0) {
			struct waiter *w = *pp;
			*pp = w->next;
			if (g_tail == &w->next)
				g_tail = pp;
			return w;
		}
	}
	return NULL;
}

void calls_op_wait(struct conn *c, uint64_t id, const msgpack_object *args)
{
	char call_id[256];
	struct waiter *w;
	ccq_enc e;

	if (ccq_map_strcpy(args, "call_id", call_id, sizeof(call_id)) != 1 || !call_id[0]) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST, "argument 'call_id' is required");
		return;
	}
	if (!conn_actor(c)->operator) {
		conn_reply_err(c, id, CCQ_E_DENIED, "call.wait is for the SIP proxy (local operator)");
		return;
	}
	w = unlink_waiter(call_id); /* a re-registration after a reconnect replaces it */
	if (w)
		conn_release(w->c);
	else if (!(w = calloc(1, sizeof(*w)))) {
		conn_reply_err(c, id, CCQ_E_INTERNAL, "out of memory");
		return;
	}
	snprintf(w->call_id, sizeof(w->call_id), "%s", call_id);
	w->c = c;
	w->since = ev_now(g_loop);
	w->next = NULL;
	conn_hold(c);
	*g_tail = w;
	g_tail = &w->next;
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, id);
	msgpack_pack_map(&e.pk, 1);
	ccq_pack_kv_bool(&e.pk, "waiting", 1);
	conn_send(c, &e);
	calls_kick();
}

void calls_queued(const char *call_id, unsigned max_wait)
{
	(void)call_id;
	(void)max_wait;
	/* the module registers the wait itself (call.wait); nothing to keep */
}

void calls_resume(const char *call_id, ccq_enc *e)
{
	struct waiter *w = unlink_waiter(call_id);
	const uint8_t *buf;
	size_t len;

	if (!w) {
		LOG_W("no waiter for call %s: the decision is dropped", call_id);
		return;
	}
	/* e holds a bare map after the reserved frame header */
	buf = (const uint8_t *)e->sb.data + CCQ_FRAME_HDR;
	len = e->sb.size - CCQ_FRAME_HDR;
	conn_push_event(w->c, "call.dispatch", buf, len);
	conn_release(w->c);
	free(w);
}

void calls_forget(const char *call_id)
{
	struct waiter *w;
	ccq_enc e;

	if (!call_id || !call_id[0] || !(w = unlink_waiter(call_id)))
		return;
	ccq_enc_init(&e);
	msgpack_pack_map(&e.pk, 2);
	ccq_pack_kv_str(&e.pk, "call_id", call_id);
	ccq_pack_kv_str(&e.pk, "action", "ended");
	conn_push_event(w->c, "call.dispatch", (const uint8_t *)e.sb.data + CCQ_FRAME_HDR,
		e.sb.size - CCQ_FRAME_HDR);
	ccq_enc_free(&e);
	conn_release(w->c);
	free(w);
}

void calls_notify(const char *event, uint32_t org_id, uint32_t inbox_id, uint64_t txn,
		const char *text, const char *number, const char *customer, const char *inbox)
{
	ccq_enc e;
	ccq_enc_init(&e);
	msgpack_pack_map(&e.pk, 5);
	ccq_pack_kv_uint(&e.pk, "txn", txn);
	ccq_pack_kv_str(&e.pk, "inbox", inbox ? inbox : "");
	ccq_pack_kv_str(&e.pk, "text", text);
	ccq_pack_kv_str(&e.pk, "number", number ? number : "");
	ccq_pack_kv_str(&e.pk, "customer", customer ? customer : "");
	server_push_event(event, org_id, inbox_id, (const uint8_t *)e.sb.data + CCQ_FRAME_HDR,
		e.sb.size - CCQ_FRAME_HDR);
	ccq_enc_free(&e);
}

static void sweep_done(void)
{
	g_sweeping = 0;
}

static void sweep(void)
{
	ccq_enc e;
	unsigned n = 0;

	if (!g_waiters || g_sweeping)
		return;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 0, "call.sweep", 1);
	ccq_pack_str(&e.pk, "calls");
	for (struct waiter *w = g_waiters; w && n < 32; w = w->next)
		n++;
	msgpack_pack_array(&e.pk, n);
	n = 0;
	for (struct waiter *w = g_waiters; w && n < 32; w = w->next, n++)
		ccq_pack_str(&e.pk, w->call_id);
	g_sweeping = 1;
	if (ops_submit_internal(&calls_sweep_op, &e, sweep_done) < 0)
		g_sweeping = 0;
	ccq_enc_free(&e);
}
