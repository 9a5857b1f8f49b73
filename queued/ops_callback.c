/*
 * Callbacks and scheduled calls (doc/callbacks.md): the callback.*
 * operations, the dispatcher's work in MySQL, and the hooks of the call
 * operations for the customer leg and the missed-call flow.
 *
 * A request gets its TXN (call_type callback, direction outbound) when it is
 * made, so that everything that happens to it lands in one journey. The
 * request row holds the queue state:
 *
 *   scheduled --due--> queued --dispatch--> dialing --customer leg--> active
 *       |                ^  |                  |                       |
 *     missed             |  +--expired         +--retryable failure----+--> queued
 *                        |                     +--final failure-------------> failed
 *                 (next attempt)                                  answered, ended: done
 *   queued, scheduled --callback.cancel--> cancelled
 *   a full queue when the request is made or comes due --> overflow
 *
 * "Open" (counted against the extension's max_calls, deduplicated by number)
 * is queued, dialing and active. A final state (done, failed, expired,
 * cancelled, overflow, missed) links the callback TXN with the TXN it was
 * made from and frees the slot.
 *
 * Every function here runs on a MySQL worker (db.h): the reports of one
 * attempt stay in order (keyed by the request), but different requests and
 * the inbound decisions run side by side, so each step locks what it
 * decides from: the request's row (cb_load), the organisation's row while
 * a request is opened (lock_org: duplicates, queue limit), the agent's row
 * when a slot is taken (step_dispatch).
 */
#include "ops.h"
#include "agentview.h"
#include "server.h"
#include "log.h"
#include "calls.h"
#include "callbacks.h"
#include "ccq_e164.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#define TS(col) "DATE_FORMAT(" col ", '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"
#define OPEN "'queued','dialing','active'"
#define FINAL "'done','failed','expired','cancelled','overflow','missed'"

/* Proxy events of an attempt (progress_mask): a resent report is applied once. */
enum { EV_RINGING = 1, EV_ANSWERED = 2, EV_PROMPT = 4, EV_REFERRED = 8, EV_DONE = 16 };

/* A customer leg in this state has been silent too long (seconds). */
#define ACTIVE_SILENCE 600

/* Work for the loop once the reply is sent. */
struct cb_note {
	uint32_t org_id, inbox_id;
	uint64_t txn;
	char text[300], number[20], customer[101], inbox[101];
};

struct cb_after {
	int kick;                   /* a slot may be free, or a request is new */
	int more;                   /* the dispatcher left work for a next run */
	int nnote;
	struct cb_note note[16];    /* call.missed of overflowing requests */
	int ndial;
	struct cb_dial dial[16];    /* callback.dial to push */
};

static struct cb_after *after_of(struct req *r)
{
	if (!r->after_data)
		r->after_data = calloc(1, sizeof(struct cb_after));
	return r->after_data;
}

static void want_kick(struct req *r)
{
	struct cb_after *a = after_of(r);
	if (a)
		a->kick = 1;
}

/* An extension (the target of a request). */
struct ext_info {
	uint32_t id, org_id, max_calls;
	char ext[33], name[101], country[3];
};

/* A request as the state machine needs it. */
struct cb_row {
	uint64_t id, txn, origin;
	uint32_t org_id, user_id, device_id, inbox_id, customer_id, max_calls;
	unsigned attempts, max_attempts, mask;
	int pin_ok;
	char status[12], source[12], number[17];
	char ext[33], name[101], inbox[101], customer[101], device_name[140];
};

/* ---- small helpers -------------------------------------------------------- */

static int exec_sql(struct req *r, MYSQL *m, const char *q)
{
	return db_exec(&r->j, m, q, strlen(q));
}

static int begin(struct req *r, MYSQL *m)
{
	return db_exec(&r->j, m, "START TRANSACTION", 17);
}

static int commit(struct req *r, MYSQL *m)
{
	return db_exec(&r->j, m, "COMMIT", 6);
}

/* "1001 - Alice Tan" */
static void ext_label(char *buf, size_t size, const char *ext, const char *name)
{
	snprintf(buf, size, "%s - %s", ext, name);
}

/* "+65 9123 4567 (Jane Tan)" */
static void number_label(char *buf, size_t size, const char *number, const char *customer)
{
	char pretty[40];
	calls_pretty_number(number, pretty, sizeof(pretty));
	snprintf(buf, size, "%s%s%s%s", pretty, customer[0] ? " (" : "", customer,
		customer[0] ? ")" : "");
}

/* Unix milliseconds as "YYYY-MM-DD HH:MM" (":SS" when not 0) UTC. */
static void format_ms(uint64_t ms, char *buf, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, size, tm.tm_sec ? "%Y-%m-%d %H:%M:%S" : "%Y-%m-%d %H:%M", &tm);
}

static int ext_load(struct req *r, MYSQL *m, const char *where, struct ext_info *x)
{
	char q[800];
	MYSQL_RES *res;
	MYSQL_ROW row;

	memset(x, 0, sizeof(*x));
	snprintf(q, sizeof(q), "SELECT u.id, u.org_id, u.max_calls, u.ext_key, u.name, "
		"o.default_country FROM user u JOIN org o ON o.id = u.org_id WHERE %s", where);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		x->id = (uint32_t)strtoul(row[0], NULL, 10);
		x->org_id = (uint32_t)strtoul(row[1], NULL, 10);
		x->max_calls = (uint32_t)strtoul(row[2], NULL, 10);
		snprintf(x->ext, sizeof(x->ext), "%s", row[3]);
		snprintf(x->name, sizeof(x->name), "%s", row[4]);
		snprintf(x->country, sizeof(x->country), "%s", row[5]);
	}
	mysql_free_result(res);
	return x->id ? 1 : 0;
}

/* An extension by key in an organisation (by id). */
static int ext_by_key(struct req *r, MYSQL *m, uint32_t org, const char *ext, struct ext_info *x)
{
	char esc[80], where[200];
	int rc;
	if (strlen(ext) > 32)
		return req_fail(r, CCQ_E_NOT_FOUND, "no extension '%.32s...' in this organisation", ext);
	mysql_real_escape_string(m, esc, ext, strlen(ext));
	snprintf(where, sizeof(where), "u.org_id = %u AND u.ext_key = '%s'", org, esc);
	if ((rc = ext_load(r, m, where, x)) == 0)
		return req_fail(r, CCQ_E_NOT_FOUND, "no extension '%s' in this organisation", ext);
	return rc < 0 ? -1 : 0;
}

/* Tokens carry the extension key: refuse a request no token could carry. */
static int need_token_ext(struct req *r, const char *ext)
{
	if (!callbacks_ext_ok(ext))
		return req_fail(r, CCQ_E_BAD_REQUEST, "extension key '%s' cannot be carried in a "
			"callback token (letters, digits, '_' and '-' only, at most 32): callbacks to it "
			"are not possible", ext);
	return 0;
}

/* Open requests of an extension. */
static int open_count(struct req *r, MYSQL *m, uint32_t uid, uint64_t *n)
{
	char q[200];
	int found;
	snprintf(q, sizeof(q), "SELECT COUNT(*) FROM callback_request WHERE user_id = %u "
		"AND status IN (" OPEN ")", uid);
	return sql_u64(r, m, q, strlen(q), n, &found);
}

/* Place of a queued request in its extension's queue (1 = next). */
static int queue_position(struct req *r, MYSQL *m, uint64_t cb, unsigned *pos)
{
	char q[600];
	uint64_t n;
	int found;
	snprintf(q, sizeof(q), "SELECT COUNT(*) FROM callback_request e JOIN callback_request c "
		"ON c.id = %llu WHERE e.user_id = c.user_id AND e.status = 'queued' AND c.status = 'queued' "
		"AND (e.requested_at < c.requested_at OR (e.requested_at = c.requested_at AND e.id <= c.id))",
		(unsigned long long)cb);
	if (sql_u64(r, m, q, strlen(q), &n, &found) < 0)
		return -1;
	*pos = (unsigned)n;
	return 0;
}

#define CB_SELECT "SELECT c.id, c.txn_id, COALESCE(c.origin_txn_id, 0), c.org_id, c.user_id, " \
	"COALESCE(c.device_id, 0), COALESCE(c.inbox_id, 0), COALESCE(c.customer_id, 0), " \
	"u.max_calls, c.attempts, c.max_attempts, c.progress_mask, c.pin_ok, c.status, c.source, " \
	"c.number, u.ext_key, u.name, COALESCE(i.name, ''), COALESCE(cu.name, ''), " \
	"COALESCE(CONCAT(d.kind, IF(d.label = '', '', CONCAT(' (', d.label, ')'))), '') " \
	"FROM callback_request c JOIN user u ON u.id = c.user_id " \
	"LEFT JOIN inbox i ON i.id = c.inbox_id LEFT JOIN customer cu ON cu.id = c.customer_id " \
	"LEFT JOIN device d ON d.id = c.device_id "

/* Load the request matching cond (locked): 1 found, 0 none, -1 error. */
static int cb_load(struct req *r, MYSQL *m, const char *cond, struct cb_row *c)
{
	char q[1600];
	MYSQL_RES *res;
	MYSQL_ROW row;

	memset(c, 0, sizeof(*c));
	snprintf(q, sizeof(q), CB_SELECT "WHERE %s ORDER BY c.id DESC LIMIT 1 FOR UPDATE", cond);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		c->id = strtoull(row[0], NULL, 10);
		c->txn = strtoull(row[1], NULL, 10);
		c->origin = strtoull(row[2], NULL, 10);
		c->org_id = (uint32_t)strtoul(row[3], NULL, 10);
		c->user_id = (uint32_t)strtoul(row[4], NULL, 10);
		c->device_id = (uint32_t)strtoul(row[5], NULL, 10);
		c->inbox_id = (uint32_t)strtoul(row[6], NULL, 10);
		c->customer_id = (uint32_t)strtoul(row[7], NULL, 10);
		c->max_calls = (uint32_t)strtoul(row[8], NULL, 10);
		c->attempts = (unsigned)strtoul(row[9], NULL, 10);
		c->max_attempts = (unsigned)strtoul(row[10], NULL, 10);
		c->mask = (unsigned)strtoul(row[11], NULL, 10);
		c->pin_ok = atoi(row[12]);
		snprintf(c->status, sizeof(c->status), "%s", row[13]);
		snprintf(c->source, sizeof(c->source), "%s", row[14]);
		snprintf(c->number, sizeof(c->number), "%s", row[15]);
		snprintf(c->ext, sizeof(c->ext), "%s", row[16]);
		snprintf(c->name, sizeof(c->name), "%s", row[17]);
		snprintf(c->inbox, sizeof(c->inbox), "%s", row[18]);
		snprintf(c->customer, sizeof(c->customer), "%s", row[19]);
		snprintf(c->device_name, sizeof(c->device_name), "%s", row[20]);
	}
	mysql_free_result(res);
	return c->id ? 1 : 0;
}

static int cb_load_id(struct req *r, MYSQL *m, uint64_t id, struct cb_row *c)
{
	char cond[64];
	int rc;
	snprintf(cond, sizeof(cond), "c.id = %llu", (unsigned long long)id);
	if ((rc = cb_load(r, m, cond, c)) == 0)
		return req_fail(r, CCQ_E_NOT_FOUND, "no callback %llu", (unsigned long long)id);
	return rc < 0 ? -1 : 0;
}

static int is_open(const struct cb_row *c)
{
	return strcmp(c->status, "queued") == 0 || strcmp(c->status, "dialing") == 0
		|| strcmp(c->status, "active") == 0;
}

/* Related Transactions, both ways (txn.link stores a pair once, smaller id first). */
static int link_origin(struct req *r, MYSQL *m, uint64_t txn, uint64_t origin)
{
	char q[300];
	if (!origin || origin == txn)
		return 0;
	snprintf(q, sizeof(q), "INSERT IGNORE INTO txn_link (txn_a, txn_b, kind, created_at) "
		"VALUES (%llu, %llu, 'callback', UTC_TIMESTAMP(3))",
		(unsigned long long)(txn < origin ? txn : origin),
		(unsigned long long)(txn < origin ? origin : txn));
	return exec_sql(r, m, q);
}

/*
 * End a request: its status, its TXN's status and result (failure_reason
 * for a Failed TXN), the journey line, the link to the TXN it was made
 * from. The extension's slot is free again: the dispatcher is kicked.
 */
static int cb_close(struct req *r, MYSQL *m, const struct cb_row *c, const char *status,
		const char *txn_status, const char *result, const char *reason, const char *kind,
		const char *text, const char *at)
{
	struct qb q;
	int failed = strcmp(txn_status, "Failed") == 0;

	qb_init(&q);
	qb_add(&q, "UPDATE callback_request SET status = '%s', reason = ", status);
	qb_str(&q, m, reason, reason ? utf8_cut(reason, 255) : 0);
	qb_add(&q, ", updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)c->id);
	if (req_exec_qb(r, m, &q) < 0)
		return -1;
	qb_init(&q);
	qb_add(&q, "UPDATE txn SET status = '%s', result = '%s', failure_reason = ", txn_status,
		result);
	qb_str(&q, m, failed ? reason : NULL, failed && reason ? utf8_cut(reason, 255) : 0);
	qb_add(&q, ", ended_at = COALESCE(ended_at, %s), updated_at = UTC_TIMESTAMP(3) "
		"WHERE id = %llu", at ? at : "UTC_TIMESTAMP(3)", (unsigned long long)c->txn);
	if (req_exec_qb(r, m, &q) < 0 || req_journey(r, m, c->txn, kind, text, at) < 0
			|| link_origin(r, m, c->txn, c->origin) < 0)
		return -1;
	want_kick(r);
	LOG_I("callback %llu (TXN %llu): %s%s%s", (unsigned long long)c->id,
		(unsigned long long)c->txn, status, reason ? ": " : "", reason ? reason : "");
	return 0;
}

/*
 * An attempt failed. Retryable with attempts left and time before the
 * request expires: back in the queue (its place kept) for the next attempt
 * after callback_retry_delay (returns 1). Otherwise the callback fails
 * (returns 0).
 */
static int cb_attempt_failed(struct req *r, MYSQL *m, const struct cb_row *c, const char *reason,
		int retryable, const char *at)
{
	struct cb_settings s;
	char q[600], text[600], next[16] = "";
	int in_time = 0;
	MYSQL_RES *res;
	MYSQL_ROW row;
	struct qb qq;

	callbacks_settings(&s);
	if (retryable && c->attempts < c->max_attempts) {
		snprintf(q, sizeof(q), "SELECT DATE_FORMAT(UTC_TIMESTAMP(3) + INTERVAL %u SECOND, "
			"'%%H:%%i:%%s'), UTC_TIMESTAMP(3) + INTERVAL %u SECOND < expires_at "
			"FROM callback_request WHERE id = %llu", s.retry_delay, s.retry_delay,
			(unsigned long long)c->id);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			return -1;
		if ((row = mysql_fetch_row(res))) {
			snprintf(next, sizeof(next), "%s", row[0]);
			in_time = atoi(row[1]);
		}
		mysql_free_result(res);
	}
	if (in_time) {
		qb_init(&qq);
		qb_add(&qq, "UPDATE callback_request SET status = 'queued', next_attempt_at = "
			"UTC_TIMESTAMP(3) + INTERVAL %u SECOND, progress_at = NULL, reason = ",
			s.retry_delay);
		qb_str(&qq, m, reason, utf8_cut(reason, 255));
		qb_add(&qq, ", updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)c->id);
		if (req_exec_qb(r, m, &qq) < 0)
			return -1;
		snprintf(q, sizeof(q), "UPDATE txn SET status = 'Waiting', updated_at = UTC_TIMESTAMP(3) "
			"WHERE id = %llu", (unsigned long long)c->txn);
		snprintf(text, sizeof(text), "Attempt %u failed: %s; next attempt at %s UTC",
			c->attempts, reason, next);
		if (exec_sql(r, m, q) < 0 || req_journey(r, m, c->txn, "retry", text, at) < 0)
			return -1;
		want_kick(r);
		return 1;
	}
	if (retryable && c->attempts >= c->max_attempts && c->attempts > 1)
		snprintf(text, sizeof(text), "Callback failed after %u attempts: %s", c->attempts, reason);
	else if (retryable && c->attempts < c->max_attempts)
		snprintf(text, sizeof(text), "Callback failed: %s; the request expires before the next "
			"attempt", reason);
	else
		snprintf(text, sizeof(text), "Callback failed: %s", reason);
	return cb_close(r, m, c, "failed", "Failed", "failed", reason, "failed", text, at);
}

/* ---- making requests ------------------------------------------------------ */

/* What a new request is made of. */
struct cb_new {
	struct ext_info x;          /* the extension whose queue it joins */
	uint32_t device_id, inbox_id, customer_id;
	uint64_t origin, created_by, due_ms;  /* due_ms: a schedule's time, 0 = now */
	const char *source;
	char number[17];            /* "+6591234567" */
	char customer[101];
	char inbox[101];
	char by[160];               /* who asked, for the journey */
	int pin_ok;
	int quiet;                  /* no call.missed on overflow (the missed-call flow itself) */
};

/* What came of it (or of the open request it duplicates). */
struct cb_made {
	uint64_t cb, txn;
	char status[12];
	char ext[33];
	int duplicate;
	unsigned position;
};

/*
 * Requests of an organisation are opened one at a time: the duplicate check
 * (same number) and the extension's queue limit read what others may be
 * writing on other MySQL workers, and a read that finds nothing locks
 * nothing at READ COMMITTED. The organisation's row is the lock.
 */
static int lock_org(struct req *r, MYSQL *m, uint32_t org)
{
	char q[120];
	uint64_t v;
	int found;
	snprintf(q, sizeof(q), "SELECT id FROM org WHERE id = %u FOR UPDATE", org);
	return sql_u64(r, m, q, strlen(q), &v, &found);
}

/* An open request of the same number in the organisation: 1 (out filled), 0, -1. */
static int cb_find_open(struct req *r, MYSQL *m, uint32_t org, const char *number,
		struct cb_made *out)
{
	char q[600];
	MYSQL_RES *res;
	MYSQL_ROW row;
	int found = 0;

	if (lock_org(r, m, org) < 0)
		return -1;
	/* number is a normalised "+digits": nothing to escape */
	snprintf(q, sizeof(q), "SELECT c.id, c.txn_id, c.status, u.ext_key FROM callback_request c "
		"JOIN user u ON u.id = c.user_id WHERE c.org_id = %u AND c.number = '%s' "
		"AND c.status IN (" OPEN ") ORDER BY c.id LIMIT 1 FOR UPDATE", org, number);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		memset(out, 0, sizeof(*out));
		out->cb = strtoull(row[0], NULL, 10);
		out->txn = strtoull(row[1], NULL, 10);
		snprintf(out->status, sizeof(out->status), "%s", row[2]);
		snprintf(out->ext, sizeof(out->ext), "%s", row[3]);
		out->duplicate = 1;
		found = 1;
	}
	mysql_free_result(res);
	if (found && strcmp(out->status, "queued") == 0
			&& queue_position(r, m, out->cb, &out->position) < 0)
		return -1;
	return found;
}

/*
 * The queue of the extension is full: the request goes to the missed-call
 * flow (its TXN ends missed; the inbox's watchers hear of it).
 */
static int cb_overflow(struct req *r, MYSQL *m, const struct cb_row *c, uint64_t open, int quiet,
		const char *at)
{
	char text[400];
	struct cb_after *a = after_of(r);

	snprintf(text, sizeof(text), "Callback queue of extension %s - %s is full (%llu of %u): "
		"sent to the missed-call flow", c->ext, c->name, (unsigned long long)open, c->max_calls);
	if (cb_close(r, m, c, "overflow", "Ended", "missed", "callback queue full", "missed", text,
			at) < 0)
		return -1;
	if (!quiet && a && a->nnote < (int)(sizeof(a->note) / sizeof(a->note[0]))) {
		struct cb_note *n = &a->note[a->nnote++];
		char pretty[40];
		calls_pretty_number(c->number, pretty, sizeof(pretty));
		n->org_id = c->org_id;
		n->inbox_id = c->inbox_id;
		n->txn = c->txn;
		if (c->inbox[0])
			snprintf(n->text, sizeof(n->text), "missed callback request in inbox %s from %s: "
				"the callback queue of extension %s is full", c->inbox, pretty, c->ext);
		else
			snprintf(n->text, sizeof(n->text), "missed callback request from %s: the callback "
				"queue of extension %s is full", pretty, c->ext);
		snprintf(n->number, sizeof(n->number), "%s", c->number);
		snprintf(n->customer, sizeof(n->customer), "%s", c->customer);
		snprintf(n->inbox, sizeof(n->inbox), "%s", c->inbox);
	}
	return 0;
}

/*
 * Make a request and its TXN (inside the caller's SQL transaction). The
 * caller has checked for an open duplicate. A schedule waits for its time;
 * anything else joins the extension's queue, or overflows when the queue
 * already holds max_calls open requests.
 */
static int cb_create(struct req *r, MYSQL *m, const struct cb_new *n, struct cb_made *out)
{
	struct cb_settings s;
	struct cb_row c;
	struct qb q;
	char text[700], when[64], due[64], who[200];
	uint64_t open = 0;
	const char *status = n->due_ms ? "scheduled" : "queued";

	callbacks_settings(&s);
	memset(out, 0, sizeof(*out));
	if (!n->due_ms && open_count(r, m, n->x.id, &open) < 0)
		return -1;
	if (!n->due_ms && open >= n->x.max_calls)
		status = "overflow";
	qb_init(&q);
	/* the customer sees the extension's caller ID, as for its outbound calls */
	qb_add(&q, "INSERT INTO txn (id, org_id, inbox_id, customer_id, agent_id, kind, direction, "
		"call_type, status, caller_id, number, created_at, updated_at) SELECT " TXN_NEW_ID
		", %u, %s%u, %s%u, "
		"id, 'call', 'outbound', 'callback', 'Waiting', caller_id, '%s', UTC_TIMESTAMP(3), "
		"UTC_TIMESTAMP(3) FROM user WHERE id = %u",
		n->x.org_id, n->inbox_id ? "" : "NULL + ", n->inbox_id, n->customer_id ? "" : "NULL + ",
		n->customer_id, n->number, n->x.id);
	if (req_exec_qb(r, m, &q) < 0)
		return -1;
	out->txn = mysql_insert_id(m);
	if (n->due_ms)
		snprintf(due, sizeof(due), "FROM_UNIXTIME(%llu.%03llu)",
			(unsigned long long)(n->due_ms / 1000), (unsigned long long)(n->due_ms % 1000));
	snprintf(when, sizeof(when), "%s", n->due_ms ? due : "UTC_TIMESTAMP(3)");
	qb_init(&q);
	qb_add(&q, "INSERT INTO callback_request (org_id, user_id, device_id, inbox_id, "
		"origin_txn_id, txn_id, customer_id, number, source, status, requested_at, due_at, "
		"next_attempt_at, attempts, max_attempts, expires_at, pin_ok, created_by, updated_at) "
		"VALUES (%u, %u, %s%u, %s%u, %s%llu, %llu, %s%u, '%s', '%s', '%s', UTC_TIMESTAMP(3), %s, "
		"%s, 0, %u, %s + INTERVAL %u SECOND, %d, %s%llu, UTC_TIMESTAMP(3))",
		n->x.org_id, n->x.id, n->device_id ? "" : "NULL + ", n->device_id,
		n->inbox_id ? "" : "NULL + ", n->inbox_id, n->origin ? "" : "NULL + ",
		(unsigned long long)n->origin, (unsigned long long)out->txn,
		n->customer_id ? "" : "NULL + ", n->customer_id, n->number, n->source,
		strcmp(status, "overflow") == 0 ? "queued" : status, n->due_ms ? due : "NULL", when,
		s.attempts, when, s.expiry, n->pin_ok ? 1 : 0, n->created_by ? "" : "NULL + ",
		(unsigned long long)n->created_by);
	if (req_exec_qb(r, m, &q) < 0)
		return -1;
	out->cb = mysql_insert_id(m);
	if (n->due_ms) {
		char t[40];
		format_ms(n->due_ms, t, sizeof(t));
		snprintf(text, sizeof(text), "Callback scheduled for %s UTC by %s", t, n->by);
	} else {
		number_label(who, sizeof(who), n->number, n->customer);
		snprintf(text, sizeof(text), "Callback requested by %s for %s", n->by, who);
	}
	if (req_journey(r, m, out->txn, n->due_ms ? "callback_scheduled" : "callback_requested",
			text, NULL) < 0)
		return -1;
	snprintf(out->ext, sizeof(out->ext), "%s", n->x.ext);
	snprintf(out->status, sizeof(out->status), "%s", status);
	if (strcmp(status, "overflow") == 0) {
		memset(&c, 0, sizeof(c));
		c.id = out->cb;
		c.txn = out->txn;
		c.origin = n->origin;
		c.org_id = n->x.org_id;
		c.inbox_id = n->inbox_id;
		c.max_calls = n->x.max_calls;
		snprintf(c.number, sizeof(c.number), "%s", n->number);
		snprintf(c.ext, sizeof(c.ext), "%s", n->x.ext);
		snprintf(c.name, sizeof(c.name), "%s", n->x.name);
		snprintf(c.inbox, sizeof(c.inbox), "%s", n->inbox);
		snprintf(c.customer, sizeof(c.customer), "%s", n->customer);
		return cb_overflow(r, m, &c, open, n->quiet, NULL);
	}
	want_kick(r);
	LOG_I("callback %llu (TXN %llu) %s for extension %s, %s", (unsigned long long)out->cb,
		(unsigned long long)out->txn, status, n->x.ext, n->source);
	if (!n->due_ms)
		return queue_position(r, m, out->cb, &out->position);
	return 0;
}

/* The request result (doc/protocol.md); a schedule's adds due_at. */
static int reply_made(struct req *r, const struct cb_made *o, const char *number, int suggest,
		const char *due)
{
	msgpack_packer *pk = req_reply(r);
	msgpack_pack_map(pk, due ? 9 : 8);
	if (due)
		ccq_pack_kv_str(pk, "due_at", due);
	ccq_pack_kv_uint(pk, "cb", o->cb);
	ccq_pack_kv_uint(pk, "txn", o->txn);
	ccq_pack_kv_str(pk, "status", o->status);
	ccq_pack_kv_bool(pk, "duplicate", o->duplicate);
	ccq_pack_kv_uint(pk, "position", o->position);
	ccq_pack_kv_str(pk, "number", number);
	ccq_pack_kv_str(pk, "ext", o->ext);
	ccq_pack_kv_bool(pk, "suggest_verify", suggest);
	return 0;
}

/* ---- devices -------------------------------------------------------------- */

/*
 * The device to ring: the one named (its SIP user name or id; the
 * extension's own, enabled), else the first enabled one (by id), or with
 * by_registration the enabled one registered most recently.
 */
static int pick_device(struct req *r, MYSQL *m, uint32_t uid, const char *named,
		int by_registration, uint32_t *dev)
{
	char q[900], esc[140];
	MYSQL_RES *res;
	MYSQL_ROW row;
	int mine = 0, enabled = 0;

	*dev = 0;
	if (named[0]) {
		char *end;
		unsigned long id = strtoul(named, &end, 10);
		mysql_real_escape_string(m, esc, named, strnlen(named, 64));
		/* a SIP user name may be all digits too: the extension's own devices
		 * first, a user name before an id */
		if (*end != '\0')
			id = 0;
		snprintf(q, sizeof(q), "SELECT id, user_id, enabled FROM device WHERE username = '%s' "
			"OR id = %lu ORDER BY user_id = %u DESC, username = '%s' DESC, id LIMIT 1", esc, id,
			uid, esc);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			return -1;
		if ((row = mysql_fetch_row(res))) {
			mine = strtoul(row[1], NULL, 10) == uid;
			enabled = atoi(row[2]);
			*dev = (uint32_t)strtoul(row[0], NULL, 10);
		}
		mysql_free_result(res);
		if (!mine) {
			*dev = 0;
			return req_fail(r, CCQ_E_NOT_FOUND, "the extension has no device '%s'", named);
		}
		if (!enabled) {
			*dev = 0;
			return req_fail(r, CCQ_E_CONFLICT, "device '%s' is disabled: activate it first, or "
				"choose another device", named);
		}
		return 0;
	}
	if (by_registration)
		snprintf(q, sizeof(q), "SELECT d.id FROM device d LEFT JOIN device_contact c "
			"ON c.device_id = d.id AND c.expires_at > UTC_TIMESTAMP(3) WHERE d.user_id = %u "
			"AND d.enabled = 1 GROUP BY d.id ORDER BY MAX(c.expires_at) IS NULL, "
			"MAX(c.expires_at) DESC, d.id LIMIT 1", uid);
	else
		snprintf(q, sizeof(q), "SELECT id FROM device WHERE user_id = %u AND enabled = 1 "
			"ORDER BY id LIMIT 1", uid);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res)))
		*dev = (uint32_t)strtoul(row[0], NULL, 10);
	mysql_free_result(res);
	if (!*dev)
		return req_fail(r, CCQ_E_CONFLICT, "no enabled device: activate a device first");
	return 0;
}

/*
 * The member of an inbox a customer's request goes to: among the members
 * with an enabled device, the one with the fewest open callbacks, then the
 * one idle longest. Returns 1 (x filled; the queue may be full), 0 (nobody
 * has a device), -1.
 */
static int pick_member(struct req *r, MYSQL *m, uint32_t inbox, struct ext_info *x)
{
	char q[1200];
	MYSQL_RES *res;
	MYSQL_ROW row;
	uint32_t uid = 0;

	snprintf(q, sizeof(q), "SELECT u.id, (SELECT COUNT(*) FROM callback_request c "
		"WHERE c.user_id = u.id AND c.status IN (" OPEN ")) AS open FROM inbox_member im "
		"JOIN user u ON u.id = im.user_id LEFT JOIN agent_state s ON s.user_id = u.id "
		"WHERE im.inbox_id = %u AND EXISTS (SELECT 1 FROM device d "
		"WHERE d.user_id = u.id AND d.enabled = 1) ORDER BY open >= u.max_calls, open, "
		"s.last_call_end IS NOT NULL, s.last_call_end, u.id LIMIT 1", inbox);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res)))
		uid = (uint32_t)strtoul(row[0], NULL, 10);
	mysql_free_result(res);
	if (!uid)
		return 0;
	snprintf(q, sizeof(q), "u.id = %u", uid);
	return ext_load(r, m, q, x);
}

/* ---- PINs ----------------------------------------------------------------- */

static int unhex(const char *s, unsigned char *out, size_t max, size_t *n)
{
	size_t l = strlen(s);
	if (l % 2 || l / 2 > max || l == 0)
		return -1;
	for (size_t i = 0; i < l / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	*n = l / 2;
	return 0;
}

/* Does pin match a stored "pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>" (pin.set)? */
static int pin_matches(const char *stored, const char *pin)
{
	char salt_hex[130], hash_hex[130];
	unsigned char salt[64], want[64], got[64];
	size_t sl, hl;
	unsigned iter;
	int ok;

	if (sscanf(stored, "pbkdf2-sha256$%u$%129[0-9a-f]$%129[0-9a-f]", &iter, salt_hex,
			hash_hex) != 3 || iter < 1 || iter > 10000000
			|| unhex(salt_hex, salt, sizeof(salt), &sl) < 0
			|| unhex(hash_hex, want, sizeof(want), &hl) < 0)
		return 0;
	if (!PKCS5_PBKDF2_HMAC(pin, (int)strlen(pin), salt, (int)sl, (int)iter, EVP_sha256(),
			(int)hl, got))
		return 0;
	ok = CRYPTO_memcmp(got, want, hl) == 0;
	OPENSSL_cleanse(got, sizeof(got));
	return ok;
}

/*
 * The request's PIN (for a destination the organisation's PIN policy
 * covers): checked here against the extension's PIN, so that the customer
 * leg's token can say so (flag p). The PIN is not stored or logged.
 */
static int check_pin(struct req *r, MYSQL *m, const struct ext_info *x, int *pin_ok)
{
	char pin[32], q[200];
	MYSQL_RES *res;
	MYSQL_ROW row;
	int rc = 0, has = 0, ok = 0;
	size_t l;

	*pin_ok = 0;
	if (arg_str(r, "pin", pin, sizeof(pin), 0) < 0)
		return -1;
	if (!pin[0])
		return 0;
	l = strlen(pin);
	for (size_t i = 0; i < l; i++)
		if (!isdigit((unsigned char)pin[i]))
			l = 0;
	if (l < 4 || l > 12) {
		OPENSSL_cleanse(pin, sizeof(pin));
		return req_fail(r, CCQ_E_BAD_REQUEST, "a PIN is 4 to 12 digits");
	}
	snprintf(q, sizeof(q), "SELECT pin_hash FROM user WHERE id = %u AND pin_hash IS NOT NULL",
		x->id);
	if (!(res = db_select(&r->j, m, q, strlen(q)))) {
		OPENSSL_cleanse(pin, sizeof(pin));
		return -1;
	}
	if ((row = mysql_fetch_row(res))) {
		has = 1;
		ok = pin_matches(row[0], pin);
	}
	mysql_free_result(res);
	OPENSSL_cleanse(pin, sizeof(pin));
	if (!has)
		rc = req_fail(r, CCQ_E_BAD_REQUEST, "extension %s has no PIN: set one first (pin.set)",
			x->ext);
	else if (!ok)
		rc = req_fail(r, CCQ_E_DENIED, "wrong PIN for extension %s", x->ext);
	*pin_ok = ok;
	return rc;
}

/* ---- what a request is about ---------------------------------------------- */

/* The TXN a callback is made from, as the actor may see it. */
struct origin {
	uint64_t id;
	uint32_t org_id, inbox_id, customer_id;
	char number[33], customer[101], inbox[101];
};

/*
 * Visible: the operator any; owners and admins with the add-on every TXN of
 * their organisation; anyone their own TXNs (agent) and those of the inboxes
 * they see; a TXN without inbox also to the organisation's owners and admins.
 */
static int origin_load(struct req *r, MYSQL *m, uint64_t id, struct origin *o)
{
	char q[1600], cond[500] = "", inbox[200];
	MYSQL_RES *res;
	MYSQL_ROW row;

	memset(o, 0, sizeof(*o));
	if (!r->who.operator) {
		acl_inbox_cond(inbox, sizeof(inbox), &r->who, "t.inbox_id");
		snprintf(cond, sizeof(cond), " AND t.org_id = %u AND (t.agent_id = %u OR "
			"(t.inbox_id IS NULL AND %d) OR (1 = 1%s))", r->who.org_id, r->who.user_id,
			r->who.role == ROLE_OWNER || r->who.role == ROLE_ADMIN, inbox);
	}
	snprintf(q, sizeof(q), "SELECT t.id, COALESCE(t.org_id, 0), COALESCE(t.inbox_id, 0), "
		"COALESCE(t.customer_id, 0), COALESCE(t.number, ''), COALESCE(c.name, ''), "
		"COALESCE(i.name, '') FROM txn t LEFT JOIN customer c ON c.id = t.customer_id "
		"LEFT JOIN inbox i ON i.id = t.inbox_id WHERE t.id = %llu%s", (unsigned long long)id,
		cond);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		o->id = strtoull(row[0], NULL, 10);
		o->org_id = (uint32_t)strtoul(row[1], NULL, 10);
		o->inbox_id = (uint32_t)strtoul(row[2], NULL, 10);
		o->customer_id = (uint32_t)strtoul(row[3], NULL, 10);
		snprintf(o->number, sizeof(o->number), "%s", row[4]);
		snprintf(o->customer, sizeof(o->customer), "%s", row[5]);
		snprintf(o->inbox, sizeof(o->inbox), "%s", row[6]);
	}
	mysql_free_result(res);
	if (!o->id)
		return req_fail(r, CCQ_E_NOT_FOUND, "no transaction %llu", (unsigned long long)id);
	return 0;
}

static int org_by_name(struct req *r, MYSQL *m, const char *name, uint32_t *id, char *country)
{
	struct qb q;
	MYSQL_RES *res;
	MYSQL_ROW row;

	*id = 0;
	qb_init(&q);
	qb_add(&q, "SELECT id, default_country FROM org WHERE name = ");
	qb_str(&q, m, name, strlen(name));
	if (!(res = req_select_qb(r, m, &q)))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		*id = (uint32_t)strtoul(row[0], NULL, 10);
		snprintf(country, 3, "%s", row[1]);
	}
	mysql_free_result(res);
	if (!*id || (!r->who.operator && *id != r->who.org_id))
		return req_fail(r, CCQ_E_NOT_FOUND, "no organisation '%s'", name);
	return 0;
}

/*
 * The customer's number: the argument "number", else the origin TXN's
 * number, else its customer's first number (verified ones first);
 * normalised with the organisation's country. out: "+6591234567".
 */
static int resolve_number(struct req *r, MYSQL *m, const char *country, const struct origin *o,
		char out[17])
{
	char num[64], digits[CCQ_E164_BUFSZ], q[300];
	const char *why = "invalid";
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (arg_str(r, "number", num, sizeof(num), 0) < 0)
		return -1;
	if (!num[0] && o && o->number[0])
		snprintf(num, sizeof(num), "%s", o->number);
	if (!num[0] && o && o->customer_id) {
		snprintf(q, sizeof(q), "SELECT number FROM customer_number WHERE customer_id = %u "
			"ORDER BY verified DESC, number LIMIT 1", o->customer_id);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			return -1;
		if ((row = mysql_fetch_row(res)))
			snprintf(num, sizeof(num), "%s", row[0]);
		mysql_free_result(res);
	}
	if (!num[0]) {
		if (o)
			return req_fail(r, CCQ_E_BAD_REQUEST, "transaction %llu has no number and no "
				"customer with one: give the number to call (number)", (unsigned long long)o->id);
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'number' is required");
	}
	if (ccq_e164_normalize(num, strlen(num), country, digits, &why) < 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "cannot use '%s' as a phone number: %s", num, why);
	snprintf(out, 17, "+%s", digits);
	return 0;
}

static int number_verified(struct req *r, MYSQL *m, uint32_t org, const char *number, int *v)
{
	char q[200];
	uint64_t n;
	int found;
	snprintf(q, sizeof(q), "SELECT verified FROM customer_number WHERE org_id = %u "
		"AND number = '%s'", org, number);
	if (sql_u64(r, m, q, strlen(q), &n, &found) < 0)
		return -1;
	*v = found && n;
	return 0;
}

/* A new customer named name (or after the number) with that number; *id. */
static int new_customer(struct req *r, MYSQL *m, uint32_t org, const char *name,
		const char *number, int verified, uint64_t *id)
{
	struct qb q;
	char q2[300];

	qb_init(&q);
	qb_add(&q, "INSERT INTO customer (org_id, name, created_at) VALUES (%u, ", org);
	qb_str(&q, m, name, utf8_cut(name, 100));
	qb_add(&q, ", UTC_TIMESTAMP(3))");
	if (req_exec_qb(r, m, &q) < 0)
		return -1;
	*id = mysql_insert_id(m);
	snprintf(q2, sizeof(q2), "INSERT INTO customer_number (customer_id, org_id, number, verified) "
		"VALUES (%llu, %u, '%s', %d)", (unsigned long long)*id, org, number, verified ? 1 : 0);
	return exec_sql(r, m, q2);
}

/*
 * add_number: the number joins the origin TXN's customer (a customer named
 * after the number is made, and given to the TXN, when it has none);
 * verified: the number is marked Verified. Then the callback's customer
 * (the number's, else the TXN's) and whether the number is verified.
 */
static int apply_number_flags(struct req *r, MYSQL *m, uint32_t org, const struct origin *o,
		const char *number, uint32_t *cust, char *cname, size_t csize, int *verified)
{
	uint64_t owner = 0;
	char oname[101] = "", q[300], pretty[40];
	int add = 0, ver = 0;

	if (arg_bool(r, "add_number", &add, 0) < 0 || arg_bool(r, "verified", &ver, 0) < 0
			|| customer_by_number(r, m, org, number, &owner, oname, sizeof(oname)) < 0)
		return -1;
	if (add && owner && o && o->customer_id && owner != o->customer_id)
		return req_fail(r, CCQ_E_CONFLICT, "number %s already belongs to customer %llu (%s)",
			number, (unsigned long long)owner, oname);
	if (add && !owner) {
		uint64_t cid = o ? o->customer_id : 0;
		if (cid) {
			snprintf(q, sizeof(q), "INSERT INTO customer_number (customer_id, org_id, number, "
				"verified) VALUES (%llu, %u, '%s', %d)", (unsigned long long)cid, org, number,
				ver ? 1 : 0);
			if (exec_sql(r, m, q) < 0)
				return -1;
			snprintf(oname, sizeof(oname), "%s", o->customer);
		} else {
			calls_pretty_number(number, pretty, sizeof(pretty));
			if (new_customer(r, m, org, pretty, number, ver, &cid) < 0)
				return -1;
			snprintf(oname, sizeof(oname), "%s", pretty);
			if (o) {
				snprintf(q, sizeof(q), "UPDATE txn SET customer_id = %llu, updated_at = "
					"UTC_TIMESTAMP(3) WHERE id = %llu AND customer_id IS NULL",
					(unsigned long long)cid, (unsigned long long)o->id);
				if (exec_sql(r, m, q) < 0)
					return -1;
			}
		}
		owner = cid;
	}
	if (ver) {
		if (!owner)
			return req_fail(r, CCQ_E_BAD_REQUEST, "number %s is on no customer's contact: add "
				"it too (add_number) to mark it verified", number);
		snprintf(q, sizeof(q), "UPDATE customer_number SET verified = 1 WHERE org_id = %u "
			"AND number = '%s'", org, number);
		if (exec_sql(r, m, q) < 0)
			return -1;
	}
	*cust = (uint32_t)(owner ? owner : o ? o->customer_id : 0);
	snprintf(cname, csize, "%s", owner ? oname : o ? o->customer : "");
	return number_verified(r, m, org, number, verified);
}

/* "at": "YYYY-MM-DD HH:MM[:SS]" UTC, or unix milliseconds; in the future. */
static int parse_at(struct req *r, uint64_t *ms)
{
	const msgpack_object *o = ccq_map_get(r->args, "at");
	uint64_t now = (uint64_t)time(NULL) * 1000;

	*ms = 0;
	if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		*ms = o->via.u64;
	} else if (o && o->type == MSGPACK_OBJECT_STR && o->via.str.size < 32) {
		char buf[32];
		time_t t;
		memcpy(buf, o->via.str.ptr, o->via.str.size);
		buf[o->via.str.size] = '\0';
		if (utc_time_parse(buf, 0, &t, NULL) < 0)
			return req_fail(r, CCQ_E_BAD_REQUEST, "'%s' is not a time: give 'YYYY-MM-DD "
				"HH:MM[:SS]' (UTC)", buf);
		*ms = (uint64_t)t * 1000;
	} else if (o) {
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'at' must be 'YYYY-MM-DD HH:MM[:SS]' "
			"(UTC) or unix milliseconds");
	} else {
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'at' is required");
	}
	if (*ms < 1000000000000ull || *ms > 100000000000000ull)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'at' in unix milliseconds is out of "
			"range");
	if (*ms <= now)
		return req_fail(r, CCQ_E_BAD_REQUEST, "the time is in the past");
	if (*ms > now + 366ull * 86400 * 1000)
		return req_fail(r, CCQ_E_BAD_REQUEST, "the time is more than a year ahead");
	return 0;
}

/* ---- callback.request and callback.schedule -------------------------------- */

/*
 * The inbox named name in n->x's organisation (n->inbox_id, n->inbox);
 * assigned: only an inbox n->x is a member of.
 */
static int inbox_lookup(struct req *r, MYSQL *m, struct cb_new *n, const char *name,
		int assigned)
{
	struct qb q;
	MYSQL_RES *res;
	MYSQL_ROW row;

	n->inbox_id = 0;
	qb_init(&q);
	qb_add(&q, "SELECT id, name FROM inbox WHERE org_id = %u AND name = ", n->x.org_id);
	qb_str(&q, m, name, strlen(name));
	if (assigned)
		qb_add(&q, " AND id IN (SELECT inbox_id FROM inbox_member WHERE user_id = %u)",
			n->x.id);
	if (!(res = req_select_qb(r, m, &q)))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		n->inbox_id = (uint32_t)strtoul(row[0], NULL, 10);
		snprintf(n->inbox, sizeof(n->inbox), "%s", row[1]);
	}
	mysql_free_result(res);
	if (!n->inbox_id && assigned)
		return req_fail(r, CCQ_E_NOT_FOUND, "no inbox '%s' assigned to extension %s", name,
			n->x.ext);
	if (!n->inbox_id)
		return req_fail(r, CCQ_E_NOT_FOUND, "no inbox '%s'", name);
	return 0;
}

/*
 * An agent's request (source agent: the acting user's extension, from a TXN
 * they can see), the operator's (source operator: any extension, TXN
 * optional), or an agent's schedule (callback.schedule).
 */
static int agent_request(struct req *r, MYSQL *m, const char *source, int schedule)
{
	struct cb_new n;
	struct cb_made made;
	struct origin o;
	uint64_t txn = 0;
	char device[65] = "", where[80];
	int verified = 0, rc, have_origin = 0;

	memset(&n, 0, sizeof(n));
	n.source = schedule ? "schedule" : source;
	if (strcmp(source, "operator") == 0) {
		if (!r->actor.operator)
			return req_fail(r, CCQ_E_DENIED, "source 'operator' is for the local operator");
		if (r->who.operator) {
			char ext[33], org[101], country[3];
			uint32_t org_id;
			if (arg_str(r, "ext", ext, sizeof(ext), 1) < 0
					|| arg_str(r, "org", org, sizeof(org), 1) < 0
					|| org_by_name(r, m, org, &org_id, country) < 0
					|| ext_by_key(r, m, org_id, ext, &n.x) < 0)
				return -1;
		}
		snprintf(n.by, sizeof(n.by), "the operator");
	} else if (r->who.operator) {
		return req_fail(r, CCQ_E_BAD_REQUEST, "the operator has no extension: act as the agent "
			"(as EXT@ORG), or use source 'operator'");
	}
	if (!n.x.id) {
		snprintf(where, sizeof(where), "u.id = %u", r->who.user_id);
		if ((rc = ext_load(r, m, where, &n.x)) <= 0)
			return rc < 0 ? -1 : req_fail(r, CCQ_E_DENIED, "user %u no longer exists",
				r->who.user_id);
	}
	if (!n.by[0])
		ext_label(n.by, sizeof(n.by), n.x.ext, n.x.name);
	if (need_token_ext(r, n.x.ext) < 0
			|| arg_uint(r, "txn", &txn, strcmp(source, "agent") == 0 && !schedule, UINT64_MAX) < 0
			|| arg_str(r, "device", device, sizeof(device), 0) < 0)
		return -1;
	if (txn) {
		if (origin_load(r, m, txn, &o) < 0)
			return -1;
		if (o.org_id != n.x.org_id)
			return req_fail(r, CCQ_E_NOT_FOUND, "no transaction %llu in the organisation of "
				"extension %s", (unsigned long long)txn, n.x.ext);
		have_origin = 1;
		n.origin = o.id;
		n.inbox_id = o.inbox_id;
		snprintf(n.inbox, sizeof(n.inbox), "%s", o.inbox);
	}
	if (schedule) {
		char inbox[101];
		if (arg_str(r, "inbox", inbox, sizeof(inbox), 1) < 0 || parse_at(r, &n.due_ms) < 0)
			return -1;
		/* an inbox assigned to the agent; owners and admins may pick any */
		if (inbox_lookup(r, m, &n, inbox, r->who.operator || (r->who.role != ROLE_OWNER
				&& r->who.role != ROLE_ADMIN)) < 0)
			return -1;
	}
	if (pick_device(r, m, n.x.id, device, 0, &n.device_id) < 0
			|| resolve_number(r, m, n.x.country, have_origin ? &o : NULL, n.number) < 0
			|| check_pin(r, m, &n.x, &n.pin_ok) < 0)
		return -1;
	n.created_by = r->who.operator ? 0 : r->who.user_id;
	if (begin(r, m) < 0)
		return -1;
	if (!schedule) {
		/* the same customer asking again keeps the first request only, and
		 * nothing of this one is stored */
		if ((rc = cb_find_open(r, m, n.x.org_id, n.number, &made)) < 0
				|| (rc == 1 && number_verified(r, m, n.x.org_id, n.number, &verified) < 0))
			return req_rollback(r, m);
		if (rc == 1) {
			if (commit(r, m) < 0)
				return -1;
			return reply_made(r, &made, n.number, !verified, NULL);
		}
	}
	if (apply_number_flags(r, m, n.x.org_id, have_origin ? &o : NULL, n.number, &n.customer_id,
			n.customer, sizeof(n.customer), &verified) < 0
			|| cb_create(r, m, &n, &made) < 0)
		return req_rollback(r, m);
	if (commit(r, m) < 0)
		return -1;
	if (schedule) {
		char t[40];
		format_ms(n.due_ms, t, sizeof(t));
		return reply_made(r, &made, n.number, !verified, t);
	}
	return reply_made(r, &made, n.number, !verified, NULL);
}

/*
 * A customer's request (an IVR, a web form): for an extension, or for an
 * inbox (given to a member, see pick_member). The operator's, or an owner's
 * or admin's with the add-on for their organisation.
 */
static int customer_request(struct req *r, MYSQL *m)
{
	struct cb_new n;
	struct cb_made made;
	char ext[33], inbox[101], name[101], org[101], country[3] = "";
	uint32_t org_id = 0;
	uint64_t cust = 0;
	int verified = 0, rc;

	memset(&n, 0, sizeof(n));
	n.source = "customer";
	if (!r->who.operator && !acl_all_inboxes(&r->who))
		return req_fail(r, CCQ_E_DENIED, "customer callback requests are for the operator and "
			"the organisation's owners and admins with the contact-center add-on");
	if (arg_str(r, "ext", ext, sizeof(ext), 0) < 0
			|| arg_str(r, "inbox", inbox, sizeof(inbox), 0) < 0
			|| arg_str(r, "name", name, sizeof(name), 0) < 0
			|| arg_str(r, "org", org, sizeof(org), r->who.operator) < 0)
		return -1;
	if (!ext[0] == !inbox[0])
		return req_fail(r, CCQ_E_BAD_REQUEST, "give either 'ext' or 'inbox' (who calls back)");
	if (name[0] && !text_ok(name))
		return req_fail(r, CCQ_E_BAD_REQUEST, "name contains control characters");
	if (org[0]) {
		if (org_by_name(r, m, org, &org_id, country) < 0)
			return -1;
	} else {
		org_id = r->who.org_id;
	}
	if (ext[0]) {
		if (ext_by_key(r, m, org_id, ext, &n.x) < 0)
			return -1;
	} else {
		n.x.org_id = org_id;
		if (inbox_lookup(r, m, &n, inbox, 0) < 0 || (rc = pick_member(r, m, n.inbox_id, &n.x)) < 0)
			return -1;
		if (rc == 0)
			return req_fail(r, CCQ_E_CONFLICT, "no member of inbox %s has an enabled device: "
				"activate a device first", n.inbox);
	}
	if (need_token_ext(r, n.x.ext) < 0 || pick_device(r, m, n.x.id, "", 1, &n.device_id) < 0
			|| resolve_number(r, m, n.x.country, NULL, n.number) < 0)
		return -1;
	snprintf(n.by, sizeof(n.by), "the customer");
	n.created_by = r->who.operator ? 0 : r->who.user_id;
	if (begin(r, m) < 0)
		return -1;
	if ((rc = cb_find_open(r, m, n.x.org_id, n.number, &made)) < 0
			|| number_verified(r, m, n.x.org_id, n.number, &verified) < 0)
		return req_rollback(r, m);
	if (rc == 1) {
		if (commit(r, m) < 0)
			return -1;
		return reply_made(r, &made, n.number, !verified, NULL);
	}
	if (customer_by_number(r, m, n.x.org_id, n.number, &cust, n.customer, sizeof(n.customer)) < 0
			|| (!cust && name[0] && new_customer(r, m, n.x.org_id, name, n.number, 0, &cust) < 0))
		return req_rollback(r, m);
	if (!n.customer[0])
		snprintf(n.customer, sizeof(n.customer), "%s", name);
	n.customer_id = (uint32_t)cust;
	if (cb_create(r, m, &n, &made) < 0)
		return req_rollback(r, m);
	if (commit(r, m) < 0)
		return -1;
	return reply_made(r, &made, n.number, !verified, NULL);
}

static int run_callback_request(struct req *r, MYSQL *m)
{
	char source[16];
	struct cb_settings s;

	if (req_who(r, m) < 0 || arg_str(r, "source", source, sizeof(source), 0) < 0)
		return -1;
	callbacks_settings(&s);
	if (!s.secret[0])
		return req_fail(r, CCQ_E_CONFLICT, "callbacks are not configured (callback_secret)");
	if (!source[0] || strcmp(source, "agent") == 0 || strcmp(source, "operator") == 0)
		return agent_request(r, m, source[0] ? source : "agent", 0);
	if (strcmp(source, "customer") == 0)
		return customer_request(r, m);
	return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'source' must be agent, customer or operator");
}

static int run_callback_schedule(struct req *r, MYSQL *m)
{
	struct cb_settings s;

	if (req_who(r, m) < 0)
		return -1;
	callbacks_settings(&s);
	if (!s.secret[0])
		return req_fail(r, CCQ_E_CONFLICT, "callbacks are not configured (callback_secret)");
	return agent_request(r, m, "agent", 1);
}

/*
 * The missed-call flow of an inbox with missed_flow 'callback': a customer
 * request for the inbox, for the caller's number. Runs inside the caller's
 * transaction; what prevents the callback is written to the missed TXN's
 * journey instead of failing the call's report.
 */
int callbacks_on_missed(struct req *r, MYSQL *m, uint64_t txn, uint32_t org, uint32_t inbox,
		const char *inbox_name, const char *number)
{
	struct cb_settings s;
	struct cb_new n;
	struct cb_made made;
	char q[300], text[400], flow[16] = "";
	MYSQL_RES *res;
	MYSQL_ROW row;
	uint64_t cust = 0;
	int rc;

	snprintf(q, sizeof(q), "SELECT missed_flow FROM inbox WHERE id = %u", inbox);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res)))
		snprintf(flow, sizeof(flow), "%s", row[0]);
	mysql_free_result(res);
	if (strcmp(flow, "callback") != 0)
		return 0;
	callbacks_settings(&s);
	memset(&n, 0, sizeof(n));
	text[0] = '\0';
	if (!s.secret[0])
		snprintf(text, sizeof(text), "No callback: callbacks are not configured");
	else if (number[0] != '+' || strlen(number) > 16
			|| strspn(number + 1, "0123456789") != strlen(number + 1))
		snprintf(text, sizeof(text), "No callback: the caller's number is unknown");
	if (text[0])
		return req_journey(r, m, txn, "callback_none", text, NULL);
	snprintf(n.number, sizeof(n.number), "%s", number);
	if ((rc = cb_find_open(r, m, org, number, &made)) < 0)
		return -1;
	if (rc == 1) {
		snprintf(text, sizeof(text), "Callback already requested: callback %llu (TXN %llu) is "
			"open", (unsigned long long)made.cb, (unsigned long long)made.txn);
		if (req_journey(r, m, txn, "callback_none", text, NULL) < 0)
			return -1;
		return link_origin(r, m, made.txn, txn);
	}
	if ((rc = pick_member(r, m, inbox, &n.x)) < 0)
		return -1;
	if (rc == 0 || !callbacks_ext_ok(n.x.ext)) {
		snprintf(text, sizeof(text), rc == 0 ? "No callback: no member of inbox [%s] has an "
			"enabled device" : "No callback: extension %s cannot be called back (its key)",
			rc == 0 ? inbox_name : n.x.ext);
		return req_journey(r, m, txn, "callback_none", text, NULL);
	}
	if (pick_device(r, m, n.x.id, "", 1, &n.device_id) < 0)
		return -1; /* pick_member found an enabled device: this is a database error */
	if (customer_by_number(r, m, org, number, &cust, n.customer, sizeof(n.customer)) < 0)
		return -1;
	n.customer_id = (uint32_t)cust;
	n.source = "missed";
	n.origin = txn;
	n.inbox_id = inbox;
	n.quiet = 1;
	snprintf(n.inbox, sizeof(n.inbox), "%s", inbox_name);
	snprintf(n.by, sizeof(n.by), "the missed-call flow of inbox [%s]", inbox_name);
	if (cb_create(r, m, &n, &made) < 0)
		return -1;
	if (strcmp(made.status, "overflow") == 0)
		snprintf(text, sizeof(text), "No callback: the callback queues of inbox [%s] are full "
			"(callback %llu, TXN %llu)", inbox_name, (unsigned long long)made.cb,
			(unsigned long long)made.txn);
	else
		snprintf(text, sizeof(text), "Callback requested: callback %llu for extension %s - %s "
			"(TXN %llu)", (unsigned long long)made.cb, n.x.ext, n.x.name,
			(unsigned long long)made.txn);
	return req_journey(r, m, txn, "callback", text, NULL);
}

/* ---- cancel, move, note ----------------------------------------------------- */

/*
 * Who may change a request: its extension, the organisation's owners and
 * admins, the operator. Anyone else is told it does not exist, as for
 * callback.list.
 */
static int may_change(struct req *r, const struct cb_row *c)
{
	if (r->who.operator || c->user_id == r->who.user_id || acl_can_manage_org(&r->who, c->org_id))
		return 0;
	return req_fail(r, CCQ_E_NOT_FOUND, "no callback %llu", (unsigned long long)c->id);
}

static void who_label(struct req *r, char *buf, size_t size)
{
	if (r->who.operator)
		snprintf(buf, size, "the operator");
	else
		ext_label(buf, size, r->who.ext, r->who.name);
}

static int run_callback_cancel(struct req *r, MYSQL *m)
{
	uint64_t id;
	struct cb_row c;
	char by[160], text[300], reason[200];
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_uint(r, "cb", &id, 1, UINT64_MAX) < 0 || begin(r, m) < 0)
		return -1;
	if (cb_load_id(r, m, id, &c) < 0 || may_change(r, &c) < 0)
		return req_rollback(r, m);
	if (strcmp(c.status, "scheduled") != 0 && strcmp(c.status, "queued") != 0) {
		req_rollback(r, m);
		if (is_open(&c))
			return req_fail(r, CCQ_E_CONFLICT, "callback %llu is %s: it can no longer be "
				"cancelled", (unsigned long long)id, strcmp(c.status, "dialing") == 0
				? "being dialled" : "connected");
		return req_fail(r, CCQ_E_CONFLICT, "callback %llu has already ended (%s)",
			(unsigned long long)id, c.status);
	}
	who_label(r, by, sizeof(by));
	snprintf(text, sizeof(text), "Callback cancelled by %s", by);
	snprintf(reason, sizeof(reason), "cancelled by %s", by);
	if (cb_close(r, m, &c, "cancelled", "Ended", "cancelled", reason, "cancelled", text, NULL) < 0)
		return req_rollback(r, m);
	if (commit(r, m) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_uint(pk, "cb", c.id);
	ccq_pack_kv_uint(pk, "txn", c.txn);
	ccq_pack_kv_str(pk, "status", "cancelled");
	return 0;
}

static int run_callback_move(struct req *r, MYSQL *m)
{
	uint64_t id, due;
	struct cb_row c;
	struct cb_settings s;
	char by[160], t[40], text[300], q[400];
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_uint(r, "cb", &id, 1, UINT64_MAX) < 0 || parse_at(r, &due) < 0
			|| begin(r, m) < 0)
		return -1;
	if (cb_load_id(r, m, id, &c) < 0 || may_change(r, &c) < 0)
		return req_rollback(r, m);
	if (strcmp(c.status, "scheduled") != 0) {
		req_rollback(r, m);
		return req_fail(r, CCQ_E_CONFLICT, "only a scheduled call can be moved: callback %llu "
			"is %s", (unsigned long long)id, c.status);
	}
	callbacks_settings(&s);
	snprintf(q, sizeof(q), "UPDATE callback_request SET due_at = FROM_UNIXTIME(%llu.%03llu), "
		"next_attempt_at = due_at, expires_at = due_at + INTERVAL %u SECOND, "
		"updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)(due / 1000),
		(unsigned long long)(due % 1000), s.expiry, (unsigned long long)id);
	who_label(r, by, sizeof(by));
	format_ms(due, t, sizeof(t));
	snprintf(text, sizeof(text), "Schedule moved to %s UTC by %s", t, by);
	if (exec_sql(r, m, q) < 0 || req_journey(r, m, c.txn, "callback_moved", text, NULL) < 0)
		return req_rollback(r, m);
	if (commit(r, m) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_uint(pk, "cb", c.id);
	ccq_pack_kv_str(pk, "status", c.status);
	ccq_pack_kv_str(pk, "due_at", t);
	return 0;
}

/* The agent's reason for a callback that did not connect. */
static int run_callback_note(struct req *r, MYSQL *m)
{
	uint64_t id = 0, txn = 0;
	struct cb_row c;
	char note[501], cond[120], by[160], text[700];
	struct qb q;
	msgpack_packer *pk;
	int rc;

	if (req_who(r, m) < 0 || arg_uint(r, "cb", &id, 0, UINT64_MAX) < 0
			|| arg_uint(r, "txn", &txn, 0, UINT64_MAX) < 0
			|| arg_str(r, "text", note, sizeof(note), 1) < 0)
		return -1;
	if (!id == !txn)
		return req_fail(r, CCQ_E_BAD_REQUEST, "give either 'cb' or 'txn'");
	if (!text_ok(note))
		return req_fail(r, CCQ_E_BAD_REQUEST, "the note contains control characters");
	/* by TXN: the callback's own, or the latest callback made from it */
	if (id)
		snprintf(cond, sizeof(cond), "c.id = %llu", (unsigned long long)id);
	else
		snprintf(cond, sizeof(cond), "(c.txn_id = %llu OR c.origin_txn_id = %llu)",
			(unsigned long long)txn, (unsigned long long)txn);
	if (begin(r, m) < 0)
		return -1;
	if ((rc = cb_load(r, m, cond, &c)) <= 0) {
		req_rollback(r, m);
		if (rc == 0)
			return id ? req_fail(r, CCQ_E_NOT_FOUND, "no callback %llu", (unsigned long long)id)
				: req_fail(r, CCQ_E_NOT_FOUND, "no callback of transaction %llu",
					(unsigned long long)txn);
		return -1;
	}
	if (may_change(r, &c) < 0)
		return req_rollback(r, m);
	if (is_open(&c) || strcmp(c.status, "scheduled") == 0 || strcmp(c.status, "done") == 0) {
		req_rollback(r, m);
		return req_fail(r, CCQ_E_CONFLICT, "only a callback that did not connect takes a note: "
			"callback %llu is %s", (unsigned long long)c.id, c.status);
	}
	if (!r->who.operator && r->who.user_id == c.user_id) {
		snprintf(text, sizeof(text), "Agent's note: %s", note);
	} else {
		who_label(r, by, sizeof(by));
		snprintf(text, sizeof(text), "Note by %s: %s", by, note);
	}
	qb_init(&q);
	qb_add(&q, "UPDATE callback_request SET note = ");
	qb_str(&q, m, note, strlen(note));
	qb_add(&q, ", updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)c.id);
	if (req_exec_qb(r, m, &q) < 0 || req_journey(r, m, c.txn, "note", text, NULL) < 0)
		return req_rollback(r, m);
	if (commit(r, m) < 0)
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 2);
	ccq_pack_kv_uint(pk, "cb", c.id);
	ccq_pack_kv_uint(pk, "txn", c.txn);
	return 0;
}

/* ---- callback.list ------------------------------------------------------------ */

static int run_callback_list(struct req *r, MYSQL *m)
{
	char status[16], ext[33], org[101], esc[80], where[700] = "", order[80];
	uint64_t txn = 0, limit = 100;
	size_t wl = 0;
	struct qb q;
	MYSQL_RES *res;

	if (req_who(r, m) < 0 || arg_str(r, "status", status, sizeof(status), 0) < 0
			|| arg_str(r, "ext", ext, sizeof(ext), 0) < 0
			|| arg_str(r, "org", org, sizeof(org), 0) < 0
			|| arg_uint(r, "txn", &txn, 0, UINT64_MAX) < 0
			|| arg_uint(r, "limit", &limit, 0, 1000) < 0)
		return -1;
	if (!limit)
		limit = 100;
	snprintf(order, sizeof(order), "c.status = 'scheduled', COALESCE(c.due_at, c.requested_at), c.id");
	if (!status[0])
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl,
			" AND c.status IN (" OPEN ",'scheduled')");
	else if (strcmp(status, "open") == 0)
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND c.status IN (" OPEN ")");
	else if (strcmp(status, "scheduled") == 0)
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND c.status = 'scheduled'");
	else if (strcmp(status, "final") == 0)
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND c.status IN (" FINAL ")");
	else if (strcmp(status, "all") != 0)
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'status' must be open, scheduled, final "
			"or all");
	if (strcmp(status, "final") == 0 || strcmp(status, "all") == 0)
		snprintf(order, sizeof(order), "c.id DESC");
	/* members see their own requests; owners and admins with the add-on their
	 * organisation's; the operator every organisation's, or the one named */
	if (r->who.operator) {
		if (org[0]) {
			uint32_t oid;
			char country[3];
			if (org_by_name(r, m, org, &oid, country) < 0)
				return -1;
			wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND c.org_id = %u", oid);
		}
	} else if (acl_all_inboxes(&r->who)) {
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND c.org_id = %u",
			r->who.org_id);
	} else {
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND c.user_id = %u",
			r->who.user_id);
	}
	if (ext[0]) {
		mysql_real_escape_string(m, esc, ext, strlen(ext));
		wl += (size_t)snprintf(where + wl, sizeof(where) - wl, " AND u.ext_key = '%s'", esc);
	}
	if (txn)
		snprintf(where + wl, sizeof(where) - wl, " AND (c.txn_id = %llu OR c.origin_txn_id = %llu)",
			(unsigned long long)txn, (unsigned long long)txn);
	qb_init(&q);
	qb_add(&q, "SELECT c.id, c.status, c.source, u.ext_key AS ext, u.name AS agent, c.number, "
		"cu.name AS customer, CONCAT(d.kind, IF(d.label = '', '', CONCAT(' (', d.label, ')'))) "
		"AS device, i.name AS inbox, c.txn_id AS txn, c.origin_txn_id AS origin_txn, "
		TS("c.requested_at") " AS requested_at, " TS("c.due_at") " AS due_at, "
		TS("c.next_attempt_at") " AS next_attempt_at, c.attempts, c.max_attempts, "
		"CASE WHEN c.status = 'queued' THEN (SELECT COUNT(*) FROM callback_request e "
		"WHERE e.user_id = c.user_id AND e.status = 'queued' AND (e.requested_at < c.requested_at "
		"OR (e.requested_at = c.requested_at AND e.id <= c.id))) END AS position, c.reason, c.note "
		"FROM callback_request c JOIN user u ON u.id = c.user_id "
		"LEFT JOIN customer cu ON cu.id = c.customer_id LEFT JOIN device d ON d.id = c.device_id "
		"LEFT JOIN inbox i ON i.id = c.inbox_id WHERE 1 = 1%s ORDER BY %s LIMIT %llu", where, order,
		(unsigned long long)limit);
	if (!(res = req_select_qb(r, m, &q)))
		return -1;
	req_reply_rows(r, res, "callbacks");
	return 0;
}

/* ---- the proxy's reports ------------------------------------------------------ */

/*
 * callback.progress: what the module did with an attempt. Reports of
 * another attempt, or of a request that is no longer dialing or connected,
 * are old news (the module resends its reports after a reconnection) and
 * change nothing; so does an event already applied to this attempt.
 */
static int run_callback_progress(struct req *r, MYSQL *m)
{
	uint64_t id, attempt, txn, code = 0;
	char event[32], detail[200], call_id[256], at[64], text[500], reason[300] = "";
	struct cb_row c;
	unsigned bit = 0;
	int retryable = 0, applied = 0;
	msgpack_packer *pk;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "callback reports are for the SIP proxy (local operator)");
	if (arg_uint(r, "cb", &id, 1, UINT64_MAX) < 0
			|| arg_uint(r, "attempt", &attempt, 1, UINT32_MAX) < 0
			|| arg_uint(r, "txn", &txn, 1, UINT64_MAX) < 0
			|| arg_str(r, "event", event, sizeof(event), 1) < 0
			|| arg_uint(r, "code", &code, 0, 999) < 0
			|| arg_str(r, "detail", detail, sizeof(detail), 0) < 0
			|| arg_str(r, "call_id", call_id, sizeof(call_id), 0) < 0)
		return -1;
	req_event_time(r, at, sizeof(at));
	text[0] = '\0';
	if (strcmp(event, "agent_ringing") == 0) {
		bit = EV_RINGING;
	} else if (strcmp(event, "agent_answered") == 0) {
		bit = EV_ANSWERED;
	} else if (strcmp(event, "prompt") == 0) {
		bit = EV_PROMPT;
		if (strncmp(detail, "played ", 7) == 0)
			snprintf(text, sizeof(text), "Prompt played to the agent (%.1f s)",
				strtoul(detail + 7, NULL, 10) / 1000.0);
		else if (strncmp(detail, "skipped: ", 9) == 0)
			snprintf(text, sizeof(text), "Prompt not played (%s); connecting without it",
				detail + 9);
		else
			snprintf(text, sizeof(text), "Prompt: %s", detail[0] ? detail : "no detail");
	} else if (strcmp(event, "referred") == 0) {
		bit = EV_REFERRED;
		snprintf(text, sizeof(text), "Connecting the customer: transfer accepted by the agent's "
			"phone");
	} else if (strcmp(event, "done") == 0) {
		bit = EV_DONE; /* the module left its own leg: nothing for people */
	} else if (strcmp(event, "agent_failed") == 0) {
		retryable = code != 404 && code != 403;
		if (!retryable)
			snprintf(reason, sizeof(reason), "device not reachable (SIP %llu)",
				(unsigned long long)code);
		else if (code)
			snprintf(reason, sizeof(reason), "the agent did not answer (SIP %llu)",
				(unsigned long long)code);
		else
			snprintf(reason, sizeof(reason), "the agent did not answer");
	} else if (strcmp(event, "agent_hangup") == 0) {
		snprintf(reason, sizeof(reason), "the agent hung up during the prompt");
	} else if (strcmp(event, "refer_failed") == 0) {
		snprintf(reason, sizeof(reason), "the agent's phone refused the transfer (SIP %llu)",
			(unsigned long long)code);
	} else if (strcmp(event, "transfer_timeout") == 0) {
		retryable = 1;
		snprintf(reason, sizeof(reason), "the agent's phone did not call the customer");
	} else if (strcmp(event, "dial_failed") == 0) {
		retryable = 1;
		snprintf(reason, sizeof(reason), "%s", detail[0] ? detail
			: "the proxy could not place the call");
	} else {
		return req_fail(r, CCQ_E_BAD_REQUEST, "unknown callback event '%s'", event);
	}
	if (begin(r, m) < 0)
		return -1;
	if (cb_load_id(r, m, id, &c) < 0)
		return req_rollback(r, m);
	if (c.txn != txn) {
		req_rollback(r, m);
		return req_fail(r, CCQ_E_BAD_REQUEST, "callback %llu belongs to TXN %llu, not %llu",
			(unsigned long long)id, (unsigned long long)c.txn, (unsigned long long)txn);
	}
	/* news of the current attempt only; failures of the agent leg count only
	 * until the customer leg exists: from then on, that leg's reports decide */
	if (attempt != c.attempts || (strcmp(c.status, "dialing") != 0
			&& (bit == 0 || strcmp(c.status, "active") != 0)) || (c.mask & bit)) {
		req_rollback(r, m);
		goto reply;
	}
	applied = 1;
	if (!bit) {
		if (cb_attempt_failed(r, m, &c, reason, retryable, at) < 0)
			return req_rollback(r, m);
	} else {
		char q[400];
		snprintf(q, sizeof(q), "UPDATE callback_request SET progress_mask = progress_mask | %u, "
			"progress_at = %s, updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", bit, at,
			(unsigned long long)c.id);
		if (exec_sql(r, m, q) < 0)
			return req_rollback(r, m);
		if (bit == EV_RINGING)
			snprintf(text, sizeof(text), "Ringing extension %s - %s - %s", c.ext, c.name,
				c.device_name[0] ? c.device_name : "a device");
		if (bit == EV_ANSWERED) {
			snprintf(text, sizeof(text), "Agent answered on %s", c.device_name[0]
				? c.device_name : "a device");
			snprintf(q, sizeof(q), "UPDATE txn SET agent_id = %u, device_id = %s%u, updated_at = "
				"UTC_TIMESTAMP(3) WHERE id = %llu", c.user_id, c.device_id ? "" : "NULL + ",
				c.device_id, (unsigned long long)c.txn);
			if (exec_sql(r, m, q) < 0)
				return req_rollback(r, m);
		}
		if (text[0] && req_journey(r, m, c.txn, bit == EV_RINGING ? "ringing"
				: bit == EV_ANSWERED ? "agent_answered" : bit == EV_PROMPT ? "prompt"
				: "connecting", text, at) < 0)
			return req_rollback(r, m);
	}
	if (commit(r, m) < 0)
		return -1;
reply:
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_uint(pk, "cb", id);
	ccq_pack_kv_uint(pk, "attempt", attempt);
	ccq_pack_kv_bool(pk, "applied", applied);
	return 0;
}

/*
 * call.outbound with callback_txn: the agent's phone, told by the REFER,
 * calls the customer; the module checked the customer-leg token and the
 * compliance gate. The call joins the callback TXN as its customer leg.
 * Idempotent on the Call-ID (a retransmitted INVITE, a resent report).
 */
int callbacks_customer_leg(struct req *r, MYSQL *m, uint64_t txn, const char *call_id,
		const char *user, const char *domain, const char *number, int blocked,
		const char *rule, const char *reason, const char *at)
{
	struct cb_row c;
	struct qb q;
	char cond[64], text[600], label[200], cust[101] = "";
	uint64_t leg_txn = 0, dev = 0, owner = 0, cust_id = 0;
	int found, rc;
	MYSQL_RES *res;
	MYSQL_ROW row;
	msgpack_packer *pk;

	snprintf(cond, sizeof(cond), "c.txn_id = %llu", (unsigned long long)txn);
	if ((rc = cb_load(r, m, cond, &c)) <= 0)
		return rc < 0 ? -1 : req_fail(r, CCQ_E_NOT_FOUND, "no callback has TXN %llu",
			(unsigned long long)txn);
	qb_init(&q);
	qb_add(&q, "SELECT txn_id FROM txn_leg WHERE call_id = ");
	qb_str(&q, m, call_id, strlen(call_id));
	rc = q.oom ? req_fail(r, CCQ_E_INTERNAL, "out of memory")
		: sql_u64(r, m, q.buf, q.len, &leg_txn, &found);
	qb_free(&q);
	if (rc < 0)
		return -1;
	if (found && leg_txn != txn)
		return req_fail(r, CCQ_E_CONFLICT, "call %s belongs to TXN %llu", call_id,
			(unsigned long long)leg_txn);
	if (!found) {
		qb_init(&q);
		qb_add(&q, "SELECT d.id, d.user_id FROM device d WHERE d.username = ");
		qb_str(&q, m, user, strlen(user));
		qb_add(&q, " AND d.domain = ");
		qb_str(&q, m, domain, strlen(domain));
		if (!(res = req_select_qb(r, m, &q)))
			return -1;
		if ((row = mysql_fetch_row(res))) {
			dev = strtoull(row[0], NULL, 10);
			owner = strtoull(row[1], NULL, 10);
		}
		mysql_free_result(res);
		if (!dev)
			return req_fail(r, CCQ_E_NOT_FOUND, "no device %s@%s", user, domain);
		if (owner != c.user_id)
			return req_fail(r, CCQ_E_DENIED, "device %s@%s is not extension %s's: it cannot "
				"carry callback %llu", user, domain, c.ext, (unsigned long long)c.id);
		if (!is_open(&c) && strcmp(c.status, "queued") != 0)
			return req_fail(r, CCQ_E_CONFLICT, "callback %llu has ended (%s): the customer is "
				"not called", (unsigned long long)c.id, c.status);
		if (number[0] == '+' && customer_by_number(r, m, c.org_id, number, &cust_id, cust,
				sizeof(cust)) < 0)
			return -1;
		qb_init(&q);
		qb_add(&q, "INSERT INTO txn_leg (call_id, txn_id, kind, created_at) VALUES (");
		qb_str(&q, m, call_id, strlen(call_id));
		qb_add(&q, ", %llu, 'customer', %s)", (unsigned long long)txn, at);
		if (req_exec_qb(r, m, &q) < 0)
			return -1;
		/* a leg of an attempt the proxy gave up on too early (a transfer
		 * timeout, a retry pending) still reaches the customer: it goes on */
		qb_init(&q);
		qb_add(&q, "UPDATE txn SET current_call_id = ");
		qb_str(&q, m, call_id, strlen(call_id));
		qb_add(&q, ", sip_call_id = COALESCE(sip_call_id, ");
		qb_str(&q, m, call_id, strlen(call_id));
		qb_add(&q, "), status = IF(status = 'Waiting', 'Assigning', status), agent_id = %u, "
			"device_id = %llu, customer_id = COALESCE(%s%llu, customer_id), "
			"updated_at = UTC_TIMESTAMP(3)", c.user_id, (unsigned long long)dev,
			cust_id ? "" : "NULL + ", (unsigned long long)cust_id);
		if (number[0] == '+')
			qb_add(&q, ", number = '%s'", strspn(number + 1, "0123456789") == strlen(number + 1)
				? number : c.number);
		qb_add(&q, " WHERE id = %llu", (unsigned long long)txn);
		if (req_exec_qb(r, m, &q) < 0)
			return -1;
		number_label(label, sizeof(label), number[0] == '+' ? number : c.number,
			cust_id ? cust : c.customer);
		if (blocked) {
			snprintf(text, sizeof(text), "Blocked by compliance: %s (rule %s)",
				reason[0] ? reason : "refused", rule[0] ? rule : "unknown");
			if (cb_close(r, m, &c, "failed", "Failed", "blocked", text, "blocked", text, at) < 0)
				return -1;
		} else {
			char q2[300];
			snprintf(text, sizeof(text), "Customer dialled: %s; compliance check passed", label);
			snprintf(q2, sizeof(q2), "UPDATE callback_request SET status = 'active', progress_at "
				"= %s, updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", at, (unsigned long long)c.id);
			if (exec_sql(r, m, q2) < 0 || req_journey(r, m, txn, "dialling", text, at) < 0)
				return -1;
		}
	}
	pk = req_reply(r);
	msgpack_pack_map(pk, 1);
	ccq_pack_kv_uint(pk, "txn", txn);
	return 0;
}

/*
 * call.ended of a callback's customer leg. The call ends by the agent
 * (by = caller: the agent's phone placed it) or the customer (by = agent,
 * the callee side), as for outbound calls. Returns 1 when the TXN has no
 * callback request (a callback TXN of txn.create): the generic path applies.
 */
int callbacks_call_ended(struct req *r, MYSQL *m, uint64_t txn, const char *status,
		uint32_t agent_id, const char *by, const char *at, char *result, size_t rsize)
{
	struct cb_row c;
	char cond[64], q[400], text[200], reason[200];
	int rc, code, retryable = 0;

	snprintf(cond, sizeof(cond), "c.txn_id = %llu", (unsigned long long)txn);
	if ((rc = cb_load(r, m, cond, &c)) <= 0)
		return rc < 0 ? -1 : 1;
	snprintf(result, rsize, "%s", "ignored");
	if (strcmp(c.status, "active") != 0 && strcmp(c.status, "dialing") != 0)
		return 0; /* a late report of an attempt already decided */
	if (strcmp(status, "Assigned") == 0) {
		snprintf(result, rsize, "%s", "answered");
		snprintf(text, sizeof(text), "Call ended by the %s",
			strcmp(by, "agent") == 0 ? "customer" : "agent");
		snprintf(q, sizeof(q), "UPDATE txn SET status = 'Ended', result = 'answered', "
			"ended_at = %s, updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", at,
			(unsigned long long)txn);
		if (exec_sql(r, m, q) < 0 || req_journey(r, m, txn, "ended", text, at) < 0)
			return -1;
		snprintf(q, sizeof(q), "UPDATE callback_request SET status = 'done', reason = NULL, "
			"updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)c.id);
		if (exec_sql(r, m, q) < 0 || link_origin(r, m, c.txn, c.origin) < 0)
			return -1;
		if (agent_id) {
			/* idle from the end of the call; wrap-up time before the next one */
			struct qb w;
			qb_init(&w);
			qb_agent_call_end(&w, agent_id, at);
			if (req_exec_qb(r, m, &w) < 0)
				return -1;
		}
		want_kick(r);
		return 0;
	}
	snprintf(result, rsize, "%s", "failed");
	if (strncmp(by, "failed", 6) == 0) {
		code = by[6] == ':' ? atoi(by + 7) : 0;
		retryable = code == 486 || code == 600 || code == 408 || code == 480 || code == 487;
		if (code == 486 || code == 600)
			snprintf(reason, sizeof(reason), "the customer was busy");
		else if (retryable)
			snprintf(reason, sizeof(reason), "the customer did not answer");
		else if (code == 603 || code == 403)
			snprintf(reason, sizeof(reason), "the customer rejected the call (SIP %d)", code);
		else if (code)
			snprintf(reason, sizeof(reason), "the call failed (SIP %d)", code);
		else
			snprintf(reason, sizeof(reason), "the call failed");
	} else {
		/* the agent's phone gave up on its call before the answer */
		snprintf(reason, sizeof(reason), "the agent hung up before the customer answered");
	}
	if ((rc = cb_attempt_failed(r, m, &c, reason, retryable, at)) == 1)
		snprintf(result, rsize, "%s", "retry");
	return rc < 0 ? -1 : 0;
}

/* ---- the dispatcher ------------------------------------------------------------ */

/* Up to max ids of the first column of q. */
static int select_ids(struct req *r, MYSQL *m, const char *q, uint64_t *ids, int max)
{
	MYSQL_RES *res = db_select(&r->j, m, q, strlen(q));
	MYSQL_ROW row;
	int n = 0;
	if (!res)
		return -1;
	while (n < max && (row = mysql_fetch_row(res)))
		ids[n++] = strtoull(row[0], NULL, 10);
	mysql_free_result(res);
	return n;
}

/*
 * A schedule's time came: it joins the extension's queue (its place: the
 * scheduled time), or overflows. One that is more than schedule_grace late
 * (queued was not running) is missed.
 */
static int schedule_due(struct req *r, MYSQL *m, const struct cb_row *c,
		const struct cb_settings *s)
{
	char q[500], due[40] = "", text[400];
	int late = 0;
	uint64_t open;
	MYSQL_RES *res;
	MYSQL_ROW row;

	snprintf(q, sizeof(q), "SELECT due_at < UTC_TIMESTAMP(3) - INTERVAL %u SECOND, "
		"DATE_FORMAT(due_at, '%%Y-%%m-%%d %%H:%%i:%%s') FROM callback_request WHERE id = %llu",
		s->schedule_grace, (unsigned long long)c->id);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		late = atoi(row[0]);
		snprintf(due, sizeof(due), "%s", row[1]);
	}
	mysql_free_result(res);
	if (late) {
		snprintf(text, sizeof(text), "Scheduled call missed: it was due at %s UTC, more than "
			"schedule_grace (%u s) ago, while queued was not running", due, s->schedule_grace);
		LOG_W("callback %llu: schedule due at %s UTC missed (more than %u s late)",
			(unsigned long long)c->id, due, s->schedule_grace);
		return cb_close(r, m, c, "missed", "Failed", "missed", "schedule missed", "missed", text,
			NULL);
	}
	snprintf(q, sizeof(q), "UPDATE callback_request SET status = 'queued', requested_at = due_at, "
		"next_attempt_at = due_at, updated_at = UTC_TIMESTAMP(3) WHERE id = %llu",
		(unsigned long long)c->id);
	if (lock_org(r, m, c->org_id) < 0 || exec_sql(r, m, q) < 0
			|| open_count(r, m, c->user_id, &open) < 0)
		return -1;
	/* the count includes this request now */
	if (open > c->max_calls)
		return cb_overflow(r, m, c, open - 1, 0, NULL);
	snprintf(text, sizeof(text), "Scheduled time reached: callback queued for extension %s - %s",
		c->ext, c->name);
	if (req_journey(r, m, c->txn, "callback_due", text, NULL) < 0)
		return -1;
	want_kick(r);
	return 0;
}

/*
 * Start the next attempt of a request at the head of its extension's
 * queue: dialing in MySQL first, then (after the commit, on the loop) the
 * callback.dial event. A device that was disabled since the request gives
 * way to the extension's most recently registered enabled one.
 */
static int dispatch_one(struct req *r, MYSQL *m, const struct cb_row *c, struct cb_after *a)
{
	char q[700], text[300];
	MYSQL_RES *res;
	MYSQL_ROW row;
	struct cb_dial *d = &a->dial[a->ndial];
	uint32_t dev = 0;

	if (!callbacks_ext_ok(c->ext))
		return cb_attempt_failed(r, m, c, "the extension key cannot be carried in a callback "
			"token", 0, NULL);
	for (int pass = 0; pass < 2 && !dev; pass++) {
		if (pass == 0)
			snprintf(q, sizeof(q), "SELECT d.id, d.username, d.domain, CONCAT(d.kind, "
				"IF(d.label = '', '', CONCAT(' (', d.label, ')'))) FROM device d WHERE d.id = %u "
				"AND d.user_id = %u AND d.enabled = 1", c->device_id, c->user_id);
		else
			snprintf(q, sizeof(q), "SELECT d.id, d.username, d.domain, CONCAT(d.kind, "
				"IF(d.label = '', '', CONCAT(' (', d.label, ')'))) FROM device d LEFT JOIN "
				"device_contact k ON k.device_id = d.id AND k.expires_at > UTC_TIMESTAMP(3) "
				"WHERE d.user_id = %u AND d.enabled = 1 GROUP BY d.id ORDER BY "
				"MAX(k.expires_at) IS NULL, MAX(k.expires_at) DESC, d.id LIMIT 1", c->user_id);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			return -1;
		if ((row = mysql_fetch_row(res))) {
			dev = (uint32_t)strtoul(row[0], NULL, 10);
			snprintf(d->device, sizeof(d->device), "sip:%s@%s", row[1], row[2]);
			snprintf(d->device_name, sizeof(d->device_name), "%s", row[3]);
		}
		mysql_free_result(res);
	}
	if (!dev)
		return cb_attempt_failed(r, m, c, "no enabled device: activate a device first", 0, NULL);
	snprintf(q, sizeof(q), "UPDATE callback_request SET status = 'dialing', attempts = attempts + 1, "
		"progress_at = UTC_TIMESTAMP(3), progress_mask = 0, device_id = %u, "
		"updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", dev, (unsigned long long)c->id);
	if (exec_sql(r, m, q) < 0)
		return -1;
	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Assigning', agent_id = %u, "
		"updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", c->user_id, (unsigned long long)c->txn);
	snprintf(text, sizeof(text), "Callback initiated by the system for extension %s - %s "
		"(attempt %u of %u)", c->ext, c->name, c->attempts + 1, c->max_attempts);
	if (exec_sql(r, m, q) < 0 || req_journey(r, m, c->txn, "callback_initiated", text, NULL) < 0)
		return -1;
	d->cb = c->id;
	d->txn = c->txn;
	d->attempt = c->attempts + 1;
	d->pin_ok = c->pin_ok;
	snprintf(d->ext, sizeof(d->ext), "%s", c->ext);
	snprintf(d->agent, sizeof(d->agent), "%s", c->name);
	snprintf(d->number, sizeof(d->number), "%s", c->number);
	/* the customer leg's recording: the agent's setting, then the
	 * callback's inbox (its TXN's; the agent's default inbox for a request
	 * that came with none), then the organisation (doc/recording.md) */
	snprintf(q, sizeof(q), "SELECT COALESCE(u.record_calls, i.record_calls, o.record_calls, 0), "
		"CASE WHEN u.record_calls IS NOT NULL THEN 'u' WHEN i.record_calls IS NOT NULL THEN 'i' "
		"ELSE 'o' END FROM txn t JOIN user u ON u.id = %u JOIN org o ON o.id = u.org_id "
		"LEFT JOIN inbox i ON i.id = COALESCE(t.inbox_id, (SELECT MIN(im.inbox_id) FROM "
		"inbox_member im WHERE im.user_id = u.id)) WHERE t.id = %llu", c->user_id,
		(unsigned long long)c->txn);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	d->record = 0;
	d->rec_rule = 'o';
	if ((row = mysql_fetch_row(res))) {
		d->record = atoi(row[0]) != 0;
		d->rec_rule = row[1][0];
	}
	mysql_free_result(res);
	a->ndial++;
	return 0;
}

/* One step on one request, in a transaction of its own. */
typedef int (*cb_step_fn)(struct req *r, MYSQL *m, struct cb_row *c, const struct cb_settings *s);

static int step_due(struct req *r, MYSQL *m, struct cb_row *c, const struct cb_settings *s)
{
	return strcmp(c->status, "scheduled") == 0 ? schedule_due(r, m, c, s) : 0;
}

static int step_expire(struct req *r, MYSQL *m, struct cb_row *c, const struct cb_settings *s)
{
	char text[300];
	(void)s;
	if (strcmp(c->status, "queued") != 0)
		return 0;
	snprintf(text, sizeof(text), "Callback expired: not connected in time (%u attempt%s)",
		c->attempts, c->attempts == 1 ? "" : "s");
	return cb_close(r, m, c, "expired", "Failed", "failed", "expired", "expired", text, NULL);
}

static int step_stale(struct req *r, MYSQL *m, struct cb_row *c, const struct cb_settings *s)
{
	(void)s;
	if (strcmp(c->status, "dialing") != 0 && strcmp(c->status, "active") != 0)
		return 0;
	LOG_W("callback %llu attempt %u: no news from the proxy; counted as failed",
		(unsigned long long)c->id, c->attempts);
	return cb_attempt_failed(r, m, c, "no news from the proxy", 1, NULL);
}

static int step_dispatch(struct req *r, MYSQL *m, struct cb_row *c, const struct cb_settings *s)
{
	char q[1200];
	uint64_t v;
	int found;

	(void)s;
	if (strcmp(c->status, "queued") != 0)
		return 0;
	/* the extension's free slot once more, with its row locked: an inbound
	 * decision on another worker may have taken the slot since the
	 * dispatcher's list was read (it locks and re-checks the same row) */
	snprintf(q, sizeof(q), "SELECT u.id FROM user u WHERE u.id = %u AND u.max_calls > "
		"(SELECT COUNT(*) FROM txn a WHERE a.agent_id = u.id "
		"AND a.status IN ('Assigning','Assigned','Transferring') AND NOT EXISTS (SELECT 1 "
		"FROM callback_request x WHERE x.txn_id = a.id AND x.user_id = u.id)) "
		"+ (SELECT COUNT(*) FROM callback_request y WHERE y.user_id = u.id "
		"AND y.status IN ('dialing','active')) FOR UPDATE", c->user_id);
	if (sql_u64(r, m, q, strlen(q), &v, &found) < 0)
		return -1;
	if (!found)
		return 0;   /* busy now: a later dispatch */
	return dispatch_one(r, m, c, after_of(r));
}

static int run_steps(struct req *r, MYSQL *m, const char *q, int max, cb_step_fn fn,
		const struct cb_settings *s)
{
	uint64_t ids[50];
	struct cb_row c;
	int n = select_ids(r, m, q, ids, max < 50 ? max : 50);

	for (int i = 0; i < n; i++) {
		if (begin(r, m) < 0)
			return -1;
		if (cb_load_id(r, m, ids[i], &c) < 0 || fn(r, m, &c, s) < 0)
			return req_rollback(r, m);
		if (commit(r, m) < 0)
			return -1;
	}
	if (n == max)
		after_of(r)->more = 1;
	return n < 0 ? -1 : 0;
}

/*
 * Every second, and after changes: (a) schedules that came due, (b) queued
 * requests past their expiry, (c) attempts without news from the proxy for
 * callback_ring_timeout + 90 s (a connected customer leg that was never
 * answered: ACTIVE_SILENCE), (d) with a dialer attached, the head of each
 * extension's queue when its time has come and the extension has a free
 * call slot (calls in progress that are not its callbacks, plus its
 * callbacks being dialled or connected, below max_calls).
 */
static int run_dispatch(struct req *r, MYSQL *m)
{
	struct cb_settings s;
	struct cb_after *a = after_of(r);
	char q[2000];
	int dial = 0;

	if (!a)
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	memset(a, 0, sizeof(*a));
	r->who.operator = 1;
	ccq_map_bool(r->args, "dial", &dial);
	callbacks_settings(&s);
	memset(s.secret, 0, sizeof(s.secret));
	if (run_steps(r, m, "SELECT id FROM callback_request WHERE status = 'scheduled' "
			"AND due_at <= UTC_TIMESTAMP(3) ORDER BY due_at, id LIMIT 16", 16, step_due, &s) < 0
			|| run_steps(r, m, "SELECT id FROM callback_request WHERE status = 'queued' "
			"AND expires_at <= UTC_TIMESTAMP(3) ORDER BY id LIMIT 50", 50, step_expire, &s) < 0)
		goto partial;
	snprintf(q, sizeof(q), "SELECT c.id FROM callback_request c JOIN txn t ON t.id = c.txn_id "
		"WHERE (c.status = 'dialing' AND COALESCE(c.progress_at, c.updated_at) < "
		"UTC_TIMESTAMP(3) - INTERVAL %u SECOND) OR (c.status = 'active' AND t.status = 'Assigning' "
		"AND COALESCE(c.progress_at, c.updated_at) < UTC_TIMESTAMP(3) - INTERVAL %u SECOND) "
		"ORDER BY c.id LIMIT 16", s.ring_timeout + 90, ACTIVE_SILENCE);
	if (run_steps(r, m, q, 16, step_stale, &s) < 0)
		goto partial;
	if (dial) {
		/* FIFO: only the oldest request of an extension whose time has come
		 * may go (one waiting for its next attempt lets the others pass) */
		snprintf(q, sizeof(q), "SELECT c.id FROM callback_request c JOIN user u ON u.id = c.user_id "
			"WHERE c.status = 'queued' AND c.next_attempt_at <= UTC_TIMESTAMP(3) "
			"AND NOT EXISTS (SELECT 1 FROM callback_request e WHERE e.user_id = c.user_id "
			"AND e.status = 'queued' AND e.next_attempt_at <= UTC_TIMESTAMP(3) "
			"AND (e.requested_at < c.requested_at "
			"OR (e.requested_at = c.requested_at AND e.id < c.id))) "
			"AND u.max_calls > (SELECT COUNT(*) FROM txn a WHERE a.agent_id = u.id "
			"AND a.status IN ('Assigning','Assigned','Transferring') AND NOT EXISTS (SELECT 1 "
			"FROM callback_request x WHERE x.txn_id = a.id AND x.user_id = u.id)) "
			"+ (SELECT COUNT(*) FROM callback_request y WHERE y.user_id = u.id "
			"AND y.status IN ('dialing','active')) ORDER BY c.requested_at, c.id LIMIT 16");
		if (run_steps(r, m, q, 16, step_dispatch, &s) < 0)
			goto partial;
		/* the next request of the same extension may have a slot too */
		if (a->ndial)
			a->more = 1;
	}
	if (a->ndial || a->nnote)
		av_soft_dirty();   /* agents took callbacks (agentview.h) */
	msgpack_pack_nil(req_reply(r));
	return 0;
partial:
	/* what was committed before the failure must still be pushed */
	if (a->ndial || a->nnote)
		av_soft_dirty();
	if (!a->ndial && !a->nnote)
		return -1;
	LOG_W("callback dispatch stopped early: %s", r->j.errmsg);
	r->j.err = 0;
	r->j.errmsg[0] = '\0';
	a->more = 1;
	msgpack_pack_nil(req_reply(r));
	return 0;
}

static void push_notes(struct cb_after *a)
{
	for (int i = 0; i < a->nnote; i++)
		calls_notify("call.missed", a->note[i].org_id, a->note[i].inbox_id, a->note[i].txn,
			a->note[i].text, a->note[i].number, a->note[i].customer, a->note[i].inbox);
}

static void after_dispatch(struct req *r)
{
	struct cb_after *a = r->after_data;
	for (int i = 0; a && i < a->ndial; i++)
		callbacks_push_dial(&a->dial[i]);
	if (a)
		push_notes(a);
	callbacks_dispatched(a && a->more);
}

static void after_callback(struct req *r)
{
	struct cb_after *a = r->after_data;
	if (!a)
		return;
	push_notes(a);
	if (a->kick)
		callbacks_kick();
}

const struct op_def ops_callback[] = {
	{ "callback.request", run_callback_request, NULL, after_callback, 0 },
	{ "callback.schedule", run_callback_schedule, NULL, after_callback, 0 },
	{ "callback.list", run_callback_list, NULL, NULL, OP_VIEW_SAFE },
	{ "callback.cancel", run_callback_cancel, NULL, after_callback, 0 },
	{ "callback.move", run_callback_move, NULL, after_callback, 0 },
	{ "callback.note", run_callback_note, NULL, NULL, OP_VIEW_SAFE },
	{ "callback.progress", run_callback_progress, NULL, after_callback, OP_RETRY },
	{ "callback.attach", NULL, callbacks_op_attach, NULL, 0 },
	{ NULL, NULL, NULL, NULL, 0 }
};

const struct op_def callbacks_dispatch_op = { "callback.dispatch", run_dispatch, NULL,
	after_dispatch, OP_VIEW_SAFE };
