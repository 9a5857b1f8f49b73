/*
 * The directory: organisations, users (extensions), devices, inboxes with
 * DIDs and members, customers with numbers, carrier trunks, API tokens.
 *
 * Who may change what: the local operator everything; owners and admins of
 * an organisation its users, devices, inboxes and customers; members may
 * create customers and add numbers (agents do so from a transaction).
 * Trunks and organisations are the operator's. Every change is one MySQL
 * transaction: a refused change writes nothing.
 */
#include "ops.h"
#include "server.h"
#include "log.h"
#include "ccq_e164.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define TS(col) "DATE_FORMAT(" col ", '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"

/* ---- small helpers ----------------------------------------------------- */

static int begin(struct req *r, MYSQL *m)
{
	return db_exec(&r->j, m, "START TRANSACTION", 17);
}

static int commit(struct req *r, MYSQL *m)
{
	return db_exec(&r->j, m, "COMMIT", 6);
}

static int rollback(struct req *r, MYSQL *m)
{
	if (!r->j.conn_lost)
		mysql_query(m, "ROLLBACK");
	return -1;
}

/* Run q; fail on oom; map duplicate keys to a clear conflict. */
static int exec_q(struct req *r, MYSQL *m, struct qb *q, const char *dup_msg)
{
	if (q->oom)
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	if (mysql_real_query(m, q->buf, q->len) != 0) {
		if (mysql_errno(m) == 1062 /* ER_DUP_ENTRY */ && dup_msg)
			return req_fail(r, CCQ_E_CONFLICT, "%s", dup_msg);
		return db_exec(&r->j, m, q->buf, q->len); /* fills the job error */
	}
	return 0;
}

static void hex(const unsigned char *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int digest_hex(const EVP_MD *md, const char *s, size_t n, char *out)
{
	unsigned char buf[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	if (!EVP_Digest(s, n, buf, &len, md, NULL))
		return -1;
	hex(buf, len, out);
	return 0;
}

/* Extension keys and SIP user names: letters, digits, '.', '_', '-', '+'. */
static int token_ok(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-+", *s))
			return 0;
	return 1;
}

/*
 * The organisation a request is about: argument "org" (a name), else the
 * acting user's. Only the operator may name another organisation; a user
 * naming one gets not_found (nothing leaks).
 */
int req_org(struct req *r, MYSQL *m, uint32_t *org_id, char *country)
{
	char name[101] = "", esc[210], q[400];
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (arg_str(r, "org", name, sizeof(name), 0) < 0)
		return -1;
	if (!name[0]) {
		if (r->who.operator)
			return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'org' is required");
		snprintf(q, sizeof(q), "SELECT id, default_country FROM org WHERE id = %u",
			r->who.org_id);
	} else {
		mysql_real_escape_string(m, esc, name, strlen(name));
		snprintf(q, sizeof(q), "SELECT id, default_country FROM org WHERE name = '%s'", esc);
	}
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	if (!row || (!r->who.operator && strtoul(row[0], NULL, 10) != r->who.org_id)) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_NOT_FOUND, "no organisation '%s'", name);
	}
	*org_id = (uint32_t)strtoul(row[0], NULL, 10);
	if (country)
		snprintf(country, 3, "%s", row[1]);
	mysql_free_result(res);
	return 0;
}

static int need_manage(struct req *r, uint32_t org_id)
{
	if (!acl_can_manage_org(&r->who, org_id))
		return req_fail(r, CCQ_E_DENIED,
			"only the organisation's owners and admins may change its directory");
	return 0;
}

/* A user id by extension key within an organisation. */
static int user_by_ext(struct req *r, MYSQL *m, uint32_t org_id, const char *ext, uint64_t *uid)
{
	struct qb q;
	int found = 0, rc;
	qb_init(&q);
	qb_add(&q, "SELECT id FROM user WHERE org_id = %u AND ext_key = ", org_id);
	qb_str(&q, m, ext, strlen(ext));
	rc = q.oom ? req_fail(r, CCQ_E_INTERNAL, "out of memory")
		: sql_u64(r, m, q.buf, q.len, uid, &found);
	qb_free(&q);
	if (rc < 0)
		return -1;
	if (!found)
		return req_fail(r, CCQ_E_NOT_FOUND, "no extension '%s' in this organisation", ext);
	return 0;
}

/* An inbox id by name within an organisation, visible to the actor. */
static int inbox_by_name(struct req *r, MYSQL *m, uint32_t org_id, const char *name,
		uint64_t *id)
{
	struct qb q;
	char cond[200];
	int found = 0, rc;
	acl_inbox_cond(cond, sizeof(cond), &r->who, "id");
	qb_init(&q);
	qb_add(&q, "SELECT id FROM inbox WHERE org_id = %u AND name = ", org_id);
	qb_str(&q, m, name, strlen(name));
	qb_add(&q, "%s", cond);
	rc = q.oom ? req_fail(r, CCQ_E_INTERNAL, "out of memory")
		: sql_u64(r, m, q.buf, q.len, id, &found);
	qb_free(&q);
	if (rc < 0)
		return -1;
	if (!found)
		return req_fail(r, CCQ_E_NOT_FOUND, "no inbox '%s'", name);
	return 0;
}

static int normalize(struct req *r, const char *what, const char *in, const char *country,
		char out[16])
{
	const char *why = "invalid";
	if (ccq_e164_normalize(in, strlen(in), country, out, &why) < 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "%s '%s' is not a valid phone number: %s",
			what, in, why);
	return 0;
}

static int pack_select(struct req *r, MYSQL *m, const char *q, size_t len, const char *key)
{
	MYSQL_RES *res = db_select(&r->j, m, q, len);
	if (!res)
		return -1;
	req_reply_rows(r, res, key);
	return 0;
}

/* Tell the proxy's compliance loader that users or devices changed. */
static void bump_directory(MYSQL *m)
{
	/* best effort: a failure only delays the proxy's view until the next change */
	mysql_query(m, "UPDATE list_version SET version = version + 1, changed_at = "
		"UTC_TIMESTAMP(3) WHERE name = 'directory'");
}

static int reply_id(struct req *r, uint64_t id)
{
	msgpack_packer *pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_kv_uint(pk, "id", id);
	r->out_id = id;
	return 0;
}

/* ---- organisations ------------------------------------------------------ */

static int run_org_create(struct req *r, MYSQL *m)
{
	char name[101], country[8];
	struct qb q;
	int rc;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "only the local operator creates organisations");
	if (arg_str(r, "name", name, sizeof(name), 1) < 0
			|| arg_str(r, "country", country, sizeof(country), 1) < 0)
		return -1;
	if (!text_ok(name))
		return req_fail(r, CCQ_E_BAD_REQUEST, "organisation name contains control characters");
	for (char *p = country; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	if (strlen(country) != 2 || !ccq_e164_region_known(country))
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"country '%s' is not a known ISO 3166 alpha-2 code with a calling code", country);
	qb_init(&q);
	qb_add(&q, "INSERT INTO org (name, default_country, created_at) VALUES (");
	qb_str(&q, m, name, strlen(name));
	qb_add(&q, ", '%s', UTC_TIMESTAMP(3))", country);
	rc = exec_q(r, m, &q, "an organisation with that name exists");
	qb_free(&q);
	if (rc < 0)
		return -1;
	return reply_id(r, mysql_insert_id(m));
}

static int run_org_list(struct req *r, MYSQL *m)
{
	char q[400], where[40] = "";
	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		snprintf(where, sizeof(where), "WHERE id = %u ", r->who.org_id);
	snprintf(q, sizeof(q), "SELECT id, name, default_country AS country, "
		TS("created_at") " AS created_at FROM org %sORDER BY name", where);
	return pack_select(r, m, q, strlen(q), "items");
}

/* ---- users ------------------------------------------------------------- */

static int user_fields(struct req *r, MYSQL *m, struct qb *q, int creating, const char *country)
{
	char name[101], role[16], caller[40], unix_user[65], e164[16];
	uint64_t max_calls, wrapup;
	int addon, r1;
	int n = 0;

	/* each present field appends "col = value" (update) or is collected */
	if (arg_str(r, "name", name, sizeof(name), creating) < 0
			|| arg_str(r, "role", role, sizeof(role), 0) < 0
			|| arg_str(r, "caller_id", caller, sizeof(caller), 0) < 0
			|| arg_str(r, "unix_user", unix_user, sizeof(unix_user), 0) < 0)
		return -1;
	if (name[0] && !text_ok(name))
		return req_fail(r, CCQ_E_BAD_REQUEST, "name contains control characters");
	if (role[0] && role_parse(role) < 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "role must be owner, admin or member");
	if (unix_user[0] && !token_ok(unix_user))
		return req_fail(r, CCQ_E_BAD_REQUEST, "unix_user '%s' is not a valid user name",
			unix_user);
	if (caller[0] && normalize(r, "caller_id", caller, country, e164) < 0)
		return -1;
#define SEP() qb_add(q, n++ ? ", " : "")
	if (name[0]) { SEP(); qb_add(q, "name = "); qb_str(q, m, name, strlen(name)); }
	if (role[0]) { SEP(); qb_add(q, "role = '%s'", role_name(role_parse(role))); }
	if (caller[0]) { SEP(); qb_add(q, "caller_id = '+%s'", e164); }
	if (unix_user[0]) { SEP(); qb_add(q, "unix_user = "); qb_str(q, m, unix_user, strlen(unix_user)); }
	r1 = ccq_map_uint(r->args, "max_calls", &max_calls);
	if (r1 < 0 || (r1 == 1 && (max_calls < 1 || max_calls > 100)))
		return req_fail(r, CCQ_E_BAD_REQUEST, "max_calls must be from 1 to 100");
	if (r1 == 1) { SEP(); qb_add(q, "max_calls = %llu", (unsigned long long)max_calls); }
	r1 = ccq_map_uint(r->args, "wrapup_seconds", &wrapup);
	if (r1 < 0 || (r1 == 1 && wrapup > 3600))
		return req_fail(r, CCQ_E_BAD_REQUEST, "wrapup_seconds must be from 0 to 3600");
	if (r1 == 1) { SEP(); qb_add(q, "wrapup_seconds = %llu", (unsigned long long)wrapup); }
	r1 = ccq_map_bool(r->args, "cc_addon", &addon);
	if (r1 < 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "cc_addon must be true or false");
	if (r1 == 1) { SEP(); qb_add(q, "cc_addon = %d", addon ? 1 : 0); }
#undef SEP
	return n;
}

static int run_user_create(struct req *r, MYSQL *m)
{
	char ext[33], country[3];
	uint32_t org = 0;
	uint64_t id;
	struct qb q;
	int rc;

	if (req_who(r, m) < 0 || req_org(r, m, &org, country) < 0 || need_manage(r, org) < 0)
		return -1;
	if (arg_str(r, "ext", ext, sizeof(ext), 1) < 0)
		return -1;
	if (!token_ok(ext))
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"extension key '%s' may hold only letters, digits, '.', '_', '-' and '+'", ext);
	qb_init(&q);
	qb_add(&q, "INSERT INTO user SET org_id = %u, ext_key = ", org);
	qb_str(&q, m, ext, strlen(ext));
	qb_add(&q, ", created_at = UTC_TIMESTAMP(3), ");
	if (user_fields(r, m, &q, 1, country) < 0) {
		qb_free(&q);
		return -1;
	}
	rc = exec_q(r, m, &q, "that extension key or unix_user is already taken");
	qb_free(&q);
	if (rc < 0)
		return -1;
	/* the id before bump_directory's UPDATE resets mysql_insert_id() */
	id = mysql_insert_id(m);
	bump_directory(m);
	return reply_id(r, id);
}

static int run_user_update(struct req *r, MYSQL *m)
{
	char ext[33], country[3];
	uint32_t org = 0;
	uint64_t uid;
	struct qb q;
	int rc, n;

	if (req_who(r, m) < 0 || req_org(r, m, &org, country) < 0 || need_manage(r, org) < 0)
		return -1;
	if (arg_str(r, "ext", ext, sizeof(ext), 1) < 0 || user_by_ext(r, m, org, ext, &uid) < 0)
		return -1;
	qb_init(&q);
	qb_add(&q, "UPDATE user SET ");
	n = user_fields(r, m, &q, 0, country);
	if (n <= 0) {
		qb_free(&q);
		return n < 0 ? -1 : req_fail(r, CCQ_E_BAD_REQUEST, "nothing to change");
	}
	qb_add(&q, " WHERE id = %llu", (unsigned long long)uid);
	rc = exec_q(r, m, &q, "that unix_user is already taken");
	qb_free(&q);
	if (rc < 0)
		return -1;
	bump_directory(m);
	return reply_id(r, uid);
}

static int run_user_list(struct req *r, MYSQL *m)
{
	char q[1200];
	uint32_t org = 0;
	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT u.id, u.ext_key AS ext, u.name, u.role, u.cc_addon, "
		"u.caller_id, u.max_calls, u.wrapup_seconds, u.unix_user, "
		"(SELECT COUNT(*) FROM device d WHERE d.user_id = u.id AND d.enabled = 1) AS devices "
		"FROM user u WHERE u.org_id = %u ORDER BY u.ext_key", org);
	return pack_select(r, m, q, strlen(q), "items");
}

/* ---- devices ----------------------------------------------------------- */

static const char *const device_kinds[] = { "desk_phone", "mobile_app", "desktop_app",
	"web_phone", NULL };

static int run_device_create(struct req *r, MYSQL *m)
{
	char ext[33], kind[16], label[101], user[65], pass[129], domain[129], ha1in[400], ha1[33];
	uint32_t org = 0;
	uint64_t uid, dev_id;
	int enabled = 1, ok = 0, rc;
	struct qb q;

	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0 || need_manage(r, org) < 0)
		return -1;
	if (arg_str(r, "ext", ext, sizeof(ext), 1) < 0
			|| arg_str(r, "kind", kind, sizeof(kind), 1) < 0
			|| arg_str(r, "label", label, sizeof(label), 0) < 0
			|| arg_str(r, "username", user, sizeof(user), 1) < 0
			|| arg_str(r, "password", pass, sizeof(pass), 1) < 0
			|| arg_str(r, "domain", domain, sizeof(domain), 1) < 0
			|| arg_bool(r, "enabled", &enabled, 0) < 0)
		return -1;
	for (int i = 0; device_kinds[i]; i++)
		ok |= strcmp(kind, device_kinds[i]) == 0;
	if (!ok)
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"kind must be desk_phone, mobile_app, desktop_app or web_phone");
	if (!token_ok(user))
		return req_fail(r, CCQ_E_BAD_REQUEST, "SIP user name '%s' may hold only letters, "
			"digits, '.', '_', '-' and '+'", user);
	if (!token_ok(domain))
		return req_fail(r, CCQ_E_BAD_REQUEST, "SIP domain '%s' is not valid", domain);
	if (strlen(pass) < 8)
		return req_fail(r, CCQ_E_BAD_REQUEST, "the SIP password must be at least 8 characters");
	if (label[0] && !text_ok(label))
		return req_fail(r, CCQ_E_BAD_REQUEST, "label contains control characters");
	if (user_by_ext(r, m, org, ext, &uid) < 0)
		return -1;
	/* only HA1 is stored: what digest authentication needs, never the password */
	snprintf(ha1in, sizeof(ha1in), "%s:%s:%s", user, domain, pass);
	if (digest_hex(EVP_md5(), ha1in, strlen(ha1in), ha1) < 0)
		return req_fail(r, CCQ_E_INTERNAL, "MD5 unavailable");
	qb_init(&q);
	qb_add(&q, "INSERT INTO device (user_id, kind, label, username, domain, ha1, enabled, "
		"created_at) VALUES (%llu, '%s', ", (unsigned long long)uid, kind);
	qb_str(&q, m, label, strlen(label));
	qb_add(&q, ", ");
	qb_str(&q, m, user, strlen(user));
	qb_add(&q, ", ");
	qb_str(&q, m, domain, strlen(domain));
	qb_add(&q, ", '%s', %d, UTC_TIMESTAMP(3))", ha1, enabled ? 1 : 0);
	rc = exec_q(r, m, &q, "that SIP user name is already used by another device");
	qb_free(&q);
	if (rc < 0)
		return -1;
	/* the id before bump_directory's UPDATE resets mysql_insert_id() */
	dev_id = mysql_insert_id(m);
	bump_directory(m);
	return reply_id(r, dev_id);
}

/* The org of a device (for access checks). */
static int device_org(struct req *r, MYSQL *m, uint64_t dev, uint32_t *org)
{
	char q[300];
	uint64_t v;
	int found;
	snprintf(q, sizeof(q), "SELECT u.org_id FROM device d JOIN user u ON u.id = d.user_id "
		"WHERE d.id = %llu", (unsigned long long)dev);
	if (sql_u64(r, m, q, strlen(q), &v, &found) < 0)
		return -1;
	if (!found || (!r->who.operator && v != r->who.org_id))
		return req_fail(r, CCQ_E_NOT_FOUND, "no device %llu", (unsigned long long)dev);
	*org = (uint32_t)v;
	return 0;
}

static int run_device_update(struct req *r, MYSQL *m)
{
	uint64_t dev;
	uint32_t org = 0;
	int enabled, rc;
	char q[200];

	if (req_who(r, m) < 0 || arg_uint(r, "id", &dev, 1, UINT32_MAX) < 0
			|| arg_bool(r, "enabled", &enabled, 1) < 0)
		return -1;
	if (device_org(r, m, dev, &org) < 0 || need_manage(r, org) < 0)
		return -1;
	snprintf(q, sizeof(q), "UPDATE device SET enabled = %d WHERE id = %llu", enabled ? 1 : 0,
		(unsigned long long)dev);
	rc = db_exec(&r->j, m, q, strlen(q));
	if (rc < 0)
		return -1;
	bump_directory(m);
	return reply_id(r, dev);
}

static int run_device_list(struct req *r, MYSQL *m)
{
	char ext[33] = "", q[1500];
	uint32_t org = 0;
	uint64_t uid = 0;
	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0
			|| arg_str(r, "ext", ext, sizeof(ext), 0) < 0)
		return -1;
	if (ext[0] && user_by_ext(r, m, org, ext, &uid) < 0)
		return -1;
	{
		char only[48] = "";
		if (uid)
			snprintf(only, sizeof(only), " AND u.id = %llu", (unsigned long long)uid);
		snprintf(q, sizeof(q), "SELECT d.id, u.ext_key AS ext, u.name AS user, d.kind, "
			"d.label, d.username, d.domain, d.enabled, "
			"(SELECT COUNT(*) FROM device_contact c WHERE c.device_id = d.id "
			"AND c.expires_at > UTC_TIMESTAMP(3)) AS registered "
			"FROM device d JOIN user u ON u.id = d.user_id WHERE u.org_id = %u%s "
			"ORDER BY u.ext_key, d.id", org, only);
	}
	return pack_select(r, m, q, strlen(q), "items");
}

/* ---- inboxes ----------------------------------------------------------- */

static int inbox_settings(struct req *r, struct qb *q, int creating)
{
	uint64_t ring = 0, wait = 0;
	char flow[16] = "";
	int n = 0, r1, r2;

	r1 = ccq_map_uint(r->args, "ring_timeout", &ring);
	if (r1 < 0 || (r1 == 1 && (ring < 5 || ring > 300)))
		return req_fail(r, CCQ_E_BAD_REQUEST, "ring_timeout must be from 5 to 300 seconds");
	r2 = ccq_map_uint(r->args, "max_wait", &wait);
	if (r2 < 0 || (r2 == 1 && wait > 3600))
		return req_fail(r, CCQ_E_BAD_REQUEST, "max_wait must be from 0 to 3600 seconds");
	if (arg_str(r, "missed_flow", flow, sizeof(flow), 0) < 0)
		return -1;
	if (flow[0] && strcmp(flow, "notify") && strcmp(flow, "callback"))
		return req_fail(r, CCQ_E_BAD_REQUEST, "missed_flow must be notify or callback");
	if (r1 == 1)
		qb_add(q, "%sring_timeout = %llu", n++ || creating ? ", " : "", (unsigned long long)ring);
	if (r2 == 1)
		qb_add(q, "%smax_wait = %llu", n++ || creating ? ", " : "", (unsigned long long)wait);
	if (flow[0])
		qb_add(q, "%smissed_flow = '%s'", n++ || creating ? ", " : "", flow);
	return n;
}

static int run_inbox_create(struct req *r, MYSQL *m)
{
	char name[101];
	uint32_t org = 0;
	struct qb q;
	int rc;

	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0 || need_manage(r, org) < 0
			|| arg_str(r, "name", name, sizeof(name), 1) < 0)
		return -1;
	if (!text_ok(name))
		return req_fail(r, CCQ_E_BAD_REQUEST, "inbox name contains control characters");
	qb_init(&q);
	qb_add(&q, "INSERT INTO inbox SET org_id = %u, created_at = UTC_TIMESTAMP(3), name = ", org);
	qb_str(&q, m, name, strlen(name));
	if (inbox_settings(r, &q, 1) < 0) {
		qb_free(&q);
		return -1;
	}
	rc = exec_q(r, m, &q, "an inbox with that name exists in this organisation");
	qb_free(&q);
	if (rc < 0)
		return -1;
	{
		/* the id before bump_directory's UPDATE resets mysql_insert_id();
		 * the proxy knows the inboxes (recording of calls routed to one
		 * with **<inbox id>*) */
		uint64_t id = mysql_insert_id(m);
		bump_directory(m);
		return reply_id(r, id);
	}
}

static int run_inbox_update(struct req *r, MYSQL *m)
{
	char name[101];
	uint32_t org = 0;
	uint64_t inbox;
	struct qb q;
	int n, rc;

	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0 || need_manage(r, org) < 0
			|| arg_str(r, "inbox", name, sizeof(name), 1) < 0
			|| inbox_by_name(r, m, org, name, &inbox) < 0)
		return -1;
	qb_init(&q);
	qb_add(&q, "UPDATE inbox SET ");
	n = inbox_settings(r, &q, 0);
	if (n <= 0) {
		qb_free(&q);
		return n < 0 ? -1 : req_fail(r, CCQ_E_BAD_REQUEST, "nothing to change");
	}
	qb_add(&q, " WHERE id = %llu", (unsigned long long)inbox);
	rc = exec_q(r, m, &q, NULL);
	qb_free(&q);
	return rc < 0 ? -1 : reply_id(r, inbox);
}

static int run_inbox_did(struct req *r, MYSQL *m, int add)
{
	char name[101], did[40], e164[16], country[3], q[300];
	uint32_t org = 0;
	uint64_t inbox;
	int rc;

	if (req_who(r, m) < 0 || req_org(r, m, &org, country) < 0 || need_manage(r, org) < 0
			|| arg_str(r, "inbox", name, sizeof(name), 1) < 0
			|| arg_str(r, "did", did, sizeof(did), 1) < 0
			|| inbox_by_name(r, m, org, name, &inbox) < 0
			|| normalize(r, "DID", did, country, e164) < 0)
		return -1;
	if (add) {
		snprintf(q, sizeof(q), "INSERT INTO inbox_did (did, inbox_id) VALUES ('+%s', %llu)",
			e164, (unsigned long long)inbox);
		if (mysql_query(m, q) != 0) {
			if (mysql_errno(m) == 1062)
				return req_fail(r, CCQ_E_CONFLICT, "DID +%s already belongs to an inbox", e164);
			return db_exec(&r->j, m, q, strlen(q));
		}
	} else {
		snprintf(q, sizeof(q), "DELETE FROM inbox_did WHERE did = '+%s' AND inbox_id = %llu",
			e164, (unsigned long long)inbox);
		if ((rc = db_exec(&r->j, m, q, strlen(q))) < 0)
			return -1;
		if (mysql_affected_rows(m) == 0)
			return req_fail(r, CCQ_E_NOT_FOUND, "DID +%s is not on inbox %s", e164, name);
	}
	bump_directory(m); /* a user without caller ID presents the inbox's DID */
	return reply_id(r, inbox);
}

static int run_inbox_did_add(struct req *r, MYSQL *m) { return run_inbox_did(r, m, 1); }
static int run_inbox_did_remove(struct req *r, MYSQL *m) { return run_inbox_did(r, m, 0); }

static int run_inbox_member(struct req *r, MYSQL *m, int add)
{
	char name[101], ext[33], q[300];
	uint32_t org = 0;
	uint64_t inbox, uid;

	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0 || need_manage(r, org) < 0
			|| arg_str(r, "inbox", name, sizeof(name), 1) < 0
			|| arg_str(r, "ext", ext, sizeof(ext), 1) < 0
			|| inbox_by_name(r, m, org, name, &inbox) < 0
			|| user_by_ext(r, m, org, ext, &uid) < 0)
		return -1;
	snprintf(q, sizeof(q), add ? "INSERT IGNORE INTO inbox_member (inbox_id, user_id) "
		"VALUES (%llu, %llu)" : "DELETE FROM inbox_member WHERE inbox_id = %llu AND user_id = %llu",
		(unsigned long long)inbox, (unsigned long long)uid);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	bump_directory(m); /* the proxy knows each user's default inbox */
	return reply_id(r, inbox);
}

static int run_inbox_member_add(struct req *r, MYSQL *m) { return run_inbox_member(r, m, 1); }
static int run_inbox_member_remove(struct req *r, MYSQL *m) { return run_inbox_member(r, m, 0); }

static int run_inbox_list(struct req *r, MYSQL *m)
{
	char q[2000], cond[200];
	uint32_t org = 0;
	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0)
		return -1;
	acl_inbox_cond(cond, sizeof(cond), &r->who, "i.id");
	snprintf(q, sizeof(q), "SELECT i.id, i.name, i.ring_timeout, i.max_wait, i.missed_flow, "
		"(SELECT GROUP_CONCAT(d.did ORDER BY d.did SEPARATOR ' ') FROM inbox_did d "
		"WHERE d.inbox_id = i.id) AS dids, "
		"(SELECT GROUP_CONCAT(u.ext_key ORDER BY u.ext_key SEPARATOR ' ') FROM inbox_member im "
		"JOIN user u ON u.id = im.user_id WHERE im.inbox_id = i.id) AS members, "
		"(SELECT COUNT(*) FROM txn t WHERE t.inbox_id = i.id AND t.status = 'Waiting') AS waiting "
		"FROM inbox i WHERE i.org_id = %u%s ORDER BY i.name", org, cond);
	return pack_select(r, m, q, strlen(q), "items");
}

/* ---- customers --------------------------------------------------------- */

static int add_number(struct req *r, MYSQL *m, uint32_t org, uint64_t cust, const char *num,
		const char *country, int verified)
{
	char e164[16], q[300];
	if (normalize(r, "number", num, country, e164) < 0)
		return -1;
	snprintf(q, sizeof(q), "INSERT INTO customer_number (customer_id, org_id, number, verified) "
		"VALUES (%llu, %u, '+%s', %d)", (unsigned long long)cust, org, e164, verified ? 1 : 0);
	if (mysql_query(m, q) != 0) {
		if (mysql_errno(m) == 1062)
			return req_fail(r, CCQ_E_CONFLICT,
				"number +%s already belongs to a customer of this organisation", e164);
		return db_exec(&r->j, m, q, strlen(q));
	}
	return 0;
}

static int run_customer_create(struct req *r, MYSQL *m)
{
	char name[101], country[3];
	uint32_t org = 0;
	uint64_t cust;
	int verified = 0;
	const msgpack_object *nums;
	struct qb q;

	if (req_who(r, m) < 0 || req_org(r, m, &org, country) < 0
			|| arg_str(r, "name", name, sizeof(name), 1) < 0
			|| arg_bool(r, "verified", &verified, 0) < 0)
		return -1;
	if (!text_ok(name))
		return req_fail(r, CCQ_E_BAD_REQUEST, "customer name contains control characters");
	nums = ccq_map_get(r->args, "numbers");
	if (nums && nums->type != MSGPACK_OBJECT_ARRAY && nums->type != MSGPACK_OBJECT_NIL)
		return req_fail(r, CCQ_E_BAD_REQUEST, "'numbers' must be a list of strings");
	if (begin(r, m) < 0)
		return -1;
	qb_init(&q);
	qb_add(&q, "INSERT INTO customer (org_id, name, created_at) VALUES (%u, ", org);
	qb_str(&q, m, name, strlen(name));
	qb_add(&q, ", UTC_TIMESTAMP(3))");
	if (exec_q(r, m, &q, NULL) < 0) {
		qb_free(&q);
		return rollback(r, m);
	}
	qb_free(&q);
	cust = mysql_insert_id(m);
	if (nums && nums->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < nums->via.array.size; i++) {
			const msgpack_object *o = &nums->via.array.ptr[i];
			char num[40];
			if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof(num)) {
				req_fail(r, CCQ_E_BAD_REQUEST, "each number must be a string of at most %zu "
					"characters", sizeof(num) - 1);
				return rollback(r, m);
			}
			memcpy(num, o->via.str.ptr, o->via.str.size);
			num[o->via.str.size] = '\0';
			if (add_number(r, m, org, cust, num, country, verified) < 0)
				return rollback(r, m);
		}
	}
	if (commit(r, m) < 0)
		return -1;
	return reply_id(r, cust);
}

static int customer_org(struct req *r, MYSQL *m, uint64_t cust, uint32_t *org, char *country)
{
	char q[300];
	MYSQL_RES *res;
	MYSQL_ROW row;
	snprintf(q, sizeof(q), "SELECT c.org_id, o.default_country FROM customer c "
		"JOIN org o ON o.id = c.org_id WHERE c.id = %llu", (unsigned long long)cust);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	if (!row || (!r->who.operator && strtoul(row[0], NULL, 10) != r->who.org_id)) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_NOT_FOUND, "no customer %llu", (unsigned long long)cust);
	}
	*org = (uint32_t)strtoul(row[0], NULL, 10);
	snprintf(country, 3, "%s", row[1]);
	mysql_free_result(res);
	return 0;
}

static int run_customer_number_add(struct req *r, MYSQL *m)
{
	uint64_t cust;
	uint32_t org = 0;
	char country[3], num[40];
	int verified = 0;

	if (req_who(r, m) < 0 || arg_uint(r, "customer", &cust, 1, UINT32_MAX) < 0
			|| arg_str(r, "number", num, sizeof(num), 1) < 0
			|| arg_bool(r, "verified", &verified, 0) < 0
			|| customer_org(r, m, cust, &org, country) < 0
			|| add_number(r, m, org, cust, num, country, verified) < 0)
		return -1;
	return reply_id(r, cust);
}

static int run_customer_number_verify(struct req *r, MYSQL *m)
{
	uint64_t cust;
	uint32_t org = 0;
	char country[3], num[40], e164[16], q[300];
	int verified = 1;

	if (req_who(r, m) < 0 || arg_uint(r, "customer", &cust, 1, UINT32_MAX) < 0
			|| arg_str(r, "number", num, sizeof(num), 1) < 0
			|| arg_bool(r, "verified", &verified, 0) < 0
			|| customer_org(r, m, cust, &org, country) < 0
			|| normalize(r, "number", num, country, e164) < 0)
		return -1;
	snprintf(q, sizeof(q), "UPDATE customer_number SET verified = %d WHERE customer_id = %llu "
		"AND number = '+%s'", verified ? 1 : 0, (unsigned long long)cust, e164);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	{
		char q2[300];
		uint64_t v;
		int found;
		snprintf(q2, sizeof(q2), "SELECT 1 FROM customer_number WHERE customer_id = %llu "
			"AND number = '+%s'", (unsigned long long)cust, e164);
		if (sql_u64(r, m, q2, strlen(q2), &v, &found) < 0)
			return -1;
		if (!found)
			return req_fail(r, CCQ_E_NOT_FOUND, "customer %llu has no number +%s",
				(unsigned long long)cust, e164);
	}
	return reply_id(r, cust);
}

static int run_customer_list(struct req *r, MYSQL *m)
{
	char q[1200];
	uint32_t org = 0;
	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT c.id, c.name, (SELECT GROUP_CONCAT(CONCAT(n.number, "
		"IF(n.verified, ' (verified)', '')) ORDER BY n.number SEPARATOR ', ') "
		"FROM customer_number n WHERE n.customer_id = c.id) AS numbers "
		"FROM customer c WHERE c.org_id = %u ORDER BY c.name, c.id", org);
	return pack_select(r, m, q, strlen(q), "items");
}

static int run_customer_get(struct req *r, MYSQL *m)
{
	char q[1200], country[3];
	uint64_t cust;
	uint32_t org = 0;
	MYSQL_RES *res, *nums;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_uint(r, "id", &cust, 1, UINT32_MAX) < 0
			|| customer_org(r, m, cust, &org, country) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT id, name, " TS("created_at") " AS created_at FROM customer "
		"WHERE id = %llu", (unsigned long long)cust);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	snprintf(q, sizeof(q), "SELECT number, verified FROM customer_number WHERE customer_id = %llu "
		"ORDER BY number", (unsigned long long)cust);
	if (!(nums = db_select(&r->j, m, q, strlen(q)))) {
		mysql_free_result(res);
		return -1;
	}
	row = mysql_fetch_row(res);
	pk = req_reply(r);
	if (row)
		pack_row(pk, res, row, 1);
	else
		msgpack_pack_map(pk, 1);
	ccq_pack_str(pk, "numbers");
	pack_rows(pk, nums);
	mysql_free_result(nums);
	mysql_free_result(res);
	return 0;
}

/* ---- trunks ------------------------------------------------------------ */

static int run_trunk_create(struct req *r, MYSQL *m)
{
	char name[101], addr[64];
	uint64_t port = 5060;
	unsigned char bin[16];
	struct qb q;
	int rc;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "only the local operator manages carrier trunks");
	if (arg_str(r, "name", name, sizeof(name), 1) < 0
			|| arg_str(r, "address", addr, sizeof(addr), 1) < 0
			|| arg_uint(r, "port", &port, 0, 65535) < 0)
		return -1;
	if (port == 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "port must be from 1 to 65535");
	if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1)
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"trunk address '%s' must be an IPv4 or IPv6 address (trunks are identified by source address)",
			addr);
	if (!text_ok(name))
		return req_fail(r, CCQ_E_BAD_REQUEST, "trunk name contains control characters");
	qb_init(&q);
	qb_add(&q, "INSERT INTO trunk (name, address, port, created_at) VALUES (");
	qb_str(&q, m, name, strlen(name));
	qb_add(&q, ", ");
	qb_str(&q, m, addr, strlen(addr));
	qb_add(&q, ", %llu, UTC_TIMESTAMP(3))", (unsigned long long)port);
	rc = exec_q(r, m, &q, "a trunk with that name or address exists");
	qb_free(&q);
	return rc < 0 ? -1 : reply_id(r, mysql_insert_id(m));
}

static int run_trunk_list(struct req *r, MYSQL *m)
{
	static const char q[] = "SELECT id, name, address, port FROM trunk ORDER BY name";
	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "only the local operator manages carrier trunks");
	return pack_select(r, m, q, sizeof(q) - 1, "items");
}

/* ---- API tokens and authentication -------------------------------------- */

static int run_token_create(struct req *r, MYSQL *m)
{
	char ext[33], label[101] = "", token[80], hash[65], q[400];
	unsigned char raw[24];
	uint32_t org = 0;
	uint64_t uid;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0
			|| arg_str(r, "ext", ext, sizeof(ext), 1) < 0
			|| arg_str(r, "label", label, sizeof(label), 0) < 0
			|| user_by_ext(r, m, org, ext, &uid) < 0)
		return -1;
	/* a user may make tokens for themselves; admins for their organisation */
	if (!(r->who.user_id == uid) && need_manage(r, org) < 0)
		return -1;
	if (label[0] && !text_ok(label))
		return req_fail(r, CCQ_E_BAD_REQUEST, "label contains control characters");
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return req_fail(r, CCQ_E_INTERNAL, "no randomness available");
	memcpy(token, "ccq_", 4);
	hex(raw, sizeof(raw), token + 4);
	/* only the SHA-256 of the token is kept */
	if (digest_hex(EVP_sha256(), token, strlen(token), hash) < 0)
		return req_fail(r, CCQ_E_INTERNAL, "SHA-256 unavailable");
	{
		char esc[210];
		mysql_real_escape_string(m, esc, label, strlen(label));
		snprintf(q, sizeof(q), "INSERT INTO api_token (user_id, token_hash, label, created_at) "
			"VALUES (%llu, '%s', '%s', UTC_TIMESTAMP(3))", (unsigned long long)uid, hash, esc);
	}
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 2);
	ccq_pack_kv_uint(pk, "id", mysql_insert_id(m));
	ccq_pack_kv_str(pk, "token", token);
	return 0;
}

static int run_auth(struct req *r, MYSQL *m)
{
	char token[80], hash[65], q[300];
	uint64_t uid;
	int found;
	msgpack_packer *pk;

	if (arg_str(r, "token", token, sizeof(token), 1) < 0)
		return -1;
	if (digest_hex(EVP_sha256(), token, strlen(token), hash) < 0)
		return req_fail(r, CCQ_E_INTERNAL, "SHA-256 unavailable");
	snprintf(q, sizeof(q), "SELECT user_id FROM api_token WHERE token_hash = '%s'", hash);
	if (sql_u64(r, m, q, strlen(q), &uid, &found) < 0)
		return -1;
	if (!found) {
		LOG_N("rejected an API token (hash prefix %.8s)", hash);
		return req_fail(r, CCQ_E_DENIED, "invalid API token");
	}
	snprintf(q, sizeof(q), "UPDATE api_token SET last_used = UTC_TIMESTAMP(3) "
		"WHERE token_hash = '%s'", hash);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	r->actor.user_id = (uint32_t)uid;
	if (req_who(r, m) < 0)
		return -1;
	r->out_id = uid;
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_uint(pk, "user_id", uid);
	ccq_pack_kv_str(pk, "ext", r->who.ext);
	ccq_pack_kv_str(pk, "org", r->who.org_name);
	return 0;
}

static void after_auth(struct req *r)
{
	conn_set_user(r->c, (uint32_t)r->out_id);
}

static int run_whoami(struct req *r, MYSQL *m)
{
	msgpack_packer *pk;
	if (req_who(r, m) < 0)
		return -1;
	pk = req_reply(r);
	if (r->who.operator) {
		msgpack_pack_map(pk, 1);
		ccq_pack_kv_bool(pk, "operator", 1);
		return 0;
	}
	msgpack_pack_map(pk, 7);
	ccq_pack_kv_bool(pk, "operator", 0);
	ccq_pack_kv_uint(pk, "user_id", r->who.user_id);
	ccq_pack_kv_str(pk, "ext", r->who.ext);
	ccq_pack_kv_str(pk, "name", r->who.name);
	ccq_pack_kv_str(pk, "org", r->who.org_name);
	ccq_pack_kv_str(pk, "role", role_name(r->who.role));
	ccq_pack_kv_bool(pk, "cc_addon", r->who.addon);
	return 0;
}

const struct op_def ops_dir[] = {
	{ "org.create", run_org_create, NULL, NULL, OP_DIRECTORY },
	{ "org.list", run_org_list, NULL, NULL, OP_VIEW_SAFE },
	{ "user.create", run_user_create, NULL, NULL, OP_DIRECTORY },
	{ "user.update", run_user_update, NULL, NULL, OP_DIRECTORY },
	{ "user.list", run_user_list, NULL, NULL, OP_VIEW_SAFE },
	{ "device.create", run_device_create, NULL, NULL, OP_DIRECTORY },
	{ "device.update", run_device_update, NULL, NULL, OP_DIRECTORY },
	{ "device.list", run_device_list, NULL, NULL, OP_VIEW_SAFE },
	{ "inbox.create", run_inbox_create, NULL, NULL, OP_DIRECTORY },
	{ "inbox.update", run_inbox_update, NULL, NULL, OP_DIRECTORY },
	{ "inbox.did.add", run_inbox_did_add, NULL, NULL, OP_DIRECTORY },
	{ "inbox.did.remove", run_inbox_did_remove, NULL, NULL, OP_DIRECTORY },
	{ "inbox.member.add", run_inbox_member_add, NULL, NULL, OP_DIRECTORY },
	{ "inbox.member.remove", run_inbox_member_remove, NULL, NULL, OP_DIRECTORY },
	{ "inbox.list", run_inbox_list, NULL, NULL, OP_VIEW_SAFE },
	{ "customer.create", run_customer_create, NULL, NULL, OP_VIEW_SAFE },
	{ "customer.number.add", run_customer_number_add, NULL, NULL, OP_VIEW_SAFE },
	{ "customer.number.verify", run_customer_number_verify, NULL, NULL, OP_VIEW_SAFE },
	{ "customer.list", run_customer_list, NULL, NULL, OP_VIEW_SAFE },
	{ "customer.get", run_customer_get, NULL, NULL, OP_VIEW_SAFE },
	{ "trunk.create", run_trunk_create, NULL, NULL, OP_DIRECTORY },
	{ "trunk.list", run_trunk_list, NULL, NULL, OP_VIEW_SAFE },
	{ "token.create", run_token_create, NULL, NULL, OP_VIEW_SAFE },
	{ "auth", run_auth, NULL, after_auth, OP_ANON | OP_VIEW_SAFE },
	{ "whoami", run_whoami, NULL, NULL, OP_VIEW_SAFE },
	{ NULL, NULL, NULL, NULL, 0 }
};
