/*
 * Request handlers. Arguments are copied out of the frame, checked, and
 * the database work runs on the MySQL worker (db.c); the reply is built
 * there and sent from the loop when the job comes back.
 */
#include "ccq_config.h"
#include "ops.h"
#include "server.h"
#include "db.h"
#include "log.h"
#include "migrate.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

static int g_schema;

void ops_set_schema(int version)
{
	g_schema = version;
}

struct op_job {
	struct db_job j;       /* first: the worker hands this back */
	struct conn *c;
	uint64_t id;
	ccq_enc enc;           /* the success reply, built on the worker */
	int have_enc;
	/* arguments */
	char call_id[256];
	char from[512];
	char to[512];
	char direction[16];
	char type[16];
	char source[64];
	uint64_t txn_id;
	uint64_t limit;
	uint64_t before;
};

static void job_done(struct db_job *dj)
{
	struct op_job *oj = (struct op_job *)dj;

	if (dj->err) {
		if (oj->have_enc)
			ccq_enc_free(&oj->enc);
		conn_reply_err(oj->c, oj->id, dj->err, "%s", dj->errmsg[0] ? dj->errmsg
			: ccq_err_name(dj->err));
	} else {
		conn_send(oj->c, &oj->enc);
	}
	conn_release(oj->c);
	free(oj);
}

static struct op_job *job_new(struct conn *c, uint64_t id, db_run_fn run)
{
	struct op_job *oj = calloc(1, sizeof(*oj));
	if (!oj)
		return NULL;
	oj->c = c;
	oj->id = id;
	oj->j.run = run;
	oj->j.done = job_done;
	return oj;
}

static void job_submit(struct op_job *oj)
{
	conn_hold(oj->c);
	db_submit(&oj->j);
}

/* Start the success reply on the worker (discarding a previous attempt). */
static msgpack_packer *reply_start(struct op_job *oj)
{
	if (oj->have_enc)
		ccq_enc_free(&oj->enc);
	ccq_enc_init(&oj->enc);
	oj->have_enc = 1;
	ccq_enc_reply_ok(&oj->enc, oj->id);
	return &oj->enc.pk;
}

/* Pack a result row as a map; integer columns as integers, NULL as nil. */
static void pack_row(msgpack_packer *pk, MYSQL_RES *r, MYSQL_ROW row, unsigned extra)
{
	unsigned n = mysql_num_fields(r);
	MYSQL_FIELD *f = mysql_fetch_fields(r);
	unsigned long *len = mysql_fetch_lengths(r);

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

#define TXN_COLUMNS \
	"id, kind, direction, call_type AS type, status, sip_call_id AS call_id, " \
	"from_uri AS `from`, to_uri AS `to`, source_addr AS source, " \
	"DATE_FORMAT(created_at, '%%Y-%%m-%%d %%H:%%i:%%s.%%f') AS created_at, " \
	"DATE_FORMAT(updated_at, '%%Y-%%m-%%d %%H:%%i:%%s.%%f') AS updated_at, " \
	"DATE_FORMAT(answered_at, '%%Y-%%m-%%d %%H:%%i:%%s.%%f') AS answered_at, " \
	"DATE_FORMAT(ended_at, '%%Y-%%m-%%d %%H:%%i:%%s.%%f') AS ended_at, " \
	"result, failure_reason"

/* ---- ping ------------------------------------------------------------- */

static void op_ping(struct conn *c, uint64_t id, const msgpack_object *args)
{
	ccq_enc e;
	(void)args;
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, id);
	msgpack_pack_map(&e.pk, 5);
	ccq_pack_kv_str(&e.pk, "version", PACKAGE_VERSION);
	ccq_pack_kv_uint(&e.pk, "proto", CCQ_PROTO_VERSION);
	ccq_pack_kv_uint(&e.pk, "schema", (uint64_t)g_schema);
	ccq_pack_kv_uint(&e.pk, "clients", server_clients());
	ccq_pack_kv_uint(&e.pk, "db_pending", db_pending());
	conn_send(c, &e);
}

/* ---- txn.create ------------------------------------------------------- */

static int run_txn_create(struct db_job *dj, MYSQL *m)
{
	struct op_job *oj = (struct op_job *)dj;
	struct qb q;
	MYSQL_RES *r;
	MYSQL_ROW row;
	uint64_t txn = 0;
	int created = 0, rc = -1;
	msgpack_packer *pk;

	qb_init(&q);
	if (db_exec(dj, m, "START TRANSACTION", 17) < 0)
		goto out;
	qb_add(&q, "SELECT id FROM txn WHERE sip_call_id = ");
	qb_str(&q, m, oj->call_id, strlen(oj->call_id));
	qb_add(&q, " FOR UPDATE");
	if (!(r = db_select(dj, m, q.buf, q.len)))
		goto rollback;
	if ((row = mysql_fetch_row(r)) && row[0])
		txn = strtoull(row[0], NULL, 10);
	mysql_free_result(r);

	if (!txn) {
		q.len = 0;
		qb_add(&q, "INSERT INTO txn (kind, direction, call_type, status, sip_call_id, "
			"from_uri, to_uri, source_addr, created_at, updated_at) VALUES ('call', ");
		qb_str(&q, m, oj->direction, strlen(oj->direction));
		qb_add(&q, ", ");
		qb_str(&q, m, oj->type, strlen(oj->type));
		qb_add(&q, ", 'Waiting', ");
		qb_str(&q, m, oj->call_id, strlen(oj->call_id));
		qb_add(&q, ", ");
		qb_str(&q, m, oj->from, strlen(oj->from));
		qb_add(&q, ", ");
		qb_str(&q, m, oj->to, strlen(oj->to));
		qb_add(&q, ", ");
		qb_str(&q, m, oj->source[0] ? oj->source : NULL, strlen(oj->source));
		qb_add(&q, ", UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))");
		if (q.oom || db_exec(dj, m, q.buf, q.len) < 0)
			goto rollback;
		txn = mysql_insert_id(m);
		created = 1;

		{
			char text[1200];
			snprintf(text, sizeof(text), "Call received from %s%s%s%s", oj->from,
				oj->source[0] ? " (" : "", oj->source, oj->source[0] ? ")" : "");
			q.len = 0;
			qb_add(&q, "INSERT INTO txn_event (txn_id, at, kind, text) VALUES (%llu, "
				"UTC_TIMESTAMP(3), 'received', ", (unsigned long long)txn);
			qb_str(&q, m, text, strnlen(text, 1024));
			qb_add(&q, ")");
			if (q.oom || db_exec(dj, m, q.buf, q.len) < 0)
				goto rollback;
		}
	}
	if (db_exec(dj, m, "COMMIT", 6) < 0)
		goto out;
	pk = reply_start(oj);
	msgpack_pack_map(pk, 2);
	ccq_pack_kv_uint(pk, "id", txn);
	ccq_pack_kv_bool(pk, "created", created);
	if (created)
		LOG_I("txn %llu created for call %s", (unsigned long long)txn, oj->call_id);
	rc = 0;
	goto out;
rollback:
	if (!dj->conn_lost)
		mysql_query(m, "ROLLBACK");
out:
	if (q.oom && rc < 0 && !dj->err) {
		dj->err = CCQ_E_INTERNAL;
		snprintf(dj->errmsg, sizeof(dj->errmsg), "out of memory");
	}
	qb_free(&q);
	return rc;
}

static int arg_str(struct conn *c, uint64_t id, const msgpack_object *args,
		const char *key, char *buf, size_t size, int required)
{
	int r = ccq_map_strcpy(args, key, buf, size);
	if (r < 0) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST,
			"argument '%s' must be a string of at most %zu bytes", key, size - 1);
		return -1;
	}
	if (r == 0 && required) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST, "argument '%s' is required", key);
		return -1;
	}
	return 0;
}

static int one_of(const char *v, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(v, *set) == 0)
			return 1;
	return 0;
}

static void op_txn_create(struct conn *c, uint64_t id, const msgpack_object *args)
{
	static const char *const dirs[] = { "inbound", "outbound", "internal", NULL };
	static const char *const types[] = { "direct", "callback", "outbound", NULL };
	struct op_job *oj = job_new(c, id, run_txn_create);

	if (!oj) {
		conn_reply_err(c, id, CCQ_E_INTERNAL, "out of memory");
		return;
	}
	if (arg_str(c, id, args, "call_id", oj->call_id, sizeof(oj->call_id), 1) < 0
			|| arg_str(c, id, args, "from", oj->from, sizeof(oj->from), 1) < 0
			|| arg_str(c, id, args, "to", oj->to, sizeof(oj->to), 1) < 0
			|| arg_str(c, id, args, "direction", oj->direction, sizeof(oj->direction), 1) < 0
			|| arg_str(c, id, args, "type", oj->type, sizeof(oj->type), 1) < 0
			|| arg_str(c, id, args, "source", oj->source, sizeof(oj->source), 0) < 0)
		goto bad;
	if (!oj->call_id[0]) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST, "argument 'call_id' must not be empty");
		goto bad;
	}
	if (!one_of(oj->direction, dirs)) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST,
			"argument 'direction' must be inbound, outbound or internal");
		goto bad;
	}
	if (!one_of(oj->type, types)) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST,
			"argument 'type' must be direct, callback or outbound");
		goto bad;
	}
	job_submit(oj);
	return;
bad:
	free(oj);
}

/* ---- txn.get ---------------------------------------------------------- */

static int run_txn_get(struct db_job *dj, MYSQL *m)
{
	struct op_job *oj = (struct op_job *)dj;
	char q[1024];
	MYSQL_RES *r, *ev;
	MYSQL_ROW row;
	msgpack_packer *pk;

	snprintf(q, sizeof(q), "SELECT " TXN_COLUMNS " FROM txn WHERE id = %llu",
		(unsigned long long)oj->txn_id);
	if (!(r = db_select(dj, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(r);
	if (!row) {
		mysql_free_result(r);
		dj->err = CCQ_E_NOT_FOUND;
		snprintf(dj->errmsg, sizeof(dj->errmsg), "no transaction %llu",
			(unsigned long long)oj->txn_id);
		return -1;
	}
	snprintf(q, sizeof(q), "SELECT DATE_FORMAT(at, '%%Y-%%m-%%d %%H:%%i:%%s.%%f') AS at, "
		"kind, text FROM txn_event WHERE txn_id = %llu ORDER BY at, id",
		(unsigned long long)oj->txn_id);
	if (!(ev = db_select(dj, m, q, strlen(q)))) {
		mysql_free_result(r);
		return -1;
	}
	pk = reply_start(oj);
	pack_row(pk, r, row, 1);
	ccq_pack_str(pk, "events");
	msgpack_pack_array(pk, (size_t)mysql_num_rows(ev));
	while ((row = mysql_fetch_row(ev)))
		pack_row(pk, ev, row, 0);
	mysql_free_result(ev);
	mysql_free_result(r);
	return 0;
}

static void op_txn_get(struct conn *c, uint64_t id, const msgpack_object *args)
{
	struct op_job *oj;
	uint64_t txn;

	if (ccq_map_uint(args, "id", &txn) != 1 || txn == 0) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST, "argument 'id' must be a positive integer");
		return;
	}
	if (!(oj = job_new(c, id, run_txn_get))) {
		conn_reply_err(c, id, CCQ_E_INTERNAL, "out of memory");
		return;
	}
	oj->txn_id = txn;
	job_submit(oj);
}

/* ---- txn.list --------------------------------------------------------- */

static int run_txn_list(struct db_job *dj, MYSQL *m)
{
	struct op_job *oj = (struct op_job *)dj;
	char q[1400], where[64] = "";
	MYSQL_RES *r;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (oj->before)
		snprintf(where, sizeof(where), "WHERE id < %llu", (unsigned long long)oj->before);
	snprintf(q, sizeof(q), "SELECT " TXN_COLUMNS " FROM txn %s ORDER BY id DESC LIMIT %llu",
		where, (unsigned long long)oj->limit);
	if (!(r = db_select(dj, m, q, strlen(q))))
		return -1;
	pk = reply_start(oj);
	msgpack_pack_map(pk, 1);
	ccq_pack_str(pk, "items");
	msgpack_pack_array(pk, (size_t)mysql_num_rows(r));
	while ((row = mysql_fetch_row(r)))
		pack_row(pk, r, row, 0);
	mysql_free_result(r);
	return 0;
}

static void op_txn_list(struct conn *c, uint64_t id, const msgpack_object *args)
{
	struct op_job *oj;
	uint64_t limit = 50, before = 0;

	if (ccq_map_uint(args, "limit", &limit) < 0 || limit == 0 || limit > 1000) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST, "argument 'limit' must be from 1 to 1000");
		return;
	}
	if (ccq_map_uint(args, "before", &before) < 0) {
		conn_reply_err(c, id, CCQ_E_BAD_REQUEST, "argument 'before' must be a transaction id");
		return;
	}
	if (!(oj = job_new(c, id, run_txn_list))) {
		conn_reply_err(c, id, CCQ_E_INTERNAL, "out of memory");
		return;
	}
	oj->limit = limit;
	oj->before = before;
	job_submit(oj);
}

/* ---- dispatch --------------------------------------------------------- */

static const struct {
	const char *name;
	void (*fn)(struct conn *c, uint64_t id, const msgpack_object *args);
} ops[] = {
	{ "ping", op_ping },
	{ "txn.create", op_txn_create },
	{ "txn.get", op_txn_get },
	{ "txn.list", op_txn_list },
};

void ops_dispatch(struct conn *c, const ccq_msg *m)
{
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (ccq_str_eq(m->name, m->name_len, ops[i].name)) {
			ops[i].fn(c, m->id, m->body);
			return;
		}
	}
	conn_reply_err(c, m->id, CCQ_E_UNKNOWN_OP, "unknown operation '%.*s'",
		(int)(m->name_len > 64 ? 64 : m->name_len), m->name);
}
