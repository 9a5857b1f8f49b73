/*
 * Request handling framework; see ops.h. The operations themselves live
 * in ops_txn.c (transactions and journeys), ops_dir.c (the directory:
 * organisations, users, devices, inboxes, customers, trunks, tokens),
 * ops_call.c (calls), ops_compliance.c (compliance data),
 * ops_callback.c (callbacks and scheduled calls) and ops_recording.c
 * (call recording).
 */
#include "ccq_config.h"
#include "ops.h"
#include "calls.h"
#include "jobq.h"
#include "dircache.h"
#include "agentview.h"
#include "server.h"
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <pwd.h>

static int g_schema;

void ops_set_schema(int version)
{
	g_schema = version;
}

int ops_schema(void)
{
	return g_schema;
}

int req_fail(struct req *r, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->j.errmsg, sizeof(r->j.errmsg), fmt, ap);
	va_end(ap);
	r->j.err = code;
	return -1;
}

static _Atomic int g_rewrites;
/* the keys (calls) of the jobs counted in g_rewrites; g_rw_lost counts
 * those that found no room (then every key counts as pending) */
static pthread_mutex_t g_rw_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t *g_rw_keys;
static size_t g_rw_n, g_rw_cap;
static unsigned g_rw_lost;

int ops_rewrites_pending(void)
{
	return g_rewrites;
}

int ops_rewrite_pending_for(uint64_t key)
{
	int found = 0;
	if (!g_rewrites)
		return 0;
	pthread_mutex_lock(&g_rw_mu);
	found = g_rw_lost > 0;
	for (size_t i = 0; i < g_rw_n && !found; i++)
		found = g_rw_keys[i] == key;
	pthread_mutex_unlock(&g_rw_mu);
	return found;
}

static void rewrite_done(struct req *r)
{
	pthread_mutex_lock(&g_rw_mu);
	if (r->rewriting == 2) {
		g_rw_lost--;
	} else {
		for (size_t i = 0; i < g_rw_n; i++)
			if (g_rw_keys[i] == r->j.key) {
				g_rw_keys[i] = g_rw_keys[--g_rw_n];
				break;
			}
	}
	g_rewrites--;
	r->rewriting = 0;
	pthread_mutex_unlock(&g_rw_mu);
}

/* loop thread: the early answer of a job still running (sent by the
 * worker already, see req_answer_now: only the loop's bookkeeping) */
static void req_early_send(struct db_job *j)
{
	struct req *r = (struct req *)j;
	if (r->sent_now) {
		conn_sent(r->c, r->sent_now - 1);
		return;
	}
	if (r->c)
		conn_send(r->c, &r->enc);
	else
		ccq_enc_free(&r->enc);
	r->have_enc = 0;
	r->t_answer = db_now_ns();
}

void req_rewrite_pending(struct req *r)
{
	if (r->rewriting)
		return;
	pthread_mutex_lock(&g_rw_mu);
	if (g_rw_n == g_rw_cap) {
		size_t cap = g_rw_cap ? g_rw_cap * 2 : 16;
		uint64_t *k = realloc(g_rw_keys, cap * sizeof(*k));
		if (k) {
			g_rw_keys = k;
			g_rw_cap = cap;
		}
	}
	if (g_rw_n < g_rw_cap) {
		g_rw_keys[g_rw_n++] = r->j.key;
		r->rewriting = 1;
	} else {
		g_rw_lost++;
		r->rewriting = 2;
	}
	g_rewrites++;
	pthread_mutex_unlock(&g_rw_mu);
}

/*
 * Worker thread. The answer goes to the client's socket from here: waking
 * the loop thread to write it costs a thread hand-over on the decision's
 * path (tenths of a millisecond on a busy VM, more in the tail); the loop
 * still hears of it, for the connection's bookkeeping.
 */
void req_answer_now(struct req *r)
{
	if (r->c && r->have_enc) {
		int rc = conn_send_now(r->c, &r->enc);
		if (rc != -1) {
			r->have_enc = 0;
			r->sent_now = rc + 1;
			r->t_answer = db_now_ns();
		}
	}
	r->early = 1;
	r->j.early = req_early_send;
	db_early(&r->j);
}

msgpack_packer *req_reply(struct req *r)
{
	if (r->have_enc)
		ccq_enc_free(&r->enc);
	ccq_enc_init(&r->enc);
	r->have_enc = 1;
	ccq_enc_reply_ok(&r->enc, r->id);
	return &r->enc.pk;
}

int arg_str(struct req *r, const char *key, char *buf, size_t size, int required)
{
	int rc = ccq_map_strcpy(r->args, key, buf, size);
	if (rc < 0)
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"argument '%s' must be a string of at most %zu bytes", key, size - 1);
	if (rc == 0 && required)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument '%s' is required", key);
	if (rc == 1 && required && !buf[0])
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument '%s' must not be empty", key);
	return 0;
}

int arg_uint(struct req *r, const char *key, uint64_t *v, int required, uint64_t max)
{
	int rc = ccq_map_uint(r->args, key, v);
	if (rc < 0 || (rc == 1 && *v > max))
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"argument '%s' must be a whole number from 0 to %llu", key,
			(unsigned long long)max);
	if (rc == 0 && required)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument '%s' is required", key);
	return 0;
}

int arg_bool(struct req *r, const char *key, int *v, int required)
{
	int rc = ccq_map_bool(r->args, key, v);
	if (rc < 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument '%s' must be true or false", key);
	if (rc == 0 && required)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument '%s' is required", key);
	return 0;
}

void qb_journey(struct qb *q, MYSQL *m, uint64_t txn, const char *kind, const char *text,
		const char *at)
{
	qb_add(q, "INSERT INTO txn_event (txn_id, at, kind, text) VALUES (%llu, %s, '%s', ",
		(unsigned long long)txn, at ? at : "UTC_TIMESTAMP(3)", kind);
	qb_str(q, m, text, utf8_cut(text, CCQ_EVENT_TEXT_MAX));
	qb_add(q, ")");
}

void qb_agent_call_end(struct qb *q, uint32_t agent, const char *at)
{
	/* INSERT ... SELECT reads the user row without a lock (READ
	 * COMMITTED): a claim holding it does not hold the end up */
	qb_add(q, "INSERT INTO agent_state (user_id, last_call_end, wrapup_until) SELECT u.id, "
		"%s, %s + INTERVAL u.wrapup_seconds SECOND FROM user u WHERE u.id = %u "
		"ON DUPLICATE KEY UPDATE "
		"agent_state.last_call_end = GREATEST(COALESCE(agent_state.last_call_end, "
		"VALUES(last_call_end)), VALUES(last_call_end)), "
		"agent_state.wrapup_until = GREATEST(COALESCE(agent_state.wrapup_until, "
		"VALUES(wrapup_until)), VALUES(wrapup_until))", at, at, agent);
}

size_t utf8_cut(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n <= max)
		return n;
	/* back to the start of the character that crosses the limit */
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	return n;
}

int req_journey(struct req *r, MYSQL *m, uint64_t txn, const char *kind, const char *text,
		const char *at)
{
	struct qb q;
	int rc;
	qb_init(&q);
	qb_journey(&q, m, txn, kind, text, at);
	rc = q.oom ? req_fail(r, CCQ_E_INTERNAL, "out of memory") : db_exec(&r->j, m, q.buf, q.len);
	qb_free(&q);
	return rc;
}

void qb_customer(struct qb *q, MYSQL *m, uint64_t org, const char *e164, const char *cols)
{
	qb_add(q, "SELECT %s FROM customer_number n JOIN customer c "
		"ON c.id = n.customer_id WHERE n.org_id = %llu AND n.number = ",
		cols ? cols : "c.id, c.name", (unsigned long long)org);
	qb_str(q, m, e164, strlen(e164));
	qb_add(q, " ORDER BY c.id LIMIT 1");
}

int customer_by_number(struct req *r, MYSQL *m, uint64_t org, const char *e164,
		uint64_t *id, char *name, size_t size)
{
	struct qb q;
	MYSQL_RES *res;
	MYSQL_ROW row;

	*id = 0;
	name[0] = '\0';
	if (!e164[0] || strlen(e164) > 20)
		return 0;
	qb_init(&q);
	qb_customer(&q, m, org, e164, NULL);
	if (!(res = req_select_qb(r, m, &q)))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		*id = strtoull(row[0], NULL, 10);
		snprintf(name, size, "%s", row[1]);
	}
	mysql_free_result(res);
	return 0;
}

int req_update_journey(struct req *r, MYSQL *m, uint64_t txn, const char *sql,
		const char *kind, const char *text)
{
	msgpack_packer *pk;

	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	if (db_exec(&r->j, m, sql, strlen(sql)) < 0)
		return req_rollback(r, m);
	/* the UPDATE carries its own condition: a request on another worker
	 * may have changed the TXN since it was read */
	if (mysql_affected_rows(m) == 0) {
		req_rollback(r, m);
		return req_fail(r, CCQ_E_CONFLICT, "transaction %llu changed meanwhile (ended?)",
			(unsigned long long)txn);
	}
	if (req_journey(r, m, txn, kind, text, NULL) < 0)
		return req_rollback(r, m);
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_kv_uint(pk, "id", txn);
	return 0;
}

void req_event_time(struct req *r, char *buf, size_t size)
{
	uint64_t at = 0;
	if (ccq_map_uint(r->args, "at_ms", &at) == 1 && at > 1000000000000ull
			&& at < 100000000000000ull)
		snprintf(buf, size, "FROM_UNIXTIME(%llu.%03llu)", (unsigned long long)(at / 1000),
			(unsigned long long)(at % 1000));
	else
		snprintf(buf, size, "UTC_TIMESTAMP(3)");
}

int utc_time_parse(const char *s, int date_only, time_t *t, unsigned *unit)
{
	int y, mo, d, h = 0, mi = 0, sec = 0, n;
	char end = 0;
	unsigned u;
	struct tm tm, back;

	n = sscanf(s, "%4d-%2d-%2d %2d:%2d:%2d%c", &y, &mo, &d, &h, &mi, &sec, &end);
	if (n == 6) {
		u = 1;
	} else if (n == 5 && sscanf(s, "%4d-%2d-%2d %2d:%2d%c", &y, &mo, &d, &h, &mi, &end) == 5) {
		u = 60;
	} else if (n == 3 && date_only && sscanf(s, "%4d-%2d-%2d%c", &y, &mo, &d, &end) == 3) {
		u = 86400;
	} else {
		return -1;
	}
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*t = timegm(&tm);
	/* 2024-02-30 would roll over to March: refuse it rather than guess */
	if (*t == (time_t)-1 || !gmtime_r(t, &back) || back.tm_mday != d || back.tm_mon != mo - 1
			|| back.tm_hour != h || back.tm_min != mi || back.tm_sec != sec)
		return -1;
	if (unit)
		*unit = u;
	return 0;
}

int req_rollback(struct req *r, MYSQL *m)
{
	if (!r->j.conn_lost)
		mysql_query(m, "ROLLBACK");
	return -1;
}

int str_in(const char *v, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(v, *set) == 0)
			return 1;
	return 0;
}

int text_ok(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

int req_exec_qb(struct req *r, MYSQL *m, struct qb *q)
{
	int rc = q->oom ? req_fail(r, CCQ_E_INTERNAL, "out of memory") : db_exec(&r->j, m, q->buf, q->len);
	qb_free(q);
	return rc;
}

int req_multi_qb(struct req *r, MYSQL *m, struct qb *q, MYSQL_RES **res, int nres,
		uint64_t *first_id)
{
	int rc;
	if (q->oom) {
		for (int i = 0; i < nres; i++)
			res[i] = NULL;
		rc = req_fail(r, CCQ_E_INTERNAL, "out of memory");
	} else {
		rc = db_exec_multi(&r->j, m, q->buf, q->len, res, nres, first_id);
	}
	qb_free(q);
	return rc;
}

MYSQL_RES *req_select_qb(struct req *r, MYSQL *m, struct qb *q)
{
	MYSQL_RES *res = NULL;
	if (q->oom)
		req_fail(r, CCQ_E_INTERNAL, "out of memory");
	else
		res = db_select(&r->j, m, q->buf, q->len);
	qb_free(q);
	return res;
}

int sql_u64(struct req *r, MYSQL *m, const char *sql, size_t len, uint64_t *v, int *found)
{
	MYSQL_RES *res = db_select(&r->j, m, sql, len);
	MYSQL_ROW row;
	if (!res)
		return -1;
	row = mysql_fetch_row(res);
	*found = row && row[0];
	*v = *found ? strtoull(row[0], NULL, 10) : 0;
	mysql_free_result(res);
	return 0;
}

int sql_u64_qb(struct req *r, MYSQL *m, struct qb *q, uint64_t *v, int *found)
{
	int rc = q->oom ? req_fail(r, CCQ_E_INTERNAL, "out of memory")
		: sql_u64(r, m, q->buf, q->len, v, found);
	qb_free(q);
	return rc;
}

void pack_row(msgpack_packer *pk, MYSQL_RES *res, MYSQL_ROW row, unsigned extra)
{
	unsigned n = mysql_num_fields(res);
	MYSQL_FIELD *f = mysql_fetch_fields(res);
	unsigned long *len = mysql_fetch_lengths(res);

	msgpack_pack_map(pk, n + extra);
	for (unsigned i = 0; i < n; i++) {
		ccq_pack_str(pk, f[i].name);
		if (!row[i]) {
			msgpack_pack_nil(pk);
			continue;
		}
		switch (f[i].type) {
		case MYSQL_TYPE_TINY: case MYSQL_TYPE_SHORT: case MYSQL_TYPE_LONG:
		case MYSQL_TYPE_INT24: case MYSQL_TYPE_LONGLONG:
			if (f[i].flags & UNSIGNED_FLAG)
				msgpack_pack_uint64(pk, strtoull(row[i], NULL, 10));
			else
				msgpack_pack_int64(pk, strtoll(row[i], NULL, 10));
			break;
		default:
			ccq_pack_strn(pk, row[i], len[i]);
		}
	}
}

void pack_rows(msgpack_packer *pk, MYSQL_RES *res)
{
	MYSQL_ROW row;
	msgpack_pack_array(pk, (size_t)mysql_num_rows(res));
	while ((row = mysql_fetch_row(res)))
		pack_row(pk, res, row, 0);
}

void req_reply_rows(struct req *r, MYSQL_RES *res, const char *key)
{
	msgpack_packer *pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_str(pk, key);
	pack_rows(pk, res);
	mysql_free_result(res);
}

/*
 * Resolve the acting user. The operator may act as a user with the
 * argument "as" ("<ext>@<org>" or a numeric user id); everyone else acts
 * as themselves.
 */
int req_who(struct req *r, MYSQL *m)
{
	char as[200] = "", q[800], esc_ext[80], esc_org[220];
	uint64_t uid = r->actor.user_id;
	MYSQL_RES *res;
	MYSQL_ROW row;

	memset(&r->who, 0, sizeof(r->who));
	if (arg_str(r, "as", as, sizeof(as), 0) < 0)
		return -1;
	if (as[0] && !r->actor.operator)
		return req_fail(r, CCQ_E_DENIED, "only the local operator may act as another user");
	if (!as[0] && r->actor.operator) {
		r->who.operator = 1;
		snprintf(r->who.name, sizeof(r->who.name), "operator");
		return 0;
	}
	if (as[0]) {
		char *at = strchr(as, '@');
		if (at) {
			*at = '\0';
			if (strlen(as) > 32 || strlen(at + 1) > 100)
				return req_fail(r, CCQ_E_BAD_REQUEST, "'as' is too long");
			mysql_real_escape_string(m, esc_ext, as, strlen(as));
			mysql_real_escape_string(m, esc_org, at + 1, strlen(at + 1));
			snprintf(q, sizeof(q), "SELECT u.id FROM user u JOIN org o ON o.id = u.org_id "
				"WHERE u.ext_key = '%s' AND o.name = '%s'", esc_ext, esc_org);
			{
				int found;
				if (sql_u64(r, m, q, strlen(q), &uid, &found) < 0)
					return -1;
				if (!found)
					return req_fail(r, CCQ_E_NOT_FOUND, "no extension %s in organisation %s",
						as, at + 1);
			}
		} else {
			char *end;
			uid = strtoull(as, &end, 10);
			if (*end || uid == 0)
				return req_fail(r, CCQ_E_BAD_REQUEST,
					"'as' must be <extension>@<organisation> or a user id");
		}
	}
	if (uid == 0 && r->actor.is_unix) {
		/* a local user on the unix socket: the user whose unix_user is the
		 * peer's login name (SO_PEERCRED) */
		struct passwd pw, *pwp = NULL;
		char pwbuf[1024], esc[140];
		int found = 0;
		if (getpwuid_r(r->actor.uid, &pw, pwbuf, sizeof(pwbuf), &pwp) == 0 && pwp
				&& strlen(pw.pw_name) < 64) {
			mysql_real_escape_string(m, esc, pw.pw_name, strlen(pw.pw_name));
			snprintf(q, sizeof(q), "SELECT id FROM user WHERE unix_user = '%s'", esc);
			if (sql_u64(r, m, q, strlen(q), &uid, &found) < 0)
				return -1;
		}
		if (!found)
			return req_fail(r, CCQ_E_DENIED, "unix user %u is neither the operator nor mapped to "
				"a ccq user (user.unix_user)", (unsigned)r->actor.uid);
	}
	if (uid == 0)
		return req_fail(r, CCQ_E_DENIED, "authenticate first (auth with an API token)");
	snprintf(q, sizeof(q), "SELECT u.id, u.org_id, u.role, u.cc_addon, u.ext_key, u.name, o.name "
		"FROM user u JOIN org o ON o.id = u.org_id WHERE u.id = %llu", (unsigned long long)uid);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	if (!row) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_DENIED, "user %llu no longer exists", (unsigned long long)uid);
	}
	r->who.user_id = (uint32_t)strtoul(row[0], NULL, 10);
	r->who.org_id = (uint32_t)strtoul(row[1], NULL, 10);
	r->who.role = role_parse(row[2]);
	r->who.addon = atoi(row[3]);
	snprintf(r->who.ext, sizeof(r->who.ext), "%s", row[4]);
	snprintf(r->who.name, sizeof(r->who.name), "%s", row[5]);
	snprintf(r->who.org_name, sizeof(r->who.org_name), "%s", row[6]);
	mysql_free_result(res);
	return 0;
}

/* ---- ordering keys ------------------------------------------------------ */

static uint64_t key_hash(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

static uint64_t key_of(const char *kind, const char *a, size_t an, const char *b, size_t bn)
{
	uint64_t h = key_hash(14695981039346656037ull, kind, strlen(kind));
	h = key_hash(h, "\0", 1);
	h = key_hash(h, a, an);
	h = key_hash(h, "\0", 1);
	h = key_hash(h, b, bn);
	return h ? h : 1;
}

/*
 * Which jobs must run in order (db.h): the reports about one call (the
 * request names it by call_id), the registrations of one device, the
 * requests of one client connection, and each kind of queued's own work
 * (one sweep at a time). Different calls run side by side.
 */
static uint64_t req_key(const struct req *r)
{
	const msgpack_object *v = r->args ? ccq_map_get(r->args, "call_id") : NULL;

	/* a callback attempt's reports stay in order whether or not they name
	 * a call (only some do) */
	if (r->args && strcmp(r->op->name, "callback.progress") == 0) {
		uint64_t cb;
		if (ccq_map_uint(r->args, "cb", &cb) == 1) {
			char s[24];
			int n = snprintf(s, sizeof(s), "%llu", (unsigned long long)cb);
			return key_of("callback", s, (size_t)n, "", 0);
		}
	}
	if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size)
		return key_of("call", v->via.str.ptr, v->via.str.size, "", 0);
	if (r->args && strcmp(r->op->name, "device.contact") == 0) {
		const msgpack_object *u = ccq_map_get(r->args, "username");
		const msgpack_object *d = ccq_map_get(r->args, "domain");
		if (u && d && u->type == MSGPACK_OBJECT_STR && d->type == MSGPACK_OBJECT_STR)
			return key_of("device", u->via.str.ptr, u->via.str.size, d->via.str.ptr,
				d->via.str.size);
	}
	if (!r->c)
		return key_of("internal", r->op->name, strlen(r->op->name), "", 0);
	{
		char cn[32];
		int n = snprintf(cn, sizeof(cn), "%p", (void *)r->c);
		return key_of("conn", cn, (size_t)n, "", 0);
	}
}

/* ---- statistics (loop thread) ------------------------------------------ */

/* Log-spaced buckets 4 % apart: bucket i holds times up to 1 us * 1.04^i
 * (the last, ~100 s, holds everything longer). A percentile is read as the
 * upper bound of its bucket, so it overstates by less than 4 %; fine
 * enough to tell 4.8 ms from 5.2 ms, which the decision target needs. */
#define ST_BUCKETS 470
struct op_stat {
	const char *name;
	unsigned long n, errors;
	unsigned long wait[ST_BUCKETS], run[ST_BUCKETS], total[ST_BUCKETS];
	uint64_t run_max_ns, wait_max_ns, total_max_ns;
};
#define ST_MAX 96
static struct op_stat g_stats[ST_MAX];
static unsigned g_nstats;
static double g_bound_ms[ST_BUCKETS];   /* upper bounds, filled on first use */

static double bucket_ms(int i)
{
	if (g_bound_ms[0] == 0.0) {
		double v = 0.001;
		for (int k = 0; k < ST_BUCKETS; k++, v *= 1.04)
			g_bound_ms[k] = v;
	}
	return g_bound_ms[i];
}

/* the first bucket whose upper bound is >= the time (binary search) */
static int bucket_of(uint64_t ns)
{
	double ms = (double)ns / 1e6;
	int lo = 0, hi = ST_BUCKETS - 1;

	bucket_ms(0);
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (g_bound_ms[mid] >= ms)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

static void stat_record(const struct req *r, uint64_t now_ns)
{
	struct op_stat *st = NULL;
	uint64_t wait, run, total;

	if (!r->j.t_start || !r->j.t_end)
		return;
	for (unsigned i = 0; i < g_nstats; i++)
		if (g_stats[i].name == r->op->name) {
			st = &g_stats[i];
			break;
		}
	if (!st) {
		if (g_nstats >= ST_MAX)
			return;
		st = &g_stats[g_nstats++];
		st->name = r->op->name;
	}
	wait = r->j.t_start > r->j.t_submit ? r->j.t_start - r->j.t_submit : 0;
	run = r->j.t_end - r->j.t_start;
	/* arrival to answer: what the client waits for, less the socket */
	total = r->t_recv && now_ns > r->t_recv ? now_ns - r->t_recv : wait + run;
	st->n++;
	if (r->j.err)
		st->errors++;
	st->wait[bucket_of(wait)]++;
	st->run[bucket_of(run)]++;
	st->total[bucket_of(total)]++;
	if (run > st->run_max_ns)
		st->run_max_ns = run;
	if (wait > st->wait_max_ns)
		st->wait_max_ns = wait;
	if (total > st->total_max_ns)
		st->total_max_ns = total;
}

/* Upper bound of the bucket holding the q-quantile, capped by max. */
static double quantile_ms(const unsigned long *b, unsigned long n, double q, uint64_t max_ns)
{
	unsigned long want = (unsigned long)((double)n * q), seen = 0;
	double cap = (double)max_ns / 1e6;
	if (want >= n)
		want = n ? n - 1 : 0;
	for (int i = 0; i < ST_BUCKETS; i++) {
		seen += b[i];
		if (seen > want) {
			double v = bucket_ms(i);
			return v < cap ? v : cap;
		}
	}
	return cap;
}

static void pack_q(msgpack_packer *pk, const char *key, const unsigned long *b,
		unsigned long n, double q, uint64_t max_ns)
{
	ccq_pack_str(pk, key);
	msgpack_pack_double(pk, quantile_ms(b, n, q, max_ns));
}

/*
 * server.stats: per operation, how many ran, how long they waited for a
 * worker, how long they ran on it (the database's share of a decision),
 * and the whole time from the request's arrival to its answer (queued's
 * decision latency). For the operator; "reset": true starts the counts
 * again.
 */
static void op_stats(struct conn *c, uint64_t id, const msgpack_object *args)
{
	ccq_enc e;
	int reset = 0;
	unsigned long groups, grouped, paths[ROUTE_PATHS];
	const struct actor *a = conn_actor(c);

	/* the operator acting as a user ("as") is that user here too */
	if (!a->operator || (args && ccq_map_get(args, "as"))) {
		conn_reply_err(c, id, CCQ_E_DENIED, "server statistics are for the local operator");
		return;
	}
	if (args && ccq_map_bool(args, "reset", &reset) < 0) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST, "argument 'reset' must be true or false");
		return;
	}
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, id);
	db_group_stats(&groups, &grouped);
	ops_route_paths(paths, reset);
	msgpack_pack_map(&e.pk, 8);
	ccq_pack_kv_uint(&e.pk, "workers", db_workers());
	ccq_pack_kv_uint(&e.pk, "pending", db_pending());
	ccq_pack_kv_uint(&e.pk, "lock_retries", db_lock_retries());
	ccq_pack_kv_uint(&e.pk, "shed", ops_shed_total());
	/* report groups (db.h struct db_group) run, and the reports in them */
	ccq_pack_kv_uint(&e.pk, "groups", groups);
	ccq_pack_kv_uint(&e.pk, "grouped", grouped);
	/* how the call.route decisions went (ops.h ROUTE_*) */
	ccq_pack_str(&e.pk, "route");
	msgpack_pack_map(&e.pk, ROUTE_PATHS);
	ccq_pack_kv_uint(&e.pk, "claimed", paths[ROUTE_CLAIMED]);
	ccq_pack_kv_uint(&e.pk, "refused", paths[ROUTE_REFUSED]);
	ccq_pack_kv_uint(&e.pk, "no_candidate", paths[ROUTE_NO_CANDIDATE]);
	ccq_pack_kv_uint(&e.pk, "retried", paths[ROUTE_RETRIED]);
	ccq_pack_str(&e.pk, "items");
	msgpack_pack_array(&e.pk, g_nstats);
	for (unsigned i = 0; i < g_nstats; i++) {
		const struct op_stat *st = &g_stats[i];
		msgpack_pack_map(&e.pk, 14);
		ccq_pack_kv_str(&e.pk, "op", st->name);
		ccq_pack_kv_uint(&e.pk, "count", st->n);
		ccq_pack_kv_uint(&e.pk, "errors", st->errors);
		pack_q(&e.pk, "wait_p50_ms", st->wait, st->n, 0.50, st->wait_max_ns);
		pack_q(&e.pk, "wait_p99_ms", st->wait, st->n, 0.99, st->wait_max_ns);
		pack_q(&e.pk, "run_p50_ms", st->run, st->n, 0.50, st->run_max_ns);
		pack_q(&e.pk, "run_p99_ms", st->run, st->n, 0.99, st->run_max_ns);
		ccq_pack_str(&e.pk, "run_max_ms");
		msgpack_pack_double(&e.pk, (double)st->run_max_ns / 1e6);
		ccq_pack_str(&e.pk, "wait_max_ms");
		msgpack_pack_double(&e.pk, (double)st->wait_max_ns / 1e6);
		pack_q(&e.pk, "total_p50_ms", st->total, st->n, 0.50, st->total_max_ns);
		pack_q(&e.pk, "total_p90_ms", st->total, st->n, 0.90, st->total_max_ns);
		pack_q(&e.pk, "total_p99_ms", st->total, st->n, 0.99, st->total_max_ns);
		pack_q(&e.pk, "total_p999_ms", st->total, st->n, 0.999, st->total_max_ns);
		ccq_pack_str(&e.pk, "total_max_ms");
		msgpack_pack_double(&e.pk, (double)st->total_max_ns / 1e6);
	}
	conn_send(c, &e);
	if (reset) {
		memset(g_stats, 0, sizeof(g_stats));
		g_nstats = 0;
	}
}

static _Atomic unsigned long g_route_paths[ROUTE_PATHS];

void ops_route_path(int path)
{
	if (path >= 0 && path < ROUTE_PATHS)
		atomic_fetch_add_explicit(&g_route_paths[path], 1, memory_order_relaxed);
}

void ops_route_paths(unsigned long out[ROUTE_PATHS], int reset)
{
	for (int i = 0; i < ROUTE_PATHS; i++)
		out[i] = reset ? atomic_exchange(&g_route_paths[i], 0) : atomic_load(&g_route_paths[i]);
}

/* ---- the generic job -------------------------------------------------- */

static int req_run(struct db_job *j, MYSQL *m)
{
	struct req *r = (struct req *)j;
	int rc;
	/* a rerun (lost connection or lock, a retried report) must not carry
	 * the events of an attempt that was rolled back */
	if (!(r->op->flags & OP_KEEP_AFTER) && !r->early) {
		free(r->after_data);
		r->after_data = NULL;
	}
	rc = r->op->run(r, m);
	/* after the change's commit (or its failure: a stale cache is only
	 * a few misses), see dircache.h */
	if (r->op->flags & OP_DIRECTORY)
		dircache_bump();
	/* callbacks, chats, transfers, outbound calls, the sweeps: agents'
	 * states changed in ways the view does not follow */
	if (!(r->op->flags & OP_VIEW_SAFE))
		av_soft_dirty();
	return rc;
}

/* A request in a group of jobs (db.h struct db_group; op->group). */
static int req_group_read(struct db_job *j, MYSQL *m, struct qb *q)
{
	struct req *r = (struct req *)j;
	/* as req_run: only a first run (not a retry, not an early-answered
	 * job written again) of the local operator acting as itself */
	if (r->early || r->attempts || r->rewriting || !r->actor.operator
			|| (r->args && ccq_map_get(r->args, "as")))
		return 0;
	free(r->after_data);
	r->after_data = NULL;
	free(r->group_data);
	r->group_data = NULL;
	r->waits_rewrite = 0;
	if (req_who(r, m) < 0)
		return 0;
	return r->group->read(r, m, q);
}

static int req_group_write(struct db_job *j, MYSQL *m, MYSQL_RES **res, struct qb *w,
		uint64_t *entity, uint64_t *order)
{
	struct req *r = (struct req *)j;
	int rc = r->group->write(r, m, res, w, entity, order);
	if (rc == 1) {
		/* its own run decides again, from the start */
		free(r->after_data);
		r->after_data = NULL;
		r->waits_rewrite = 0;
	}
	return rc;
}

static void req_group_after(struct db_job *j, MYSQL *m)
{
	struct req *r = (struct req *)j;
	r->group->after(r, m);
	/* as req_run after its run */
	if (r->op->flags & OP_DIRECTORY)
		dircache_bump();
	if (!(r->op->flags & OP_VIEW_SAFE))
		av_soft_dirty();
}

static const struct db_group g_req_group = { req_group_read, req_group_write, req_group_after };

/*
 * Requests waiting to be run again a second after they failed (reports
 * during a MySQL outage, an answered decision writing again), in the order
 * they failed, with one timer. A timer each would fire in any order when
 * several fall due in the same loop iteration, and two reports of one call
 * (a CANCEL's end and the 487's) would then run the wrong way round. For
 * the same reason a new request of a key (a call) that has one here joins
 * behind it rather than overtaking it.
 */
static struct req *g_rq_head, *g_rq_tail;
static unsigned g_rq_n;
static ev_timer g_rq_timer;
static int g_rq_timer_init;

static void rq_fire(struct ev_loop *loop, ev_timer *w, int revents);

/* (the times are monotonic, db_now_ns: ev_now is the wall clock's, which
 * may step) */
static void rq_arm(void)
{
	uint64_t now = db_now_ns();
	ev_timer_stop(EV_DEFAULT, &g_rq_timer);
	if (!g_rq_head)
		return;
	ev_timer_set(&g_rq_timer, g_rq_head->retry_due > now
		? (double)(g_rq_head->retry_due - now) / 1e9 : 0., 0.);
	ev_timer_start(EV_DEFAULT, &g_rq_timer);
}

static void rq_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
	uint64_t now = db_now_ns();
	(void)loop; (void)w; (void)revents;
	/* (a millisecond early is due: libev may wake that much early) */
	while (g_rq_head && g_rq_head->retry_due <= now + 1000000ull) {
		struct req *r = g_rq_head;
		g_rq_head = r->retry_next;
		if (!g_rq_head)
			g_rq_tail = NULL;
		r->retry_next = NULL;
		g_rq_n--;
		r->j.err = 0;
		r->j.errmsg[0] = '\0';
		db_submit(&r->j);
	}
	rq_arm();
}

/* Run r again at due at the earliest, after every request queued here
 * before it (loop thread). */
static void rq_add(struct req *r, uint64_t due)
{
	if (!g_rq_timer_init) {
		ev_timer_init(&g_rq_timer, rq_fire, 0., 0.);
		g_rq_timer_init = 1;
	}
	if (g_rq_tail && g_rq_tail->retry_due > due)
		due = g_rq_tail->retry_due;
	r->retry_due = due;
	r->retry_next = NULL;
	if (g_rq_tail)
		g_rq_tail->retry_next = r;
	else
		g_rq_head = r;
	g_rq_tail = r;
	g_rq_n++;
	if (g_rq_head == r)
		rq_arm();
}

static void rq_retry(struct req *r)
{
	rq_add(r, db_now_ns() + 1000000000ull);
}

/* Does a request of this key wait here? (Loop thread; the list is empty
 * unless MySQL is failing.) */
static int rq_has_key(uint64_t key)
{
	if (!g_rq_n || !key)
		return 0;
	for (const struct req *r = g_rq_head; r; r = r->retry_next)
		if (r->j.key == key)
			return 1;
	return 0;
}

static void req_free(struct req *r)
{
	if (r->c)
		conn_release(r->c);
	ccq_msg_free(&r->msg);
	qb_free(&r->again);
	free(r->payload);
	free(r->after_data);
	free(r->group_data);
	free(r);
}

static void req_done(struct db_job *j)
{
	struct req *r = (struct req *)j;
	uint64_t now_ns = 0;   /* when the answer left */
	/* reports are not lost to a short MySQL outage: try again shortly; the
	 * reporter gets its answer (and the change is acknowledged) only once
	 * it is committed */
	if (r->early) {
		/* answered already: a failure now means the job's writes did not
		 * land; run it again (it writes what it answered) until they do */
		if (j->err && r->attempts < 600 && !server_shutting_down()) {
			if (r->attempts++ == 0)
				LOG_W("%s answered, but its writes failed (%s); writing them again "
					"every second", r->op->name, j->errmsg);
			req_rewrite_pending(r);
			rq_retry(r);
			return;
		}
		if (j->err)
			LOG_E("%s answered, but its writes were lost after %u attempts: %s",
				r->op->name, r->attempts, j->errmsg);
		else if (r->attempts)
			LOG_N("%s: the writes of an answered request landed (attempt %u)",
				r->op->name, r->attempts + 1);
		if (r->rewriting)
			rewrite_done(r);
		if (!j->err && r->op->after)
			r->op->after(r);
		stat_record(r, r->t_answer);
		req_free(r);
		return;
	}
	if (j->err == CCQ_E_DB_UNAVAILABLE && (r->op->flags & OP_RETRY) && r->attempts < 600
			&& !server_shutting_down()) {
		if (r->attempts++ == 0)
			LOG_W("%s: %s; retrying every second", r->op->name,
				r->waits_rewrite ? j->errmsg : "MySQL unavailable");
		rq_retry(r);
		return;
	}

	if (!r->c) {
		/* internal: nobody to answer */
		if (j->err)
			LOG_W("internal %s failed: %s", r->op->name, j->errmsg);
		else if (r->op->after)
			r->op->after(r);
		if (r->have_enc)
			ccq_enc_free(&r->enc);
		if (r->internal_done)
			r->internal_done();
	} else if (j->err) {
		if (r->have_enc)
			ccq_enc_free(&r->enc);
		conn_reply_err(r->c, r->id, j->err, "%s", j->errmsg[0] ? j->errmsg
			: ccq_err_name(j->err));
		now_ns = db_now_ns();
	} else if (r->enc.sb.size - CCQ_FRAME_HDR > server_max_frame()) {
		/* say so rather than leave the client waiting */
		size_t n = r->enc.sb.size - CCQ_FRAME_HDR;
		ccq_enc_free(&r->enc);
		conn_reply_err(r->c, r->id, CCQ_E_BAD_REQUEST,
			"the result (%zu bytes) is larger than max_frame (%u bytes): ask for less "
			"(e.g. a smaller limit)", n, server_max_frame());
	} else {
		conn_send(r->c, &r->enc);
		now_ns = db_now_ns();
		if (r->op->after)
			r->op->after(r);
	}
	stat_record(r, now_ns ? now_ns : db_now_ns());
	req_free(r);
}

/* ---- ping ------------------------------------------------------------- */

static void op_ping(struct conn *c, uint64_t id, const msgpack_object *args)
{
	ccq_enc e;
	(void)args;
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, id);
	msgpack_pack_map(&e.pk, 6);
	ccq_pack_kv_str(&e.pk, "version", PACKAGE_VERSION);
	ccq_pack_kv_uint(&e.pk, "proto", CCQ_PROTO_VERSION);
	ccq_pack_kv_uint(&e.pk, "schema", (uint64_t)g_schema);
	ccq_pack_kv_uint(&e.pk, "clients", server_clients());
	ccq_pack_kv_uint(&e.pk, "db_pending", db_pending());
	ccq_pack_kv_uint(&e.pk, "db_workers", db_workers());
	conn_send(c, &e);
}

static const struct op_def ops_core[] = {
	{ "ping", NULL, op_ping, NULL, OP_ANON },
	{ "server.stats", NULL, op_stats, NULL, 0 },
	{ NULL, NULL, NULL, NULL, 0 }
};

static const struct op_def *const op_tables[] = { ops_core, ops_txn, ops_dir, ops_call,
	ops_compliance, ops_callback, ops_recording };

int ops_submit_internal(const struct op_def *op, ccq_enc *enc, void (*done)(void))
{
	const uint8_t *buf;
	size_t len;
	char err[160];
	struct req *r;

	if (ccq_enc_finish(enc, 0, &buf, &len) < 0)
		return -1;
	buf += CCQ_FRAME_HDR;
	len -= CCQ_FRAME_HDR;
	r = calloc(1, sizeof(*r));
	if (!r || !(r->payload = malloc(len))) {
		free(r);
		return -1;
	}
	memcpy(r->payload, buf, len);
	if (ccq_msg_decode(&r->msg, r->payload, len, err, sizeof(err)) != CCQ_OK) {
		LOG_E("internal request %s does not decode: %s", op->name, err);
		ccq_msg_free(&r->msg);
		free(r->payload);
		free(r);
		return -1;
	}
	r->op = op;
	r->args = r->msg.body;
	r->actor.operator = 1;
	r->internal_done = done;
	r->j.run = req_run;
	r->j.done = req_done;
	r->j.key = req_key(r);
	db_submit(&r->j);
	return 0;
}

/* ---- overload: refusing new calls at once (loop thread) ------------------ */

/*
 * When the MySQL workers fall behind (a job they could take has waited
 * more than shed_after), taking more calls only lengthens the queue: the
 * reports queued behind make the agents look busy (their calls not ended
 * yet), fill the proxy's connection (MAX_INFLIGHT: then even decisions
 * wait unread), and with every worker busy a decision itself waits. So a
 * new call's decision is refused at once: the proxy answers its
 * documented fallback (503 with Retry-After, the carrier fails over), and
 * the calls already taken keep the workers. Not while a blind transfer may
 * be pending: its second leg is a call.route too, of a call already in
 * conversation. The Call-IDs refused are remembered for a minute (or until
 * the Call-ID is let through), so that their end report (the proxy's 503)
 * is answered without a job.
 */
#define SHED_KEYS 1024
#define SHED_KEEP 60.
static uint64_t g_shed_after_ns;
static struct {
	uint64_t key;
	ev_tstamp at;
} g_shed_keys[SHED_KEYS];
static unsigned g_shed_next;
static unsigned long g_shed_total, g_shed_unlogged;
static ev_tstamp g_shed_logged, g_shed_last;    /* last warning, last refusal */

void ops_reconfigure(const struct queued_config *cfg)
{
	unsigned ms = cfg->shed_after;
	/* below the 100 ms after which the workers kept for decisions help
	 * with the other jobs, a report waiting its turn would refuse calls
	 * at light load */
	if (ms && ms < JOBQ_AGE_NS / 1000000ull)
		ms = (unsigned)(JOBQ_AGE_NS / 1000000ull);
	g_shed_after_ns = (uint64_t)ms * 1000000ull;
}

/* The refused Call-ID key's slot, or -1 (kept SHED_KEEP seconds). */
static int shed_slot(uint64_t key)
{
	ev_tstamp now = ev_now(EV_DEFAULT);
	/* nothing refused within SHED_KEEP: no scan (every call passes here) */
	if (!key || !g_shed_total || now - g_shed_last >= SHED_KEEP)
		return -1;
	for (unsigned i = 0; i < SHED_KEYS; i++)
		if (g_shed_keys[i].key == key && now - g_shed_keys[i].at < SHED_KEEP)
			return (int)i;
	return -1;
}

static uint64_t call_key(const msgpack_object *body)
{
	const msgpack_object *v = body ? ccq_map_get(body, "call_id") : NULL;
	if (v && v->type == MSGPACK_OBJECT_STR && v->via.str.size)
		return key_of("call", v->via.str.ptr, v->via.str.size, "", 0);
	return 0;
}

/* A new call's decision refused (1, answered) or let through (0). */
static int shed_call(struct conn *c, const ccq_msg *m)
{
	uint64_t behind, key;
	ev_tstamp now;

	key = call_key(m->body);
	if (!g_shed_after_ns || (behind = db_runnable_wait_ns()) <= g_shed_after_ns
			|| calls_transfer_may_be_pending()) {
		/* let through: a Call-ID refused earlier (a carrier's retry) is
		 * no longer one whose end needs no job */
		int i = shed_slot(key);
		if (i >= 0)
			g_shed_keys[i].key = 0;
		return 0;
	}
	if (key) {
		g_shed_keys[g_shed_next].key = key;
		g_shed_keys[g_shed_next].at = ev_now(EV_DEFAULT);
		g_shed_next = (g_shed_next + 1) % SHED_KEYS;
	}
	g_shed_total++;
	g_shed_unlogged++;
	now = ev_now(EV_DEFAULT);
	g_shed_last = now;
	if (g_shed_logged == 0 || now - g_shed_logged >= 10.) {
		LOG_W("overloaded: MySQL work is %llu ms behind (shed_after %llu ms); %lu new "
			"call(s) refused at once since the last report (%lu in all)",
			(unsigned long long)(behind / 1000000ull),
			(unsigned long long)(g_shed_after_ns / 1000000ull), g_shed_unlogged,
			g_shed_total);
		g_shed_logged = now;
		g_shed_unlogged = 0;
	}
	conn_reply_err(c, m->id, CCQ_E_DB_UNAVAILABLE, "overloaded: MySQL work is %llu ms "
		"behind; new calls are refused until it catches up",
		(unsigned long long)(behind / 1000000ull));
	return 1;
}

/* The end report of a call refused by shed_call: answered here (1). */
static int shed_end(struct conn *c, const ccq_msg *m)
{
	int i = shed_slot(call_key(m->body));
	ccq_enc e;

	if (i < 0)
		return 0;
	g_shed_keys[i].key = 0;
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, m->id);
	msgpack_pack_map(&e.pk, 1);
	ccq_pack_kv_str(&e.pk, "action", "ok");
	conn_send(c, &e);
	return 1;
}

unsigned long ops_shed_total(void)
{
	return g_shed_total;
}

void ops_dispatch(struct conn *c, const ccq_msg *m, const uint8_t *payload, size_t len)
{
	const struct op_def *op = NULL;
	const struct actor *a = conn_actor(c);
	struct req *r;
	char err[160];

	for (size_t t = 0; t < sizeof(op_tables) / sizeof(op_tables[0]) && !op; t++)
		for (const struct op_def *d = op_tables[t]; d->name; d++)
			if (ccq_str_eq(m->name, m->name_len, d->name)) {
				op = d;
				break;
			}
	if (!op) {
		conn_reply_err(c, m->id, CCQ_E_UNKNOWN_OP, "unknown operation '%.*s'",
			(int)(m->name_len > 64 ? 64 : m->name_len), m->name);
		return;
	}
	if (!(op->flags & OP_ANON) && !a->operator && !a->user_id && !a->is_unix) {
		conn_reply_err(c, m->id, CCQ_E_DENIED,
			"authenticate first: send 'auth' with an API token");
		return;
	}
	if (op->now) {
		op->now(c, m->id, m->body);
		return;
	}
	if (a->operator && (op->flags & OP_SHED) && shed_call(c, m))
		return;
	if (a->operator && strcmp(op->name, "call.ended") == 0 && shed_end(c, m))
		return;
	r = calloc(1, sizeof(*r));
	if (!r || !(r->payload = malloc(len))) {
		free(r);
		conn_reply_err(c, m->id, CCQ_E_INTERNAL, "out of memory");
		return;
	}
	memcpy(r->payload, payload, len);
	/* decode the copy: the job's arguments must outlive the input buffer */
	if (ccq_msg_decode(&r->msg, r->payload, len, err, sizeof(err)) != CCQ_OK) {
		ccq_msg_free(&r->msg);
		free(r->payload);
		free(r);
		conn_reply_err(c, m->id, CCQ_E_INTERNAL, "request copy failed: %s", err);
		return;
	}
	r->op = op;
	r->c = c;
	r->id = m->id;
	r->args = r->msg.body;
	r->actor = *a;
	r->t_recv = db_now_ns();
	r->j.urgent = (op->flags & OP_URGENT) != 0;
	r->j.run = req_run;
	r->j.done = req_done;
	r->j.key = req_key(r);
	r->j.group = NULL;
	for (const struct op_grouped *g = ops_grouped; g->name; g++)
		if (strcmp(g->name, op->name) == 0) {
			r->group = g->group;
			r->j.group = &g_req_group;
			break;
		}
	conn_hold(c);
	if (rq_has_key(r->j.key)) {
		/* an earlier request of this call waits to be run again: after it */
		rq_add(r, 0);
		return;
	}
	db_submit(&r->j);
}
