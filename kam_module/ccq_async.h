/*
 * Asynchronous decisions: no SIP worker waits on queued.
 *
 * A SIP worker suspends its transaction (tm's t_suspend) and hands the
 * request for queued, with the transaction's handle and the route to
 * resume in, to the "ccq async" process over a datagram socket pair made
 * before the fork. That process keeps the only connection that waits on
 * queued; when the answer (or a pushed event, or the deadline) arrives it
 * publishes the result (ccq_async_result) and resumes the transaction with
 * t_continue, which runs the named route in that process. Reports that
 * need no answer (answered, ended, registered) travel the same way.
 */
#ifndef CCQ_ASYNC_H
#define CCQ_ASYNC_H

#include <stdint.h>
#include "core/parser/msg_parser.h"
#include "ccq_wire.h"

#define CCQ_MAX_TARGETS 16

/* What a resumed route sees through $ccq(...). */
struct ccq_result {
	int active;                 /* inside a resumed route */
	char action[16];            /* ring, queue, reject, auth, missed, fallback */
	int code;                   /* SIP code for reject/missed */
	char reason[128];
	char txn[24];
	char inbox[101];
	unsigned ring_timeout;      /* seconds */
	unsigned max_wait;
	int ntargets;
	char targets[CCQ_MAX_TARGETS][160];  /* AORs sip:user@domain */
	char error[160];            /* why the fallback was taken */
	int record;                 /* ring decisions: 1 record this call */
	char rec_meta[160];         /* ... and the metadata for rtpengine */
};

extern struct ccq_result ccq_async_result;

enum ccq_async_kind {
	CCQ_ASYNC_CALL = 1,   /* request; resume the transaction with the reply */
	CCQ_ASYNC_WAIT = 2,   /* wait for a pushed event about call_id */
	CCQ_ASYNC_REPORT = 3, /* fire and forget */
	CCQ_ASYNC_CB = 4,     /* for the callback controller (ccq_cb.c), raw bytes */
};

/* mod_init: channel and process registration. */
int ccq_async_init(void);
/* child_init(PROC_MAIN): fork the async process. */
int ccq_async_fork(void);
/* In every other process: close the reading end. */
void ccq_async_child(void);

/*
 * Suspend msg's transaction and send the finished request in enc (whose
 * id must be id); resume in route_idx with the result. For
 * CCQ_ASYNC_WAIT, call_id names the call whose pushed event resumes it and
 * enc carries the call.wait request. Returns 1 (suspended: the script must
 * exit), -1 on failure (the transaction is not suspended; fall back now).
 * enc is freed.
 */
int ccq_async_suspend(struct sip_msg *msg, int kind, int route_idx, ccq_enc *enc,
		uint64_t id, const char *call_id, int timeout_ms);
/* Report the call's final failure reply (>= 300) to queued (call.ended
 * by "failed:<code>"); for the transaction of msg, after it is created. */
int ccq_async_watch_final(struct sip_msg *msg);
/* Queue a report for queued (no reply awaited). enc is freed. */
int ccq_async_report(ccq_enc *enc, uint64_t id);
uint64_t ccq_async_next_id(void);
/* Hand raw bytes to the callback controller in the async process. */
int ccq_async_cb_send(const void *p, size_t n);
/* In the async process only: a request for queued that belongs to the
 * current connection (dropped, not resent, when it is lost). enc is freed. */
int ccq_async_send_now(ccq_enc *enc);
/* Decision latency so far (bucket upper bounds, ms) and number of decisions. */
int ccq_async_latency(double *p50_ms, double *p99_ms, double *max_ms, unsigned long *n);

#endif
