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
	"NULLIF(t.current_call_id, '') AS live_call_id, " \
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
	if (!str_in(direction, dirs))
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"argument 'direction' must be inbound, outbound or internal");
	if (!str_in(type, types))
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
		qb_add(&q, "INSERT INTO txn (id, kind, direction, call_type, status, sip_call_id, "
			"from_uri, to_uri, source_addr, created_at, updated_at) VALUES (" TXN_NEW_ID
			", 'call', ");
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
		/* the call is the TXN's first leg: the proxy's reports find it by Call-ID */
		q.len = 0;
		qb_add(&q, "INSERT INTO txn_leg (call_id, txn_id, kind, created_at) VALUES (");
		qb_str(&q, m, call_id, strlen(call_id));
		qb_add(&q, ", %llu, 'first', UTC_TIMESTAMP(3))", (unsigned long long)txn);
		if (q.oom || db_exec(&r->j, m, q.buf, q.len) < 0)
			goto rollback;
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
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND t.customer_id = %llu",
			(unsigned long long)customer);
	if (r->who.operator) {
		/* the operator sees every organisation; -o narrows it to one */
		char org[101] = "", esc[210];
		if (arg_str(r, "org", org, sizeof(org), 0) < 0)
			return -1;
		if (org[0]) {
			uint64_t oid;
			int found;
			char q2[300];
			mysql_real_escape_string(m, esc, org, strlen(org));
			snprintf(q2, sizeof(q2), "SELECT id FROM org WHERE name = '%s'", esc);
			if (sql_u64(r, m, q2, strlen(q2), &oid, &found) < 0)
				return -1;
			if (!found)
				return req_fail(r, CCQ_E_NOT_FOUND, "no organisation '%s'", org);
			snprintf(where + wl, sizeof(where) - wl, " AND t.org_id = %llu",
				(unsigned long long)oid);
		}
	}
	txn_cond(cond, sizeof(cond), &r->who);
	snprintf(q, sizeof(q), "SELECT " TXN_COLUMNS TXN_FROM "WHERE 1 = 1%s%s "
		"ORDER BY t.id %s LIMIT %llu", where, cond, customer ? "ASC" : "DESC",
		(unsigned long long)limit);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	req_reply_rows(r, res, "items");
	return 0;
}


/* ---- chats (from other channels), links, the customer journey ----------- */

static int journey_add(struct req *r, MYSQL *m, uint64_t txn, const char *kind, const char *text)
{
	return req_journey(r, m, txn, kind, text, NULL);
}

/* A TXN the actor may see: its org, inbox and status. */
static int visible_txn(struct req *r, MYSQL *m, uint64_t id, uint32_t *org, uint32_t *inbox,
		char *status, size_t slen, char *kind, size_t klen)
{
	char q[1200], cond[400];
	MYSQL_RES *res;
	MYSQL_ROW row;

	txn_cond(cond, sizeof(cond), &r->who);
	snprintf(q, sizeof(q), "SELECT COALESCE(t.org_id, 0), COALESCE(t.inbox_id, 0), t.status, t.kind "
		"FROM txn t WHERE t.id = %llu%s", (unsigned long long)id, cond);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	if (!row) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_NOT_FOUND, "no transaction %llu", (unsigned long long)id);
	}
	*org = (uint32_t)strtoul(row[0], NULL, 10);
	*inbox = (uint32_t)strtoul(row[1], NULL, 10);
	snprintf(status, slen, "%s", row[2]);
	snprintf(kind, klen, "%s", row[3]);
	mysql_free_result(res);
	return 0;
}

static int run_chat_create(struct req *r, MYSQL *m)
{
	char inbox[101], esc[210], q[1200], text[400], cust_name[101] = "";
	uint64_t customer = 0, inbox_id = 0, org = 0, id;
	char cond[200];
	MYSQL_RES *res;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_str(r, "inbox", inbox, sizeof(inbox), 1) < 0
			|| arg_uint(r, "customer", &customer, 0, UINT32_MAX) < 0)
		return -1;
	/* the inbox, visible to the actor (the operator: any organisation's) */
	acl_inbox_cond(cond, sizeof(cond), &r->who, "i.id");
	mysql_real_escape_string(m, esc, inbox, strlen(inbox));
	snprintf(q, sizeof(q), "SELECT i.id, i.org_id FROM inbox i WHERE i.name = '%s'%s%s",
		esc, cond, r->who.operator ? "" : " AND i.org_id = ");
	if (!r->who.operator) {
		size_t l = strlen(q);
		snprintf(q + l, sizeof(q) - l, "%u", r->who.org_id);
	}
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if (mysql_num_rows(res) > 1) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_BAD_REQUEST, "inbox name '%s' is ambiguous: act as a user of "
			"its organisation (as)", inbox);
	}
	row = mysql_fetch_row(res);
	if (row) {
		inbox_id = strtoull(row[0], NULL, 10);
		org = strtoull(row[1], NULL, 10);
	}
	mysql_free_result(res);
	if (!inbox_id)
		return req_fail(r, CCQ_E_NOT_FOUND, "no inbox '%s'", inbox);
	if (customer) {
		snprintf(q, sizeof(q), "SELECT name FROM customer WHERE id = %llu AND org_id = %llu",
			(unsigned long long)customer, (unsigned long long)org);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			return -1;
		row = mysql_fetch_row(res);
		if (row)
			snprintf(cust_name, sizeof(cust_name), "%s", row[0]);
		mysql_free_result(res);
		if (!row)
			return req_fail(r, CCQ_E_NOT_FOUND, "no customer %llu", (unsigned long long)customer);
	}
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	snprintf(q, sizeof(q), "INSERT INTO txn (id, org_id, inbox_id, customer_id, kind, direction, "
		"call_type, status, created_at, updated_at) VALUES (" TXN_NEW_ID ", %llu, %llu, %s%llu, "
		"'chat', 'inbound', 'chat', 'Waiting', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
		(unsigned long long)org, (unsigned long long)inbox_id, customer ? "" : "NULL + ",
		(unsigned long long)customer);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		goto fail;
	id = mysql_insert_id(m);
	snprintf(text, sizeof(text), "Chat received%s%s in inbox [%s]", cust_name[0] ? " from " : "",
		cust_name, inbox);
	if (journey_add(r, m, id, "received", text) < 0)
		goto fail;
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_kv_uint(pk, "id", id);
	return 0;
fail:
	return req_rollback(r, m);
}

static int run_chat_assign(struct req *r, MYSQL *m)
{
	uint64_t id, uid;
	uint32_t org, inbox;
	char status[16], kind[8], ext[33], esc[70], q[600], text[300];
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (req_who(r, m) < 0 || arg_uint(r, "id", &id, 1, UINT64_MAX) < 0
			|| arg_str(r, "ext", ext, sizeof(ext), 1) < 0
			|| visible_txn(r, m, id, &org, &inbox, status, sizeof(status), kind, sizeof(kind)) < 0)
		return -1;
	if (strcmp(kind, "chat") != 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "transaction %llu is a call: calls are assigned "
			"when an agent answers", (unsigned long long)id);
	if (strcmp(status, "Ended") == 0 || strcmp(status, "Failed") == 0)
		return req_fail(r, CCQ_E_CONFLICT, "transaction %llu has ended", (unsigned long long)id);
	mysql_real_escape_string(m, esc, ext, strlen(ext));
	snprintf(q, sizeof(q), "SELECT id, ext_key, name FROM user WHERE org_id = %u AND ext_key = '%s'",
		org, esc);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	if (!row) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_NOT_FOUND, "no extension '%s' in this organisation", ext);
	}
	uid = strtoull(row[0], NULL, 10);
	snprintf(text, sizeof(text), "Assigned to %s - %s", row[1], row[2]);
	mysql_free_result(res);
	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Assigned', agent_id = %llu, "
		"answered_at = COALESCE(answered_at, UTC_TIMESTAMP(3)), updated_at = UTC_TIMESTAMP(3) "
		"WHERE id = %llu AND status NOT IN ('Ended','Failed')", (unsigned long long)uid,
		(unsigned long long)id);
	return req_update_journey(r, m, id, q, "assigned", text);
}

static int run_chat_end(struct req *r, MYSQL *m)
{
	uint64_t id;
	uint32_t org, inbox;
	char status[16], kind[8], q[400];

	if (req_who(r, m) < 0 || arg_uint(r, "id", &id, 1, UINT64_MAX) < 0
			|| visible_txn(r, m, id, &org, &inbox, status, sizeof(status), kind, sizeof(kind)) < 0)
		return -1;
	if (strcmp(kind, "chat") != 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "transaction %llu is a call: calls end with their "
			"SIP dialog", (unsigned long long)id);
	if (strcmp(status, "Ended") == 0 || strcmp(status, "Failed") == 0)
		return req_fail(r, CCQ_E_CONFLICT, "transaction %llu has ended", (unsigned long long)id);
	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Ended', result = IF(agent_id IS NULL, "
		"'unassigned', 'answered'), ended_at = UTC_TIMESTAMP(3), updated_at = UTC_TIMESTAMP(3) "
		"WHERE id = %llu AND status NOT IN ('Ended','Failed')", (unsigned long long)id);
	return req_update_journey(r, m, id, q, "ended", "Chat ended");
}

/* Link two TXNs (Related Transactions, shown on both). */
static int run_txn_link(struct req *r, MYSQL *m)
{
	uint64_t a, b;
	uint32_t oa, ob, ia, ib;
	char sa[16], sb[16], ka[8], kb[8], kind[33] = "related", q[400];
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_uint(r, "a", &a, 1, UINT64_MAX) < 0
			|| arg_uint(r, "b", &b, 1, UINT64_MAX) < 0
			|| arg_str(r, "kind", kind, sizeof(kind), 0) < 0)
		return -1;
	if (!kind[0])
		snprintf(kind, sizeof(kind), "related");
	for (char *c = kind; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || *c == '_'))
			return req_fail(r, CCQ_E_BAD_REQUEST, "link kind may hold only a-z and '_'");
	if (a == b)
		return req_fail(r, CCQ_E_BAD_REQUEST, "a transaction cannot be linked to itself");
	if (visible_txn(r, m, a, &oa, &ia, sa, sizeof(sa), ka, sizeof(ka)) < 0
			|| visible_txn(r, m, b, &ob, &ib, sb, sizeof(sb), kb, sizeof(kb)) < 0)
		return -1;
	if (oa != ob)
		return req_fail(r, CCQ_E_BAD_REQUEST, "transactions of different organisations");
	snprintf(q, sizeof(q), "INSERT IGNORE INTO txn_link (txn_a, txn_b, kind, created_at) "
		"VALUES (%llu, %llu, '%s', UTC_TIMESTAMP(3))", (unsigned long long)(a < b ? a : b),
		(unsigned long long)(a < b ? b : a), kind);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_kv_bool(pk, "linked", 1);
	return 0;
}

/* Every TXN of one customer, calls and chats, oldest first. */
static int run_customer_journey(struct req *r, MYSQL *m)
{
	uint64_t cust, v;
	int found;
	char q[4096], cond[400];
	MYSQL_RES *res;

	if (req_who(r, m) < 0 || arg_uint(r, "customer", &cust, 1, UINT32_MAX) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT org_id FROM customer WHERE id = %llu", (unsigned long long)cust);
	if (sql_u64(r, m, q, strlen(q), &v, &found) < 0)
		return -1;
	if (!found || (!r->who.operator && v != r->who.org_id))
		return req_fail(r, CCQ_E_NOT_FOUND, "no customer %llu", (unsigned long long)cust);
	txn_cond(cond, sizeof(cond), &r->who);
	snprintf(q, sizeof(q), "SELECT " TXN_COLUMNS TXN_FROM "WHERE t.customer_id = %llu%s "
		"ORDER BY t.created_at, t.id LIMIT 1000", (unsigned long long)cust, cond);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	req_reply_rows(r, res, "items");
	return 0;
}

const struct op_def ops_txn[] = {
	{ "txn.create", run_txn_create, NULL, NULL, 0 },
	{ "txn.get", run_txn_get, NULL, NULL, OP_VIEW_SAFE },
	{ "txn.list", run_txn_list, NULL, NULL, OP_VIEW_SAFE },
	{ "txn.link", run_txn_link, NULL, NULL, OP_VIEW_SAFE },
	{ "chat.create", run_chat_create, NULL, NULL, 0 },
	{ "chat.assign", run_chat_assign, NULL, NULL, 0 },
	{ "chat.end", run_chat_end, NULL, NULL, 0 },
	{ "customer.journey", run_customer_journey, NULL, NULL, OP_VIEW_SAFE },
	{ NULL, NULL, NULL, NULL, 0 }
};
