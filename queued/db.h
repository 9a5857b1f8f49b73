/*
 * MySQL access for queued. Queries run on a small pool of worker threads,
 * each owning one connection (mysql_workers); the event loop submits jobs
 * and gets them back, with their results, through an ev_async watcher. The
 * loop never blocks on MySQL.
 *
 * Ordering: every job has a key. Jobs with the same key run one at a time,
 * in the order they were submitted (the reports of one call, the requests
 * of one client connection); jobs with different keys run side by side, so
 * that concurrent calls share InnoDB's log flushes (group commit) instead of
 * queueing behind each other's commits. What keeps concurrent jobs correct
 * is the database: the sessions run at READ COMMITTED, and a job that
 * decides from a row's state locks that row first (SELECT ... FOR UPDATE).
 * A job that loses a deadlock is rolled back and run again.
 */
#ifndef QUEUED_DB_H
#define QUEUED_DB_H

#include <stddef.h>
#include <stdint.h>
#include <mysql.h>
#include <ev.h>
#include "config.h"

struct db_job;
struct qb;
/* Runs on the worker. Returns 0, or -1 with j->err/j->errmsg set. A job
 * must be safe to run again from the start: when MySQL drops the
 * connection, the worker reconnects and reruns it once. */
typedef int (*db_run_fn)(struct db_job *j, MYSQL *m);
/* Runs on the loop thread once the job is finished. */
typedef void (*db_done_fn)(struct db_job *j);

struct db_job {
	db_run_fn run;
	db_done_fn done;
	struct db_job *next;
	int err;              /* enum ccq_err; 0 = success */
	char errmsg[256];
	int conn_lost;        /* set by db helpers: connection-class failure */
	int lock_lost;        /* set by db helpers: deadlock or lock wait timeout */
	int dup_key;          /* set by db helpers: a duplicate key (ER_DUP_ENTRY) */
	int expect_dup;       /* set by the job: a duplicate key is an answer, not logged */
	uint64_t key;         /* ordering key (see above); 0 = no ordering */
	int urgent;           /* a caller waits on it (a call's decision): taken before
	                       * the other jobs, keys still in order (see take()) */
	/* An answer before the job ends (db_early): runs on the loop thread,
	 * always before done. */
	db_done_fn early;
	struct db_job *early_next;
	/* monotonic times (ns), for statistics: submitted, started, finished */
	uint64_t t_submit, t_start, t_end;
	/* A job that may share its transaction with others (the reports of
	 * different calls), or NULL: see struct db_group. */
	const struct db_group *group;
	uint64_t t_prev_group;  /* when the job with a group before it was submitted */
};

/*
 * Reports of different calls run in groups: a worker that takes one takes
 * the other queued jobs of the same kind that may run now (no job of their
 * key running or queued before them), up to report_batch, and runs them
 * in one transaction: one round trip with START TRANSACTION and every
 * job's reads, one with every job's writes and the COMMIT. MySQL then
 * does one commit (one log flush) for the group instead of one per job,
 * and the worker waits for two answers instead of two or three per job.
 *
 * A job that the group cannot handle (an uncommon case: a transfer's
 * leg, a callback, a retried report) says so and is run alone, with its
 * own run function, after the group's commit, and so is every job after
 * it in the group (run_group keeps the order of one-by-one runs). If the
 * group's reads or writes fail (a lost lock or connection, a bad row),
 * everything is rolled back and every job runs alone, as it would have
 * without grouping. So the group functions only handle the common case and
 * the run function stays the reference.
 */
#define DB_GROUP_READS_MAX 4    /* statements a job reads in a group */
struct db_group {
	/* Append this job's reads, each statement preceded by ';', to q (which
	 * holds START TRANSACTION and the reads of the jobs before). Returns
	 * the number of statements (1..DB_GROUP_READS_MAX), or 0: run alone
	 * (nothing appended). A row it locks should be locked NOWAIT: a row
	 * another worker holds then fails the group at once (each job runs
	 * alone and waits on its own) rather than holding every job of it. */
	int (*read)(struct db_job *j, MYSQL *m, struct qb *q);
	/* Given the results of those statements (res[0..n-1]; a result the job
	 * frees it sets to NULL, the group frees the others), append its
	 * writes, each statement preceded by ';', to w. Returns 0 (the job is
	 * done once w commits), 1 (run alone after the commit; nothing
	 * appended) or -1 (the whole group runs alone). *entity: the row it
	 * changes (a TXN's id; 0 none): a later job of the group that changes
	 * the same row runs alone. *order: the row its writes lock last (an
	 * agent's id): the jobs' writes go to MySQL in that order. */
	int (*write)(struct db_job *j, MYSQL *m, MYSQL_RES **res, struct qb *w, uint64_t *entity,
			uint64_t *order);
	/* After the group's COMMIT, on the worker: what the run function does
	 * after its commit (the reply, queued's in-memory views). */
	void (*after)(struct db_job *j, MYSQL *m);
};

/* Connect with the configured timeouts; utf8mb4; autocommit on. */
MYSQL *db_connect(const struct queued_config *cfg, char *err, size_t errlen);
/* Is this MySQL error number a lost or refused connection? */
int db_is_conn_error(unsigned int errnum);

/* Start cfg->mysql_workers workers; the first gets the open connection
 * (ownership passes to it), the others connect on their own. */
int db_start(struct ev_loop *loop, const struct queued_config *cfg, MYSQL *conn);
void db_submit(struct db_job *j);
/* Worker: hand j->early to the loop thread now, while the job goes on
 * (the answer of a decision whose last statements and COMMIT are still
 * running). The loop runs it before the job's done. */
void db_early(struct db_job *j);
/* Jobs submitted and not yet handed back. */
unsigned db_pending(void);
/* How long the oldest queued job that a worker could take (no job of its
 * key running) has waited, ns; 0 when there is none. Any thread. */
uint64_t db_runnable_wait_ns(void);
/* Worker threads running. */
unsigned db_workers(void);
/* Groups of jobs run in one transaction, and the jobs in them, since start. */
void db_group_stats(unsigned long *groups, unsigned long *jobs);
/* Jobs rerun after a deadlock or lock wait timeout, since start. */
unsigned long db_lock_retries(void);
/* Monotonic clock, ns. */
uint64_t db_now_ns(void);
/* Ask the workers to finish queued jobs and stop; joins the threads. */
void db_stop(void);
/* New timeouts/credentials apply at the next reconnect. */
void db_set_config(const struct queued_config *cfg);

/* ---- helpers for run functions (worker thread) ------------------------ */

/* Run one statement; on failure fills j and returns -1. */
int db_exec(struct db_job *j, MYSQL *m, const char *sql, size_t len);
/* Run a statement returning rows; NULL with j filled on failure. */
MYSQL_RES *db_select(struct db_job *j, MYSQL *m, const char *sql, size_t len);

/*
 * Run several statements separated by ';' in one round trip (the session
 * allows multi-statements). res[i] gets the result set of statement i (NULL
 * if it has none) for i < nres; the caller frees them. first_id gets the
 * insert id of the first statement. MySQL stops at the first failing
 * statement: the job is filled, no result is handed back, -1 is returned,
 * and a transaction the batch started is still open (the caller rolls back).
 */
int db_exec_multi(struct db_job *j, MYSQL *m, const char *sql, size_t len, MYSQL_RES **res,
		int nres, uint64_t *first_id);
/* The same, calling mid(j, res[mid_stmt], arg) as soon as the result of
 * statement mid_stmt (< nres) has been read, while MySQL runs the rest of
 * the batch. */
typedef void (*db_mid_fn)(struct db_job *j, MYSQL_RES *r, void *arg);
int db_exec_multi_mid(struct db_job *j, MYSQL *m, const char *sql, size_t len,
		MYSQL_RES **res, int nres, uint64_t *first_id, int mid_stmt, db_mid_fn mid, void *arg);

/* A growing SQL text with escaping. */
struct qb {
	char *buf;
	size_t len, cap;
	int oom;
};
void qb_init(struct qb *q);
void qb_free(struct qb *q);
void qb_add(struct qb *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append 'escaped' (quoted), or NULL for s == NULL. */
void qb_str(struct qb *q, MYSQL *m, const char *s, size_t n);

#endif
