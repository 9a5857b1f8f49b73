/*
 * queued's request handling framework.
 *
 * Every operation is described by a struct op_def. The loop thread copies
 * the request (so that its arguments live as long as the job), works out
 * who is asking, and hands the job to the MySQL worker, which runs the
 * operation's function and builds the reply; the loop sends it.
 * Operations without database work (ping) answer on the loop directly.
 */
#ifndef QUEUED_OPS_H
#define QUEUED_OPS_H

#include <stdint.h>
#include <time.h>
#include <mysql.h>
#include <ev.h>
#include "ccq_wire.h"
#include "db.h"
#include "acl.h"

struct conn;
struct req;

/* Runs on the worker. Returns 0 (reply built with req_reply()) or -1
 * (req_fail() called, or a db helper filled the job). Must be safe to run
 * again from the start (see db.h): use a transaction for multi-step work. */
typedef int (*op_run_fn)(struct req *r, MYSQL *m);
/* Runs on the loop after the reply was sent (events, cache updates). */
typedef void (*op_after_fn)(struct req *r);
/* Runs on the loop; answers directly. */
typedef void (*op_now_fn)(struct conn *c, uint64_t id, const msgpack_object *args);

#define OP_ANON 0x1     /* allowed before authentication (TCP) */
#define OP_RETRY 0x2    /* a report: while MySQL is unreachable, retry it every
                         * second (up to 10 minutes) instead of failing */
#define OP_KEEP_AFTER 0x4 /* a rerun of the job keeps after_data (what an
                         * earlier run committed); others start afresh */
#define OP_DIRECTORY 0x8  /* changes what the directory cache holds (trunks,
                         * inboxes, DIDs, organisations, recording settings):
                         * the cache's generation is bumped after each run */
#define OP_VIEW_SAFE 0x10 /* keeps queued's view of the inboxes' members up to
                         * date itself, or changes nothing it holds (reads,
                         * lists, customers, recordings); after any other
                         * operation (callbacks, chats, transfers, outbound
                         * calls) the views are read again soon (agentview.h).
                         * A new operation without the flag is safe, only
                         * slower. */
#define OP_URGENT 0x20    /* a caller waits on it (a call's decision): a free
                         * worker takes it before the jobs queued earlier
                         * (reports), see db.c take() */
#define OP_SHED 0x40      /* a new call's decision: refused at once while the
                         * workers are more than shed_after behind */

/*
 * An operation whose requests may share a transaction with others (the
 * call reports of different calls): db.h struct db_group, for a request.
 * read and write handle the common case only and return 0 / 1 ("run
 * alone": the operation's run function) for anything else; after is what
 * run does after its COMMIT (the reply). A request that acts as another
 * user, or is run again (an early answer, a retry), always runs alone.
 */
struct op_group {
	int (*read)(struct req *r, MYSQL *m, struct qb *q);
	int (*write)(struct req *r, MYSQL *m, MYSQL_RES **res, struct qb *w, uint64_t *entity,
			uint64_t *order);
	void (*after)(struct req *r, MYSQL *m);
};

struct op_def {
	const char *name;
	op_run_fn run;
	op_now_fn now;
	op_after_fn after;
	unsigned flags;
};

/* The operations that have an op_group, by name (ops_call.c); NULL-ended. */
struct op_grouped {
	const char *name;
	const struct op_group *group;
};
extern const struct op_grouped ops_grouped[];

struct req {
	struct db_job j;          /* first: the worker hands this back */
	const struct op_def *op;
	struct conn *c;
	uint64_t id;
	uint8_t *payload;         /* copy of the frame; args point into it */
	ccq_msg msg;
	const msgpack_object *args;
	struct actor actor;       /* who the connection is */
	struct who who;           /* resolved on the worker by req_who() */
	ccq_enc enc;
	int have_enc;
	void *after_data;         /* for op_after_fn, freed by the framework */
	uint64_t out_id;          /* a result id, for after() */
	void (*internal_done)(void); /* internal requests (no connection) */
	struct req *retry_next;   /* waiting to be run again (ops.c retry list) */
	uint64_t retry_due;       /* ... from then (db_now_ns) */
	unsigned attempts;
	uint64_t t_recv;          /* when the request arrived (db_now_ns) */
	uint64_t t_answer;        /* when an early answer left (req_answer_now) */
	int early;                /* answered before the job ended (worker) */
	int sent_now;             /* its early answer was sent by the worker:
	                           * conn_send_now's result, + 1 (0: not sent) */
	int rewriting;            /* counted in ops_rewrites_pending() (1; 2: its
	                           * key found no room, every key counts) */
	int waits_rewrite;        /* a report retried until an answered decision's
	                           * TXN is written (see txn_from_res) */
	const struct op_group *group; /* the operation's, or NULL */
	void *group_data;         /* a grouped run's, from write to after (freed by
	                           * the framework) */
	struct qb again;          /* an early-answered job: what to write again if
	                           * the rest of its batch fails (op-specific) */
};

void ops_set_schema(int version);
int ops_schema(void);
void ops_dispatch(struct conn *c, const ccq_msg *m, const uint8_t *payload, size_t len);

/* ---- helpers for op functions (worker thread) ------------------------- */

int req_fail(struct req *r, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Start the success reply; then pack exactly one value on the packer. */
msgpack_packer *req_reply(struct req *r);
/*
 * Send the answer packed with req_reply() now, while the job goes on (its
 * last statements and COMMIT). The job must not touch the answer after
 * this. If the job then fails, it is not answered again: it is run again
 * (at once after a lost connection, then every second for 10 minutes)
 * with r->early set, and must then write what it answered (r->again).
 */
void req_answer_now(struct req *r);
/* Early-answered jobs whose writes failed and wait to be run again (any
 * thread). A report that does not find its call's TXN meanwhile should
 * be retried rather than refused. */
int ops_rewrites_pending(void);
/* (Re)read the settings ops.c uses (shed_after). Loop thread. */
void ops_reconfigure(const struct queued_config *cfg);
/* New calls refused at once since start (overload, shed_after). */
unsigned long ops_shed_total(void);
/* How call.route decisions for new calls to an inbox went since start
 * (or the last reset; a job run again is counted again), for
 * server.stats: the claim of the member queued's view puts first held
 * (answered at the claim, before the commit, unless out of memory); the
 * claim refused by MySQL (row locked by another transaction, or the member
 * no longer free); nobody free in queued's view; a retried request (its
 * Call-ID had a TXN). The last three take the general path (a second
 * transaction). Any thread. */
enum { ROUTE_CLAIMED, ROUTE_REFUSED, ROUTE_NO_CANDIDATE, ROUTE_RETRIED, ROUTE_PATHS };
void ops_route_path(int path);
void ops_route_paths(unsigned long out[ROUTE_PATHS], int reset);
/* ... one of them of this job key (a call's Call-ID: its reports' key) */
int ops_rewrite_pending_for(uint64_t key);
/* Worker: this early-answered job's writes failed; count it in
 * ops_rewrites_pending() now, before its key is released (a report of the
 * same call may run next). req_done uncounts it when it ends. */
void req_rewrite_pending(struct req *r);
/* Resolve the acting user (r->who). Fails the request if unknown. */
int req_who(struct req *r, MYSQL *m);

/* Argument access with clear errors (they call req_fail). */
int arg_str(struct req *r, const char *key, char *buf, size_t size, int required);
int arg_uint(struct req *r, const char *key, uint64_t *v, int required, uint64_t max);
int arg_bool(struct req *r, const char *key, int *v, int required);

/* A journey event's text is at most this many bytes (txn_event.text holds
 * 1024 characters; longer texts are cut, never between a character's bytes). */
#define CCQ_EVENT_TEXT_MAX 1024

/* The id of a new TXN, for an INSERT INTO txn (id, ...) VALUES (TXN_NEW_ID,
 * ...): drawn from the sequence txn_seq (sql/008_txn_seq.sql) and made
 * LAST_INSERT_ID(), so that mysql_insert_id() and LAST_INSERT_ID() give it
 * as they did when txn.id was AUTO_INCREMENT. */
#define TXN_NEW_ID "LAST_INSERT_ID(NEXTVAL(txn_seq))"

/* The length of s cut to at most max bytes at a UTF-8 character boundary. */
size_t utf8_cut(const char *s, size_t max);
/* Add a journey event to a TXN; at is an SQL time expression (NULL = now);
 * kind is a constant of ours, text is escaped. qb_journey appends the
 * INSERT to a batch of statements instead of running it. */
void qb_journey(struct qb *q, MYSQL *m, uint64_t txn, const char *kind, const char *text,
		const char *at);
int req_journey(struct req *r, MYSQL *m, uint64_t txn, const char *kind, const char *text,
		const char *at);
/* The end of agent's talked call at 'at' (an SQL time) in agent_state
 * (sql/009_agent_state.sql): idle from then, in wrap-up for the user's
 * wrapup_seconds; never backwards (two calls of the agent may end in
 * either order). One statement; qb_agent_call_end appends it to a batch.
 * Never in the agent's user row: a new call's claim locks that row. */
void qb_agent_call_end(struct qb *q, uint32_t agent, const char *at);
/* The customer of an organisation with this number ("+6591234567"):
 * *id 0 and name "" when there is none. */
int customer_by_number(struct req *r, MYSQL *m, uint64_t org, const char *e164,
		uint64_t *id, char *name, size_t size);
/* The SELECT of customer_by_number, for a batch; cols: its select list
 * over customer c (NULL: "c.id, c.name"; e.g. "@a := c.id, @b := c.name"
 * also keeps them in session variables). A number has one customer at
 * most in an organisation (the key of customer_number). */
void qb_customer(struct qb *q, MYSQL *m, uint64_t org, const char *e164, const char *cols);
/* One UPDATE and its journey event in one transaction; replies {id: txn}.
 * An UPDATE that changes no row fails the request (conflict): put the
 * state it requires in its WHERE. */
int req_update_journey(struct req *r, MYSQL *m, uint64_t txn, const char *sql,
		const char *kind, const char *text);
/*
 * The SQL time of a reported event: the report's "at_ms" (when the proxy saw
 * it) if present and plausible, else now. A report retried through a MySQL
 * outage or a queued restart keeps its real time.
 */
void req_event_time(struct req *r, char *buf, size_t size);
/*
 * "YYYY-MM-DD HH:MM[:SS]" (UTC; also "YYYY-MM-DD" with date_only) -> Unix
 * seconds. unit (may be NULL): the span of the last field given, in seconds
 * (86400, 60 or 1). -1 if s is not such a time (2024-02-30 is not).
 */
int utc_time_parse(const char *s, int date_only, time_t *t, unsigned *unit);
/* Roll the current transaction back (unless the connection is gone); -1. */
int req_rollback(struct req *r, MYSQL *m);

/* Run the statement in q (then freed); -1 with the request failed. */
int req_exec_qb(struct req *r, MYSQL *m, struct qb *q);
/* Run the batch of statements in q (then freed; see db_exec_multi): 0, or
 * -1 with the request failed (a transaction the batch began is still open). */
int req_multi_qb(struct req *r, MYSQL *m, struct qb *q, MYSQL_RES **res, int nres,
		uint64_t *first_id);
/* Run the SELECT in q (then freed): its rows, or NULL with the request failed. */
MYSQL_RES *req_select_qb(struct req *r, MYSQL *m, struct qb *q);
/*
 * The organisation a request is about: argument "org" (a name), else the
 * acting user's (ops_dir.c). country (3 bytes) may be NULL.
 */
int req_org(struct req *r, MYSQL *m, uint32_t *org_id, char *country);

/* Is v one of the strings of set (NULL-terminated)? */
int str_in(const char *v, const char *const *set);
/* Visible text: no control characters. */
int text_ok(const char *s);

/* Run a SELECT returning one integer (first column of the first row);
 * 0 with *found = 0 when there is no row. */
int sql_u64(struct req *r, MYSQL *m, const char *sql, size_t len, uint64_t *v, int *found);
/* The same for the SELECT in q (then freed). */
int sql_u64_qb(struct req *r, MYSQL *m, struct qb *q, uint64_t *v, int *found);

/* Pack a result row as a map; integer columns as integers, NULL as nil.
 * extra: map entries the caller packs after. */
void pack_row(msgpack_packer *pk, MYSQL_RES *res, MYSQL_ROW row, unsigned extra);
/* Pack all rows of a result as an array of maps. */
void pack_rows(msgpack_packer *pk, MYSQL_RES *res);
/* Reply {key: [rows...]} and free res. */
void req_reply_rows(struct req *r, MYSQL_RES *res, const char *key);

/*
 * Run an operation for queued itself (no client connection): the request
 * in enc is copied; done() runs on the loop after the operation's after().
 */
int ops_submit_internal(const struct op_def *op, ccq_enc *enc, void (*done)(void));

/* Tables of operations, one per file. */
extern const struct op_def ops_txn[];
extern const struct op_def ops_dir[];
extern const struct op_def ops_call[];
extern const struct op_def ops_compliance[];
extern const struct op_def ops_callback[];
extern const struct op_def ops_recording[];

#endif
