/*
 * Callbacks and scheduled calls (doc/callbacks.md).
 *
 * Loop side (callbacks.c): the Kamailio nodes attached as dialers
 * (callback.attach), the dispatcher timer that submits the internal
 * callback.dispatch operation every second and after every change that may
 * free a slot, and the signing and pushing of callback.dial events.
 *
 * Worker side (ops_callback.c): the callback.* operations, the dispatcher's
 * work in MySQL, and the hooks the call operations (ops_call.c) use for the
 * customer leg of a callback and the missed-call flow.
 */
#ifndef QUEUED_CALLBACKS_H
#define QUEUED_CALLBACKS_H

#include <stdint.h>
#include <ev.h>
#include <mysql.h>
#include "ccq_wire.h"
#include "config.h"

struct conn;
struct req;

/* The callback settings of queued.conf; a copy is readable from any thread. */
struct cb_settings {
	char secret[256];         /* "" = callbacks are off */
	unsigned ring_timeout;
	unsigned attempts;
	unsigned retry_delay;
	unsigned expiry;
	unsigned schedule_grace;
};

/* One callback.dial to push (filled by the worker, signed on the loop). */
struct cb_dial {
	uint64_t cb, txn;
	unsigned attempt;
	int pin_ok;
	char ext[33];
	char agent[101];
	char device[200];         /* sip:user@domain */
	char device_name[140];    /* "desk_phone (Front desk)" */
	char number[17];          /* "+6591234567" */
	int record;               /* record the customer leg: 1 on, 0 off */
	char rec_rule;            /* whose setting: 'u' user, 'i' inbox, 'o' organisation */
};

/* ---- loop side (callbacks.c) ---------------------------------------------- */

void callbacks_init(struct ev_loop *loop, const struct queued_config *cfg);
/* SIGHUP: the new settings apply to the next request, dispatch and token. */
void callbacks_reconfigure(const struct queued_config *cfg);
void callbacks_stop(void);
/* Something changed that may let a callback go: dispatch soon. */
void callbacks_kick(void);
/* callback.attach: the connection becomes a dialer. */
void callbacks_op_attach(struct conn *c, uint64_t id, const msgpack_object *args);
/* Sign the tokens of d and push callback.dial to a dialer; -1 if none took it. */
int callbacks_push_dial(const struct cb_dial *d);
/* From the dispatch's after(): it succeeded; more: run it again at once. */
void callbacks_dispatched(int more);

/* ---- any thread ----------------------------------------------------------- */

void callbacks_settings(struct cb_settings *out);
/* Extension keys a token can carry: [A-Za-z0-9_-], 1 to 32. */
int callbacks_ext_ok(const char *ext);

/* ---- worker side (ops_callback.c), inside the caller's SQL transaction ------ */

/*
 * call.outbound with callback_txn: the agent's phone calls the customer of
 * that callback TXN. Builds the reply. Returns 0 or -1 (request failed,
 * transaction to roll back by the caller).
 */
int callbacks_customer_leg(struct req *r, MYSQL *m, uint64_t txn, const char *call_id,
		const char *user, const char *domain, const char *number, int blocked,
		const char *rule, const char *reason, const char *at);
/*
 * call.ended for the live leg of a callback TXN (status not final): ends the
 * TXN and the request, or schedules the next attempt. result gets the TXN's
 * result for the notification.
 */
int callbacks_call_ended(struct req *r, MYSQL *m, uint64_t txn, const char *status,
		uint32_t agent_id, const char *by, const char *at, char *result, size_t rsize);
/*
 * The missed-call flow of an inbox whose missed_flow is 'callback': opens a
 * callback request (source missed) for the caller's number, linked to the
 * missed TXN. What stops it (no member with a device, a duplicate) goes to
 * the missed TXN's journey, not to the caller.
 */
int callbacks_on_missed(struct req *r, MYSQL *m, uint64_t txn, uint32_t org, uint32_t inbox,
		const char *inbox_name, const char *number);

extern const struct op_def callbacks_dispatch_op;

#endif
