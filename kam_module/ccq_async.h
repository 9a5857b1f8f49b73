/*
 * Asynchronous decisions: no SIP worker waits on queued.
 *
 * A SIP worker suspends its transaction (tm's t_suspend) and hands the
 * request for queued, with the transaction's handle and the route to
 * resume in, to the "ccq async" process over a datagram socket pair made
 * before the fork. That process keeps the only connection that waits on
 * queued; when the answer (or a pushed event, or the deadline) arrives it
 * decodes the result and hands it, with the transaction's handle and the
 * route, to one of the "ccq resume N" processes (module parameter
 * resume_processes) over a second socket pair. That process publishes the
 * result (ccq_async_result, process-global) and resumes the transaction
 * with t_continue, which runs the whole named route there (auth_check,
 * the gate, rtpengine, t_relay ...).
 *
 * Why a pool: a resumed route costs far more CPU than reading queued's
 * reply, and every call resumes at least once, so a single process running
 * every resumed route caps the call rate of the whole proxy (it took 39 %
 * of Kamailio's CPU at 80 calls/s, BENCHMARKS.md section 3). The
 * connection to queued and the callback controller stay in the one async
 * process: they need one ordered stream and no locking, and cost little.
 * With resume_processes 0 the async process runs resumed routes itself.
 *
 * Reports that need no answer (answered, ended, registered) travel the
 * first socket pair too.
 */
#ifndef CCQ_ASYNC_H
#define CCQ_ASYNC_H

#include <stdint.h>
#include "core/parser/msg_parser.h"
#include "core/rpc.h"
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
	char error[160];            /* why the fallback was taken */
	int record;                 /* ring decisions: 1 record this call */
	char rec_meta[160];         /* ... and the metadata for rtpengine */
	int ntargets;
	/* last: the hand-over to a resume process sends the used ones only */
	char targets[CCQ_MAX_TARGETS][160];  /* AORs sip:user@domain */
};

extern struct ccq_result ccq_async_result;

/* Module parameter resume_processes: how many "ccq resume" processes run
 * the resumed routes (0: the ccq async process runs them itself). */
#define CCQ_RESUME_MAX 64
extern int ccq_resume_procs;

enum ccq_async_kind {
	CCQ_ASYNC_CALL = 1,   /* request; resume the transaction with the reply */
	CCQ_ASYNC_WAIT = 2,   /* wait for a pushed event about call_id */
	CCQ_ASYNC_REPORT = 3, /* fire and forget */
	CCQ_ASYNC_CB = 4,     /* for the callback controller (ccq_cb.c), raw bytes */
};

/* mod_init: channels and process registration. */
int ccq_async_init(void);
/* child_init(PROC_MAIN): fork the async process and the resume processes. */
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
/* Decision latency so far (bucket upper bounds, ms) and number of
 * decisions: from the SIP worker's hand-over to the start of the resumed
 * route (the wait for a free resume process included). */
int ccq_async_latency(double *p50_ms, double *p99_ms, double *max_ms, unsigned long *n);
/* For ccq.stats: resume_processes, resumes, resumes_per_process (one count
 * per resume process, "12 9 11 10"), resumes_in_async, resume_backlog_max. */
void ccq_async_rpc_stats(rpc_t *rpc, void *th);

#endif
