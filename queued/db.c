/*
 * The MySQL worker thread; see db.h.
 */
#include "db.h"
#include "log.h"
#include "ccq_wire.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errmsg.h>
#include <mysqld_error.h>

static pthread_t g_thread;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static struct db_job *g_in_head, *g_in_tail;   /* to the worker */
static struct db_job *g_out_head, *g_out_tail; /* back to the loop */
static int g_stop;
static int g_running;
static unsigned g_pending;
static struct queued_config g_cfg;             /* guarded by g_mu */
static MYSQL *g_conn;                          /* worker only */
static struct ev_loop *g_loop;
static ev_async g_async;

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
	return m;
}

static void fail_from(struct db_job *j, MYSQL *m, const char *what)
{
	unsigned e = mysql_errno(m);
	if (db_is_conn_error(e)) {
		j->conn_lost = 1;
		j->err = CCQ_E_DB_UNAVAILABLE;
		snprintf(j->errmsg, sizeof(j->errmsg), "database unavailable: %s", mysql_error(m));
	} else {
		j->err = CCQ_E_INTERNAL;
		snprintf(j->errmsg, sizeof(j->errmsg), "database error in %s", what);
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

/* ---- the worker ------------------------------------------------------- */

static void run_job(struct db_job *j)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!g_conn) {
			struct queued_config cfg;
			char err[512];
			pthread_mutex_lock(&g_mu);
			cfg = g_cfg;
			pthread_mutex_unlock(&g_mu);
			g_conn = db_connect(&cfg, err, sizeof(err));
			if (!g_conn) {
				LOG_W("%s", err);
				j->err = CCQ_E_DB_UNAVAILABLE;
				snprintf(j->errmsg, sizeof(j->errmsg),
					"database unavailable; nothing was changed, retry later");
				return;
			}
			LOG_N("reconnected to MySQL");
		}
		j->err = 0;
		j->errmsg[0] = '\0';
		j->conn_lost = 0;
		if (j->run(j, g_conn) == 0)
			return;
		if (!j->conn_lost)
			return;
		/* the connection broke: drop it and run the job again once */
		LOG_W("lost the MySQL connection (%s); reconnecting", j->errmsg);
		mysql_close(g_conn);
		g_conn = NULL;
	}
}

static void *worker(void *arg)
{
	(void)arg;
	mysql_thread_init();
	for (;;) {
		struct db_job *j;
		pthread_mutex_lock(&g_mu);
		while (!g_in_head && !g_stop)
			pthread_cond_wait(&g_cv, &g_mu);
		j = g_in_head;
		if (!j) {
			pthread_mutex_unlock(&g_mu);
			break;
		}
		g_in_head = j->next;
		if (!g_in_head)
			g_in_tail = NULL;
		pthread_mutex_unlock(&g_mu);

		run_job(j);

		pthread_mutex_lock(&g_mu);
		j->next = NULL;
		if (g_out_tail)
			g_out_tail->next = j;
		else
			g_out_head = j;
		g_out_tail = j;
		pthread_mutex_unlock(&g_mu);
		ev_async_send(g_loop, &g_async);
	}
	if (g_conn)
		mysql_close(g_conn);
	g_conn = NULL;
	mysql_thread_end();
	return NULL;
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents)
{
	struct db_job *list;
	(void)loop; (void)w; (void)revents;
	pthread_mutex_lock(&g_mu);
	list = g_out_head;
	g_out_head = g_out_tail = NULL;
	pthread_mutex_unlock(&g_mu);
	while (list) {
		struct db_job *j = list;
		list = list->next;
		g_pending--;
		j->done(j);
	}
}

int db_start(struct ev_loop *loop, const struct queued_config *cfg, MYSQL *conn)
{
	g_loop = loop;
	g_cfg = *cfg;
	g_conn = conn;
	g_stop = 0;
	ev_async_init(&g_async, on_async);
	ev_async_start(loop, &g_async);
	if (pthread_create(&g_thread, NULL, worker, NULL) != 0) {
		LOG_E("cannot start the MySQL worker thread: %s", strerror(errno));
		return -1;
	}
	g_running = 1;
	return 0;
}

void db_submit(struct db_job *j)
{
	j->next = NULL;
	g_pending++;
	pthread_mutex_lock(&g_mu);
	if (g_in_tail)
		g_in_tail->next = j;
	else
		g_in_head = j;
	g_in_tail = j;
	pthread_cond_signal(&g_cv);
	pthread_mutex_unlock(&g_mu);
}

unsigned db_pending(void)
{
	return g_pending;
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
	pthread_cond_signal(&g_cv);
	pthread_mutex_unlock(&g_mu);
	pthread_join(g_thread, NULL);
	g_running = 0;
	/* hand back whatever finished after the loop stopped */
	on_async(g_loop, &g_async, 0);
	ev_async_stop(g_loop, &g_async);
}
