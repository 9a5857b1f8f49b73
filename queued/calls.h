/*
 * Loop-side state of inbound calls: the calls waiting in inbox queues (with
 * the connection of the Kamailio async process that waits for them), the
 * periodic queue sweep, and notifications to watchers.
 */
#ifndef QUEUED_CALLS_H
#define QUEUED_CALLS_H

#include <stdint.h>
#include <ev.h>
#include <mysql.h>
#include "ccq_wire.h"

struct conn;
struct req;

void calls_init(struct ev_loop *loop);
void calls_stop(void);
/* call.wait: the module waits for a pushed decision about call_id. */
void calls_op_wait(struct conn *c, uint64_t id, const msgpack_object *args);
/* The worker decided to queue this call. */
void calls_queued(const char *call_id, unsigned max_wait);
/* The call ended: drop its waiter (tell the module to let go). */
void calls_forget(const char *call_id);
/* Something changed that may free an agent: sweep soon. */
void calls_kick(void);
/* Push a decision (packed map in e, without frame) to the waiter of call_id. */
void calls_resume(const char *call_id, ccq_enc *e);
/* Notify the watchers who may see inbox_id. */
void calls_notify(const char *event, uint32_t org_id, uint32_t inbox_id, uint64_t txn,
		const char *text, const char *number, const char *customer, const char *inbox);
/* "+6591234567" -> "+65 9123 4567" */
void calls_pretty_number(const char *e164, char *out, size_t size);
/* Worker side: end a TXN in its inbox's missed-call flow (ops_call.c). */
int calls_missed(struct req *r, MYSQL *m, uint64_t txn, uint32_t org, uint32_t inbox,
		const char *inbox_name, const char *number, msgpack_packer **pkp);

/* Settings from the configuration (start and SIGHUP). */
struct queued_config;
void calls_reconfigure(const struct queued_config *cfg);
/* 1 while a call may be a blind transfer's second leg (a transfer began
 * less than 130 s ago, or it is not known yet since the start). Any thread. */
int calls_transfer_may_be_pending(void);

extern const struct op_def calls_sweep_op;
extern const struct op_def calls_janitor_op;

#endif
