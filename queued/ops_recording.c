/*
 * Call recording (doc/recording.md).
 *
 * The policy (recording.set, recording.show), the recording part of the
 * ring decisions (rec_decide, used by ops_call.c), the module's reports of
 * live changes (call.recording), the indexer's run (the internal operation
 * recording.index, timed by recidx.c), and what ccqrec asks for
 * (recording.list, .get, .mark, .purge, .forget).
 *
 * Who sees a recording: the local operator all of them; owners and admins
 * with the contact-center add-on those of their organisation; everyone
 * else those of the TXNs of the inboxes they are a member of. A recording
 * without a TXN (no_txn) is the operator's only.
 */
#include "ops.h"
#include "log.h"
#include "recidx.h"
#include "recording.h"
#include "ccq_e164.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#define TS(col) "DATE_FORMAT(" col ", '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"

static const char *const g_statuses[] = { "ok", "missing", "unreadable", "no_txn", "purging",
	"tampered", NULL };

/* ---- the policy ------------------------------------------------------------- */

static int need_policy_rights(struct req *r)
{
	if (!r->who.operator && !acl_all_inboxes(&r->who))
		return req_fail(r, CCQ_E_DENIED, "only the organisation's owners and admins with the "
			"contact-center add-on (and the local operator) manage its recording policy");
	return 0;
}

/* recording.set {org, scope: org|inbox|user, name, value: on|off|inherit} */
static int run_rec_set(struct req *r, MYSQL *m)
{
	static const char *const scopes[] = { "org", "inbox", "user", NULL };
	static const char *const values[] = { "on", "off", "inherit", NULL };
	char scope[8], name[101] = "", value[8], q[300];
	uint32_t org;
	uint64_t id = 0;
	int found = 0;
	const char *sql_v;
	struct qb qq;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0 || need_policy_rights(r) < 0)
		return -1;
	if (arg_str(r, "scope", scope, sizeof(scope), 1) < 0
			|| arg_str(r, "name", name, sizeof(name), 0) < 0
			|| arg_str(r, "value", value, sizeof(value), 1) < 0)
		return -1;
	if (!str_in(scope, scopes))
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'scope' must be org, inbox or user");
	if (!str_in(value, values))
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'value' must be on, off or inherit");
	sql_v = strcmp(value, "on") == 0 ? "1" : strcmp(value, "off") == 0 ? "0" : "NULL";
	if (strcmp(scope, "org") == 0) {
		if (name[0])
			return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'name' is for the scopes inbox "
				"and user, not org");
		if (strcmp(value, "inherit") == 0)
			return req_fail(r, CCQ_E_BAD_REQUEST, "the organisation's setting is on or off "
				"(inherit is for inboxes and users)");
		id = org;
	} else {
		if (!name[0])
			return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'name' is required: the %s",
				scope[0] == 'i' ? "inbox's name" : "user's extension");
		qb_init(&qq);
		qb_add(&qq, "SELECT id FROM %s WHERE org_id = %u AND %s = ", scope[0] == 'i' ? "inbox"
			: "user", org, scope[0] == 'i' ? "name" : "ext_key");
		qb_str(&qq, m, name, strlen(name));
		if (sql_u64_qb(r, m, &qq, &id, &found) < 0)
			return -1;
		if (!found)
			return scope[0] == 'i' ? req_fail(r, CCQ_E_NOT_FOUND, "no inbox '%s'", name)
				: req_fail(r, CCQ_E_NOT_FOUND, "no extension '%s' in this organisation", name);
	}
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	snprintf(q, sizeof(q), "UPDATE %s SET record_calls = %s WHERE id = %llu",
		strcmp(scope, "org") == 0 ? "org" : scope, sql_v, (unsigned long long)id);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return req_rollback(r, m);
	/* the module's loader polls the sum of the versions: it reloads the policy */
	snprintf(q, sizeof(q), "UPDATE list_version SET version = version + 1, "
		"changed_at = UTC_TIMESTAMP(3) WHERE name = 'recording'");
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return req_rollback(r, m);
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	LOG_I("recording policy of organisation %u: %s%s%s %s (by %s)", org, scope,
		name[0] ? " " : "", name, value, r->who.name);
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_str(pk, "scope", scope);
	ccq_pack_kv_str(pk, "name", name);
	ccq_pack_kv_str(pk, "setting", value);
	return 0;
}

#define SETTING(col) "CASE " col " WHEN 1 THEN 'on' WHEN 0 THEN 'off' ELSE 'inherit' END"

/* recording.show {org} -> {org, inboxes: [...], users: [...]} */
static int run_rec_show(struct req *r, MYSQL *m)
{
	char q[1600];
	uint32_t org;
	uint64_t on;
	int found;
	MYSQL_RES *inboxes, *users;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || req_org(r, m, &org, NULL) < 0 || need_policy_rights(r) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT record_calls FROM org WHERE id = %u", org);
	if (sql_u64(r, m, q, strlen(q), &on, &found) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT i.name, " SETTING("i.record_calls") " AS setting, "
		"IF(COALESCE(i.record_calls, o.record_calls), 'on', 'off') AS effective, "
		"IF(i.record_calls IS NULL, 'organisation', 'inbox') AS rule "
		"FROM inbox i JOIN org o ON o.id = i.org_id WHERE i.org_id = %u ORDER BY i.name", org);
	if (!(inboxes = db_select(&r->j, m, q, strlen(q))))
		return -1;
	/* a user's own calls (outbound, callbacks) go by their first inbox, as
	 * the module resolves them; an inbound call by the inbox of its DID */
	snprintf(q, sizeof(q), "SELECT u.ext_key AS ext, u.name, " SETTING("u.record_calls")
		" AS setting, IF(COALESCE(u.record_calls, i.record_calls, o.record_calls), 'on', 'off') "
		"AS effective, CASE WHEN u.record_calls IS NOT NULL THEN 'user' WHEN i.record_calls "
		"IS NOT NULL THEN 'inbox' ELSE 'organisation' END AS rule, i.name AS inbox "
		"FROM user u JOIN org o ON o.id = u.org_id LEFT JOIN inbox i ON i.id = "
		"(SELECT MIN(im.inbox_id) FROM inbox_member im WHERE im.user_id = u.id) "
		"WHERE u.org_id = %u ORDER BY u.ext_key", org);
	if (!(users = db_select(&r->j, m, q, strlen(q)))) {
		mysql_free_result(inboxes);
		return -1;
	}
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_str(pk, "org", on ? "on" : "off");
	ccq_pack_str(pk, "inboxes");
	pack_rows(pk, inboxes);
	ccq_pack_str(pk, "users");
	pack_rows(pk, users);
	mysql_free_result(users);
	mysql_free_result(inboxes);
	return 0;
}

/* ---- decisions (ops_call.c) --------------------------------------------------- */

int rec_journey(struct req *r, MYSQL *m, uint64_t txn, int record, const char *rule,
		const char *at)
{
	char text[80], q[300];
	MYSQL_RES *res;
	MYSQL_ROW row;
	int same;

	rec_journey_text(text, sizeof(text), record, rule);
	/* re-rings and retried attempts do not repeat an unchanged decision */
	snprintf(q, sizeof(q), "SELECT text FROM txn_event WHERE txn_id = %llu AND kind = "
		"'recording' ORDER BY at DESC, id DESC LIMIT 1", (unsigned long long)txn);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	row = mysql_fetch_row(res);
	same = row && row[0] && strcmp(row[0], text) == 0;
	mysql_free_result(res);
	return same ? 0 : req_journey(r, m, txn, "recording", text, at);
}

int rec_decide(struct req *r, MYSQL *m, uint64_t txn, uint64_t uid, struct rec_decision *d)
{
	char q[900], ext[33] = "";
	MYSQL_RES *res;
	MYSQL_ROW row;
	unsigned long long org = 0, inbox = 0;

	memset(d, 0, sizeof(*d));
	snprintf(q, sizeof(q), "SELECT COALESCE(u.record_calls, i.record_calls, o.record_calls, 0), "
		"CASE WHEN u.record_calls IS NOT NULL THEN 'user' WHEN i.record_calls IS NOT NULL "
		"THEN 'inbox' ELSE 'organisation' END, COALESCE(t.org_id, 0), COALESCE(t.inbox_id, 0), "
		"COALESCE(u.ext_key, '') FROM txn t LEFT JOIN org o ON o.id = t.org_id "
		"LEFT JOIN inbox i ON i.id = t.inbox_id LEFT JOIN user u ON u.id = %llu "
		"WHERE t.id = %llu", (unsigned long long)uid, (unsigned long long)txn);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		d->record = atoi(row[0]) ? 1 : 0;
		snprintf(d->rule, sizeof(d->rule), "%s", row[1]);
		org = strtoull(row[2], NULL, 10);
		inbox = strtoull(row[3], NULL, 10);
		snprintf(ext, sizeof(ext), "%s", row[4]);
	}
	mysql_free_result(res);
	if (!row)
		return req_fail(r, CCQ_E_NOT_FOUND, "no transaction %llu", (unsigned long long)txn);
	rec_meta(d, txn, org, inbox, ext);
	return rec_journey(r, m, txn, d->record, d->rule, NULL);
}

void rec_settle(struct rec_decision *d, int user, int inbox, int org)
{
	d->record = user >= 0 ? user : inbox >= 0 ? inbox : org > 0;
	snprintf(d->rule, sizeof(d->rule), "%s", user >= 0 ? "user" : inbox >= 0 ? "inbox"
		: "organisation");
}

void rec_meta(struct rec_decision *d, uint64_t txn, uint64_t org, uint64_t inbox,
		const char *ext_key)
{
	char ext[33];
	snprintf(ext, sizeof(ext), "%s", ext_key);
	/* an extension key may hold '+' (and ':' or '|' would break the k:v
	 * list): what rtpengine gets is [A-Za-z0-9_.-] */
	for (char *c = ext; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
				|| *c == '_' || *c == '.' || *c == '-'))
			*c = '_';
	snprintf(d->meta, sizeof(d->meta), "ccq_txn:%llu|ccq_org:%llu|ccq_inbox:%llu|ccq_agent:%s",
		(unsigned long long)txn, (unsigned long long)org, (unsigned long long)inbox, ext);
}

void rec_journey_text(char *text, size_t size, int record, const char *rule)
{
	snprintf(text, size, "Recording %s%s%s%s", record ? "on" : "off",
		rule[0] ? " (" : "", rule, rule[0] ? " policy)" : "");
}

int rec_outbound_args(struct req *r, int *record, char *rule, size_t size)
{
	static const char *const rules[] = { "user", "inbox", "organisation", NULL };
	const msgpack_object *o = ccq_map_get(r->args, "record");

	*record = -1;
	if (o && o->type == MSGPACK_OBJECT_BOOLEAN)
		*record = o->via.boolean ? 1 : 0;
	else if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= 1)
		*record = (int)o->via.u64;
	else if (o && o->type != MSGPACK_OBJECT_NIL)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'record' must be 0 or 1");
	if (arg_str(r, "record_rule", rule, size, 0) < 0)
		return -1;
	if (rule[0] && !str_in(rule, rules))
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"argument 'record_rule' must be user, inbox or organisation");
	return 0;
}

/* ---- call.recording: a live change (kamcmd ccq.record) ---------------------------- */

/* The TXN of a call: by its legs, else by its first Call-ID. */
static int txn_of_call(struct req *r, MYSQL *m, const char *call_id, uint64_t *txn, int *found)
{
	struct qb q;

	qb_init(&q);
	qb_add(&q, "SELECT COALESCE((SELECT txn_id FROM txn_leg WHERE call_id = ");
	qb_str(&q, m, call_id, strlen(call_id));
	qb_add(&q, "), (SELECT id FROM txn WHERE sip_call_id = ");
	qb_str(&q, m, call_id, strlen(call_id));
	qb_add(&q, "))");
	return sql_u64_qb(r, m, &q, txn, found);
}

static int run_call_recording(struct req *r, MYSQL *m)
{
	static const char *const actions[] = { "start", "pause", "resume", "stop", NULL };
	static const char *const done[] = { "started", "paused", "resumed", "stopped" };
	char call_id[256], action[8], by[64] = "", detail[200] = "", who[80] = "", text[400];
	char at[64];
	uint64_t txn = 0;
	int ok = 1, found = 0, k, applied = 1;
	struct qb q;
	msgpack_packer *pk;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "call reports are for the SIP proxy (local operator)");
	if (arg_str(r, "call_id", call_id, sizeof(call_id), 1) < 0
			|| arg_str(r, "action", action, sizeof(action), 1) < 0
			|| arg_str(r, "by", by, sizeof(by), 0) < 0
			|| arg_bool(r, "ok", &ok, 0) < 0
			|| arg_str(r, "detail", detail, sizeof(detail), 0) < 0)
		return -1;
	for (k = 0; actions[k] && strcmp(actions[k], action) != 0; k++)
		;
	if (!actions[k])
		return req_fail(r, CCQ_E_BAD_REQUEST,
			"argument 'action' must be start, pause, resume or stop");
	if (!text_ok(by) || !text_ok(detail))
		return req_fail(r, CCQ_E_BAD_REQUEST, "'by' and 'detail' may not hold control characters");
	if (strcmp(by, "operator") == 0 || strcmp(by, "agent") == 0)
		snprintf(who, sizeof(who), " by the %s", by);
	else if (by[0])
		snprintf(who, sizeof(who), " by %s", by);
	if (ok)
		snprintf(text, sizeof(text), "Recording %s%s", done[k], who);
	else
		snprintf(text, sizeof(text), "Recording %s%s failed%s%s", action, who,
			detail[0] ? ": " : "", detail);
	req_event_time(r, at, sizeof(at));
	if (txn_of_call(r, m, call_id, &txn, &found) < 0)
		return -1;
	if (!found)
		return req_fail(r, CCQ_E_NOT_FOUND, "no transaction for call %s", call_id);
	/* the module resends its reports after a reconnection: once is enough */
	if (strncmp(at, "FROM_UNIXTIME", 13) == 0) {
		uint64_t n = 0;
		qb_init(&q);
		qb_add(&q, "SELECT COUNT(*) FROM txn_event WHERE txn_id = %llu AND kind = "
			"'recording_changed' AND at = %s AND text = ", (unsigned long long)txn, at);
		qb_str(&q, m, text, strlen(text));
		if (sql_u64_qb(r, m, &q, &n, &found) < 0)
			return -1;
		applied = n == 0;
	}
	if (applied && req_journey(r, m, txn, "recording_changed", text, at) < 0)
		return -1;
	if (applied)
		LOG_I("txn %llu: %s (call %s)", (unsigned long long)txn, text, call_id);
	pk = req_reply(r);
	msgpack_pack_map(pk, 2);
	ccq_pack_kv_uint(pk, "txn", txn);
	ccq_pack_kv_bool(pk, "applied", applied);
	return 0;
}

/* ---- the indexer's run (recording.index, internal) ----------------------------------- */

#define IDX_FILES 50                   /* metadata files per run */
#define IDX_BYTES (256ull << 20)       /* pcap bytes hashed per run */
#define IDX_META_MAX (1024 * 1024)     /* a larger metadata file is not rtpengine's */

/*
 * Files that could not be moved to indexed/ (they are indexed: only the
 * move is retried, every minute) or whose path is too long. Each problem
 * is logged once. Worker thread only.
 */
static struct { char name[256]; time_t retry_at; } g_held[256];
static int g_dir_errno;

static int held(const char *name, time_t now)
{
	for (size_t i = 0; i < sizeof(g_held) / sizeof(g_held[0]); i++)
		if (g_held[i].name[0] && strcmp(g_held[i].name, name) == 0)
			return g_held[i].retry_at > now;
	return 0;
}

/* Hold name until retry_at; 1 if it was not held yet (log the problem). */
static int hold(const char *name, time_t retry_at)
{
	size_t n = sizeof(g_held) / sizeof(g_held[0]), slot = 0;

	for (size_t i = 0; i < n; i++)
		if (g_held[i].name[0] && strcmp(g_held[i].name, name) == 0) {
			g_held[i].retry_at = retry_at;
			return 0;
		}
	/* a free slot, else the one due soonest */
	for (size_t i = 0; i < n; i++) {
		if (!g_held[i].name[0]) {
			slot = i;
			break;
		}
		if (g_held[i].retry_at < g_held[slot].retry_at)
			slot = i;
	}
	snprintf(g_held[slot].name, sizeof(g_held[0].name), "%s", name);
	g_held[slot].retry_at = retry_at;
	return 1;
}

static void unhold(const char *name)
{
	for (size_t i = 0; i < sizeof(g_held) / sizeof(g_held[0]); i++)
		if (g_held[i].name[0] && strcmp(g_held[i].name, name) == 0)
			g_held[i].name[0] = '\0';
}

/* Read a small file; 0, or an errno value with err set. */
static int read_small(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), e;

	*text = NULL;
	if (fd < 0) {
		e = errno;
		snprintf(err, errlen, "metadata file %.400s: %s", path, strerror(e));
		return e;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		snprintf(err, errlen, "metadata file %.400s: %s", path, strerror(e));
		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > IDX_META_MAX) {
		snprintf(err, errlen, "metadata file %.400s: not a regular file of at most 1 MiB", path);
		close(fd);
		return EFBIG;
	}
	if (!(*text = malloc((size_t)st.st_size + 1))) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return ENOMEM;
	}
	while (got < (size_t)st.st_size && (n = read(fd, *text + got, (size_t)st.st_size - got)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			e = errno;
			snprintf(err, errlen, "metadata file %.400s: read: %s", path, strerror(e));
			close(fd);
			free(*text);
			*text = NULL;
			return e;
		}
		got += (size_t)n;
	}
	close(fd);
	(*text)[got] = '\0';
	*len = got;
	return 0;
}

/*
 * Move an indexed metadata file to DIR/indexed/ and keep the row's
 * meta_path true (stored: what the row says now). 0, or -1 (MySQL).
 */
static int move_meta(struct req *r, MYSQL *m, uint64_t id, const char *stored, const char *src,
		const char *dst, const char *name)
{
	const char *now_at = dst;
	struct qb q;

	if (rename(src, dst) < 0) {
		int e = errno;
		struct stat st;
		if (e == ENOENT && stat(dst, &st) == 0) {
			now_at = dst; /* moved meanwhile */
		} else {
			if (hold(name, time(NULL) + 60))
				LOG_W("recording %llu: cannot move %s to %s: %s; the file stays where it is "
					"(the index says so) and the move is retried every minute",
					(unsigned long long)id, src, dst, strerror(e));
			now_at = src;
		}
	} else {
		unhold(name);
	}
	if (strcmp(stored, now_at) == 0)
		return 0;
	qb_init(&q);
	qb_add(&q, "UPDATE recording SET meta_path = ");
	qb_str(&q, m, now_at, strlen(now_at));
	qb_add(&q, " WHERE id = %llu", (unsigned long long)id);
	return req_exec_qb(r, m, &q);
}

/* The TXN a recording belongs to, and who is in it. */
struct rec_txn {
	uint64_t id;
	uint32_t org, inbox, agent;
	int outbound;      /* the agent's phone offered (outbound, callbacks) */
};

static int rec_txn_of(struct req *r, MYSQL *m, const char *call_id, const char *meta,
		struct rec_txn *t)
{
	char q[600], agent[40];
	MYSQL_RES *res;
	MYSQL_ROW row;
	int found = 0;

	memset(t, 0, sizeof(*t));
	if (!call_id[0])
		return 0;
	if (txn_of_call(r, m, call_id, &t->id, &found) < 0)
		return -1;
	if (!found)
		return 0;
	snprintf(q, sizeof(q), "SELECT COALESCE(org_id, 0), COALESCE(inbox_id, 0), "
		"COALESCE(agent_id, 0), direction = 'outbound' FROM txn WHERE id = %llu",
		(unsigned long long)t->id);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		t->org = (uint32_t)strtoul(row[0], NULL, 10);
		t->inbox = (uint32_t)strtoul(row[1], NULL, 10);
		t->agent = (uint32_t)strtoul(row[2], NULL, 10);
		t->outbound = atoi(row[3]);
	}
	mysql_free_result(res);
	/* a call that was never answered has no agent in its TXN: the one rung
	 * when the proxy asked rtpengine to record (ccq_agent) */
	recmeta_field(meta, "ccq_agent", agent, sizeof(agent));
	if (!t->agent && t->org && agent[0]) {
		uint64_t uid = 0;
		struct qb qq;
		qb_init(&qq);
		qb_add(&qq, "SELECT id FROM user WHERE org_id = %u AND ext_key = ", t->org);
		qb_str(&qq, m, agent, strlen(agent));
		if (sql_u64_qb(r, m, &qq, &uid, &found) < 0)
			return -1;
		t->agent = (uint32_t)uid;
	}
	return 0;
}

/* An SQL time from Unix ms, else local seconds, else NULL. */
static void sql_time(struct qb *q, double ms, long long secs)
{
	if (ms > 1e12 && ms < 1e14)
		qb_add(q, "FROM_UNIXTIME(%.3f)", ms / 1000.0);
	else if (secs > 1000000000LL)
		qb_add(q, "FROM_UNIXTIME(%lld)", secs);
	else
		qb_add(q, "NULL");
}

static void qb_opt(struct qb *q, MYSQL *m, const char *s)
{
	qb_str(q, m, s[0] ? s : NULL, strlen(s));
}

/* Index one metadata file. 0 (done, or left for later), -1 (MySQL). */
static int index_one(struct req *r, MYSQL *m, const char *dir, const char *name,
		uint64_t *budget)
{
	char src[PATH_MAX], dst[PATH_MAX], pcap[PATH_MAX], call_id[256] = "", err[600] = "";
	char sha[65] = "", detail[256] = "", codec[100] = "", stored[1100] = "";
	const char *status = "ok", *caller, *agent;
	struct recmeta md;
	struct rec_txn t;
	uint64_t size = 0, id = 0;
	char *text = NULL;
	size_t len = 0;
	int rc, have_size = 0, name_ok;
	struct qb q;
	MYSQL_RES *res;
	MYSQL_ROW row;

	if ((size_t)snprintf(src, sizeof(src), "%s/metadata/%s", dir, name) >= sizeof(src)
			|| (size_t)snprintf(dst, sizeof(dst), "%s/indexed/%s", dir, name) >= sizeof(dst)) {
		if (hold(name, (time_t)1 << 62))
			LOG_W("recordings: the path of %s/metadata/%s is too long: not indexed", dir, name);
		return 0;
	}
	/* already indexed: the move to indexed/ failed, or queued stopped in between */
	qb_init(&q);
	qb_add(&q, "SELECT id, meta_path FROM recording WHERE meta_name = ");
	qb_str(&q, m, name, strlen(name));
	if (!(res = req_select_qb(r, m, &q)))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		id = strtoull(row[0], NULL, 10);
		snprintf(stored, sizeof(stored), "%s", row[1]);
	}
	mysql_free_result(res);
	if (id)
		return move_meta(r, m, id, stored, src, dst, name);

	memset(&md, 0, sizeof(md));
	name_ok = recmeta_call_id(name, call_id, sizeof(call_id)) == 0;
	rc = read_small(src, &text, &len, err, sizeof(err));
	if (rc == ENOENT)
		return 0; /* gone since the listing */
	if (rc == 0 && recmeta_parse(text, len, &md, err, sizeof(err)) < 0)
		rc = EINVAL;
	free(text);
	if (rc) {
		status = "unreadable";
		snprintf(detail, sizeof(detail), "%.255s", err);
	} else if (!name_ok) {
		status = "unreadable";
		snprintf(detail, sizeof(detail), "not an rtpengine metadata file name "
			"(rtpengine-meta-<Call-ID>-<16 hex digits>.txt)");
	} else {
		struct stat st;
		const char *base = strrchr(md.pcap_path, '/');
		char alt[PATH_MAX];
		snprintf(pcap, sizeof(pcap), "%s", md.pcap_path);
		/* rtpengine's recording dir may be mounted elsewhere here: the
		 * same file name under recording_dir/pcaps */
		if (stat(pcap, &st) < 0 && errno == ENOENT && base
				&& (size_t)snprintf(alt, sizeof(alt), "%s/pcaps%s", dir, base) < sizeof(alt)
				&& stat(alt, &st) == 0)
			snprintf(pcap, sizeof(pcap), "%s", alt);
		snprintf(md.pcap_path, sizeof(md.pcap_path), "%s", pcap);
		rc = rec_hash_file(pcap, sha, &size, err, sizeof(err));
		*budget += size;
		if (rc == ENOENT) {
			status = "missing";
			snprintf(detail, sizeof(detail), "the pcap file %.220s is missing", pcap);
		} else if (rc) {
			status = "unreadable";
			snprintf(detail, sizeof(detail), "%.255s", err);
			sha[0] = '\0';
		} else {
			have_size = 1;
		}
	}
	if (rec_txn_of(r, m, call_id, md.meta, &t) < 0)
		return -1;
	if (!t.id && strcmp(status, "ok") == 0) {
		status = "no_txn";
		snprintf(detail, sizeof(detail), "no TXN has a call with Call-ID %.200s", call_id);
	}
	/*
	 * rtpengine writes the SDPs it sent, with its own address: the offer's
	 * goes to the answerer, who sends there; the answer's to the offerer.
	 * The offerer is the caller of an inbound call and the agent's phone of
	 * an outbound call or a callback's customer leg.
	 */
	caller = t.outbound ? md.offer_addr : md.answer_addr;
	agent = t.outbound ? md.answer_addr : md.offer_addr;
	{
		const char *cc = t.outbound ? md.offer_codec : md.answer_codec;
		const char *ac = t.outbound ? md.answer_codec : md.offer_codec;
		if (strcmp(cc, ac) == 0 || !ac[0] || !cc[0])
			snprintf(codec, sizeof(codec), "%s", cc[0] ? cc : ac);
		else
			snprintf(codec, sizeof(codec), "%s (caller), %s (agent)", cc, ac);
	}

	qb_init(&q);
	qb_add(&q, "INSERT INTO recording (org_id, inbox_id, txn_id, agent_id, call_id, meta_name, "
		"pcap_path, meta_path, size_bytes, sha256, started_at, ended_at, caller_addr, agent_addr, "
		"codec, rec_meta, status, detail, indexed_at) VALUES (%s%u, %s%u, %s%llu, %s%u, ",
		t.org ? "" : "NULL + ", t.org, t.inbox ? "" : "NULL + ", t.inbox,
		t.id ? "" : "NULL + ", (unsigned long long)t.id, t.agent ? "" : "NULL + ", t.agent);
	qb_str(&q, m, call_id, strlen(call_id));
	qb_add(&q, ", ");
	qb_str(&q, m, name, strlen(name));
	qb_add(&q, ", ");
	qb_str(&q, m, md.pcap_path, strnlen(md.pcap_path, 1024));
	qb_add(&q, ", ");
	qb_str(&q, m, dst, strnlen(dst, 1024));
	if (have_size)
		qb_add(&q, ", %llu, ", (unsigned long long)size);
	else
		qb_add(&q, ", NULL, ");
	qb_opt(&q, m, sha);
	qb_add(&q, ", ");
	sql_time(&q, md.started_ms, md.start_local);
	qb_add(&q, ", ");
	sql_time(&q, md.ended_ms, md.end_local);
	qb_add(&q, ", ");
	qb_opt(&q, m, caller);
	qb_add(&q, ", ");
	qb_opt(&q, m, agent);
	qb_add(&q, ", ");
	qb_opt(&q, m, codec);
	qb_add(&q, ", ");
	qb_str(&q, m, md.meta[0] ? md.meta : NULL, strnlen(md.meta, 255));
	qb_add(&q, ", '%s', ", status);
	qb_opt(&q, m, detail);
	qb_add(&q, ", UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)");
	if (req_exec_qb(r, m, &q) < 0)
		return -1;
	id = mysql_insert_id(m);
	if (strcmp(status, "ok") == 0)
		LOG_I("recording %llu: call %s of TXN %llu indexed (%llu bytes)", (unsigned long long)id,
			call_id, (unsigned long long)t.id, (unsigned long long)size);
	else
		LOG_W("recording %llu (%s): %s: %s", (unsigned long long)id, name, status, detail);
	return move_meta(r, m, id, dst, src, dst, name);
}

struct idx_after {
	int more;
};

static int run_recording_index(struct req *r, MYSQL *m)
{
	char dir[PATH_MAX], mdir[PATH_MAX + 16], (*names)[256];
	struct idx_after *a;
	DIR *d;
	struct dirent *e;
	int n = 0;
	uint64_t budget = 0;
	time_t now = time(NULL);

	r->who.operator = 1;
	if (arg_str(r, "dir", dir, sizeof(dir), 1) < 0)
		return -1;
	if (!(a = calloc(1, sizeof(*a))) || !(names = calloc(IDX_FILES, sizeof(*names)))) {
		free(a);
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	}
	free(r->after_data);
	r->after_data = a;
	snprintf(mdir, sizeof(mdir), "%s/metadata", dir);
	if (!(d = opendir(mdir))) {
		/* rtpengine makes it with its first recording */
		if (errno != g_dir_errno)
			LOG_W("recordings: cannot read %s: %s%s", mdir, strerror(errno),
				errno == ENOENT ? " (rtpengine makes it when it records its first call)" : "");
		g_dir_errno = errno;
		goto reply;
	}
	if (g_dir_errno)
		LOG_N("recordings: %s is readable now", mdir);
	g_dir_errno = 0;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (e->d_name[0] == '.' || l < 5 || l >= sizeof(names[0])
				|| strcmp(e->d_name + l - 4, ".txt") != 0 || held(e->d_name, now))
			continue;
		if (n == IDX_FILES) {
			a->more = 1;
			break;
		}
		memcpy(names[n++], e->d_name, l + 1);
	}
	closedir(d);
	if (n > 0) {
		char idir[PATH_MAX + 16];
		snprintf(idir, sizeof(idir), "%s/indexed", dir);
		if (mkdir(idir, 0750) < 0 && errno != EEXIST && hold("/indexed", (time_t)1 << 62))
			LOG_W("recordings: cannot make %s: %s; indexed metadata files stay in %s",
				idir, strerror(errno), mdir);
	}
	for (int i = 0; i < n; i++) {
		if (budget >= IDX_BYTES) {
			a->more = 1;
			break;
		}
		if (index_one(r, m, dir, names[i], &budget) < 0) {
			free(names);
			return -1;
		}
	}
reply:
	free(names);
	msgpack_pack_nil(req_reply(r));
	return 0;
}

static void after_index(struct req *r)
{
	const struct idx_after *a = r->after_data;
	recidx_ran(a && a->more);
}

const struct op_def recidx_index_op = { "recording.index", run_recording_index, NULL, after_index,
	0 };

/* ---- what ccqrec asks for ------------------------------------------------------------ */

/* Who may see recording r (joined with its TXN t): " AND ..." ("" for the operator). */
static void rec_cond(char *buf, size_t size, const struct who *w)
{
	char inbox[200];

	if (w->operator) {
		buf[0] = '\0';
	} else if (acl_all_inboxes(w)) {
		snprintf(buf, size, " AND r.org_id = %u", w->org_id);
	} else {
		acl_inbox_cond(inbox, sizeof(inbox), w, "t.inbox_id");
		snprintf(buf, size, " AND r.org_id = %u AND t.org_id = %u%s", w->org_id, w->org_id,
			inbox);
	}
}

/* The operator's optional "org" as " AND r.org_id = N"; country for numbers. */
static int operator_org(struct req *r, MYSQL *m, char *cond, size_t size, char *country)
{
	uint32_t org;

	cond[0] = '\0';
	if (country)
		country[0] = '\0';
	if (r->who.operator && !ccq_map_get(r->args, "org"))
		return 0;
	if (req_org(r, m, &org, country) < 0)
		return -1;
	if (r->who.operator)
		snprintf(cond, size, " AND r.org_id = %u", org);
	return 0;
}

/* "from"/"to" ("YYYY-MM-DD[ HH:MM[:SS]]" UTC) on the recording's start;
 * "to" takes in its whole last unit (a day, a minute, a second). */
static int time_filter(struct req *r, struct qb *q, const char *key, int upper)
{
	char v[32];
	time_t t;
	unsigned unit;

	if (arg_str(r, key, v, sizeof(v), 0) < 0)
		return -1;
	if (!v[0])
		return 0;
	if (utc_time_parse(v, 1, &t, &unit) < 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument '%s': '%s' is not a time: give "
			"'YYYY-MM-DD[ HH:MM[:SS]]' (UTC)", key, v);
	qb_add(q, " AND COALESCE(r.started_at, r.indexed_at) %s FROM_UNIXTIME(%lld)",
		upper ? "<" : ">=", (long long)t + (upper ? (long long)unit : 0));
	return 0;
}

/* recording.list {txn, customer, inbox, agent, from, to, status, limit, org} */
static int run_rec_list(struct req *r, MYSQL *m)
{
	char cond[400], org_cond[64], country[3] = "", inbox[101], agent[33], status[16];
	uint64_t txn = 0, limit = 100, cust_id = 0;
	const msgpack_object *cust;
	struct qb q;
	MYSQL_RES *res;

	if (req_who(r, m) < 0 || arg_uint(r, "txn", &txn, 0, UINT64_MAX) < 0
			|| arg_uint(r, "limit", &limit, 0, 1000) < 0
			|| arg_str(r, "inbox", inbox, sizeof(inbox), 0) < 0
			|| arg_str(r, "agent", agent, sizeof(agent), 0) < 0
			|| arg_str(r, "status", status, sizeof(status), 0) < 0
			|| operator_org(r, m, org_cond, sizeof(org_cond), country) < 0)
		return -1;
	if (limit == 0)
		limit = 100;
	if (status[0] && !str_in(status, g_statuses))
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'status' must be ok, missing, "
			"unreadable, no_txn, purging or tampered");
	rec_cond(cond, sizeof(cond), &r->who);
	qb_init(&q);
	qb_add(&q, "SELECT r.id, r.txn_id AS txn, i.name AS inbox, u.ext_key AS agent, "
		"c.name AS customer, t.number, " TS("r.started_at") " AS started_at, "
		TS("r.ended_at") " AS ended_at, TIMESTAMPDIFF(SECOND, r.started_at, r.ended_at) "
		"AS duration_s, r.size_bytes AS size, r.status, r.sha256, r.call_id, r.pcap_path "
		"FROM recording r LEFT JOIN txn t ON t.id = r.txn_id LEFT JOIN inbox i ON "
		"i.id = t.inbox_id LEFT JOIN user u ON u.id = r.agent_id LEFT JOIN customer c ON "
		"c.id = t.customer_id WHERE 1 = 1%s%s", cond, org_cond);
	if (txn)
		qb_add(&q, " AND r.txn_id = %llu", (unsigned long long)txn);
	if (inbox[0]) {
		qb_add(&q, " AND i.name = ");
		qb_str(&q, m, inbox, strlen(inbox));
	}
	if (agent[0]) {
		qb_add(&q, " AND u.ext_key = ");
		qb_str(&q, m, agent, strlen(agent));
	}
	if (status[0])
		qb_add(&q, " AND r.status = '%s'", status);
	/* customer: an id (uint) or a number (str) */
	cust = ccq_map_get(r->args, "customer");
	if (cust && cust->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		cust_id = cust->via.u64;
		qb_add(&q, " AND t.customer_id = %llu", (unsigned long long)cust_id);
	} else if (cust && cust->type == MSGPACK_OBJECT_STR) {
		char num[64], digits[CCQ_E164_BUFSZ];
		const char *why = "invalid";
		if (cust->via.str.size >= sizeof(num)
				|| (memcpy(num, cust->via.str.ptr, cust->via.str.size),
					num[cust->via.str.size] = '\0',
					ccq_e164_normalize(num, strlen(num), country[0] ? country : NULL, digits,
						&why) < 0)) {
			qb_free(&q);
			return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'customer': '%.63s' is neither a "
				"customer id nor a phone number (%s)", cust->via.str.size < sizeof(num) ? num
				: "(too long)", why);
		}
		qb_add(&q, " AND (t.number = '+%s' OR t.customer_id IN (SELECT n.customer_id FROM "
			"customer_number n WHERE n.number = '+%s' AND n.org_id = t.org_id))", digits, digits);
	} else if (cust && cust->type != MSGPACK_OBJECT_NIL) {
		qb_free(&q);
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'customer' must be a customer id "
			"(number) or a phone number (string)");
	}
	if (time_filter(r, &q, "from", 0) < 0 || time_filter(r, &q, "to", 1) < 0) {
		qb_free(&q);
		return -1;
	}
	qb_add(&q, " ORDER BY COALESCE(r.started_at, r.indexed_at) DESC, r.id DESC LIMIT %llu",
		(unsigned long long)limit);
	if (!(res = req_select_qb(r, m, &q)))
		return -1;
	req_reply_rows(r, res, "recordings");
	return 0;
}

/* recording.get {txn} */
static int run_rec_get(struct req *r, MYSQL *m)
{
	char q[1400];
	uint64_t txn;
	MYSQL_RES *res;
	MYSQL_ROW row;
	uint32_t org = 0, inbox = 0;
	int exists;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_uint(r, "txn", &txn, 1, UINT64_MAX) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT COALESCE(org_id, 0), COALESCE(inbox_id, 0) FROM txn "
		"WHERE id = %llu", (unsigned long long)txn);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		org = (uint32_t)strtoul(row[0], NULL, 10);
		inbox = (uint32_t)strtoul(row[1], NULL, 10);
	}
	exists = row != NULL;
	mysql_free_result(res);
	/* nobody sees another organisation; within one, a TXN that may not be
	 * seen looks like one without recordings */
	if (!exists || (!r->who.operator && org != r->who.org_id))
		return req_fail(r, CCQ_E_NOT_FOUND, "no such TXN %llu", (unsigned long long)txn);
	if (!acl_all_inboxes(&r->who)) {
		uint64_t member = 0;
		int found = 0;
		snprintf(q, sizeof(q), "SELECT COUNT(*) FROM inbox_member WHERE inbox_id = %u AND "
			"user_id = %u", inbox, r->who.user_id);
		if (sql_u64(r, m, q, strlen(q), &member, &found) < 0)
			return -1;
		if (!inbox || !member)
			return req_fail(r, CCQ_E_NOT_FOUND, "no recording for TXN %llu",
				(unsigned long long)txn);
	}
	snprintf(q, sizeof(q), "SELECT r.id, r.call_id, r.pcap_path, r.meta_path, r.size_bytes AS "
		"size, r.sha256, r.status, r.detail, " TS("r.started_at") " AS started_at, "
		TS("r.ended_at") " AS ended_at, r.caller_addr, r.agent_addr, r.codec FROM recording r "
		"WHERE r.txn_id = %llu ORDER BY COALESCE(r.started_at, r.indexed_at), r.id",
		(unsigned long long)txn);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if (mysql_num_rows(res) == 0) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_NOT_FOUND, "no recording for TXN %llu", (unsigned long long)txn);
	}
	pk = req_reply(r);
	msgpack_pack_map(pk, 2);
	ccq_pack_kv_uint(pk, "txn", txn);
	ccq_pack_str(pk, "recordings");
	pack_rows(pk, res);
	mysql_free_result(res);
	return 0;
}

/* Owners and admins with the add-on (their organisation), or the operator. */
static int need_admin(struct req *r, const char *what)
{
	if (!acl_all_inboxes(&r->who))
		return req_fail(r, CCQ_E_DENIED, "only the organisation's owners and admins with the "
			"contact-center add-on (and the local operator) %s recordings", what);
	return 0;
}

/* recording.mark {id, status: ok|tampered|missing, detail} (verify's results) */
static int run_rec_mark(struct req *r, MYSQL *m)
{
	static const char *const marks[] = { "ok", "tampered", "missing", NULL };
	char status[16], detail[256] = "", prev[16] = "", cond[400];
	const char *now;
	uint64_t id;
	int no_txn = 0;
	char q[800];
	MYSQL_RES *res;
	MYSQL_ROW row;
	struct qb qq;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || need_admin(r, "mark") < 0
			|| arg_uint(r, "id", &id, 1, UINT64_MAX) < 0
			|| arg_str(r, "status", status, sizeof(status), 1) < 0
			|| arg_str(r, "detail", detail, sizeof(detail), 0) < 0)
		return -1;
	if (!str_in(status, marks))
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'status' must be ok, tampered or missing");
	if (!text_ok(detail))
		return req_fail(r, CCQ_E_BAD_REQUEST, "'detail' may not hold control characters");
	rec_cond(cond, sizeof(cond), &r->who);
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	snprintf(q, sizeof(q), "SELECT r.status, r.txn_id IS NULL FROM recording r LEFT JOIN txn t "
		"ON t.id = r.txn_id WHERE r.id = %llu%s FOR UPDATE", (unsigned long long)id, cond);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return req_rollback(r, m);
	if ((row = mysql_fetch_row(res))) {
		snprintf(prev, sizeof(prev), "%s", row[0]);
		no_txn = atoi(row[1]);
	}
	mysql_free_result(res);
	if (!prev[0]) {
		req_rollback(r, m);
		return req_fail(r, CCQ_E_NOT_FOUND, "no recording %llu", (unsigned long long)id);
	}
	if (strcmp(prev, "purging") == 0) {
		req_rollback(r, m);
		return req_fail(r, CCQ_E_CONFLICT, "recording %llu is being purged",
			(unsigned long long)id);
	}
	/* a recording without TXN stays no_txn when its file is fine */
	now = strcmp(status, "ok") == 0 && no_txn ? "no_txn" : status;
	qb_init(&qq);
	qb_add(&qq, "UPDATE recording SET status = '%s', detail = ", now);
	qb_str(&qq, m, detail[0] ? detail : NULL, strlen(detail));
	qb_add(&qq, ", verified_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)id);
	if (req_exec_qb(r, m, &qq) < 0)
		return req_rollback(r, m);
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	if (strcmp(now, prev) != 0)
		LOG_N("recording %llu marked %s (was %s) by %s%s%s", (unsigned long long)id, now, prev,
			r->who.name, detail[0] ? ": " : "", detail);
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_uint(pk, "id", id);
	ccq_pack_kv_str(pk, "status", now);
	ccq_pack_kv_str(pk, "previous", prev);
	return 0;
}

/* The recordings a purge may touch: the operator's (all, or "org"), or the
 * actor's organisation. */
static int purge_scope(struct req *r, MYSQL *m, char *cond, size_t size)
{
	if (need_admin(r, "purge") < 0 || operator_org(r, m, cond, size, NULL) < 0)
		return -1;
	if (!r->who.operator)
		snprintf(cond, size, " AND r.org_id = %u", r->who.org_id);
	return 0;
}

/* recording.purge {older_than_days, dry_run, limit, org} */
static int run_rec_purge(struct req *r, MYSQL *m)
{
	char cond[64], q[1200], cutoff[160];
	uint64_t days, limit = 1000, n, left = 0;
	int dry = 0, more, found;
	MYSQL_RES *res;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || purge_scope(r, m, cond, sizeof(cond)) < 0
			|| arg_uint(r, "older_than_days", &days, 1, 36500) < 0
			|| arg_bool(r, "dry_run", &dry, 0) < 0
			|| arg_uint(r, "limit", &limit, 0, 10000) < 0)
		return -1;
	if (limit == 0)
		limit = 1000;
	/* the age of a recording: its end (else its start, else when it was indexed) */
	snprintf(cutoff, sizeof(cutoff), "COALESCE(r.ended_at, r.started_at, r.indexed_at) < "
		"UTC_TIMESTAMP(3) - INTERVAL %llu DAY", (unsigned long long)days);
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	if (!dry) {
		snprintf(q, sizeof(q), "UPDATE recording r SET r.status = 'purging' WHERE "
			"r.status <> 'purging' AND %s%s ORDER BY r.id LIMIT %llu", cutoff, cond,
			(unsigned long long)limit);
		if (db_exec(&r->j, m, q, strlen(q)) < 0)
			return req_rollback(r, m);
		n = mysql_affected_rows(m);
		if (n)
			LOG_N("recording.purge by %s: %llu recordings older than %llu days marked purging",
				r->who.name, (unsigned long long)n, (unsigned long long)days);
	}
	/* also those an interrupted purge left: their files may still be there */
	snprintf(q, sizeof(q), "SELECT r.id, r.txn_id AS txn, r.pcap_path, r.meta_path, "
		"r.size_bytes AS size, r.status FROM recording r WHERE (r.status = 'purging'%s%s)%s "
		"ORDER BY r.id LIMIT %llu", dry ? " OR " : "", dry ? cutoff : "", cond,
		(unsigned long long)limit + 1);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return req_rollback(r, m);
	n = mysql_num_rows(res);
	more = n > limit;
	if (!dry && !more) {
		/* old enough ones this call did not mark (its limit) */
		snprintf(q, sizeof(q), "SELECT COUNT(*) FROM recording r WHERE r.status <> 'purging' "
			"AND %s%s", cutoff, cond);
		if (sql_u64(r, m, q, strlen(q), &left, &found) < 0) {
			mysql_free_result(res);
			return req_rollback(r, m);
		}
		more = left > 0;
	}
	if (db_exec(&r->j, m, "COMMIT", 6) < 0) {
		mysql_free_result(res);
		return -1;
	}
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_str(pk, "recordings");
	msgpack_pack_array(pk, (size_t)(n > limit ? limit : n));
	for (uint64_t i = 0; i < limit && (row = mysql_fetch_row(res)); i++)
		pack_row(pk, res, row, 0);
	ccq_pack_kv_bool(pk, "dry_run", dry);
	ccq_pack_kv_bool(pk, "more", more);
	mysql_free_result(res);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* recording.forget {ids: [...]}: the rows of a purge whose files are gone */
static int run_rec_forget(struct req *r, MYSQL *m)
{
	char cond[64];
	const msgpack_object *ids;
	uint64_t *del = NULL, n = 0, skipped = 0;
	struct qb q;
	MYSQL_RES *res;
	MYSQL_ROW row;
	msgpack_packer *pk;
	uint32_t count;

	if (req_who(r, m) < 0 || purge_scope(r, m, cond, sizeof(cond)) < 0)
		return -1;
	ids = ccq_map_get(r->args, "ids");
	if (!ids || ids->type != MSGPACK_OBJECT_ARRAY || ids->via.array.size == 0
			|| ids->via.array.size > 10000)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'ids' must be a list of 1 to 10000 "
			"recording ids");
	count = ids->via.array.size;
	for (uint32_t i = 0; i < count; i++)
		if (ids->via.array.ptr[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
			return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'ids': element %u is not a "
				"recording id", i);
	qb_init(&q);
	qb_add(&q, "SELECT r.id FROM recording r WHERE r.status = 'purging'%s AND r.id IN (", cond);
	for (uint32_t i = 0; i < count; i++)
		qb_add(&q, "%s%llu", i ? ", " : "", (unsigned long long)ids->via.array.ptr[i].via.u64);
	qb_add(&q, ") FOR UPDATE");
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0) {
		qb_free(&q);
		return -1;
	}
	if (!(res = req_select_qb(r, m, &q)))
		return req_rollback(r, m);
	if (!(del = calloc((size_t)mysql_num_rows(res) + 1, sizeof(*del)))) {
		mysql_free_result(res);
		req_rollback(r, m);
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	}
	while ((row = mysql_fetch_row(res)))
		del[n++] = strtoull(row[0], NULL, 10);
	mysql_free_result(res);
	if (n) {
		qb_init(&q);
		qb_add(&q, "DELETE FROM recording WHERE id IN (");
		for (uint64_t i = 0; i < n; i++)
			qb_add(&q, "%s%llu", i ? ", " : "", (unsigned long long)del[i]);
		qb_add(&q, ")");
		if (req_exec_qb(r, m, &q) < 0) {
			free(del);
			return req_rollback(r, m);
		}
	}
	if (db_exec(&r->j, m, "COMMIT", 6) < 0) {
		free(del);
		return -1;
	}
	if (n)
		LOG_N("recording.forget by %s: %llu purged recordings removed from the index",
			r->who.name, (unsigned long long)n);
	qsort(del, (size_t)n, sizeof(*del), cmp_u64);
	for (uint32_t i = 0; i < count; i++) {
		uint64_t v = ids->via.array.ptr[i].via.u64;
		skipped += !bsearch(&v, del, (size_t)n, sizeof(*del), cmp_u64);
	}
	pk = req_reply(r);
	msgpack_pack_map(pk, 2);
	ccq_pack_kv_uint(pk, "forgotten", n);
	ccq_pack_str(pk, "skipped");
	msgpack_pack_array(pk, (size_t)skipped);
	for (uint32_t i = 0; i < count; i++) {
		uint64_t v = ids->via.array.ptr[i].via.u64;
		if (!bsearch(&v, del, (size_t)n, sizeof(*del), cmp_u64))
			msgpack_pack_uint64(pk, v);
	}
	free(del);
	return 0;
}

const struct op_def ops_recording[] = {
	{ "recording.set", run_rec_set, NULL, NULL, OP_DIRECTORY },
	{ "recording.show", run_rec_show, NULL, NULL, OP_VIEW_SAFE },
	{ "recording.list", run_rec_list, NULL, NULL, OP_VIEW_SAFE },
	{ "recording.get", run_rec_get, NULL, NULL, OP_VIEW_SAFE },
	{ "recording.mark", run_rec_mark, NULL, NULL, OP_VIEW_SAFE },
	{ "recording.purge", run_rec_purge, NULL, NULL, OP_VIEW_SAFE },
	{ "recording.forget", run_rec_forget, NULL, NULL, OP_VIEW_SAFE },
	{ "call.recording", run_call_recording, NULL, NULL, OP_RETRY | OP_VIEW_SAFE },
	{ NULL, NULL, NULL, NULL, 0 }
};
