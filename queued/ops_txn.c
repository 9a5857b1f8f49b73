/*
 * Transactions (TXN) and their journeys.
 */
#include "ops.h"
#include "server.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS(col) "DATE_FORMAT(" col ", '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"

#define TXN_COLUMNS \
	"t.id, t.org_id, t.inbox_id, i.name AS inbox, t.kind, t.direction, " \
	"t.call_type AS type, t.status, t.sip_call_id AS call_id, " \
	"t.from_uri AS `from`, t.to_uri AS `to`, t.source_addr AS source, " \
	"t.caller_id, t.number, t.customer_id, c.name AS customer, " \
	"t.agent_id, u.ext_key AS agent_ext, u.name AS agent_name, t.device_id, " \
	TS("t.created_at") " AS created_at, " TS("t.updated_at") " AS updated_at, " \
	TS("t.answered_at") " AS answered_at, " TS("t.ended_at") " AS ended_at, " \
	"CASE WHEN t.answered_at IS NOT NULL AND t.ended_at IS NOT NULL THEN " \
	"TIMESTAMPDIFF(SECOND, t.answered_at, t.ended_at) END AS talking_seconds, " \
	"t.result, t.failure_reason"

#define TXN_FROM \
	" FROM txn t LEFT JOIN inbox i ON i.id = t.inbox_id " \
	"LEFT JOIN customer c ON c.id = t.customer_id LEFT JOIN user u ON u.id = t.agent_id "

/* The visibility condition for TXNs: " AND (...)" or "" for the operator. */
static void txn_cond(char *buf, size_t size, const struct who *w)
{
	char inbox[200];
	if (w->operator) {
		buf[0] = '\0';
		return;
	}
	if (acl_all_inboxes(w)) {
		snprintf(buf, size, " AND t.org_id = %u", w->org_id);
		return;
	}
	acl_inbox_cond(inbox, sizeof(inbox), w, "t.inbox_id");
	/* inbox_cond starts with " AND " */
	snprintf(buf, size, " AND t.org_id = %u AND (t.agent_id = %u OR (1 = 1%s))",
		w->org_id, w->user_id, inbox);
}

/* ---- txn.create (used by the Kamailio module) -------------------------- */

static int one_of(const char *v, const char *const *set)
{
	for (; *set; set++)
		if (strcmp(v, *set) == 0)
			return 1;
	return 0;
}

static int run_txn_create(struct req *r, MYSQL *m)
{
	static const char *const dirs[] = { "inbound", "outbound", "internal", NULL };
	static const char *const types[] = { "direct", "callback", "outbound", NULL };
	char call_id[256], from[512], to[512], direction[16], type[16], source[64];
	struct qb q;
	uint64_t txn = 0;
	int found = 0, created = 0, rc = -1;
	msgpack_packer *pk;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "txn.create is for the SIP proxy (local operator)");
	if (arg_str(r, "call_id", call_id, sizeof(call_id), 1) < 0
			|| arg_str(r, "from", from, sizeof(from), 1) < 0
			|| arg_str(r, "to", to, sizeof(to), 1) < 0
			|| arg_str(r, "direction", direction, sizeof(direction), 1) < 0
			|| arg_str(r, "type", type, sizeof(type), 1) < 0
			|| arg_str(r, "source", source, sizeof(source), 0) < 0)
		return -1;
	if (!one_of(direction, dirs))
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"argument 'direction' must be inbound, outbound or internal");
	if (!one_of(type, types))
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"argument 'type' must be direct, callback or outbound");

	qb_init(&q);
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		goto out;
	qb_add(&q, "SELECT id FROM txn WHERE sip_call_id = ");
	qb_str(&q, m, call_id, strlen(call_id));
	qb_add(&q, " FOR UPDATE");
	if (q.oom || sql_u64(r, m, q.buf, q.len, &txn, &found) < 0)
		goto rollback;
	if (!found) {
		char text[1200];
		q.len = 0;
		qb_add(&q, "INSERT INTO txn (kind, direction, call_type, status, sip_call_id, "
			"from_uri, to_uri, source_addr, created_at, updated_at) VALUES ('call', ");
		qb_str(&q, m, direction, strlen(direction));
		qb_add(&q, ", ");
		qb_str(&q, m, type, strlen(type));
		qb_add(&q, ", 'Waiting', ");
		qb_str(&q, m, call_id, strlen(call_id));
		qb_add(&q, ", ");
		qb_str(&q, m, from, strlen(from));
		qb_add(&q, ", ");
		qb_str(&q, m, to, strlen(to));
		qb_add(&q, ", ");
		qb_str(&q, m, source[0] ? source : NULL, strlen(source));
		qb_add(&q, ", UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))");
		if (q.oom || db_exec(&r->j, m, q.buf, q.len) < 0)
			goto rollback;
		txn = mysql_insert_id(m);
		created = 1;
		snprintf(text, sizeof(text), "Call received from %s%s%s%s", from,
			source[0] ? " (" : "", source, source[0] ? ")" : "");
		q.len = 0;
		qb_add(&q, "INSERT INTO txn_event (txn_id, at, kind, text) VALUES (%llu, "
			"UTC_TIMESTAMP(3), 'received', ", (unsigned long long)txn);
		qb_str(&q, m, text, strnlen(text, 1024));
		qb_add(&q, ")");
		if (q.oom || db_exec(&r->j, m, q.buf, q.len) < 0)
			goto rollback;
	}
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		goto out;
	pk = req_reply(r);
	msgpack_pack_map(pk, 2);
	ccq_pack_kv_uint(pk, "id", txn);
	ccq_pack_kv_bool(pk, "created", created);
	if (created)
		LOG_I("txn %llu created for call %s", (unsigned long long)txn, call_id);
	rc = 0;
	goto out;
rollback:
	if (!r->j.conn_lost)
		mysql_query(m, "ROLLBACK");
out:
	if (q.oom && rc < 0 && !r->j.err)
		req_fail(r, CCQ_E_INTERNAL, "out of memory");
	qb_free(&q);
	return rc;
}

/* ---- txn.get ----------------------------------------------------------- */

static int run_txn_get(struct req *r, MYSQL *m)
{
	char q[4096], cond[400];
	uint64_t id;
	MYSQL_RES *res, *ev, *links;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_uint(r, "id", &id, 1, UINT64_MAX) < 0)
		return -1;
	txn_cond(cond, sizeof(cond), &r->who);
	snprintf(q, sizeof(q), "SELECT " TXN_COLUMNS TXN_FROM "WHERE t.id = %llu%s",
		(unsigned long long)id, cond);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	if (!row) {
		mysql_free_result(res);
		/* the same answer whether it does not exist or is not visible */
		return req_fail(r, CCQ_E_NOT_FOUND, "no transaction %llu", (unsigned long long)id);
	}
	snprintf(q, sizeof(q), "SELECT " TS("at") " AS at, kind, text FROM txn_event "
		"WHERE txn_id = %llu ORDER BY at, id", (unsigned long long)id);
	if (!(ev = db_select(&r->j, m, q, strlen(q)))) {
		mysql_free_result(res);
		return -1;
	}
	snprintf(q, sizeof(q), "SELECT IF(l.txn_a = %llu, l.txn_b, l.txn_a) AS id, l.kind "
		"FROM txn_link l WHERE l.txn_a = %llu OR l.txn_b = %llu ORDER BY id",
		(unsigned long long)id, (unsigned long long)id, (unsigned long long)id);
	if (!(links = db_select(&r->j, m, q, strlen(q)))) {
		mysql_free_result(ev);
		mysql_free_result(res);
		return -1;
	}
	pk = req_reply(r);
	pack_row(pk, res, row, 2);
	ccq_pack_str(pk, "events");
	pack_rows(pk, ev);
	ccq_pack_str(pk, "related");
	pack_rows(pk, links);
	mysql_free_result(links);
	mysql_free_result(ev);
	mysql_free_result(res);
	return 0;
}

/* ---- txn.list ---------------------------------------------------------- */

static int run_txn_list(struct req *r, MYSQL *m)
{
	char q[4096], cond[400], where[200] = "";
	uint64_t limit = 50, before = 0, inbox = 0, customer = 0;
	MYSQL_RES *res;
	msgpack_packer *pk;
	size_t wl = 0;

	if (req_who(r, m) < 0 || arg_uint(r, "limit", &limit, 0, 1000) < 0
			|| arg_uint(r, "before", &before, 0, UINT64_MAX) < 0
			|| arg_uint(r, "inbox", &inbox, 0, UINT32_MAX) < 0
			|| arg_uint(r, "customer", &customer, 0, UINT32_MAX) < 0)
		return -1;
	if (limit == 0)
		limit = 50;
	if (before)
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND t.id < %llu",
			(unsigned long long)before);
	if (inbox)
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND t.inbox_id = %llu",
			(unsigned long long)inbox);
	if (customer)
		snprintf(where + wl, sizeof(where) - wl, " AND t.customer_id = %llu",
			(unsigned long long)customer);
	txn_cond(cond, sizeof(cond), &r->who);
	snprintf(q, sizeof(q), "SELECT " TXN_COLUMNS TXN_FROM "WHERE 1 = 1%s%s "
		"ORDER BY t.id %s LIMIT %llu", where, cond, customer ? "ASC" : "DESC",
		(unsigned long long)limit);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_str(pk, "items");
	pack_rows(pk, res);
	mysql_free_result(res);
	return 0;
}

const struct op_def ops_txn[] = {
	{ "txn.create", run_txn_create, NULL, NULL, 0 },
	{ "txn.get", run_txn_get, NULL, NULL, 0 },
	{ "txn.list", run_txn_list, NULL, NULL, 0 },
	{ NULL, NULL, NULL, NULL, 0 }
};
