/*
 * The MySQL worker thread; see db.h.
 */
#include "db.h"
#include "jobq.h"
#include "log.h"
#include "ccq_wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <errmsg.h>
#include <mysqld_error.h>

#define DB_WORKERS_MAX 32
#define DB_GROUP_MAX 64               /* report_batch's maximum */

struct worker {
	pthread_t thread;
	int started;
	unsigned idx;
	MYSQL *conn;                   /* this worker's only */
	uint64_t busy_keys[DB_GROUP_MAX]; /* keys of the jobs it runs (a group's
	                                  * several); under g_mu */
	unsigned nbusy;
	int busy;
	int busy_plain;                /* ... and that job is not urgent; under g_mu */
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static struct jobq g_in;                       /* to the workers */
static struct db_job *g_out_head, *g_out_tail; /* back to the loop */
static struct db_job *g_early_head, *g_early_tail; /* early answers, to the loop */
static int g_stop;
static int g_running;
static unsigned g_pending;                     /* loop thread only */
static struct queued_config g_cfg;             /* guarded by g_mu */
static struct worker g_workers[DB_WORKERS_MAX];
static unsigned g_nworkers;
static unsigned g_plain_max;                   /* workers that may run non-urgent jobs */
static unsigned long g_lock_retries;           /* under g_mu */
static unsigned long g_groups, g_group_jobs;   /* under g_mu */
static uint64_t g_last_group_submit;           /* under g_mu */
static struct ev_loop *g_loop;
static ev_async g_async;

uint64_t db_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int db_is_conn_error(unsigned int e)
{
	switch (e) {
	case CR_SERVER_GONE_ERROR:
	case CR_SERVER_LOST:
	case CR_CONNECTION_ERROR:
	case CR_CONN_HOST_ERROR:
	case CR_SERVER_LOST_EXTENDED:
	case CR_UNKNOWN_HOST:
	case ER_CON_COUNT_ERROR:
	case ER_SERVER_SHUTDOWN:
	case ER_CONNECTION_KILLED:
		return 1;
	}
	return 0;
}

MYSQL *db_connect(const struct queued_config *cfg, char *err, size_t errlen)
{
	MYSQL *m = mysql_init(NULL);
	unsigned ct = cfg->mysql_connect_timeout, rt = cfg->mysql_read_timeout,
		 wt = cfg->mysql_write_timeout;
	my_bool off = 0;

	if (!m) {
		snprintf(err, errlen, "mysql_init failed (out of memory)");
		return NULL;
	}
	mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
	mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rt);
	mysql_options(m, MYSQL_OPT_WRITE_TIMEOUT, &wt);
	mysql_options(m, MYSQL_OPT_RECONNECT, &off); /* we reconnect ourselves */
	mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	if (!mysql_real_connect(m, cfg->mysql_socket[0] ? NULL : cfg->mysql_host,
			cfg->mysql_user, cfg->mysql_password, cfg->mysql_database,
			cfg->mysql_socket[0] ? 0 : cfg->mysql_port,
			cfg->mysql_socket[0] ? cfg->mysql_socket : NULL,
			CLIENT_MULTI_STATEMENTS | CLIENT_FOUND_ROWS)) {
		snprintf(err, errlen, "cannot connect to MySQL at %s as %s, database %s: %s",
			cfg->mysql_socket[0] ? cfg->mysql_socket : cfg->mysql_host,
			cfg->mysql_user, cfg->mysql_database, mysql_error(m));
		mysql_close(m);
		return NULL;
	}
	if (mysql_query(m, "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO'") != 0) {
		snprintf(err, errlen, "MySQL session setup failed: %s", mysql_error(m));
		mysql_close(m);
		return NULL;
	}
	/* Several workers run side by side: each statement reads the latest
	 * committed rows, and a job that decides from a row locks it first
	 * (see db.h). A lock wait longer than a few seconds is a bug or a
	 * stuck client; the job fails and is retried rather than hang. */
	if (mysql_query(m, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED") != 0
			|| mysql_query(m, "SET SESSION innodb_lock_wait_timeout = 5") != 0) {
		snprintf(err, errlen, "MySQL session setup failed: %s", mysql_error(m));
		mysql_close(m);
		return NULL;
	}
	return m;
}

static void fail_from(struct db_job *j, MYSQL *m, const char *what)
{
	unsigned e = mysql_errno(m);
	if (db_is_conn_error(e)) {
		j->conn_lost = 1;
		j->err = CCQ_E_DB_UNAVAILABLE;
		snprintf(j->errmsg, sizeof(j->errmsg), "database unavailable: %s", mysql_error(m));
	} else if (e == ER_LOCK_DEADLOCK || e == ER_LOCK_WAIT_TIMEOUT) {
		/* another worker's transaction holds what this one needs: InnoDB
		 * rolled this one back (deadlock) or gave up waiting; the worker
		 * runs the job again */
		j->lock_lost = 1;
		j->err = CCQ_E_INTERNAL;
		snprintf(j->errmsg, sizeof(j->errmsg), "database busy (%s); retry", mysql_error(m));
	} else {
		j->err = CCQ_E_INTERNAL;
		snprintf(j->errmsg, sizeof(j->errmsg), "database error in %s", what);
		if (e == ER_DUP_ENTRY)
			j->dup_key = 1;
		if (e != ER_DUP_ENTRY || !j->expect_dup)
			LOG_E("MySQL error %u in %s: %s", e, what, mysql_error(m));
	}
}

int db_exec(struct db_job *j, MYSQL *m, const char *sql, size_t len)
{
	if (mysql_real_query(m, sql, len) != 0) {
		fail_from(j, m, "a statement");
		LOG_D("failed SQL: %.*s", (int)len, sql);
		return -1;
	}
	return 0;
}

MYSQL_RES *db_select(struct db_job *j, MYSQL *m, const char *sql, size_t len)
{
	MYSQL_RES *r;
	if (db_exec(j, m, sql, len) < 0)
		return NULL;
	r = mysql_store_result(m);
	if (!r)
		fail_from(j, m, "reading a result");
	return r;
}

int db_exec_multi(struct db_job *j, MYSQL *m, const char *sql, size_t len, MYSQL_RES **res,
		int nres, uint64_t *first_id)
{
	return db_exec_multi_mid(j, m, sql, len, res, nres, first_id, -1, NULL, NULL);
}

int db_exec_multi_mid(struct db_job *j, MYSQL *m, const char *sql, size_t len,
		MYSQL_RES **res, int nres, uint64_t *first_id, int mid_stmt, db_mid_fn mid, void *arg)
{
	int n = 0, st;

	for (int i = 0; i < nres; i++)
		res[i] = NULL;
	if (db_exec(j, m, sql, len) < 0)
		return -1;
	do {
		MYSQL_RES *r = mysql_store_result(m);
		if (!r && mysql_field_count(m) != 0) {
			fail_from(j, m, "reading a result");
			goto fail;
		}
		if (n == 0 && first_id)
			*first_id = mysql_insert_id(m);
		if (r && n < nres)
			res[n] = r;
		else if (r)
			mysql_free_result(r);
		if (mid && n == mid_stmt && n < nres)
			mid(j, res[n], arg);
		n++;
		st = mysql_next_result(m);
		if (st > 0) {
			/* a statement of the batch failed: MySQL ran none after it */
			fail_from(j, m, "a statement of a batch");
			LOG_D("failed SQL batch (statement %d): %.*s", n + 1, (int)len, sql);
			goto fail;
		}
	} while (st == 0);
	return 0;
fail:
	/* read what is left of the batch (nothing after a failed statement;
	 * the rest after a failed read), so that the connection can go on */
	while (mysql_more_results(m) && mysql_next_result(m) == 0) {
		MYSQL_RES *x = mysql_store_result(m);
		if (x)
			mysql_free_result(x);
	}
	for (int i = 0; i < nres; i++)
		if (res[i]) {
			mysql_free_result(res[i]);
			res[i] = NULL;
		}
	return -1;
}

void qb_init(struct qb *q)
{
	memset(q, 0, sizeof(*q));
}

void qb_free(struct qb *q)
{
	free(q->buf);
	memset(q, 0, sizeof(*q));
}

static int qb_reserve(struct qb *q, size_t n)
{
	if (q->oom)
		return -1;
	if (q->len + n + 1 > q->cap) {
		size_t cap = q->cap ? q->cap : 256;
		char *b;
		while (cap < q->len + n + 1)
			cap *= 2;
		b = realloc(q->buf, cap);
		if (!b) {
			q->oom = 1;
			return -1;
		}
		q->buf = b;
		q->cap = cap;
	}
	return 0;
}

void qb_add(struct qb *q, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || qb_reserve(q, (size_t)n) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(q->buf + q->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	q->len += (size_t)n;
}

void qb_str(struct qb *q, MYSQL *m, const char *s, size_t n)
{
	if (!s) {
		qb_add(q, "NULL");
		return;
	}
	if (qb_reserve(q, 2 * n + 2) < 0)
		return;
	q->buf[q->len++] = '\'';
	q->len += mysql_real_escape_string(m, q->buf + q->len, s, (unsigned long)n);
	q->buf[q->len++] = '\'';
	q->buf[q->len] = '\0';
}

/* ---- the workers ------------------------------------------------------ */

/* Attempts of one job: a lost connection is retried once (after a
 * reconnect), a lost lock a few times. */
#define LOCK_ATTEMPTS 4

/* Clear what a run reports before each attempt. */
static void job_reset(struct db_job *j)
{
	j->err = 0;
	j->errmsg[0] = '\0';
	j->conn_lost = 0;
	j->lock_lost = 0;
	j->dup_key = 0;
	j->expect_dup = 0;
}

static void run_job(struct worker *w, struct db_job *j)
{
	int conn_tries = 0, lock_tries = 0;

	for (;;) {
		if (!w->conn) {
			struct queued_config cfg;
			char err[512];
			pthread_mutex_lock(&g_mu);
			cfg = g_cfg;
			pthread_mutex_unlock(&g_mu);
			w->conn = db_connect(&cfg, err, sizeof(err));
			if (!w->conn) {
				LOG_W("%s", err);
				j->err = CCQ_E_DB_UNAVAILABLE;
				snprintf(j->errmsg, sizeof(j->errmsg),
					"database unavailable; nothing was changed, retry later");
				return;
			}
			LOG_N("MySQL worker %u: connected", w->idx);
		}
		job_reset(j);
		if (j->run(j, w->conn) == 0) {
			/* a job must end its transaction; one that did not would hold
			 * its locks until this connection's next job */
			if (w->conn->server_status & SERVER_STATUS_IN_TRANS) {
				LOG_W("MySQL worker %u: a job left a transaction open; committing it", w->idx);
				if (mysql_query(w->conn, "COMMIT") != 0)
					LOG_W("MySQL worker %u: COMMIT failed: %s", w->idx,
						mysql_error(w->conn));
			}
			return;
		}
		if (j->conn_lost) {
			/* the connection broke: drop it and run the job again once */
			LOG_W("MySQL worker %u: lost the connection (%s); reconnecting", w->idx,
				j->errmsg);
			mysql_close(w->conn);
			w->conn = NULL;
			if (++conn_tries >= 2)
				return;
			continue;
		}
		/* a failed job never leaves a transaction (and its locks) behind */
		if (w->conn->server_status & SERVER_STATUS_IN_TRANS)
			mysql_query(w->conn, "ROLLBACK");
		if (!j->lock_lost)
			return;
		if (++lock_tries >= LOCK_ATTEMPTS) {
			/* a report (OP_RETRY) tries again later, as in an outage */
			j->err = CCQ_E_DB_UNAVAILABLE;
			return;
		}
		pthread_mutex_lock(&g_mu);
		g_lock_retries++;
		pthread_mutex_unlock(&g_mu);
		LOG_D("MySQL worker %u: %s; running the job again", w->idx, j->errmsg);
		/* let the winner finish before trying again */
		usleep(1000u * (unsigned)lock_tries);
	}
}

static void hand_back(struct worker *w, struct db_job **js, unsigned n, int *gone);

/* A job's writes in the group's batch: where they are, and their order. */
struct gw {
	size_t at, len;
	uint64_t order;
	unsigned idx;
};

static int gw_cmp(const void *a, const void *b)
{
	const struct gw *x = a, *y = b;
	if (x->order != y->order)
		return x->order < y->order ? -1 : 1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/*
 * Jobs js[0..n-1] (distinct keys, each with a group, in queue order) in one
 * transaction: see struct db_group in db.h. The group keeps the order a
 * worker running them one by one would have: from the first job that must
 * run alone (or that touches a row, say a TXN, a job before it in the
 * group touches: a transfer's two legs), that job and every later one
 * run alone, in order, after the COMMIT of those before. Whatever goes
 * wrong, each job is run alone, from the start, as run_job would have.
 * The jobs that committed are handed back before the others run.
 */
static void run_group(struct worker *w, struct db_job **js, unsigned n, int *gone)
{
	struct db_job ge;                 /* the group's own failure */
	MYSQL_RES *res[1 + DB_GROUP_MAX * DB_GROUP_READS_MAX];
	int nread[DB_GROUP_MAX], alone[DB_GROUP_MAX];
	uint64_t ent[DB_GROUP_MAX];
	struct gw gw[DB_GROUP_MAX];
	unsigned total = 0, off, i, ngw = 0, cut = n;
	struct qb q, wq, fq;
	int rc;

	for (i = 0; i < n; i++) {
		alone[i] = 1;
		nread[i] = 0;
	}
	if (!w->conn)
		goto each;                    /* run_job connects, or fails each job */
	qb_init(&q);
	qb_add(&q, "START TRANSACTION");
	for (i = 0; i < n; i++) {
		size_t len = q.len;
		int k;
		job_reset(js[i]);
		k = js[i]->group->read(js[i], w->conn, &q);
		if (k <= 0 || k > DB_GROUP_READS_MAX || q.oom) {
			/* nothing of it in the batch: it runs alone, and so do the
			 * jobs after it */
			if (!q.oom) {
				q.len = len;
				q.buf[len] = '\0';
			}
			break;
		}
		nread[i] = k;
		alone[i] = 0;
		total += (unsigned)k;
	}
	if (q.oom || total == 0) {
		qb_free(&q);
		goto each;
	}
	memset(&ge, 0, sizeof(ge));
	rc = db_exec_multi(&ge, w->conn, q.buf, q.len, res, (int)(1 + total), NULL);
	qb_free(&q);
	if (rc < 0)
		goto failed;
	/* res[0] is START TRANSACTION's (none) */
	qb_init(&wq);
	for (i = 0, off = 1; i < n && !alone[i]; off += (unsigned)nread[i], i++) {
		size_t at = wq.len;
		uint64_t order = 0;
		if (i >= cut) {
			alone[i] = 1;
			continue;
		}
		ent[i] = 0;
		rc = js[i]->group->write(js[i], w->conn, res + off, &wq, &ent[i], &order);
		if (rc < 0 || wq.oom) {
			for (unsigned k = 1; k < 1 + total; k++)
				if (res[k])
					mysql_free_result(res[k]);
			qb_free(&wq);
			if (ge.err == 0)
				snprintf(ge.errmsg, sizeof(ge.errmsg), "%s", js[i]->errmsg);
			ge.conn_lost = js[i]->conn_lost;
			goto failed;
		}
		for (unsigned k = 0; rc == 0 && ent[i] && k < i; k++)
			if (!alone[k] && ent[k] == ent[i])
				rc = 1;       /* read before the other's writes: alone */
		if (rc == 1) {
			wq.len = at;
			if (wq.buf)
				wq.buf[at] = '\0';
			alone[i] = 1;
			cut = i;
			continue;
		}
		if (wq.len > at) {
			gw[ngw].at = at;
			gw[ngw].len = wq.len - at;
			gw[ngw].order = order;
			gw[ngw].idx = i;
			ngw++;
		}
	}
	for (; i < n; i++)
		alone[i] = 1;
	for (unsigned k = 1; k < 1 + total; k++)
		if (res[k])
			mysql_free_result(res[k]);
	/* the writes in the order of the rows they lock last (the agents'):
	 * two groups on two workers then take them in the same order */
	qsort(gw, ngw, sizeof(gw[0]), gw_cmp);
	qb_init(&fq);
	for (unsigned k = 0; k < ngw; k++)
		qb_add(&fq, "%.*s", (int)gw[k].len, wq.buf + gw[k].at);
	qb_free(&wq);
	/* every statement came with its ';' before it: skip the first */
	qb_add(&fq, ";COMMIT");
	rc = fq.oom ? -1 : db_exec_multi(&ge, w->conn, fq.buf + 1, fq.len - 1, NULL, 0, NULL);
	qb_free(&fq);
	if (rc < 0)
		goto failed;
	for (i = 0; i < n; i++)
		if (!alone[i]) {
			job_reset(js[i]);
			js[i]->group->after(js[i], w->conn);
			gone[i] = 1;
		}
	hand_back(w, js, n, gone);
	for (i = 0; i < n; i++)
		if (alone[i])
			run_job(w, js[i]);
	return;

failed:
	{
		/* failed groups cost a round trip and run their reports alone:
		 * say so, at most every 10 s (a row another worker holds, NOWAIT,
		 * is the usual cause and harmless now and then) */
		static uint64_t last_ns;
		static unsigned failed;
		uint64_t now = db_now_ns();
		pthread_mutex_lock(&g_mu);
		failed++;
		if (now - last_ns >= 10000000000ull || !last_ns) {
			LOG_N("MySQL worker %u: a group of %u reports failed (%s); each runs alone "
				"(%u group(s) failed in the last 10 s)", w->idx, n, ge.errmsg, failed);
			last_ns = now;
			failed = 0;
		}
		pthread_mutex_unlock(&g_mu);
	}
	if (ge.conn_lost) {
		mysql_close(w->conn);
		w->conn = NULL;
	} else if (w->conn->server_status & SERVER_STATUS_IN_TRANS) {
		mysql_query(w->conn, "ROLLBACK");
	}
	if (ge.lock_lost) {
		pthread_mutex_lock(&g_mu);
		g_lock_retries++;
		pthread_mutex_unlock(&g_mu);
	}
each:
	for (i = 0; i < n; i++)
		run_job(w, js[i]);
}

/* Is a job with this key running? (under g_mu) */
static int key_busy(uint64_t key)
{
	if (!key)
		return 0;
	for (unsigned i = 0; i < g_nworkers; i++)
		if (g_workers[i].busy)
			for (unsigned k = 0; k < g_workers[i].nbusy; k++)
				if (g_workers[i].busy_keys[k] == key)
					return 1;
	return 0;
}

/* jobq_take's view of the workers (under g_mu) */
static int key_running(uint64_t key, void *arg)
{
	(void)arg;
	return key_busy(key);
}

/* The next job to run (under g_mu); the order is jobq_take's (jobq.h).
 * While g_plain_max workers run reports (jobs nobody waits on), the
 * others are kept for decisions: a call's decision then does not wait
 * for a report's round trips and commit. */
static struct db_job *take(uint64_t now, int *kept)
{
	unsigned plain = 0;
	for (unsigned i = 0; i < g_nworkers; i++)
		plain += g_workers[i].busy && g_workers[i].busy_plain;
	*kept = plain >= g_plain_max;
	return jobq_take(&g_in, key_running, NULL, now, !*kept);
}

/* Hand the jobs js[i] with sel[i] set back to the loop; their keys are
 * free again, and the worker is idle once it holds none. */
static void hand_back(struct worker *w, struct db_job **js, unsigned n, int *sel)
{
	uint64_t t = db_now_ns();
	unsigned k;

	pthread_mutex_lock(&g_mu);
	for (unsigned i = 0; i < n; i++) {
		if (!sel[i])
			continue;
		js[i]->t_end = t;
		for (k = 0; k < w->nbusy; k++)
			if (w->busy_keys[k] == js[i]->key) {
				w->busy_keys[k] = w->busy_keys[--w->nbusy];
				break;
			}
		js[i]->next = NULL;
		if (g_out_tail)
			g_out_tail->next = js[i];
		else
			g_out_head = js[i];
		g_out_tail = js[i];
	}
	if (!w->nbusy) {
		w->busy = 0;
		w->busy_plain = 0;
	}
	/* a job of these keys (or a report held back for a worker not kept
	 * for decisions) may be waiting: another worker may take it. None
	 * waits: no wake-up (each costs every idle worker a round on g_mu;
	 * a new job signals g_cv itself) */
	if (g_in.head)
		pthread_cond_broadcast(&g_cv);
	pthread_mutex_unlock(&g_mu);
	ev_async_send(g_loop, &g_async);
}

static void *worker(void *arg)
{
	struct worker *w = arg;

	mysql_thread_init();
	for (;;) {
		struct db_job *j, *grp[DB_GROUP_MAX];
		int gone[DB_GROUP_MAX], kept = 0;
		unsigned n;
		int grouped;
		uint64_t t;
		pthread_mutex_lock(&g_mu);
		for (;;) {
			/* one reading of the clock for both: a job that ages
			 * between two readings would be refused and then not
			 * waited for */
			uint64_t now = db_now_ns();
			if ((j = take(now, &kept)) || (g_stop && !g_in.head))
				break;
			if (g_in.head && g_in.head->t_submit + JOBQ_AGE_NS >= now) {
				/* jobs wait that this worker may not take now (it is
				 * kept for decisions, or their key runs): look again
				 * when the oldest has aged and every worker may take
				 * it (after that, only a running key holds a job back,
				 * and its end wakes the workers) */
				/* g_cv waits on CLOCK_MONOTONIC (db_start), db_now_ns's */
				uint64_t due = g_in.head->t_submit + JOBQ_AGE_NS + 1000000ull;
				struct timespec ts;
				ts.tv_sec = (time_t)(due / 1000000000ull);
				ts.tv_nsec = (long)(due % 1000000000ull);
				pthread_cond_timedwait(&g_cv, &g_mu, &ts);
			} else {
				pthread_cond_wait(&g_cv, &g_mu);
			}
		}
		if (!j) {
			pthread_mutex_unlock(&g_mu);
			break;
		}
		w->busy = 1;
		w->busy_keys[0] = j->key;
		w->nbusy = 1;
		w->busy_plain = !j->urgent;
		grp[0] = j;
		n = 1;
		/* a worker kept for decisions that helps with reports fallen
		 * behind runs one at a time: a group would keep it from the
		 * decisions for several reports' time */
		grouped = j->group && g_cfg.report_batch > 1 && !kept;
		if (grouped && g_cfg.report_linger && !g_stop) {
			/* reports come at least one per report_linger: let this one
			 * wait, up to that long from its submission, for others to
			 * share its transaction (its key stays taken meanwhile; the
			 * other workers go on) */
			uint64_t linger = (uint64_t)g_cfg.report_linger * 1000000ull;
			uint64_t due = j->t_submit + linger;
			if (j->t_prev_group && j->t_submit - j->t_prev_group < linger
					&& due > db_now_ns()) {
				struct timespec ts;
				ts.tv_sec = (time_t)(due / 1000000000ull);
				ts.tv_nsec = (long)(due % 1000000000ull);
				pthread_mutex_unlock(&g_mu);
				/* not a wait on g_cv: it would take a wake-up meant for
				 * an idle worker (a decision's) */
				while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
					;
				pthread_mutex_lock(&g_mu);
			}
		}
		if (grouped) {
			struct db_job *o;
			unsigned max = g_cfg.report_batch < DB_GROUP_MAX ? g_cfg.report_batch : DB_GROUP_MAX;
			while (n < max && (o = jobq_take_group(&g_in, key_running, NULL, w->busy_keys,
					w->nbusy))) {
				grp[n++] = o;
				w->busy_keys[w->nbusy++] = o->key;
			}
			g_groups++;
			g_group_jobs += n;
		}
		pthread_mutex_unlock(&g_mu);

		t = db_now_ns();
		for (unsigned i = 0; i < n; i++) {
			grp[i]->t_start = t;
			gone[i] = 0;
		}
		if (grouped)
			run_group(w, grp, n, gone);
		else
			run_job(w, j);
		for (unsigned i = 0; i < n; i++)
			gone[i] = !gone[i];
		hand_back(w, grp, n, gone);
	}
	if (w->conn)
		mysql_close(w->conn);
	w->conn = NULL;
	mysql_thread_end();
	return NULL;
}

void db_early(struct db_job *j)
{
	pthread_mutex_lock(&g_mu);
	j->early_next = NULL;
	if (g_early_tail)
		g_early_tail->early_next = j;
	else
		g_early_head = j;
	g_early_tail = j;
	pthread_mutex_unlock(&g_mu);
	ev_async_send(g_loop, &g_async);
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
	struct db_job *list, *early;
	(void)loop; (void)w; (void)revents;
	/* both lists at once: a job's early answer is queued before the job
	 * itself, so it is always run first */
	pthread_mutex_lock(&g_mu);
	list = g_out_head;
	g_out_head = g_out_tail = NULL;
	early = g_early_head;
	g_early_head = g_early_tail = NULL;
	pthread_mutex_unlock(&g_mu);
	while (early) {
		struct db_job *j = early;
		early = early->early_next;
		j->early(j);
	}
	while (list) {
		struct db_job *j = list;
		list = list->next;
		g_pending--;
		j->done(j);
	}
}

int db_start(struct ev_loop *loop, const struct queued_config *cfg, MYSQL *conn)
{
	unsigned n = cfg->mysql_workers;

	if (n < 1)
		n = 1;
	if (n > DB_WORKERS_MAX)
		n = DB_WORKERS_MAX;
	g_loop = loop;
	g_cfg = *cfg;
	g_stop = 0;
	{
		/* timed waits (worker) on the monotonic clock, which is what the
		 * jobs' ages are measured on: a step of the wall clock does not
		 * stretch them */
		pthread_condattr_t ca;
		if (pthread_condattr_init(&ca) == 0) {
			if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0) {
				pthread_cond_destroy(&g_cv);
				pthread_cond_init(&g_cv, &ca);
			}
			pthread_condattr_destroy(&ca);
		}
	}
	memset(g_workers, 0, sizeof(g_workers));
	g_nworkers = n;
	g_plain_max = n > cfg->decision_workers ? n - cfg->decision_workers : 1;
	g_workers[0].conn = conn;
	ev_async_init(&g_async, on_async);
	ev_async_start(loop, &g_async);
	for (unsigned i = 0; i < n; i++) {
		g_workers[i].idx = i;
		if (pthread_create(&g_workers[i].thread, NULL, worker, &g_workers[i]) != 0) {
			LOG_E("cannot start MySQL worker thread %u: %s", i, strerror(errno));
			if (i == 0)
				return -1;
			/* run with the ones we have */
			pthread_mutex_lock(&g_mu);
			g_nworkers = i;
			g_plain_max = i > cfg->decision_workers ? i - cfg->decision_workers : 1;
			pthread_mutex_unlock(&g_mu);
			break;
		}
		g_workers[i].started = 1;
	}
	g_running = 1;
	return 0;
}

void db_submit(struct db_job *j)
{
	j->next = NULL;
	j->t_submit = db_now_ns();
	g_pending++;
	pthread_mutex_lock(&g_mu);
	if (j->group) {
		j->t_prev_group = g_last_group_submit;
		g_last_group_submit = j->t_submit;
	}
	jobq_push(&g_in, j);
	pthread_cond_signal(&g_cv);
	pthread_mutex_unlock(&g_mu);
}

uint64_t db_runnable_wait_ns(void)
{
	uint64_t now = db_now_ns(), age = 0;

	pthread_mutex_lock(&g_mu);
	/* the first job whose key does not run is one a worker could take
	 * (an earlier job of its key would have come first) */
	for (const struct db_job *j = g_in.head; j; j = j->next)
		if (!(j->key && key_busy(j->key))) {
			age = now > j->t_submit ? now - j->t_submit : 0;
			break;
		}
	pthread_mutex_unlock(&g_mu);
	return age;
}

unsigned db_pending(void)
{
	return g_pending;
}

unsigned db_workers(void)
{
	return g_nworkers;
}

void db_group_stats(unsigned long *groups, unsigned long *jobs)
{
	pthread_mutex_lock(&g_mu);
	*groups = g_groups;
	*jobs = g_group_jobs;
	pthread_mutex_unlock(&g_mu);
}

unsigned long db_lock_retries(void)
{
	unsigned long n;
	pthread_mutex_lock(&g_mu);
	n = g_lock_retries;
	pthread_mutex_unlock(&g_mu);
	return n;
}

void db_set_config(const struct queued_config *cfg)
{
	pthread_mutex_lock(&g_mu);
	g_cfg = *cfg;
	pthread_mutex_unlock(&g_mu);
}

void db_stop(void)
{
	if (!g_running)
		return;
	pthread_mutex_lock(&g_mu);
	g_stop = 1;
	pthread_cond_broadcast(&g_cv);
	pthread_mutex_unlock(&g_mu);
	for (unsigned i = 0; i < DB_WORKERS_MAX; i++)
		if (g_workers[i].started) {
			pthread_join(g_workers[i].thread, NULL);
			g_workers[i].started = 0;
		}
	g_running = 0;
	/* hand back whatever finished after the loop stopped */
	on_async(g_loop, &g_async, 0);
	ev_async_stop(g_loop, &g_async);
}
