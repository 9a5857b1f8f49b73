/*
 * Outbound compliance data: the DNC registry, company blacklist and
 * whitelist, personal whitelists, per-organisation policy (country
 * whitelist, PIN policy) and users' PINs. The Kamailio module evaluates the
 * gate from shared memory (doc/compliance.md); queued only keeps the data and
 * bumps list_version on every change so that the module reloads. A change of
 * the DNC registry is also written to dnc_change (sql/006_dnc_change.sql) in
 * the same transaction, so that the module applies it as a small delta
 * instead of reading the whole registry again.
 *
 * Who may change what: the DNC registry is the operator's; company lists
 * and the policy belong to owners and admins of the organisation; a user's
 * personal whitelist and PIN to that user (and the organisation's admins).
 */
#include "ops.h"
#include "server.h"
#include "log.h"
#include "ccq_e164.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define PIN_ITERATIONS 20000
#define MAX_BATCH 10000
/*
 * A DNC request with more valid numbers than this (a batch of a bulk import:
 * ccqctl sends 5000) is logged as one 'bulk' row: the module rebuilds its
 * base image once the import is quiet instead of holding millions of
 * numbers as a delta. Smaller ones are logged number by number.
 */
#define DNC_LOG_MAX 256

enum list_kind { L_DNC, L_BLACKLIST, L_WHITELIST, L_PERSONAL };

struct list_target {
	enum list_kind kind;
	uint32_t org_id;
	uint64_t user_id;
	char country[3];
};

static int bump(struct req *r, MYSQL *m, const char *name)
{
	char q[200];
	snprintf(q, sizeof(q), "UPDATE list_version SET version = version + 1, "
		"changed_at = UTC_TIMESTAMP(3) WHERE name = '%s'", name);
	return db_exec(&r->j, m, q, strlen(q));
}

/* Resolve "list" (+ org, ext) into a target the actor may change or read. */
static int list_target(struct req *r, MYSQL *m, int for_write, struct list_target *t)
{
	char list[16], org[101] = "", ext[33] = "", esc[210], q[500];
	MYSQL_RES *res;
	MYSQL_ROW row;

	memset(t, 0, sizeof(*t));
	if (arg_str(r, "list", list, sizeof(list), 1) < 0 || arg_str(r, "org", org, sizeof(org), 0) < 0
			|| arg_str(r, "ext", ext, sizeof(ext), 0) < 0)
		return -1;
	if (strcmp(list, "dnc") == 0)
		t->kind = L_DNC;
	else if (strcmp(list, "blacklist") == 0)
		t->kind = L_BLACKLIST;
	else if (strcmp(list, "whitelist") == 0)
		t->kind = L_WHITELIST;
	else if (strcmp(list, "personal") == 0)
		t->kind = L_PERSONAL;
	else
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"list must be dnc, blacklist, whitelist or personal");
	if (t->kind == L_DNC) {
		char cc[8] = "";
		if (for_write && !r->who.operator)
			return req_fail(r, CCQ_E_DENIED, "only the local operator changes the DNC registry");
		/* a national registry file may hold national numbers: its country */
		if (arg_str(r, "country", cc, sizeof(cc), 0) < 0)
			return -1;
		for (char *c = cc; *c; c++)
			*c = (char)toupper((unsigned char)*c);
		if (cc[0] && (strlen(cc) != 2 || !ccq_e164_region_known(cc)))
			return req_fail(r, CCQ_E_BAD_REQUEST, "'%s' is not a known country code", cc);
		snprintf(t->country, sizeof(t->country), "%s", cc);
		return 0;
	}
	/* the organisation */
	if (org[0]) {
		mysql_real_escape_string(m, esc, org, strlen(org));
		snprintf(q, sizeof(q), "SELECT id, default_country FROM org WHERE name = '%s'", esc);
	} else if (!r->who.operator) {
		snprintf(q, sizeof(q), "SELECT id, default_country FROM org WHERE id = %u", r->who.org_id);
	} else {
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'org' is required");
	}
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	if (!row || (!r->who.operator && strtoul(row[0], NULL, 10) != r->who.org_id)) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_NOT_FOUND, "no organisation '%s'", org);
	}
	t->org_id = (uint32_t)strtoul(row[0], NULL, 10);
	snprintf(t->country, sizeof(t->country), "%s", row[1]);
	mysql_free_result(res);
	if (t->kind == L_PERSONAL) {
		uint64_t uid = r->who.user_id;
		if (ext[0]) {
			int found;
			mysql_real_escape_string(m, esc, ext, strlen(ext));
			snprintf(q, sizeof(q), "SELECT id FROM user WHERE org_id = %u AND ext_key = '%s'",
				t->org_id, esc);
			if (sql_u64(r, m, q, strlen(q), &uid, &found) < 0)
				return -1;
			if (!found)
				return req_fail(r, CCQ_E_NOT_FOUND, "no extension '%s'", ext);
		}
		if (!uid)
			return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'ext' is required");
		if (uid != r->who.user_id && !acl_can_manage_org(&r->who, t->org_id))
			return req_fail(r, CCQ_E_DENIED, "only the user and the organisation's admins "
				"manage a personal whitelist");
		t->user_id = uid;
		return 0;
	}
	if (for_write && !acl_can_manage_org(&r->who, t->org_id))
		return req_fail(r, CCQ_E_DENIED,
			"only the organisation's owners and admins change its lists");
	return 0;
}

/*
 * Normalise one entry: a number (any format the organisation's country
 * allows) or a prefix "<digits>*" for the blacklist and the DNC registry.
 * Writes digits (+ '*') to out; 0 or -1 with why.
 */
static int entry(const char *in, size_t n, const struct list_target *t, char *out, size_t size,
		const char **why)
{
	char e164[CCQ_E164_BUFSZ];
	while (n > 0 && isspace((unsigned char)in[n - 1]))
		n--;
	while (n > 0 && isspace((unsigned char)*in)) {
		in++;
		n--;
	}
	if (n > 1 && in[n - 1] == '*') {
		size_t d = 0;
		const char *p = in[0] == '+' ? in + 1 : in;
		size_t pn = n - 1 - (size_t)(p - in);
		if (t->kind != L_DNC && t->kind != L_BLACKLIST) {
			*why = "prefix entries are only for the blacklist and the DNC registry";
			return -1;
		}
		if (pn < 2 || pn > 14) {
			*why = "a prefix needs 2 to 14 digits";
			return -1;
		}
		for (d = 0; d < pn; d++)
			if (!isdigit((unsigned char)p[d])) {
				*why = "a prefix holds only digits before the '*'";
				return -1;
			}
		if (pn + 2 > size)
			return -1;
		memcpy(out, p, pn);
		out[pn] = '*';
		out[pn + 1] = '\0';
		return 0;
	}
	if (ccq_e164_normalize(in, n, t->country[0] ? t->country : NULL, e164, why) < 0)
		return -1;
	snprintf(out, size, "%s", e164);
	return 0;
}

static const char *version_name(const struct list_target *t)
{
	return t->kind == L_DNC ? "dnc" : "lists";
}

static void insert_prefix(struct qb *q, const struct list_target *t, int remove)
{
	if (remove) {
		switch (t->kind) {
		case L_DNC: qb_add(q, "DELETE FROM dnc_number WHERE number IN ("); break;
		case L_PERSONAL:
			qb_add(q, "DELETE FROM user_list_number WHERE user_id = %llu AND number IN (",
				(unsigned long long)t->user_id);
			break;
		default:
			qb_add(q, "DELETE FROM org_list_number WHERE org_id = %u AND list = '%s' AND number IN (",
				t->org_id, t->kind == L_BLACKLIST ? "blacklist" : "whitelist");
		}
		return;
	}
	switch (t->kind) {
	case L_DNC: qb_add(q, "INSERT IGNORE INTO dnc_number (number) VALUES "); break;
	case L_PERSONAL: qb_add(q, "INSERT IGNORE INTO user_list_number (user_id, number) VALUES "); break;
	default: qb_add(q, "INSERT IGNORE INTO org_list_number (org_id, list, number) VALUES ");
	}
}

static void add_value(struct qb *q, const struct list_target *t, const char *num, int first,
		int remove)
{
	if (remove) {
		qb_add(q, "%s'%s'", first ? "" : ", ", num);
		return;
	}
	switch (t->kind) {
	case L_DNC: qb_add(q, "%s('%s')", first ? "" : ", ", num); break;
	case L_PERSONAL:
		qb_add(q, "%s(%llu, '%s')", first ? "" : ", ", (unsigned long long)t->user_id, num);
		break;
	default:
		qb_add(q, "%s(%u, '%s', '%s')", first ? "" : ", ", t->org_id,
			t->kind == L_BLACKLIST ? "blacklist" : "whitelist", num);
	}
}

/*
 * The DNC change log, after bump() in the same transaction (the row lock of
 * list_version 'dnc' is held: versions follow the commit order). values is
 * "(@ccq_dnc_v, 'add', '6591234567', ...), ..." for the n numbers of the
 * request; more than DNC_LOG_MAX of them are logged as one 'bulk' row. Rows
 * older than a day go (a loader that far behind rebuilds anyway).
 */
static int dnc_log(struct req *r, MYSQL *m, struct qb *values, uint32_t n)
{
	static const char setv[] = "SELECT version INTO @ccq_dnc_v FROM list_version WHERE name = 'dnc'";
	static const char bulk[] = "INSERT INTO dnc_change (version, op, number, changed_at) "
		"VALUES (@ccq_dnc_v, 'bulk', NULL, UTC_TIMESTAMP(3))";
	static const char prune[] = "DELETE FROM dnc_change WHERE changed_at < "
		"UTC_TIMESTAMP(3) - INTERVAL 1 DAY LIMIT 10000";
	struct qb q;
	int rc;

	if (db_exec(&r->j, m, setv, sizeof(setv) - 1) < 0)
		return -1;
	if (n > DNC_LOG_MAX)
		return db_exec(&r->j, m, bulk, sizeof(bulk) - 1) < 0
			|| db_exec(&r->j, m, prune, sizeof(prune) - 1) < 0 ? -1 : 0;
	qb_init(&q);
	qb_add(&q, "INSERT INTO dnc_change (version, op, number, changed_at) VALUES %s",
		values->buf ? values->buf : "");
	if (q.oom) {
		qb_free(&q);
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	}
	rc = db_exec(&r->j, m, q.buf, q.len);
	qb_free(&q);
	if (rc < 0)
		return -1;
	return db_exec(&r->j, m, prune, sizeof(prune) - 1) < 0 ? -1 : 0;
}

/*
 * list.add / list.remove {list, org?, ext?, numbers: [str...]}: one
 * transaction per request (at most MAX_BATCH numbers); entries that are not
 * numbers are reported back with their index and the reason, and nothing
 * else is refused because of them.
 */
static int run_list_change(struct req *r, MYSQL *m, int remove)
{
	struct list_target t;
	const msgpack_object *nums;
	struct qb q, log;
	msgpack_packer *pk;
	uint32_t n, good = 0, nbad = 0;
	uint64_t changed = 0;
	struct { uint32_t idx; const char *why; } bad[64];

	if (req_who(r, m) < 0 || list_target(r, m, 1, &t) < 0)
		return -1;
	nums = ccq_map_get(r->args, "numbers");
	if (!nums || nums->type != MSGPACK_OBJECT_ARRAY)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'numbers' must be a list of strings");
	n = nums->via.array.size;
	if (n > MAX_BATCH)
		return req_fail(r, CCQ_E_BAD_REQUEST, "at most %d numbers per request", MAX_BATCH);
	qb_init(&q);
	qb_init(&log);
	insert_prefix(&q, &t, remove);
	for (uint32_t i = 0; i < n; i++) {
		const msgpack_object *o = &nums->via.array.ptr[i];
		char num[20];
		const char *why = "not a string";
		if (o->type == MSGPACK_OBJECT_STR
				&& entry(o->via.str.size ? o->via.str.ptr : "", o->via.str.size, &t, num,
					sizeof(num), &why) == 0) {
			add_value(&q, &t, num, good == 0, remove);
			if (t.kind == L_DNC && good <= DNC_LOG_MAX)
				qb_add(&log, "%s(@ccq_dnc_v, '%s', '%s', UTC_TIMESTAMP(3))", good ? ", " : "",
					remove ? "remove" : "add", num);
			good++;
			continue;
		}
		if (nbad < 64) {
			bad[nbad].idx = i;
			bad[nbad].why = why;
		}
		nbad++;
	}
	if (remove)
		qb_add(&q, ")");
	if (q.oom || log.oom) {
		qb_free(&q);
		qb_free(&log);
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	}
	if (good > 0) {
		if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
			goto fail;
		if (db_exec(&r->j, m, q.buf, q.len) < 0)
			goto rollback;
		changed = mysql_affected_rows(m);
		if (changed > 0 && bump(r, m, version_name(&t)) < 0)
			goto rollback;
		if (changed > 0 && t.kind == L_DNC && dnc_log(r, m, &log, good) < 0)
			goto rollback;
		if (db_exec(&r->j, m, "COMMIT", 6) < 0)
			goto fail;
	}
	qb_free(&q);
	qb_free(&log);
	pk = req_reply(r);
	msgpack_pack_map(pk, 4);
	ccq_pack_kv_uint(pk, remove ? "removed" : "added", changed);
	ccq_pack_kv_uint(pk, "valid", good);
	ccq_pack_kv_uint(pk, "rejected", nbad);
	ccq_pack_str(pk, "errors");
	msgpack_pack_array(pk, nbad < 64 ? nbad : 64);
	for (uint32_t i = 0; i < nbad && i < 64; i++) {
		msgpack_pack_map(pk, 2);
		ccq_pack_kv_uint(pk, "index", bad[i].idx);
		ccq_pack_kv_str(pk, "why", bad[i].why);
	}
	return 0;
rollback:
	if (!r->j.conn_lost)
		mysql_query(m, "ROLLBACK");
fail:
	qb_free(&q);
	qb_free(&log);
	return -1;
}

static int run_list_add(struct req *r, MYSQL *m) { return run_list_change(r, m, 0); }
static int run_list_remove(struct req *r, MYSQL *m) { return run_list_change(r, m, 1); }

static void list_where(char *buf, size_t size, const struct list_target *t, const char **table)
{
	switch (t->kind) {
	case L_DNC: *table = "dnc_number"; snprintf(buf, size, "1 = 1"); break;
	case L_PERSONAL:
		*table = "user_list_number";
		snprintf(buf, size, "user_id = %llu", (unsigned long long)t->user_id);
		break;
	default:
		*table = "org_list_number";
		snprintf(buf, size, "org_id = %u AND list = '%s'", t->org_id,
			t->kind == L_BLACKLIST ? "blacklist" : "whitelist");
	}
}

/* list.list {list, org?, ext?, limit, after}: entries in order, paged. */
static int run_list_list(struct req *r, MYSQL *m)
{
	struct list_target t;
	char where[200], after[20] = "", q[600], esc[40];
	const char *table;
	uint64_t limit = 100;
	MYSQL_RES *res;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || list_target(r, m, 0, &t) < 0
			|| arg_uint(r, "limit", &limit, 0, 10000) < 0
			|| arg_str(r, "after", after, sizeof(after), 0) < 0)
		return -1;
	if (limit == 0)
		limit = 100;
	list_where(where, sizeof(where), &t, &table);
	mysql_real_escape_string(m, esc, after, strlen(after));
	snprintf(q, sizeof(q), "SELECT number FROM %s WHERE %s AND number > '%s' ORDER BY number "
		"LIMIT %llu", table, where, esc, (unsigned long long)limit);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_str(pk, "numbers");
	msgpack_pack_array(pk, (size_t)mysql_num_rows(res));
	while ((row = mysql_fetch_row(res))) {
		char shown[24];
		size_t l = strlen(row[0]);
		/* numbers with their '+', prefixes as stored */
		snprintf(shown, sizeof(shown), "%s%s", l && row[0][l - 1] == '*' ? "" : "+", row[0]);
		ccq_pack_str(pk, shown);
	}
	mysql_free_result(res);
	return 0;
}

static int run_list_count(struct req *r, MYSQL *m)
{
	struct list_target t;
	char where[200], q[400];
	const char *table;
	uint64_t n;
	int found;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || list_target(r, m, 0, &t) < 0)
		return -1;
	list_where(where, sizeof(where), &t, &table);
	snprintf(q, sizeof(q), "SELECT COUNT(*) FROM %s WHERE %s", table, where);
	if (sql_u64(r, m, q, strlen(q), &n, &found) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_kv_uint(pk, "count", n);
	return 0;
}

/* policy.set {org, country_whitelist?, pin_policy?} / policy.get {org} */
static int run_policy_set(struct req *r, MYSQL *m)
{
	struct list_target t;
	char cw[400] = "", pp[16] = "", q[800], clean[400] = "";
	int have_cw = ccq_map_get(r->args, "country_whitelist") != NULL;

	if (req_who(r, m) < 0)
		return -1;
	/* reuse the org resolution of the lists */
	if (arg_str(r, "country_whitelist", cw, sizeof(cw), 0) < 0
			|| arg_str(r, "pin_policy", pp, sizeof(pp), 0) < 0)
		return -1;
	{
		/* list_target needs "list": resolve the org as for the blacklist */
		char org[101] = "", esc[210];
		MYSQL_RES *res;
		MYSQL_ROW row;
		memset(&t, 0, sizeof(t));
		if (arg_str(r, "org", org, sizeof(org), 0) < 0)
			return -1;
		if (!org[0] && r->who.operator)
			return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'org' is required");
		mysql_real_escape_string(m, esc, org, strlen(org));
		if (org[0])
			snprintf(q, sizeof(q), "SELECT id FROM org WHERE name = '%s'", esc);
		else
			snprintf(q, sizeof(q), "SELECT id FROM org WHERE id = %u", r->who.org_id);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			return -1;
		row = mysql_fetch_row(res);
		if (!row || (!r->who.operator && strtoul(row[0], NULL, 10) != r->who.org_id)) {
			mysql_free_result(res);
			return req_fail(r, CCQ_E_NOT_FOUND, "no organisation '%s'", org);
		}
		t.org_id = (uint32_t)strtoul(row[0], NULL, 10);
		mysql_free_result(res);
	}
	if (!acl_can_manage_org(&r->who, t.org_id))
		return req_fail(r, CCQ_E_DENIED, "only the organisation's owners and admins set its policy");
	if (pp[0] && strcmp(pp, "none") && strcmp(pp, "international") && strcmp(pp, "all"))
		return req_fail(r, CCQ_E_BAD_REQUEST, "pin_policy must be none, international or all");
	/* "SG, my ,US" -> "SG,MY,US", each a known region */
	{
		char *save = NULL, *tok, tmp[400];
		size_t cl = 0;
		snprintf(tmp, sizeof(tmp), "%s", cw);
		for (tok = strtok_r(tmp, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
			for (char *c = tok; *c; c++)
				*c = (char)toupper((unsigned char)*c);
			if (strlen(tok) != 2 || !ccq_e164_region_known(tok))
				return req_fail(r, CCQ_E_BAD_REQUEST, "'%s' is not a known country code", tok);
			cl += (size_t)snprintf(clean + cl, sizeof(clean) - cl, "%s%s", cl ? "," : "", tok);
		}
	}
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	snprintf(q, sizeof(q), "INSERT IGNORE INTO compliance_policy (org_id, updated_at) "
		"VALUES (%u, UTC_TIMESTAMP(3))", t.org_id);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		goto fail;
	if (have_cw) {
		snprintf(q, sizeof(q), "UPDATE compliance_policy SET country_whitelist = '%s', "
			"updated_at = UTC_TIMESTAMP(3) WHERE org_id = %u", clean, t.org_id);
		if (db_exec(&r->j, m, q, strlen(q)) < 0)
			goto fail;
	}
	if (pp[0]) {
		snprintf(q, sizeof(q), "UPDATE compliance_policy SET pin_policy = '%s', "
			"updated_at = UTC_TIMESTAMP(3) WHERE org_id = %u", pp, t.org_id);
		if (db_exec(&r->j, m, q, strlen(q)) < 0)
			goto fail;
	}
	if (bump(r, m, "policy") < 0)
		goto fail;
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	{
		msgpack_packer *pk = req_reply(r);
		msgpack_pack_map(pk, 1);
		ccq_pack_kv_uint(pk, "org_id", t.org_id);
	}
	return 0;
fail:
	if (!r->j.conn_lost)
		mysql_query(m, "ROLLBACK");
	return -1;
}

static int run_policy_get(struct req *r, MYSQL *m)
{
	char org[101] = "", esc[210], q[600];
	MYSQL_RES *res;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_str(r, "org", org, sizeof(org), 0) < 0)
		return -1;
	if (!org[0] && r->who.operator)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'org' is required");
	mysql_real_escape_string(m, esc, org, strlen(org));
	if (org[0])
		snprintf(q, sizeof(q), "SELECT o.name AS org, COALESCE(p.country_whitelist, '') AS "
			"country_whitelist, COALESCE(p.pin_policy, 'none') AS pin_policy FROM org o LEFT JOIN "
			"compliance_policy p ON p.org_id = o.id WHERE o.name = '%s'%s", esc,
			r->who.operator ? "" : " AND o.id = ");
	else
		snprintf(q, sizeof(q), "SELECT o.name AS org, COALESCE(p.country_whitelist, '') AS "
			"country_whitelist, COALESCE(p.pin_policy, 'none') AS pin_policy FROM org o LEFT JOIN "
			"compliance_policy p ON p.org_id = o.id WHERE o.id = %u", r->who.org_id);
	if (org[0] && !r->who.operator) {
		size_t l = strlen(q);
		snprintf(q + l, sizeof(q) - l, "%u", r->who.org_id);
	}
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if (mysql_num_rows(res) == 0) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_NOT_FOUND, "no organisation '%s'", org);
	}
	pk = req_reply(r);
	pack_row(pk, res, mysql_fetch_row(res), 0);
	mysql_free_result(res);
	return 0;
}

/* ---- PINs ------------------------------------------------------------------ */

static void hexs(const unsigned char *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = '\0';
}

/*
 * pin.set {org?, ext, pin}: the user's PIN for outbound calls, stored as
 * PBKDF2-HMAC-SHA256 with a random salt; the PIN itself is never stored or
 * logged. pin "" clears it.
 */
static int run_pin_set(struct req *r, MYSQL *m)
{
	char ext[33], pin[32], org[101] = "", esc[210], q[700], salt_hex[33], hash_hex[65];
	unsigned char salt[16], hash[32];
	uint64_t uid, org_id;
	int found;
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (req_who(r, m) < 0 || arg_str(r, "ext", ext, sizeof(ext), 1) < 0
			|| arg_str(r, "pin", pin, sizeof(pin), 0) < 0 || arg_str(r, "org", org, sizeof(org), 0) < 0)
		return -1;
	if (pin[0]) {
		size_t l = strlen(pin);
		if (l < 4 || l > 12)
			goto badpin;
		for (size_t i = 0; i < l; i++)
			if (!isdigit((unsigned char)pin[i]))
				goto badpin;
	}
	mysql_real_escape_string(m, esc, ext, strlen(ext));
	if (org[0]) {
		char eo[210];
		mysql_real_escape_string(m, eo, org, strlen(org));
		snprintf(q, sizeof(q), "SELECT u.id, u.org_id FROM user u JOIN org o ON o.id = u.org_id "
			"WHERE o.name = '%s' AND u.ext_key = '%s'", eo, esc);
	} else if (!r->who.operator) {
		snprintf(q, sizeof(q), "SELECT id, org_id FROM user WHERE org_id = %u AND ext_key = '%s'",
			r->who.org_id, esc);
	} else {
		memset(pin, 0, sizeof(pin));
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'org' is required");
	}
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	found = row != NULL;
	uid = found ? strtoull(row[0], NULL, 10) : 0;
	org_id = found ? strtoull(row[1], NULL, 10) : 0;
	mysql_free_result(res);
	if (!found || (!r->who.operator && org_id != r->who.org_id)) {
		memset(pin, 0, sizeof(pin));
		return req_fail(r, CCQ_E_NOT_FOUND, "no extension '%s'", ext);
	}
	if (uid != r->who.user_id && !acl_can_manage_org(&r->who, (uint32_t)org_id)) {
		memset(pin, 0, sizeof(pin));
		return req_fail(r, CCQ_E_DENIED, "only the user and the organisation's admins set a PIN");
	}
	if (pin[0]) {
		if (RAND_bytes(salt, sizeof(salt)) != 1
				|| !PKCS5_PBKDF2_HMAC(pin, (int)strlen(pin), salt, sizeof(salt), PIN_ITERATIONS,
					EVP_sha256(), sizeof(hash), hash)) {
			memset(pin, 0, sizeof(pin));
			return req_fail(r, CCQ_E_INTERNAL, "cannot hash the PIN");
		}
		hexs(salt, sizeof(salt), salt_hex);
		hexs(hash, sizeof(hash), hash_hex);
		snprintf(q, sizeof(q), "UPDATE user SET pin_hash = 'pbkdf2-sha256$%d$%s$%s' WHERE id = %llu",
			PIN_ITERATIONS, salt_hex, hash_hex, (unsigned long long)uid);
	} else {
		snprintf(q, sizeof(q), "UPDATE user SET pin_hash = NULL WHERE id = %llu",
			(unsigned long long)uid);
	}
	memset(pin, 0, sizeof(pin));
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	if (db_exec(&r->j, m, q, strlen(q)) < 0 || bump(r, m, "pins") < 0) {
		if (!r->j.conn_lost)
			mysql_query(m, "ROLLBACK");
		return -1;
	}
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	{
		msgpack_packer *pk = req_reply(r);
		msgpack_pack_map(pk, 1);
		ccq_pack_kv_bool(pk, "pin_set", pin[0] != 0 || strstr(q, "pbkdf2") != NULL);
	}
	return 0;
badpin:
	memset(pin, 0, sizeof(pin));
	return req_fail(r, CCQ_E_BAD_REQUEST, "a PIN is 4 to 12 digits");
}

const struct op_def ops_compliance[] = {
	{ "list.add", run_list_add, NULL, NULL, OP_VIEW_SAFE },
	{ "list.remove", run_list_remove, NULL, NULL, OP_VIEW_SAFE },
	{ "list.list", run_list_list, NULL, NULL, OP_VIEW_SAFE },
	{ "list.count", run_list_count, NULL, NULL, OP_VIEW_SAFE },
	{ "policy.set", run_policy_set, NULL, NULL, OP_VIEW_SAFE },
	{ "policy.get", run_policy_get, NULL, NULL, OP_VIEW_SAFE },
	{ "pin.set", run_pin_set, NULL, NULL, OP_VIEW_SAFE },
	{ NULL, NULL, NULL, NULL, 0 }
};
