/*
 * Inbound calls: the decisions the Kamailio module asks for (call.route,
 * call.ring_failed), its reports (call.answered, call.ended,
 * device.contact), the inbox queue (call.wait, dispatch, maximum wait and
 * the missed-call flow), notifications (watch) and the agent's view (me).
 *
 * Distribution: among the inbox's members with a registered, enabled
 * device, below their maximum concurrent calls, not in wrap-up and not yet
 * rung for this call, the one idle longest (oldest last_call_end in
 * agent_state; never called first) rings on all of their enabled,
 * registered devices.
 */
#include "ops.h"
#include "server.h"
#include "log.h"
#include "calls.h"
#include "callbacks.h"
#include "recording.h"
#include "ccq_e164.h"
#include "dircache.h"
#include "agentview.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <stdatomic.h>
#include <time.h>

#define TS(col) "DATE_FORMAT(" col ", '%%Y-%%m-%%d %%H:%%i:%%s.%%f')"

/* Data handed from a worker run to its after() on the loop. */
struct call_after {
	uint32_t org_id, inbox_id;
	uint64_t txn;
	char call_id[256];
	char event[32];              /* event to push to watchers, "" = none */
	char text[1024];
	char number[20];
	char customer[101];
	char inbox[101];
	int wake_dispatch;           /* agents may have become free */
	int queued;                  /* the call now waits in the queue */
	unsigned max_wait;
};

static struct call_after *after_of(struct req *r)
{
	if (!r->after_data)
		r->after_data = calloc(1, sizeof(struct call_after));
	return r->after_data;
}

static int journey(struct req *r, MYSQL *m, uint64_t txn, const char *kind, const char *text)
{
	return req_journey(r, m, txn, kind, text, NULL);
}

/* "+6591234567" -> "+65 9123 4567" for people (groups of four). */
void calls_pretty_number(const char *e164, char *out, size_t size)
{
	const char *d = e164[0] == '+' ? e164 + 1 : e164;
	int cc = ccq_e164_country_code(d);
	char ccs[8];
	size_t o = 0, ccl, rest;

	if (!cc) {
		snprintf(out, size, "%s", e164);
		return;
	}
	snprintf(ccs, sizeof(ccs), "%d", cc);
	ccl = strlen(ccs);
	o += (size_t)snprintf(out, size, "+%s", ccs);
	rest = strlen(d + ccl);
	for (size_t i = 0; i < rest && o + 2 < size; i++) {
		/* split the national number in groups of four from the left */
		if (i % 4 == 0)
			out[o++] = ' ';
		out[o++] = d[ccl + i];
	}
	out[o < size ? o : size - 1] = '\0';
}

/* Load a TXN's call facts by SIP Call-ID. */
struct txn_row {
	uint64_t id;
	uint32_t org_id, inbox_id, agent_id;
	char status[16];
	char inbox[101];
	char number[20];
	unsigned max_wait, ring_timeout;
	long waited;      /* seconds since queued_at (or created_at) */
	char current_call[256]; /* the live leg */
	int outbound;
	int callback;     /* call_type callback (ops_callback.c decides its end) */
	uint64_t device_id;
	char customer[101];
};

/* The SELECT of a TXN's call facts: by a leg's Call-ID, or (call_id NULL)
 * by the TXN's id. With lock, FOR UPDATE (see txn_by_call). */
static void qb_txn(struct qb *q, MYSQL *m, const char *call_id, uint64_t id, int lock)
{
	/* the inbox and customer by scalar subqueries, not joins: FOR UPDATE
	 * then locks the TXN's row alone (a join would lock the inbox's row too
	 * and make every call of the inbox wait for each other) */
	qb_add(q, "SELECT t.id, COALESCE(t.org_id, 0), COALESCE(t.inbox_id, 0), "
		"COALESCE(t.agent_id, 0), t.status, "
		"COALESCE((SELECT i.name FROM inbox i WHERE i.id = t.inbox_id), ''), "
		"COALESCE(t.number, ''), "
		"COALESCE((SELECT i.max_wait FROM inbox i WHERE i.id = t.inbox_id), 0), "
		"COALESCE((SELECT i.ring_timeout FROM inbox i WHERE i.id = t.inbox_id), 20), "
		"TIMESTAMPDIFF(SECOND, COALESCE(t.queued_at, t.created_at), UTC_TIMESTAMP(3)), "
		"COALESCE(t.current_call_id, t.sip_call_id), t.direction = 'outbound', "
		"COALESCE(t.device_id, 0), "
		"COALESCE((SELECT c.name FROM customer c WHERE c.id = t.customer_id), ''), "
		"t.call_type = 'callback' FROM txn t WHERE t.id = ");
	if (call_id) {
		qb_add(q, "(SELECT txn_id FROM txn_leg WHERE call_id = ");
		qb_str(q, m, call_id, strlen(call_id));
		qb_add(q, ")");
	} else {
		qb_add(q, "%llu", (unsigned long long)id);
	}
	qb_add(q, "%s", lock == 2 ? " FOR UPDATE NOWAIT" : lock ? " FOR UPDATE" : "");
}

static void txn_from_row(MYSQL_ROW row, struct txn_row *t)
{
	memset(t, 0, sizeof(*t));
	t->id = strtoull(row[0], NULL, 10);
	t->org_id = (uint32_t)strtoul(row[1], NULL, 10);
	t->inbox_id = (uint32_t)strtoul(row[2], NULL, 10);
	t->agent_id = (uint32_t)strtoul(row[3], NULL, 10);
	snprintf(t->status, sizeof(t->status), "%s", row[4]);
	snprintf(t->inbox, sizeof(t->inbox), "%s", row[5]);
	snprintf(t->number, sizeof(t->number), "%s", row[6]);
	t->max_wait = (unsigned)strtoul(row[7], NULL, 10);
	t->ring_timeout = (unsigned)strtoul(row[8], NULL, 10);
	t->waited = row[9] ? strtol(row[9], NULL, 10) : 0;
	snprintf(t->current_call, sizeof(t->current_call), "%s", row[10] ? row[10] : "");
	t->outbound = row[11] && atoi(row[11]);
	t->device_id = row[12] ? strtoull(row[12], NULL, 10) : 0;
	snprintf(t->customer, sizeof(t->customer), "%s", row[13] ? row[13] : "");
	t->callback = row[14] && atoi(row[14]);
}

/* The TXN from a result of qb_txn: 0, or -1 with the request failed
 * (CCQ_E_NOT_FOUND when there is none). Frees res. */
static int txn_from_res(struct req *r, MYSQL_RES *res, const char *what, struct txn_row *t)
{
	MYSQL_ROW row = mysql_fetch_row(res);
	if (!row) {
		mysql_free_result(res);
		memset(t, 0, sizeof(*t));
		/* an answered decision whose TXN is being written again (an outage
		 * right after its answer): a report retries rather than fails */
		if (ops_rewrite_pending_for(r->j.key)) {
			r->waits_rewrite = 1;
			return req_fail(r, CCQ_E_DB_UNAVAILABLE, "no transaction for call %s yet (a "
				"decision's writes are being retried)", what);
		}
		return req_fail(r, CCQ_E_NOT_FOUND, "no transaction for call %s", what);
	}
	txn_from_row(row, t);
	mysql_free_result(res);
	return 0;
}

/*
 * The TXN of a call leg. With lock (inside a transaction), the TXN's row is
 * locked, so that what is read is still true when the caller writes:
 * the reports of a TXN's other legs (a transfer, a callback) and queued's
 * sweeps run on other MySQL workers at the same time.
 */
static int txn_by_call(struct req *r, MYSQL *m, const char *call_id, struct txn_row *t, int lock)
{
	struct qb q;
	MYSQL_RES *res;

	memset(t, 0, sizeof(*t));
	qb_init(&q);
	qb_txn(&q, m, call_id, 0, lock);
	if (!(res = req_select_qb(r, m, &q)))
		return -1;
	return txn_from_res(r, res, call_id, t);
}

/* A ring decision: the agent, their devices (targets), the recording. */
struct ring_pick {
	char ext[33], name[101], devices[1000];
	int ntargets;
	char targets[8][200];
	struct rec_decision rec;     /* recording of the call to this agent */
};

/*
 * Agents rung for this call within the last two ring timeouts are skipped:
 * a ring failure moves on to the next agent, and once everyone has had a
 * turn a waiting call is offered around again.
 */
/* What makes member u of an inbox available for TXN txn, besides being
 * below max_calls (SQL, u aliased; arguments: inbox, txn). Scalar
 * subqueries, not EXISTS / NOT IN: MariaDB turns those into semi-joins
 * that materialise every registration (device_contact) and the TXN's rings
 * into temporary tables on each call, 0.3-0.5 ms of a claim's 0.1 here. */
#define AGENT_READY_NOW \
	"(SELECT s.wrapup_until FROM agent_state s WHERE s.user_id = u.id " \
	"  AND s.wrapup_until > UTC_TIMESTAMP(3)) IS NULL " \
	"AND (SELECT 1 FROM device d JOIN device_contact c ON c.device_id = d.id " \
	"  WHERE d.user_id = u.id AND d.enabled = 1 AND c.expires_at > UTC_TIMESTAMP(3) " \
	"  LIMIT 1) IS NOT NULL "
/* ... and not rung for this TXN lately */
#define AGENT_READY AGENT_READY_NOW \
	"AND (SELECT COUNT(*) FROM txn_ring g JOIN inbox ib ON ib.id = %u WHERE g.txn_id = %llu " \
	"  AND g.user_id = u.id AND g.at > UTC_TIMESTAMP(3) - INTERVAL 2 * ib.ring_timeout SECOND) " \
	"  = 0 "
/* below max_calls */
#define AGENT_BELOW_MAX \
	"AND (SELECT COUNT(*) FROM txn a WHERE a.agent_id = u.id " \
	"  AND a.status IN ('Assigning','Assigned','Transferring')) < u.max_calls "
/* ... and below max_calls, for one agent */
#define AGENT_FREE AGENT_READY AGENT_BELOW_MAX
/* ... for a call that has no TXN yet (nobody was rung for it: no ring
 * history to look at; no arguments) */
#define AGENT_FREE_NEW AGENT_READY_NOW AGENT_BELOW_MAX

/*
 * Lock candidate uid's user row and check, with what is committed now, that
 * it is still free. wait: block for the lock (else skip a row another
 * decision holds). Returns 1 (ours), 0 (not free), 2 (skipped: locked by
 * another decision; with wait < 0, 2 stands for "not ours" in both
 * cases, one statement), -1 (error).
 *
 * Decisions run on several MySQL workers at once; two of them may read the
 * same agent as free. The row lock makes the second wait until the first
 * committed (or, with SKIP LOCKED, move on to the next agent), and the
 * re-check then counts the first one's call, so max_calls holds.
 */
static int claim_agent(struct req *r, MYSQL *m, uint64_t txn, uint32_t inbox, uint64_t uid,
		int wait)
{
	char q[1600];
	uint64_t v;
	int found;

	if (wait <= 0) {
		/* the usual case in one statement: free, and nobody else holds it
		 * (READ COMMITTED: a row the condition rejects is not kept locked) */
		snprintf(q, sizeof(q), "SELECT u.id FROM user u WHERE u.id = %llu AND " AGENT_FREE
			"FOR UPDATE SKIP LOCKED", (unsigned long long)uid, inbox, (unsigned long long)txn);
		if (sql_u64(r, m, q, strlen(q), &v, &found) < 0)
			return -1;
		if (found)
			return 1;
		if (wait < 0)
			return 2;       /* the caller does not need to know which */
		/* taken by another decision, or not free? Asked without a lock, so
		 * that an agent we do not take is not held until we commit */
		snprintf(q, sizeof(q), "SELECT u.id FROM user u WHERE u.id = %llu AND " AGENT_FREE,
			(unsigned long long)uid, inbox, (unsigned long long)txn);
		if (sql_u64(r, m, q, strlen(q), &v, &found) < 0)
			return -1;
		return found ? 2 : 0;
	}
	snprintf(q, sizeof(q), "SELECT id FROM user WHERE id = %llu FOR UPDATE",
		(unsigned long long)uid);
	if (sql_u64(r, m, q, strlen(q), &v, &found) < 0)
		return -1;
	if (!found)
		return 0;
	snprintf(q, sizeof(q), "SELECT u.id FROM user u WHERE u.id = %llu AND " AGENT_FREE,
		(unsigned long long)uid, inbox, (unsigned long long)txn);
	if (sql_u64(r, m, q, strlen(q), &v, &found) < 0)
		return -1;
	return found;
}

/*
 * Among the available members: who has the fewest calls in progress (an
 * agent on a call is not idle), then who has been idle longest (never
 * called first), then the lowest id. Columns: id, ext_key, name,
 * record_calls, and the registered enabled devices (see ring_devices).
 * txn 0: a call that has no TXN yet (nobody was rung for it).
 */
#define CANDIDATES 8
#define PICK_ROUNDS 4
/* devices: "username US domain US kind US label" joined by RS (0x1f, 0x1e:
 * none of them can hold these), cut at 512 characters: a longer text would
 * be a BLOB, which MariaDB cannot keep in an in-memory temporary table (an
 * on-disk one made this query ten times slower under load). The few agents
 * with that many devices get them read on their own (load_devices). */
#define DEVICES_CUT 512
/* member u's registered enabled devices (argument: DEVICES_CUT) */
#define MEMBER_DEVICES \
	"CAST((SELECT GROUP_CONCAT(CONCAT(d.username, 0x1f, d.domain, 0x1f, d.kind, 0x1f, " \
	"  COALESCE(d.label, '')) ORDER BY d.id SEPARATOR 0x1e) FROM device d " \
	"  WHERE d.user_id = u.id AND d.enabled = 1 AND EXISTS (SELECT 1 FROM device_contact c " \
	"  WHERE c.device_id = d.id AND c.expires_at > UTC_TIMESTAMP(3))) AS CHAR(%d)) "
/* b.n: each agent's calls in progress, counted once for all agents (the
 * few TXNs in those states, by the status index), joined ON b.agent_id */
#define CALLS_IN_PROGRESS \
	"LEFT JOIN (SELECT a.agent_id, COUNT(*) AS n FROM txn a " \
	"  WHERE a.status IN ('Assigning','Assigned','Transferring') GROUP BY a.agent_id) b "
static void qb_candidates(struct qb *q, uint32_t inbox, uint64_t txn, const char *tried)
{
	qb_add(q,
		/* the calls in progress counted once for all agents (the few
		 * TXNs in those states, by the status index), not per member */
		"SELECT u.id, u.ext_key, u.name, u.record_calls, "
		MEMBER_DEVICES
		"FROM inbox_member im JOIN user u ON u.id = im.user_id "
		"LEFT JOIN agent_state s ON s.user_id = u.id "
		CALLS_IN_PROGRESS
		"  ON b.agent_id = u.id "
		"WHERE im.inbox_id = %u AND u.id NOT IN (%s) AND COALESCE(b.n, 0) < u.max_calls AND "
		AGENT_READY
		"ORDER BY COALESCE(b.n, 0), s.last_call_end IS NOT NULL, s.last_call_end, u.id "
		"LIMIT %d", DEVICES_CUT, inbox, tried, inbox, (unsigned long long)txn, CANDIDATES);
}


static int read_candidates(MYSQL_RES *res, struct av_member *c)
{
	MYSQL_ROW row;
	int n = 0;
	while ((row = mysql_fetch_row(res)) && n < CANDIDATES) {
		c[n].id = strtoull(row[0], NULL, 10);
		snprintf(c[n].ext, sizeof(c[n].ext), "%s", row[1]);
		snprintf(c[n].name, sizeof(c[n].name), "%s", row[2]);
		c[n].record = row[3] ? atoi(row[3]) != 0 : -1;
		snprintf(c[n].devices, sizeof(c[n].devices), "%s", row[4] ? row[4] : "");
		/* bytes, not characters: a text of multi-byte labels is re-read
		 * a little early, never used cut */
		c[n].cut = strlen(c[n].devices) >= DEVICES_CUT - 12;
		n++;
	}
	return n;
}

/* A candidate's devices when the candidates' query may have cut them. */
static int load_devices(struct req *r, MYSQL *m, struct av_member *c)
{
	char q[400];
	MYSQL_RES *res;
	MYSQL_ROW row;
	size_t l = 0;
	int n = 0;

	if (!c->cut)
		return 0;
	snprintf(q, sizeof(q), "SELECT DISTINCT d.id, d.username, d.domain, d.kind, "
		"COALESCE(d.label, '') FROM device d JOIN device_contact c ON c.device_id = d.id "
		"WHERE d.user_id = %llu AND d.enabled = 1 AND c.expires_at > UTC_TIMESTAMP(3) "
		"ORDER BY d.id LIMIT 8", (unsigned long long)c->id);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	c->devices[0] = '\0';
	while ((row = mysql_fetch_row(res)) && l < sizeof(c->devices)) {
		l += (size_t)snprintf(c->devices + l, sizeof(c->devices) - l, "%s%s\x1f%s\x1f%s\x1f%s",
			n++ ? "\x1e" : "", row[1], row[2], row[3], row[4]);
	}
	mysql_free_result(res);
	c->cut = 0;
	return 0;
}

/* The ring targets and the "desk_phone (Desk), web_phone" text of a
 * candidate's devices. Returns the number of targets. */
static int ring_devices(const struct av_member *c, struct ring_pick *p)
{
	char buf[sizeof(c->devices)], *save = NULL, *rec;

	snprintf(p->ext, sizeof(p->ext), "%s", c->ext);
	snprintf(p->name, sizeof(p->name), "%s", c->name);
	p->ntargets = 0;
	p->devices[0] = '\0';
	snprintf(buf, sizeof(buf), "%s", c->devices);
	for (rec = strtok_r(buf, "\x1e", &save); rec && p->ntargets < 8;
			rec = strtok_r(NULL, "\x1e", &save)) {
		char *f[4] = { rec, NULL, NULL, NULL };
		size_t l = strlen(p->devices);
		for (int i = 1; i < 4; i++) {
			if (!f[i - 1] || !(f[i] = strchr(f[i - 1], 0x1f)))
				break;
			*f[i]++ = '\0';
		}
		if (!f[3])
			continue;          /* not a whole record */
		snprintf(p->targets[p->ntargets++], sizeof(p->targets[0]), "sip:%s@%s", f[0], f[1]);
		snprintf(p->devices + l, sizeof(p->devices) - l, "%s%s%s%s%s", l ? ", " : "", f[2],
			f[3][0] ? " (" : "", f[3], f[3][0] ? ")" : "");
	}
	return p->ntargets;
}

/*
 * Pick the next agent for a TXN and mark it Assigning; fills p.
 * Returns 1 (ringing), 0 (nobody available), -1 (error).
 */
static int pick_agent(struct req *r, MYSQL *m, uint64_t txn, uint32_t inbox, struct ring_pick *p)
{
	char q[600], tried[PICK_ROUNDS * CANDIDATES * 12 + 8] = "0";
	MYSQL_RES *res;
	uint64_t uid = 0;
	struct av_member cand[CANDIDATES];
	int n, held[CANDIDATES], nheld, rc, chosen = -1, lost;

	memset(p, 0, sizeof(*p));
	/* Another decision may take the agents this one read as free: then read
	 * again, without the ones already tried, until a round loses nothing
	 * to another decision (or nobody is left). */
	for (int round = 0; round < PICK_ROUNDS && chosen < 0; round++) {
		struct qb qq;
		nheld = lost = 0;
		qb_init(&qq);
		qb_candidates(&qq, inbox, txn, tried);
		if (!(res = req_select_qb(r, m, &qq)))
			return -1;
		n = read_candidates(res, cand);
		mysql_free_result(res);
		if (n == 0)
			break;
		/* the first one nobody else is deciding about; then wait for those
		 * another decision holds, and check them again once it is done */
		for (int i = 0; i < n && chosen < 0; i++) {
			if ((rc = claim_agent(r, m, txn, inbox, cand[i].id, 0)) < 0)
				return -1;
			if (rc == 1)
				chosen = i;
			else if (rc == 2)
				held[nheld++] = i;
			else
				lost = 1;   /* free when read, taken since */
		}
		for (int k = 0; k < nheld && chosen < 0; k++) {
			if ((rc = claim_agent(r, m, txn, inbox, cand[held[k]].id, 1)) < 0)
				return -1;
			if (rc == 1)
				chosen = held[k];
			else
				lost = 1;
		}
		if (chosen >= 0 || !lost)
			break;
		for (int i = 0; i < n; i++) {
			size_t l = strlen(tried);
			snprintf(tried + l, sizeof(tried) - l, ",%llu", (unsigned long long)cand[i].id);
		}
	}
	if (chosen < 0)
		return 0;
	uid = cand[chosen].id;
	if (load_devices(r, m, &cand[chosen]) < 0)
		return -1;
	if (ring_devices(&cand[chosen], p) == 0)
		return 0;
	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Assigning', agent_id = %llu, "
		"updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)uid,
		(unsigned long long)txn);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	snprintf(q, sizeof(q), "INSERT INTO txn_ring (txn_id, user_id, at) VALUES (%llu, %llu, "
		"UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE at = VALUES(at), result = NULL",
		(unsigned long long)txn, (unsigned long long)uid);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	{
		char text[1200];
		snprintf(text, sizeof(text), "Ringing %s - %s - %s", p->ext, p->name, p->devices);
		if (journey(r, m, txn, "ringing", text) < 0)
			return -1;
	}
	if (rec_decide(r, m, txn, uid, &p->rec) < 0)
		return -1;
	return 1;
}

/* ---- queued's view of the inboxes' members (agentview.h) ----------------- */

static int64_t epoch_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read the view of inbox from MySQL if it is stale (older than max_age). */
static int view_fresh(struct req *r, MYSQL *m, uint32_t inbox, int64_t now, int64_t max_age)
{
	struct av_token tok;
	struct av_member *v;
	char q[2000];
	MYSQL_RES *res;
	MYSQL_ROW row;
	size_t n = 0;

	if (!av_stale(inbox, now, max_age, &tok))
		return 0;
	snprintf(q, sizeof(q), "SELECT u.id, u.ext_key, u.name, u.record_calls, u.max_calls, "
		"COALESCE(b.n, 0), COALESCE(CAST(UNIX_TIMESTAMP(s.last_call_end) * 1000 AS UNSIGNED), 0), "
		"COALESCE(CAST(UNIX_TIMESTAMP(s.wrapup_until) * 1000 AS UNSIGNED), 0), "
		"EXISTS (SELECT 1 FROM device d JOIN device_contact c ON c.device_id = d.id "
		"  WHERE d.user_id = u.id AND d.enabled = 1 AND c.expires_at > UTC_TIMESTAMP(3)), "
		MEMBER_DEVICES
		", u.wrapup_seconds FROM inbox_member im JOIN user u ON u.id = im.user_id "
		"LEFT JOIN agent_state s ON s.user_id = u.id "
		CALLS_IN_PROGRESS
		"  ON b.agent_id = u.id WHERE im.inbox_id = %u", DEVICES_CUT, inbox);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	v = calloc(mysql_num_rows(res) + 1, sizeof(*v));
	if (!v) {
		mysql_free_result(res);
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	}
	while ((row = mysql_fetch_row(res))) {
		struct av_member *a = &v[n++];
		a->id = strtoull(row[0], NULL, 10);
		snprintf(a->ext, sizeof(a->ext), "%s", row[1]);
		snprintf(a->name, sizeof(a->name), "%s", row[2]);
		a->record = row[3] ? atoi(row[3]) != 0 : -1;
		a->max_calls = (unsigned)strtoul(row[4], NULL, 10);
		a->calls = (unsigned)strtoul(row[5], NULL, 10);
		a->last_end_ms = strtoll(row[6], NULL, 10);
		a->wrapup_until_ms = strtoll(row[7], NULL, 10);
		a->registered = row[8] && atoi(row[8]);
		snprintf(a->devices, sizeof(a->devices), "%s", row[9] ? row[9] : "");
		a->cut = strlen(a->devices) >= DEVICES_CUT - 12;
		a->wrapup_seconds = (unsigned)strtoul(row[10], NULL, 10);
	}
	mysql_free_result(res);
	av_install(inbox, v, n, &tok, now);
	free(v);
	return 0;
}

/* The claim of member uid of inbox for a new call, which has no TXN yet
 * (see claim_agent), and the outcome, in one statement of run_call_route's
 * batch (each statement of a batch is a result MySQL sends, and the worker
 * wakes for, before the answer): its columns are the member claimed into
 * @ccq_agent, or NULL when refused (not free, or held by another
 * decision): MAX() over no row, where a plain assignment would leave the
 * variable as it was; the TXN's id drawn into @ccq_txn (once: the
 * aggregate's one row); the TXN this Call-ID already has (a retried
 * request, see route_mid); and @ccq_cust, @ccq_cname cleared for the
 * customer lookup (which sets them only when it finds the caller).
 * uid 0: no candidate, the outcome alone. */
static void qb_claim(struct qb *q, MYSQL *m, uint32_t inbox, uint64_t uid, const char *call_id)
{
	qb_add(q, "SELECT @ccq_agent := %s, @ccq_txn := NEXTVAL(txn_seq), (SELECT x.id FROM "
		"txn x WHERE x.sip_call_id = ", uid ? "MAX(u.id)" : "NULL");
	qb_str(q, m, call_id, strlen(call_id));
	qb_add(q, "), @ccq_cust := NULL, @ccq_cname := NULL");
	if (uid)
		qb_add(q, " FROM user u WHERE u.id = %llu AND (SELECT 1 FROM inbox_member im WHERE "
			"im.inbox_id = %u AND im.user_id = u.id) IS NOT NULL AND " AGENT_FREE_NEW
			"FOR UPDATE SKIP LOCKED", (unsigned long long)uid, inbox);
}

/* The part of a ring decision about the agent: targets, and recording. */
static void pack_ring_targets(msgpack_packer *pk, const struct ring_pick *p)
{
	ccq_pack_str(pk, "targets");
	msgpack_pack_array(pk, (size_t)p->ntargets);
	for (int i = 0; i < p->ntargets; i++)
		ccq_pack_str(pk, p->targets[i]);
	ccq_pack_kv_uint(pk, "record", (uint64_t)p->rec.record);
	ccq_pack_kv_str(pk, "rec_meta", p->rec.meta);
}

static void pack_ring(msgpack_packer *pk, uint64_t txn, const char *inbox, unsigned ring_timeout,
		const struct ring_pick *p)
{
	msgpack_pack_map(pk, 7);
	ccq_pack_kv_str(pk, "action", "ring");
	ccq_pack_kv_uint(pk, "txn", txn);
	ccq_pack_kv_str(pk, "inbox", inbox);
	ccq_pack_kv_uint(pk, "ring_timeout", ring_timeout);
	pack_ring_targets(pk, p);
}

/* Queue the call (or end it in the missed-call flow if it may not wait). */
static int queue_or_miss(struct req *r, MYSQL *m, struct txn_row *t, msgpack_packer **pkp)
{
	char q[400];
	struct call_after *a = after_of(r);
	long left = (long)t->max_wait - t->waited;

	if (left <= 0)
		return calls_missed(r, m, t->id, t->org_id, t->inbox_id, t->inbox, t->number, pkp);
	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Waiting', agent_id = NULL, "
		"queued_at = COALESCE(queued_at, UTC_TIMESTAMP(3)), updated_at = UTC_TIMESTAMP(3) "
		"WHERE id = %llu", (unsigned long long)t->id);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	if (strcmp(t->status, "Waiting") != 0 || t->waited < 1) {
		char text[200];
		snprintf(text, sizeof(text), "Waiting in the queue of inbox [%s]", t->inbox);
		if (journey(r, m, t->id, "queued", text) < 0)
			return -1;
	}
	a->queued = 1;
	a->max_wait = (unsigned)left;
	*pkp = req_reply(r);
	msgpack_pack_map(*pkp, 4);
	ccq_pack_kv_str(*pkp, "action", "queue");
	ccq_pack_kv_uint(*pkp, "txn", t->id);
	ccq_pack_kv_str(*pkp, "inbox", t->inbox);
	ccq_pack_kv_uint(*pkp, "max_wait", (uint64_t)left);
	return 0;
}

/* End a TXN in the inbox's missed-call flow. */
int calls_missed(struct req *r, MYSQL *m, uint64_t txn, uint32_t org, uint32_t inbox,
		const char *inbox_name, const char *number, msgpack_packer **pkp)
{
	char q[400], text[300], pretty[40];
	struct call_after *a = after_of(r);

	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Ended', result = 'missed', agent_id = NULL, "
		"ended_at = UTC_TIMESTAMP(3), updated_at = UTC_TIMESTAMP(3) WHERE id = %llu",
		(unsigned long long)txn);
	if (db_exec(&r->j, m, q, strlen(q)) < 0)
		return -1;
	snprintf(text, sizeof(text), "Missed: no agent answered; inbox [%s] missed-call flow",
		inbox_name);
	if (journey(r, m, txn, "missed", text) < 0)
		return -1;
	/* an inbox whose missed-call flow is 'callback' calls the caller back */
	if (inbox && callbacks_on_missed(r, m, txn, org, inbox, inbox_name, number) < 0)
		return -1;
	calls_pretty_number(number, pretty, sizeof(pretty));
	a->org_id = org;
	a->inbox_id = inbox;
	a->txn = txn;
	snprintf(a->event, sizeof(a->event), "call.missed");
	snprintf(a->text, sizeof(a->text), "missed call in inbox %s from %s", inbox_name,
		number[0] ? pretty : "an unknown number");
	if (pkp) {
		*pkp = req_reply(r);
		msgpack_pack_map(*pkp, 5);
		ccq_pack_kv_str(*pkp, "action", "missed");
		ccq_pack_kv_uint(*pkp, "txn", txn);
		ccq_pack_kv_uint(*pkp, "code", 480);
		ccq_pack_kv_str(*pkp, "reason", "Temporarily Unavailable");
		ccq_pack_kv_str(*pkp, "inbox", inbox_name);
	}
	return 0;
}


static int reply_simple(struct req *r, const char *action, int code, const char *reason)
{
	msgpack_packer *pk = req_reply(r);
	msgpack_pack_map(pk, code ? 3 : 1);
	ccq_pack_kv_str(pk, "action", action);
	if (code) {
		ccq_pack_kv_uint(pk, "code", (uint64_t)code);
		ccq_pack_kv_str(pk, "reason", reason);
	}
	return 0;
}

/* ---- blind transfer -------------------------------------------------------- */

/*
 * Looking for a pending transfer costs a query on every call from a trunk;
 * calls are let through without it unless a transfer started within the
 * last TRANSFER_WINDOW_MS (attach_transfer looks 120 s back). After a
 * start, the first call asks MySQL when the latest pending transfer began.
 * 0: not known yet; otherwise the monotonic time (ms) the window closes.
 */
#define TRANSFER_WINDOW_MS 130000u
static _Atomic uint64_t g_transfer_until_ms;

static uint64_t now_ms(void)
{
	return db_now_ns() / 1000000u;
}

static void transfer_window_open(void)
{
	uint64_t until = now_ms() + TRANSFER_WINDOW_MS, cur = atomic_load(&g_transfer_until_ms);
	while (cur < until && !atomic_compare_exchange_weak(&g_transfer_until_ms, &cur, until))
		;
}

int calls_transfer_may_be_pending(void)
{
	/* 0: not known yet (after a start, until the first call asks MySQL) */
	uint64_t cur = atomic_load(&g_transfer_until_ms);
	return cur == 0 || now_ms() < cur;
}

/* 1 if a call from a trunk may be a transfer's second leg, 0 if not, -1 */
static int transfer_possible(struct req *r, MYSQL *m)
{
	uint64_t cur = atomic_load(&g_transfer_until_ms);
	if (cur == 0) {
		char q[300];
		uint64_t left = 0, until;
		int found;
		/* ms left of the window of the latest transfer still pending
		 * (from before a restart); on the status index */
		snprintf(q, sizeof(q), "SELECT GREATEST(0, TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(3), "
			"MAX(transfer_at)) DIV 1000 + %u) FROM txn WHERE status = 'Transferring'",
			TRANSFER_WINDOW_MS);
		if (sql_u64(r, m, q, strlen(q), &left, &found) < 0)
			return -1;
		until = now_ms() + left;
		if (until == 0)
			until = 1;
		atomic_compare_exchange_strong(&g_transfer_until_ms, &cur, until);
		cur = atomic_load(&g_transfer_until_ms);
	}
	return now_ms() < cur;
}

/* call.transfer: the agent sent REFER; the caller will call the target. */
static int run_call_transfer(struct req *r, MYSQL *m)
{
	char call_id[256], target[256], user[64] = "", q[800], text[400];
	struct txn_row t;
	MYSQL_RES *res;
	MYSQL_ROW row;
	uint64_t tuid = 0;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "call reports are for the SIP proxy (local operator)");
	if (arg_str(r, "call_id", call_id, sizeof(call_id), 1) < 0
			|| arg_str(r, "target", target, sizeof(target), 1) < 0)
		return -1;
	/* the user part of the Refer-To URI: an extension key (or a number) */
	{
		const char *p = strncmp(target, "sip:", 4) == 0 ? target + 4
			: strncmp(target, "sips:", 5) == 0 ? target + 5 : target;
		size_t n = strcspn(p, "@;>");
		if (n >= sizeof(user))
			n = sizeof(user) - 1;
		memcpy(user, p, n);
		user[n] = '\0';
	}
	/* from now on a new call from a trunk may be this transfer's second leg
	 * (set before the TXN changes: see transfer_possible) */
	transfer_window_open();
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	if (txn_by_call(r, m, call_id, &t, 1) < 0)
		goto fail;
	if (strcmp(t.status, "Assigned") != 0) {
		mysql_query(m, "ROLLBACK");
		return req_fail(r, CCQ_E_CONFLICT, "only an answered call can be transferred");
	}
	{
		char esc[140];
		mysql_real_escape_string(m, esc, user, strlen(user));
		snprintf(q, sizeof(q), "SELECT id, ext_key, name FROM user WHERE org_id = %u AND ext_key = '%s'",
			t.org_id, esc);
	}
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		goto fail;
	if ((row = mysql_fetch_row(res))) {
		tuid = strtoull(row[0], NULL, 10);
		snprintf(text, sizeof(text), "Transferring to %s - %s", row[1], row[2]);
	} else {
		snprintf(text, sizeof(text), "Transferring to %s", user[0] ? user : target);
	}
	mysql_free_result(res);
	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Transferring', transfer_user_id = %s%llu, "
		"transfer_at = UTC_TIMESTAMP(3), updated_at = UTC_TIMESTAMP(3) WHERE id = %llu",
		tuid ? "" : "NULL + ", (unsigned long long)tuid, (unsigned long long)t.id);
	if (db_exec(&r->j, m, q, strlen(q)) < 0 || journey(r, m, t.id, "transferring", text) < 0)
		goto fail;
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	{
		struct call_after *a = after_of(r);
		a->org_id = t.org_id;
		a->inbox_id = t.inbox_id;
		a->txn = t.id;
		snprintf(a->event, sizeof(a->event), "call.transferring");
		snprintf(a->inbox, sizeof(a->inbox), "%s", t.inbox);
		snprintf(a->text, sizeof(a->text), "call %llu in inbox %s: %s", (unsigned long long)t.id,
			t.inbox, text);
	}
	reply_simple(r, "ok", 0, NULL);
	return 0;
fail:
	return req_rollback(r, m);
}

/*
 * The new call of a blind transfer: from a trunk, to the extension a
 * Transferring TXN (from the same caller, in the last two minutes) is being
 * transferred to. Attaches the call as the TXN's new leg and rings the
 * target. Returns 1 (handled: reply built), 0 (not a transfer), -1 (error).
 */
static int attach_transfer(struct req *r, MYSQL *m, const char *call_id, const char *dest,
		const char *caller)
{
	char q[1500], esc_d[140], esc_c[140];
	MYSQL_RES *res;
	MYSQL_ROW row;
	uint64_t txn = 0, tuid = 0;
	struct ring_pick p;
	struct txn_row t;
	char text[1200], prev_leg[256] = "";

	if (!dest[0])
		return 0;
	mysql_real_escape_string(m, esc_d, dest, strlen(dest));
	mysql_real_escape_string(m, esc_c, caller, strlen(caller));
	snprintf(q, sizeof(q), "SELECT t.id, u.id FROM txn t JOIN user u ON u.id = t.transfer_user_id "
		"WHERE t.status = 'Transferring' AND u.ext_key = '%s' AND u.org_id = t.org_id "
		"AND (t.caller_id = '%s' OR t.number LIKE CONCAT('%%', '%s')) "
		"AND t.transfer_at > UTC_TIMESTAMP(3) - INTERVAL 120 SECOND ORDER BY t.transfer_at DESC LIMIT 1",
		esc_d, esc_c, esc_c);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		txn = strtoull(row[0], NULL, 10);
		tuid = strtoull(row[1], NULL, 10);
	}
	mysql_free_result(res);
	if (!txn)
		return 0;
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	/* the live leg before this one ('' once the transferring agent left);
	 * the row is locked and still Transferring, or this is not a transfer
	 * any more (the old leg's report, on another worker, came first) */
	snprintf(q, sizeof(q), "SELECT COALESCE(current_call_id, sip_call_id), status FROM txn "
		"WHERE id = %llu FOR UPDATE", (unsigned long long)txn);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		goto fail;
	if ((row = mysql_fetch_row(res))) {
		snprintf(prev_leg, sizeof(prev_leg), "%s", row[0] ? row[0] : "");
		if (strcmp(row[1], "Transferring") != 0)
			txn = 0;
	}
	mysql_free_result(res);
	if (!txn) {
		mysql_query(m, "ROLLBACK");
		return 0;
	}
	{
		struct qb qq;
		qb_init(&qq);
		qb_add(&qq, "INSERT INTO txn_leg (call_id, txn_id, kind, created_at) VALUES (");
		qb_str(&qq, m, call_id, strlen(call_id));
		qb_add(&qq, ", %llu, 'transfer', UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE txn_id = txn_id",
			(unsigned long long)txn);
		if (qq.oom || db_exec(&r->j, m, qq.buf, qq.len) < 0) {
			qb_free(&qq);
			goto fail;
		}
		qq.len = 0;
		qb_add(&qq, "UPDATE txn SET current_call_id = ");
		qb_str(&qq, m, call_id, strlen(call_id));
		qb_add(&qq, ", updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)txn);
		if (qq.oom || db_exec(&r->j, m, qq.buf, qq.len) < 0) {
			qb_free(&qq);
			goto fail;
		}
		qb_free(&qq);
	}
	if (txn_by_call(r, m, call_id, &t, 0) < 0)
		goto fail;
	/* ring the target's devices (whether or not they are "available":
	 * the transferring agent chose them) */
	memset(&p, 0, sizeof(p));
	snprintf(q, sizeof(q), "SELECT DISTINCT d.username, d.domain, d.kind, d.label, u.ext_key, u.name "
		"FROM device d JOIN user u ON u.id = d.user_id JOIN device_contact c ON c.device_id = d.id "
		"WHERE d.user_id = %llu AND d.enabled = 1 AND c.expires_at > UTC_TIMESTAMP(3) "
		"ORDER BY d.id LIMIT 8", (unsigned long long)tuid);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		goto fail;
	while ((row = mysql_fetch_row(res)) && p.ntargets < 8) {
		size_t l = strlen(p.devices);
		snprintf(p.targets[p.ntargets++], sizeof(p.targets[0]), "sip:%s@%s", row[0], row[1]);
		snprintf(p.devices + l, sizeof(p.devices) - l, "%s%s", l ? ", " : "", row[2]);
		snprintf(p.ext, sizeof(p.ext), "%s", row[4]);
		snprintf(p.name, sizeof(p.name), "%s", row[5]);
	}
	mysql_free_result(res);
	if (p.ntargets == 0) {
		struct qb qq;
		if (journey(r, m, txn, "transfer_failed", "Transfer target has no registered device") < 0)
			goto fail;
		qb_init(&qq);
		if (prev_leg[0]) {
			/* the call stays with the transferring agent, on the old leg */
			qb_add(&qq, "UPDATE txn SET status = 'Assigned', current_call_id = ");
			qb_str(&qq, m, prev_leg, strlen(prev_leg));
			qb_add(&qq, " WHERE id = %llu", (unsigned long long)txn);
		} else {
			/* the agent had already left: nobody is on the call any more */
			qb_add(&qq, "UPDATE txn SET status = 'Ended', result = 'answered', "
				"ended_at = UTC_TIMESTAMP(3), updated_at = UTC_TIMESTAMP(3) WHERE id = %llu",
				(unsigned long long)txn);
		}
		if (qq.oom || db_exec(&r->j, m, qq.buf, qq.len) < 0) {
			qb_free(&qq);
			goto fail;
		}
		qb_free(&qq);
		if (!prev_leg[0] && journey(r, m, txn, "ended", "Call ended: the transfer failed "
				"after the agent had left") < 0)
			goto fail;
		if (db_exec(&r->j, m, "COMMIT", 6) < 0)
			return -1;
		reply_simple(r, "reject", 480, "Temporarily Unavailable");
		return 1;
	}
	snprintf(q, sizeof(q), "UPDATE txn SET status = 'Assigning', agent_id = %llu, device_id = NULL "
		"WHERE id = %llu", (unsigned long long)tuid, (unsigned long long)txn);
	snprintf(text, sizeof(text), "Ringing %s - %s - %s (transfer)", p.ext, p.name, p.devices);
	if (db_exec(&r->j, m, q, strlen(q)) < 0 || journey(r, m, txn, "ringing", text) < 0
			|| rec_decide(r, m, txn, tuid, &p.rec) < 0)
		goto fail;
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	pack_ring(req_reply(r), txn, t.inbox, t.ring_timeout, &p);
	return 1;
fail:
	return req_rollback(r, m);
}

/* ---- call.route --------------------------------------------------------- */

/* What the directory cache keeps for a source address and a DID. */
struct trunk_fact {
	uint64_t id;                 /* 0: not a trunk */
	char name[101];
};

struct did_fact {
	uint64_t inbox;              /* 0: nobody owns this DID */
	uint32_t org;
	char name[101], country[3];
	unsigned ring_timeout, max_wait;
	int rec_inbox, rec_org;      /* record_calls: inbox's (-1 unset), org's */
};

static int trunk_by_source(struct req *r, MYSQL *m, const char *src, uint64_t port,
		struct trunk_fact *f)
{
	char key[96], esc[140], q[300];
	uint64_t gen = dircache_gen();
	MYSQL_RES *res;
	MYSQL_ROW row;

	snprintf(key, sizeof(key), "%s|%llu", src, (unsigned long long)port);
	if (dircache_get(DC_TRUNK, key, f, sizeof(*f)))
		return 0;
	memset(f, 0, sizeof(*f));
	mysql_real_escape_string(m, esc, src, strlen(src));
	snprintf(q, sizeof(q), "SELECT id, name FROM trunk WHERE address = '%s' AND port = %llu",
		esc, (unsigned long long)port);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		f->id = strtoull(row[0], NULL, 10);
		snprintf(f->name, sizeof(f->name), "%s", row[1]);
	}
	mysql_free_result(res);
	dircache_put(DC_TRUNK, key, f, sizeof(*f), gen);
	return 0;
}

/* e164did: digits without '+' */
static int inbox_by_did(struct req *r, MYSQL *m, const char *e164did, struct did_fact *f)
{
	char q[500];
	uint64_t gen = dircache_gen();
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (dircache_get(DC_DID, e164did, f, sizeof(*f)))
		return 0;
	memset(f, 0, sizeof(*f));
	snprintf(q, sizeof(q), "SELECT i.id, i.name, i.org_id, o.default_country, i.ring_timeout, "
		"i.max_wait, i.record_calls, o.record_calls FROM inbox_did d "
		"JOIN inbox i ON i.id = d.inbox_id JOIN org o ON o.id = i.org_id WHERE d.did = '+%s'",
		e164did);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	if ((row = mysql_fetch_row(res))) {
		f->inbox = strtoull(row[0], NULL, 10);
		snprintf(f->name, sizeof(f->name), "%s", row[1]);
		f->org = (uint32_t)strtoul(row[2], NULL, 10);
		snprintf(f->country, sizeof(f->country), "%s", row[3]);
		f->ring_timeout = (unsigned)strtoul(row[4], NULL, 10);
		f->max_wait = (unsigned)strtoul(row[5], NULL, 10);
		f->rec_inbox = row[6] ? atoi(row[6]) != 0 : -1;
		f->rec_org = row[7] && atoi(row[7]) != 0;
	}
	mysql_free_result(res);
	dircache_put(DC_DID, e164did, f, sizeof(*f), gen);
	return 0;
}

/* The INSERT of a new inbound TXN: its id @ccq_txn (drawn from txn_seq
 * by the claim's statement, see qb_claim, or the answered one when a
 * decision's writes are run again), its customer @ccq_cust, its agent
 * @ccq_agent (Assigning), or none (Waiting), created at 'at' (an SQL time,
 * the decision's). The first leg is a separate part (qb_first_leg). */
static void qb_new_txn(struct qb *q, MYSQL *m, const char *call_id, const char *from,
		const struct did_fact *d, uint64_t trunk, const char *e164did, const char *src,
		uint64_t port, const char *caller, const char *e164caller, const char *at)
{
	char s2[80];
	qb_add(q, ";INSERT INTO txn (id, org_id, inbox_id, customer_id, trunk_id, kind, direction, "
		"call_type, status, agent_id, sip_call_id, current_call_id, from_uri, to_uri, "
		"source_addr, caller_id, number, created_at, updated_at) VALUES (@ccq_txn, %u, %llu, "
		"@ccq_cust, "
		"%llu, 'call', 'inbound', 'direct', IF(@ccq_agent IS NULL, 'Waiting', 'Assigning'), "
		"@ccq_agent, ", d->org, (unsigned long long)d->inbox, (unsigned long long)trunk);
	qb_str(q, m, call_id, strlen(call_id));
	qb_add(q, ", ");
	qb_str(q, m, call_id, strlen(call_id));
	qb_add(q, ", ");
	qb_str(q, m, from, strlen(from));
	qb_add(q, ", '+%s', ", e164did);
	snprintf(s2, sizeof(s2), "%s:%llu", src, (unsigned long long)port);
	qb_str(q, m, s2, strlen(s2));
	qb_add(q, ", ");
	qb_str(q, m, caller, strlen(caller));
	qb_add(q, ", ");
	if (e164caller[0])
		qb_add(q, "'+%s'", e164caller);
	else
		qb_add(q, "NULL");
	qb_add(q, ", %s, %s)", at, at);
}

static void qb_first_leg(struct qb *q, MYSQL *m, const char *call_id, const char *at)
{
	qb_add(q, ";INSERT INTO txn_leg (call_id, txn_id, kind, created_at) VALUES (");
	qb_str(q, m, call_id, strlen(call_id));
	qb_add(q, ", @ccq_txn, 'first', %s)", at);
}

/* One more row of the batch's INSERT INTO txn_event ... SELECT for TXN
 * @ccq_txn (after its first row); claimed: only if a member was claimed */
static void qb_event_row(struct qb *q, MYSQL *m, int claimed, const char *kind,
		const char *text, const char *at)
{
	qb_add(q, " UNION ALL SELECT @ccq_txn, %s, '%s', ", at, kind);
	qb_str(q, m, text, utf8_cut(text, CCQ_EVENT_TEXT_MAX));
	qb_add(q, "%s", claimed ? " FROM DUAL WHERE @ccq_agent IS NOT NULL" : "");
}

/* The notification of a new call (after_call pushes it to watchers). */
static void route_after(struct req *r, const struct did_fact *d, uint64_t txn,
		const char *call_id, const char *pretty, const char *cust_name, const char *e164caller)
{
	struct call_after *a = after_of(r);
	if (!a)
		return;
	a->org_id = d->org;
	a->inbox_id = (uint32_t)d->inbox;
	a->txn = txn;
	snprintf(a->call_id, sizeof(a->call_id), "%s", call_id);
	snprintf(a->event, sizeof(a->event), "call.incoming");
	snprintf(a->text, sizeof(a->text), "incoming call in inbox %s from %s%s%s%s", d->name,
		pretty, cust_name[0] ? " (" : "", cust_name, cust_name[0] ? ")" : "");
	snprintf(a->number, sizeof(a->number), "%s%s", e164caller[0] ? "+" : "", e164caller);
	snprintf(a->customer, sizeof(a->customer), "%s", cust_name);
	snprintf(a->inbox, sizeof(a->inbox), "%s", d->name);
}

/* The customer's name into a notification route_after made without it
 * (the decision answered before the name was read). */
static void route_after_customer(struct call_after *a, const char *cust_name)
{
	size_t n = strlen(a->text);

	if (!cust_name[0] || a->customer[0])
		return;
	snprintf(a->customer, sizeof(a->customer), "%s", cust_name);
	snprintf(a->text + n, sizeof(a->text) - n, " (%s)", a->customer);
}

/* What run_call_route's batch hands to route_mid. */
struct route_ctx {
	struct req *r;
	const struct did_fact *d;
	struct ring_pick *pick;
	const char *call_id, *pretty, *number;
	struct qb *qcust, *q1, *q2;   /* the batch's parts, for r->again */
	int claimed, answered;
	uint64_t agent, txn;
	char cname[101];
};

/*
 * The result of the decision batch's SELECT (agent, TXN id, the TXN the
 * Call-ID already has if any), read while MySQL looks up the customer,
 * writes the TXN, its first leg, the journey events and the ring and
 * commits. With an agent claimed, the answer (ring) goes out now. The
 * batch is all in MySQL's hands: if queued died now, MySQL would still run
 * it to its COMMIT. If it fails (MySQL lost, a lock, a full disk), r->again
 * writes the same TXN (same id, same agent) again: route_write_again.
 */
static void route_mid(struct db_job *j, MYSQL_RES *res, void *arg)
{
	struct route_ctx *x = arg;
	struct req *r = x->r;
	MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;

	(void)j;
	x->claimed = row && row[0];
	x->agent = x->claimed ? strtoull(row[0], NULL, 10) : 0;
	x->txn = row && row[1] ? strtoull(row[1], NULL, 10) : 0;
	/* the Call-ID has a TXN: a retried request; the batch's INSERT fails
	 * (duplicate key) and the general path decides: no answer now */
	if (!x->claimed || !x->txn || (row && row[2]))
		return;
	qb_init(&r->again);
	qb_add(&r->again, "SET @ccq_agent = %llu, @ccq_cust = NULL, @ccq_cname = NULL;"
		"START TRANSACTION%s%s%s%s;COMMIT", (unsigned long long)x->agent,
		x->qcust->len ? ";" : "", x->qcust->len ? x->qcust->buf : "",
		x->q1->buf ? x->q1->buf : "", x->q2->buf ? x->q2->buf : "");
	if (r->again.oom) {
		qb_free(&r->again);
		return;   /* answered after the COMMIT instead */
	}
	/* the customer's name is read after the answer: run_call_route puts
	 * it into the notification when the batch is through */
	route_after(r, x->d, x->txn, x->call_id, x->pretty, "", x->number);
	if (!r->after_data) {
		qb_free(&r->again);
		return;
	}
	((struct call_after *)r->after_data)->txn = x->txn;
	rec_meta(&x->pick->rec, x->txn, x->d->org, x->d->inbox, x->pick->ext);
	pack_ring(req_reply(r), x->txn, x->d->name, x->d->ring_timeout, x->pick);
	/* counted before the answer leaves: a client that reads server.stats
	 * once it has the answer finds the decision there */
	ops_route_path(ROUTE_CLAIMED);
	req_answer_now(r);
	x->answered = 1;
}

/*
 * A decision answered early whose batch then failed: write its TXN as
 * answered (same id, same agent, Assigning; first leg, events, ring) from
 * r->again. The TXN may be there already (the COMMIT landed and only its
 * acknowledgement was lost: a duplicate Call-ID), or its id may have been
 * handed out again by a MySQL that crashed before flushing it (a duplicate
 * id): then it gets a new id, which the proxy does not know (the call's
 * later reports find the TXN by Call-ID).
 */
static int route_write_again(struct req *r, MYSQL *m)
{
	struct call_after *a = r->after_data;
	struct qb q;

	if (!a || !r->again.buf)
		return req_fail(r, CCQ_E_INTERNAL, "an answered decision has nothing to write again");
	for (int pass = 0; pass < 2; pass++) {
		MYSQL_RES *res;
		int rc, found;

		r->j.err = 0;
		r->j.errmsg[0] = '\0';
		r->j.dup_key = 0;
		qb_init(&q);
		if (pass == 0)
			qb_add(&q, "SET @ccq_txn = %llu;", (unsigned long long)a->txn);
		else
			qb_add(&q, "SET @ccq_txn = NEXTVAL(txn_seq);");
		qb_add(&q, "%s", r->again.buf);
		r->j.expect_dup = 1;
		rc = req_multi_qb(r, m, &q, NULL, 0, NULL);
		r->j.expect_dup = 0;
		if (rc == 0 && (res = db_select(&r->j, m, "SELECT @ccq_txn, @ccq_cname", 27))) {
			/* the id (new on the second pass) and the customer, for the
			 * notification (after_call) */
			MYSQL_ROW row = mysql_fetch_row(res);
			if (row && row[0])
				a->txn = strtoull(row[0], NULL, 10);
			if (row && row[1])
				route_after_customer(a, row[1]);
			mysql_free_result(res);
			r->j.err = 0;
		}
		if (rc == 0) {
			LOG_N("call %s: TXN %llu written again after its decision's batch failed",
				a->call_id, (unsigned long long)a->txn);
			return 0;
		}
		if (!r->j.dup_key || r->j.conn_lost) {
			if (!r->j.conn_lost)
				mysql_query(m, "ROLLBACK");
			req_rewrite_pending(r);
			return -1;
		}
		mysql_query(m, "ROLLBACK");
		qb_init(&q);
		qb_add(&q, "SELECT id FROM txn WHERE sip_call_id = ");
		qb_str(&q, m, a->call_id, strlen(a->call_id));
		r->j.err = 0;
		r->j.dup_key = 0;
		if (!(res = req_select_qb(r, m, &q)))
			return -1;
		found = mysql_fetch_row(res) != NULL;
		mysql_free_result(res);
		if (found) {
			LOG_N("call %s: TXN %llu had been written after all", a->call_id,
				(unsigned long long)a->txn);
			return 0;
		}
		LOG_W("call %s: TXN id %llu was handed out again by MySQL meanwhile; writing the "
			"call's TXN with a new id", a->call_id, (unsigned long long)a->txn);
	}
	return req_fail(r, CCQ_E_INTERNAL, "the answered decision's TXN could not be written");
}

/*
 * A new call from a carrier. The usual case is one round trip to MySQL:
 * one batch of statements holds, in one SELECT (qb_claim), the claim of
 * the member queued's view puts first (their user row, FOR UPDATE SKIP
 * LOCKED, every availability check: see claim_agent) and the outcome (the
 * TXN's id drawn from the sequence txn_seq), then the customer lookup,
 * the TXN (Assigning to that member if the claim held, else Waiting), its
 * first leg, its first journey events, the ring, and the COMMIT; the statements
 * after the claim depend on it through the session variable @ccq_agent.
 * With the claim held, the answer leaves when the SELECT's result arrives:
 * the caller waits for the claim only, not for the writes or the COMMIT
 * (route_mid; route_write_again if the rest then fails). Trunks and DIDs
 * come from the directory cache. A refused claim or nobody free: the TXN
 * is committed Waiting, and the general path (pick_agent or the queue)
 * runs in a second transaction. A retried request (its Call-ID has a TXN,
 * which the SELECT also reads: no answer then) stops at the TXN's INSERT
 * (duplicate key) and takes the general path.
 */
static int run_call_route(struct req *r, MYSQL *m)
{
	char call_id[256], from[512], caller[64], caller_name[128], did[64], src[64];
	char e164did[16], e164caller[16] = "", text[1200], pretty[40], at[64];
	uint64_t port = 0;
	struct trunk_fact tr;
	struct did_fact d;
	char plus[24];
	MYSQL_RES *res[16];
	int rc, have, retry = 0, mid_stmt, cust_stmt;
	struct av_member c;
	int64_t now;
	struct qb qq, qcust, q1, q2;
	struct txn_row t;
	struct ring_pick pick;
	msgpack_packer *pk;
	struct route_ctx x;
	const char *why;

	if (r->early)   /* run again after its answer: write what it answered */
		return route_write_again(r, m);
	memset(&x, 0, sizeof(x));

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "call decisions are for the SIP proxy (local operator)");
	if (arg_str(r, "call_id", call_id, sizeof(call_id), 1) < 0
			|| arg_str(r, "from", from, sizeof(from), 0) < 0
			|| arg_str(r, "caller", caller, sizeof(caller), 0) < 0
			|| arg_str(r, "caller_name", caller_name, sizeof(caller_name), 0) < 0
			|| arg_str(r, "did", did, sizeof(did), 0) < 0
			|| arg_str(r, "source_ip", src, sizeof(src), 1) < 0
			|| arg_uint(r, "source_port", &port, 0, 65535) < 0)
		return -1;

	/* 1. a carrier trunk? (by source address and port) */
	if (trunk_by_source(r, m, src, port, &tr) < 0)
		return -1;
	if (!tr.id)
		return reply_simple(r, "auth", 0, NULL); /* not a trunk: a device must authenticate */

	/* 2a. the second leg of a blind transfer: the caller, told by the agent's
	 * REFER, calls the target extension through the same trunk */
	if ((rc = transfer_possible(r, m)) < 0)
		return -1;
	if (rc) {
		int rc2 = attach_transfer(r, m, call_id, did, caller);
		if (rc2 > 0)
			av_soft_dirty();  /* the target rings: read the views again */
		if (rc2 != 0)
			return rc2 < 0 ? -1 : 0;
	}

	/* 2. the DID (carriers send E.164, with or without '+') */
	{
		char pdid[70];
		snprintf(pdid, sizeof(pdid), "%s%s", did[0] == '+' ? "" : "+", did);
		if (ccq_e164_normalize(pdid, strlen(pdid), NULL, e164did, &why) < 0) {
			LOG_N("call %s from trunk %s to '%s': not a number (%s)", call_id, tr.name, did, why);
			return reply_simple(r, "reject", 404, "Unknown number");
		}
	}
	if (inbox_by_did(r, m, e164did, &d) < 0)
		return -1;
	if (!d.inbox) {
		LOG_N("call %s from trunk %s to +%s: no inbox has this DID (404)", call_id, tr.name,
			e164did);
		return reply_simple(r, "reject", 404, "Unknown number");
	}
	if (caller[0] && ccq_e164_normalize(caller, strlen(caller), d.country, e164caller, &why) < 0)
		e164caller[0] = '\0'; /* withheld or odd: the journey keeps the raw caller ID */

	/* 3. the member to offer the call to, from queued's view of the
	 * inbox (read again from MySQL when stale, see agentview.h) */
	now = epoch_ms();
	if (view_fresh(r, m, (uint32_t)d.inbox, now, AV_DECISION_AGE_MS) < 0)
		return -1;
	have = av_take((uint32_t)d.inbox, NULL, 0, now, &c);
	if (have && load_devices(r, m, &c) < 0) {
		av_untake((uint32_t)d.inbox, c.id, 0);
		return -1;
	}
	if (have && ring_devices(&c, &pick) == 0) {
		av_untake((uint32_t)d.inbox, c.id, 0);   /* no device left: the general path */
		have = 0;
	}
	if (e164caller[0]) {
		snprintf(plus, sizeof(plus), "+%s", e164caller);
		calls_pretty_number(plus, pretty, sizeof(pretty));
	} else {
		snprintf(pretty, sizeof(pretty), "%s", caller[0] ? caller : "a withheld number");
	}

	/* 4. one round trip: the claim of that member (see claim_agent) and
	 * the outcome with the TXN's id in one SELECT (qb_claim), then the
	 * customer with the caller's number, the TXN (Assigning to the member
	 * if claimed, else Waiting), its first leg, journey events and ring,
	 * COMMIT. When the claim held, queued answers as soon as the
	 * SELECT's result arrives (route_mid), while MySQL writes the rest and
	 * commits. A retried
	 * request (its Call-ID has a TXN) is not answered there, fails at the
	 * TXN's INSERT (duplicate key) and takes the general path. */
	qb_init(&qcust);
	qb_init(&q1);
	qb_init(&q2);
	qb_init(&qq);
	if (e164caller[0])   /* a result (the name, for the notification) and @ccq_cust */
		qb_customer(&qcust, m, d.org, plus, "@ccq_cust := c.id, @ccq_cname := c.name");
	if (have)
		rec_settle(&pick.rec, c.record, d.rec_inbox, d.rec_org);
	/* the batch's times are the decision's, not those at which MySQL
	 * writes them after the answer (the call's reports, with the proxy's
	 * times, may come right after; a rewrite keeps them too) */
	snprintf(at, sizeof(at), "FROM_UNIXTIME(%lld.%03lld)", (long long)(now / 1000),
		(long long)(now % 1000));
	qb_new_txn(&q1, m, call_id, from, &d, tr.id, e164did, src, port, caller, e164caller, at);
	qb_first_leg(&q2, m, call_id, at);
	/* "Call received from <number> (<customer>) via trunk <name>" */
	snprintf(text, sizeof(text), "Call received from %s", pretty);
	qb_add(&q2, ";INSERT INTO txn_event (txn_id, at, kind, text) SELECT @ccq_txn, %s, "
		"'received', LEFT(CONCAT(", at);
	qb_str(&q2, m, text, utf8_cut(text, CCQ_EVENT_TEXT_MAX));
	qb_add(&q2, ", IF(@ccq_cname IS NULL, '', CONCAT(' (', @ccq_cname, ')')), ");
	snprintf(text, sizeof(text), " via trunk %s", tr.name);
	qb_str(&q2, m, text, utf8_cut(text, CCQ_EVENT_TEXT_MAX));
	qb_add(&q2, "), 1024)");
	snprintf(text, sizeof(text), "Call routed to Inbox [%s]", d.name);
	qb_event_row(&q2, m, 0, "routed", text, at);
	if (have) {
		snprintf(text, sizeof(text), "Ringing %s - %s - %s", pick.ext, pick.name, pick.devices);
		qb_event_row(&q2, m, 1, "ringing", text, at);
		rec_journey_text(text, sizeof(text), pick.rec.record, pick.rec.rule);
		qb_event_row(&q2, m, 1, "recording", text, at);
		qb_add(&q2, ";INSERT INTO txn_ring (txn_id, user_id, at) SELECT @ccq_txn, @ccq_agent, "
			"%s FROM DUAL WHERE @ccq_agent IS NOT NULL", at);
	}
	/* statements: START, the claim and outcome (route_mid; the session's
	 * variables are set there, see qb_claim), [customer], INSERT txn, ...
	 * COMMIT */
	mid_stmt = 1;
	cust_stmt = qcust.len ? mid_stmt + 1 : -1;
	qb_add(&qq, "START TRANSACTION;");
	qb_claim(&qq, m, (uint32_t)d.inbox, have ? c.id : 0, call_id);
	qb_add(&qq, "%s%s%s%s;COMMIT", qcust.len ? ";" : "", qcust.len ? qcust.buf : "",
		q1.buf ? q1.buf : "", q2.buf ? q2.buf : "");
	if (qcust.oom || q1.oom || q2.oom)
		qq.oom = 1;
	x.r = r;
	x.d = &d;
	x.pick = &pick;
	x.call_id = call_id;
	x.pretty = pretty;
	x.number = e164caller;
	x.qcust = &qcust;
	x.q1 = &q1;
	x.q2 = &q2;
	r->j.expect_dup = 1;
	if (qq.oom) {
		rc = req_fail(r, CCQ_E_INTERNAL, "out of memory");
		for (int i = 0; i < 16; i++)
			res[i] = NULL;
	} else {
		rc = db_exec_multi_mid(&r->j, m, qq.buf, qq.len, res, 16, NULL, mid_stmt, route_mid,
			&x);   /* fewer than 16 statements */
	}
	r->j.expect_dup = 0;
	if (rc == 0 && cust_stmt >= 0 && res[cust_stmt]) {
		/* the customer with the caller's number (read after the answer) */
		MYSQL_ROW row = mysql_fetch_row(res[cust_stmt]);
		if (row && row[1])
			snprintf(x.cname, sizeof(x.cname), "%s", row[1]);
	}
	qb_free(&qq);
	qb_free(&qcust);
	qb_free(&q1);
	qb_free(&q2);
	for (int i = 0; i < 16; i++)
		if (res[i])
			mysql_free_result(res[i]);
	if (rc < 0 && x.answered) {
		/* answered (the agent's phones ring), but the rest of the batch
		 * failed: write the TXN as answered now; after a lost connection
		 * the worker reconnects and runs the job again (r->early) */
		LOG_W("call %s: the decision's writes failed after its answer (%s); writing them "
			"again", call_id, r->j.errmsg);
		req_rewrite_pending(r);   /* the call's reports wait for it, see txn_from_res */
		if (r->j.conn_lost)
			return -1;
		mysql_query(m, "ROLLBACK");
		return route_write_again(r, m);
	}
	if (rc < 0) {
		if (have)
			av_untake((uint32_t)d.inbox, c.id, 0);
		if (!r->j.dup_key || r->j.conn_lost)
			goto fail2;
		/* a retried request: its TXN exists; the general path decides,
		 * without the member's row this batch locked (pick_agent may wait
		 * for other rows: never while holding one) */
		r->j.err = 0;
		r->j.errmsg[0] = '\0';
		r->j.dup_key = 0;
		if (db_exec(&r->j, m, "ROLLBACK", 8) < 0 || db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
			goto fail2;
		retry = 1;
		ops_route_path(ROUTE_RETRIED);
	} else {
		if (have && !x.claimed)
			av_untake((uint32_t)d.inbox, c.id, 1);   /* refused */
		if (!x.answered)   /* (else counted by route_mid) */
			ops_route_path(x.claimed ? ROUTE_CLAIMED : have ? ROUTE_REFUSED
				: ROUTE_NO_CANDIDATE);
		if (!x.txn)
			return req_fail(r, CCQ_E_INTERNAL, "the new TXN's id was not returned");
		if (x.answered) {
			/* answered, and now committed */
			route_after_customer(r->after_data, x.cname);
			return 0;
		}
		route_after(r, &d, x.txn, call_id, pretty, x.cname, e164caller);
		if (x.claimed) {
			/* not answered early (out of memory for r->again): answer now */
			rec_meta(&pick.rec, x.txn, d.org, d.inbox, pick.ext);
			pack_ring(req_reply(r), x.txn, d.name, d.ring_timeout, &pick);
			return 0;
		}
		/* nobody claimed: the TXN is committed Waiting; the general path
		 * decides in a transaction of its own */
		if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
			return -1;
	}

	/* 5. the general path (the TXN exists; our transaction locks it): ring
	 * an agent, or queue */
	if (txn_by_call(r, m, call_id, &t, 1) < 0)
		goto fail2;
	if (!retry && strcmp(t.status, "Waiting") != 0) {
		/* the caller hung up between the two transactions */
		if (db_exec(&r->j, m, "COMMIT", 6) < 0)
			return -1;
		return reply_simple(r, "reject", 487, "Request Terminated");
	}
	rc = pick_agent(r, m, t.id, (uint32_t)d.inbox, &pick);
	if (rc < 0)
		goto fail2;
	if (rc == 1) {
		pk = req_reply(r);
		pack_ring(pk, t.id, d.name, d.ring_timeout, &pick);
	} else if (queue_or_miss(r, m, &t, &pk) < 0) {
		goto fail2;
	}
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	av_soft_dirty();  /* pick_agent decided from MySQL, not from the view */
	return 0;
fail2:
	if (!r->j.conn_lost)
		mysql_query(m, "ROLLBACK");
	return -1;
}

static void after_call(struct req *r)
{
	struct call_after *a = r->after_data;
	if (!a)
		return;
	if (a->event[0])
		calls_notify(a->event, a->org_id, a->inbox_id, a->txn, a->text, a->number,
			a->customer, a->inbox);
	if (a->queued)
		calls_queued(a->call_id[0] ? a->call_id : NULL, a->max_wait);
	if (a->wake_dispatch) {
		/* a free agent may take a waiting call or a callback */
		calls_kick();
		callbacks_kick();
	}
}

/* ---- call.ring_failed --------------------------------------------------- */

static int run_call_ring_failed(struct req *r, MYSQL *m)
{
	char call_id[256], q[600];
	struct txn_row t;
	struct ring_pick pick;
	msgpack_packer *pk;
	uint32_t rung = 0;
	int rc;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "call decisions are for the SIP proxy (local operator)");
	if (arg_str(r, "call_id", call_id, sizeof(call_id), 1) < 0)
		return -1;
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	if (txn_by_call(r, m, call_id, &t, 1) < 0)
		goto fail;
	snprintf(after_of(r)->call_id, sizeof(after_of(r)->call_id), "%s", call_id);
	/* an ended call stays ended (its end may have been decided first) */
	if (t.agent_id && strcmp(t.status, "Ended") != 0 && strcmp(t.status, "Failed") != 0) {
		char text[300] = "No answer";
		rung = t.agent_id;
		MYSQL_RES *res;
		MYSQL_ROW row;
		snprintf(q, sizeof(q), "SELECT ext_key, name FROM user WHERE id = %u", t.agent_id);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			goto fail;
		if ((row = mysql_fetch_row(res)))
			snprintf(text, sizeof(text), "No answer from %s - %s", row[0], row[1]);
		mysql_free_result(res);
		snprintf(q, sizeof(q), "UPDATE txn_ring SET result = 'no answer' WHERE txn_id = %llu "
			"AND user_id = %u", (unsigned long long)t.id, t.agent_id);
		if (db_exec(&r->j, m, q, strlen(q)) < 0 || journey(r, m, t.id, "no_answer", text) < 0)
			goto fail;
		snprintf(q, sizeof(q), "UPDATE txn SET status = 'Waiting', agent_id = NULL, "
			"updated_at = UTC_TIMESTAMP(3) WHERE id = %llu", (unsigned long long)t.id);
		if (db_exec(&r->j, m, q, strlen(q)) < 0)
			goto fail;
		after_of(r)->wake_dispatch = 1;
	}
	if (strcmp(t.status, "Ended") == 0 || strcmp(t.status, "Failed") == 0) {
		reply_simple(r, "reject", 487, "Request Terminated");
	} else if (t.max_wait > 0 && t.waited >= (long)t.max_wait) {
		/* rung long enough: the inbox's maximum wait bounds ringing too */
		if (calls_missed(r, m, t.id, t.org_id, t.inbox_id, t.inbox, t.number, &pk) < 0)
			goto fail;
	} else {
		rc = pick_agent(r, m, t.id, t.inbox_id, &pick);
		if (rc < 0)
			goto fail;
		if (rc == 1) {
			pk = req_reply(r);
			pack_ring(pk, t.id, t.inbox, t.ring_timeout, &pick);
		} else if (queue_or_miss(r, m, &t, &pk) < 0) {
			goto fail;
		}
	}
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	/* the rung agent is free again; whoever pick_agent took is read again */
	if (rung && !t.outbound && !t.callback)
		av_call_over(rung, 0, epoch_ms());
	av_soft_dirty();
	return 0;
fail:
	return req_rollback(r, m);
}

/* ---- call.answered ------------------------------------------------------ */

/* call.answered's reads, after START TRANSACTION (two statements, each
 * preceded by ';'): the TXN, locked (lock: qb_txn's), and the device by
 * the Contact of the 200 among the registrations (the TXN's agent's first) */
static void qb_answered_reads(struct qb *q, MYSQL *m, const char *call_id, const char *contact,
		int lock)
{
	qb_add(q, ";");
	qb_txn(q, m, call_id, 0, lock);
	qb_add(q, ";SELECT d.id, d.kind, d.label, u.ext_key, u.name, u.id FROM device_contact c "
		"JOIN device d ON d.id = c.device_id JOIN user u ON u.id = d.user_id WHERE c.contact = ");
	qb_str(q, m, contact, strlen(contact));
	qb_add(q, " ORDER BY u.id = COALESCE((SELECT t.agent_id FROM txn t WHERE t.id = "
		"(SELECT txn_id FROM txn_leg WHERE call_id = ");
	qb_str(q, m, call_id, strlen(call_id));
	qb_add(q, ")), 0) DESC LIMIT 1");
}

/* Is a TXN of this status answered already (a retransmitted 200, or a
 * report retried after the call's end)? */
static int answered_already(const struct txn_row *t)
{
	return strcmp(t->status, "Assigned") == 0 || strcmp(t->status, "Ended") == 0
		|| strcmp(t->status, "Failed") == 0;
}

/* call.answered's writes (each statement preceded by ';', no COMMIT) for
 * TXN t answered by the device of row (qb_answered_reads' second result;
 * NULL: not known), and the notification for after_call. */
static void qb_answered_writes(struct req *r, MYSQL *m, struct qb *w, struct txn_row *t,
		MYSQL_ROW row, const char *contact)
{
	char text[500], at[64];
	uint64_t dev = 0;
	struct call_after *a;

	if (t->outbound) {
		/* the customer answered the agent's call */
		dev = t->device_id;
		snprintf(text, sizeof(text), "Answered by %s", t->customer[0] ? t->customer
			: t->number[0] ? t->number : "the customer");
	} else if (row) {
		dev = strtoull(row[0], NULL, 10);
		snprintf(text, sizeof(text), "Answered by %s - %s - %s%s%s%s", row[3], row[4], row[1],
			row[2][0] ? " (" : "", row[2], row[2][0] ? ")" : "");
		if (!t->agent_id)
			t->agent_id = (uint32_t)strtoul(row[5], NULL, 10);
	} else {
		snprintf(text, sizeof(text), "Answered by %s", contact[0] ? contact : "an unknown device");
	}
	req_event_time(r, at, sizeof(at));
	qb_add(w, ";UPDATE txn SET status = 'Assigned', answered_at = COALESCE(answered_at, %s), "
		"updated_at = UTC_TIMESTAMP(3), device_id = %s%llu, agent_id = %s%u WHERE id = %llu;",
		at, dev ? "" : "NULL + ", (unsigned long long)dev, t->agent_id ? "" : "NULL + ",
		t->agent_id, (unsigned long long)t->id);
	qb_journey(w, m, t->id, "answered", text, at);
	if (t->agent_id)
		qb_add(w, ";UPDATE txn_ring SET result = 'answered' WHERE txn_id = %llu "
			"AND user_id = %u", (unsigned long long)t->id, t->agent_id);
	a = after_of(r);
	if (!a)
		return;          /* no notification; the writes are what matters */
	a->org_id = t->org_id;
	a->inbox_id = t->inbox_id;
	a->txn = t->id;
	snprintf(a->event, sizeof(a->event), "call.answered");
	snprintf(a->text, sizeof(a->text), "call %llu in inbox %s: %s", (unsigned long long)t->id,
		t->inbox, text);
	snprintf(a->inbox, sizeof(a->inbox), "%s", t->inbox);
}

static int answered_args(struct req *r, char *call_id, size_t cs, char *contact, size_t ks)
{
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "call reports are for the SIP proxy (local operator)");
	return arg_str(r, "call_id", call_id, cs, 1) < 0 || arg_str(r, "contact", contact, ks, 0) < 0
		? -1 : 0;
}

static int run_call_answered(struct req *r, MYSQL *m)
{
	char call_id[256], contact[256], q[1400];
	struct txn_row t;
	struct qb qq;
	MYSQL_RES *res[3], *dres;
	MYSQL_ROW row;

	if (req_who(r, m) < 0 || answered_args(r, call_id, sizeof(call_id), contact,
			sizeof(contact)) < 0)
		return -1;
	/* one round trip: START TRANSACTION and the reads */
	qb_init(&qq);
	qb_add(&qq, "START TRANSACTION");
	qb_answered_reads(&qq, m, call_id, contact, 1);
	if (req_multi_qb(r, m, &qq, res, 3, NULL) < 0)
		goto fail;
	dres = res[2];
	if (txn_from_res(r, res[1], call_id, &t) < 0) {
		mysql_free_result(dres);
		goto fail;
	}
	if (answered_already(&t)) {
		mysql_free_result(dres);
		mysql_query(m, "ROLLBACK");
		reply_simple(r, "ok", 0, NULL);
		return 0;
	}
	row = mysql_fetch_row(dres);
	if (!row && t.agent_id) {
		mysql_free_result(dres);
		snprintf(q, sizeof(q), "SELECT d.id, d.kind, d.label, u.ext_key, u.name, u.id "
			"FROM device d JOIN user u ON u.id = d.user_id WHERE u.id = %u AND d.enabled = 1 "
			"ORDER BY d.id LIMIT 1", t.agent_id);
		if (!(dres = db_select(&r->j, m, q, strlen(q))))
			goto fail;
		row = mysql_fetch_row(dres);
	}
	/* the writes and the commit: one round trip (the first write's ';'
	 * is skipped) */
	qb_init(&qq);
	qb_answered_writes(r, m, &qq, &t, row, contact);
	mysql_free_result(dres);
	qb_add(&qq, ";COMMIT");
	if (qq.oom) {
		qb_free(&qq);
		req_fail(r, CCQ_E_INTERNAL, "out of memory");
		goto fail;
	}
	if (db_exec_multi(&r->j, m, qq.buf + 1, qq.len - 1, NULL, 0, NULL) < 0) {
		qb_free(&qq);
		goto fail;
	}
	qb_free(&qq);
	reply_simple(r, "ok", 0, NULL);
	return 0;
fail:
	return req_rollback(r, m);
}

/* call.answered in a group (db.h struct db_group): the common case, a
 * TXN found with the answering device among the registrations */
static int group_answered_read(struct req *r, MYSQL *m, struct qb *q)
{
	char call_id[256], contact[256];
	if (answered_args(r, call_id, sizeof(call_id), contact, sizeof(contact)) < 0)
		return 0;
	/* NOWAIT: see struct db_group */
	qb_answered_reads(q, m, call_id, contact, 2);
	return 2;
}

static int group_answered_write(struct req *r, MYSQL *m, MYSQL_RES **res, struct qb *w,
		uint64_t *entity, uint64_t *order)
{
	char call_id[256], contact[256];
	struct txn_row t;
	MYSQL_ROW row;

	if (answered_args(r, call_id, sizeof(call_id), contact, sizeof(contact)) < 0)
		return 1;
	/* txn_from_res frees its result */
	if (txn_from_res(r, res[0], call_id, &t) < 0) {
		res[0] = NULL;
		return 1;
	}
	res[0] = NULL;
	*entity = t.id;
	if (answered_already(&t))
		return 0;           /* nothing to write; after() answers ok */
	row = mysql_fetch_row(res[1]);
	if (!row && t.agent_id)
		return 1;           /* the agent's device by another query: alone */
	*entity = t.id;
	qb_answered_writes(r, m, w, &t, row, contact);
	*order = t.agent_id;
	return 0;
}

static void group_answered_after(struct req *r, MYSQL *m)
{
	(void)m;
	reply_simple(r, "ok", 0, NULL);
}

static const struct op_group group_answered = { group_answered_read, group_answered_write,
	group_answered_after };

/* ---- call.ended --------------------------------------------------------- */

/* call.ended's arguments */
static int ended_args(struct req *r, char *call_id, size_t cs, char *by, size_t bs)
{
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "call reports are for the SIP proxy (local operator)");
	return arg_str(r, "call_id", call_id, cs, 1) < 0 || arg_str(r, "by", by, bs, 1) < 0 ? -1 : 0;
}

/* The common end of a call: TXN t (its live leg, not a callback, not
 * ended yet) ended by 'by' at 'at'. Appends the writes (each statement
 * preceded by ';', no COMMIT) to w; returns the result. */
static const char *qb_ended_writes(MYSQL *m, struct qb *w, const struct txn_row *t,
		const char *by, const char *at)
{
	const char *status = "Ended", *result;
	char text[200];

	if (strcmp(t->status, "Assigned") == 0) {
		result = "answered";
		if (t->outbound)
			/* the agent placed the call: "downstream" (by caller) is the agent */
			snprintf(text, sizeof(text), "Call ended by the %s",
				strcmp(by, "agent") == 0 ? "customer" : "agent");
		else
			snprintf(text, sizeof(text), "Call ended by the %s",
				strcmp(by, "agent") == 0 ? "agent" : "caller");
	} else if (strncmp(by, "failed", 6) == 0) {
		/* the proxy sent the caller a final error (e.g. failed:503) */
		int code = by[6] == ':' ? atoi(by + 7) : 0;
		status = "Failed";
		result = "failed";
		if (code >= 300 && code <= 699) {
			snprintf(text, sizeof(text), "Call failed (SIP %d)", code);
			qb_add(w, ";UPDATE txn SET failure_reason = 'SIP %d' WHERE id = %llu",
				code, (unsigned long long)t->id);
		} else {
			snprintf(text, sizeof(text), "Call failed");
		}
	} else {
		result = "abandoned";
		snprintf(text, sizeof(text), "Caller hung up while %s",
			strcmp(t->status, "Assigning") == 0 ? "ringing" : "waiting");
	}
	qb_add(w, ";UPDATE txn SET status = '%s', result = '%s', "
		"ended_at = %s, updated_at = UTC_TIMESTAMP(3) WHERE id = %llu;",
		status, result, at, (unsigned long long)t->id);
	qb_journey(w, m, t->id, "ended", text, at);
	if (t->agent_id && strcmp(result, "answered") == 0) {
		/* idle from the end of the call; wrap-up time before the next one */
		qb_add(w, ";");
		qb_agent_call_end(w, t->agent_id, at);
	} else if (t->agent_id) {
		qb_add(w, ";UPDATE txn_ring SET result = 'canceled' WHERE txn_id = %llu "
			"AND user_id = %u", (unsigned long long)t->id, t->agent_id);
	}
	return result;
}

/* What an ended call's TXN tells after_ended, once the end is committed. */
static void ended_after_data(struct req *r, const struct txn_row *t, const char *call_id,
		const char *result)
{
	struct call_after *a = after_of(r);
	if (!a)
		return;
	a->org_id = t->org_id;
	a->inbox_id = t->inbox_id;
	a->txn = t->id;
	a->wake_dispatch = 1;
	snprintf(a->call_id, sizeof(a->call_id), "%s", call_id);
	snprintf(a->event, sizeof(a->event), "%s", strcmp(result, "ignored") ? "call.ended" : "");
	snprintf(a->inbox, sizeof(a->inbox), "%s", t->inbox);
	snprintf(a->text, sizeof(a->text), "call %llu in inbox %s ended (%s)",
		(unsigned long long)t->id, t->inbox, result);
}

/* After an end's commit (worker): queued's view of the agent and the inbox. */
static void ended_views(struct req *r, MYSQL *m, const struct txn_row *t, int answered)
{
	/* queued's view of the agent (agentview.h): inbound direct calls are
	 * followed one by one, the rest is read again */
	if (t->agent_id && !t->outbound && !t->callback)
		av_call_over(t->agent_id, answered, epoch_ms());
	else
		av_soft_dirty();
	if (t->inbox_id && !t->outbound && view_fresh(r, m, t->inbox_id, epoch_ms(),
			AV_MAX_AGE_MS) < 0) {
		/* the end is committed: a view that could not be read is read by
		 * the next decision */
		r->j.err = 0;
		r->j.errmsg[0] = '\0';
		r->j.conn_lost = r->j.lock_lost = 0;
	}
}

static int run_call_ended(struct req *r, MYSQL *m)
{
	char call_id[256], by[32], q[600], at[64], cb_result[16];
	const char *result;
	struct txn_row t;
	struct qb w;
	MYSQL_RES *res[2];
	int rc;

	if (req_who(r, m) < 0 || ended_args(r, call_id, sizeof(call_id), by, sizeof(by)) < 0)
		return -1;
	{
		/* START TRANSACTION and the call's TXN (by its leg), locked: one
		 * round trip. A call without a TXN (a device's INVITE challenged
		 * with 407, a refused call) then costs a ROLLBACK more; a call
		 * whose answered decision is being written again meanwhile gets
		 * "not yet" from txn_from_res and its end is retried */
		struct qb lq;
		qb_init(&lq);
		qb_add(&lq, "START TRANSACTION;");
		qb_txn(&lq, m, call_id, 0, 1);
		rc = req_multi_qb(r, m, &lq, res, 2, NULL);
		if (rc < 0)
			goto fail;
		rc = txn_from_res(r, res[1], call_id, &t);
	}
	if (rc < 0) {
		if (r->j.err != CCQ_E_NOT_FOUND)
			goto fail;
		/* a call without a TXN (a device's call, a rejected one): nothing to end */
		mysql_query(m, "ROLLBACK");
		r->j.err = 0;
		r->j.errmsg[0] = '\0';
		reply_simple(r, "ok", 0, NULL);
		return 0;
	}
	if (strcmp(t.status, "Ended") == 0 || strcmp(t.status, "Failed") == 0) {
		mysql_query(m, "ROLLBACK");
		reply_simple(r, "ok", 0, NULL);
		return 0;
	}
	if (strcmp(call_id, t.current_call) != 0 || strcmp(t.status, "Transferring") == 0) {
		/* the leg a transfer left behind: the call goes on elsewhere */
		if (journey(r, m, t.id, "leg_ended", strcmp(t.status, "Transferring") == 0
				? "The transferring agent left the call" : "Previous leg ended") < 0)
			goto fail;
		if (t.agent_id && strcmp(t.status, "Transferring") == 0) {
			/* never backwards (see qb_agent_call_end) */
			snprintf(q, sizeof(q), "INSERT INTO agent_state (user_id, last_call_end) VALUES "
				"(%u, UTC_TIMESTAMP(3)) ON DUPLICATE KEY UPDATE last_call_end = "
				"GREATEST(COALESCE(last_call_end, VALUES(last_call_end)), "
				"VALUES(last_call_end))", t.agent_id);
			if (db_exec(&r->j, m, q, strlen(q)) < 0)
				goto fail;
		}
		if (strcmp(call_id, t.current_call) == 0) {
			/* the live leg left before the transfer's call arrived: '' marks
			 * "no live leg" until the new leg joins */
			snprintf(q, sizeof(q), "UPDATE txn SET current_call_id = '' WHERE id = %llu",
				(unsigned long long)t.id);
			if (db_exec(&r->j, m, q, strlen(q)) < 0)
				goto fail;
		}
		if (db_exec(&r->j, m, "COMMIT", 6) < 0)
			return -1;
		reply_simple(r, "ok", 0, NULL);
		return 0;
	}
	req_event_time(r, at, sizeof(at));
	/* a callback's request decides how its TXN ends (ops_callback.c) */
	rc = t.callback ? callbacks_call_ended(r, m, t.id, t.status, t.agent_id, by, at, cb_result,
		sizeof(cb_result)) : 1;
	if (rc < 0)
		goto fail;
	if (rc == 0) {
		result = cb_result;
		if (db_exec(&r->j, m, "COMMIT", 6) < 0)
			return -1;
	} else {
		/* the writes and the commit: one round trip (the first write's
		 * ';' is skipped) */
		qb_init(&w);
		result = qb_ended_writes(m, &w, &t, by, at);
		qb_add(&w, ";COMMIT");
		if (w.oom) {
			qb_free(&w);
			req_fail(r, CCQ_E_INTERNAL, "out of memory");
			goto fail;
		}
		rc = db_exec_multi(&r->j, m, w.buf + 1, w.len - 1, NULL, 0, NULL);
		qb_free(&w);
		if (rc < 0)
			goto fail;
	}
	ended_views(r, m, &t, strcmp(result, "answered") == 0);
	ended_after_data(r, &t, call_id, result);
	reply_simple(r, "ok", 0, NULL);
	return 0;
fail:
	return req_rollback(r, m);
}

/* call.ended in a group (db.h struct db_group): the common case, the end
 * of a TXN's live leg that is not a callback's. The TXN read and its
 * result for group_ended_after. */
struct ended_group {
	struct txn_row t;
	char result[16];
};

static int group_ended_read(struct req *r, MYSQL *m, struct qb *q)
{
	char call_id[256], by[32];
	if (ended_args(r, call_id, sizeof(call_id), by, sizeof(by)) < 0)
		return 0;
	qb_add(q, ";");
	qb_txn(q, m, call_id, 0, 2);      /* NOWAIT: see struct db_group */
	return 1;
}

static int group_ended_write(struct req *r, MYSQL *m, MYSQL_RES **res, struct qb *w,
		uint64_t *entity, uint64_t *order)
{
	char call_id[256], by[32], at[64];
	struct ended_group *g;
	struct txn_row t;

	if (ended_args(r, call_id, sizeof(call_id), by, sizeof(by)) < 0)
		return 1;
	/* txn_from_res frees its result */
	if (txn_from_res(r, res[0], call_id, &t) < 0) {
		res[0] = NULL;
		if (r->j.err != CCQ_E_NOT_FOUND)
			return 1;       /* a rewrite pending: alone (it waits) */
		/* a call without a TXN (a device's call, a rejected one):
		 * nothing to end; after() answers ok */
		r->j.err = 0;
		r->j.errmsg[0] = '\0';
		return 0;
	}
	res[0] = NULL;
	*entity = t.id;
	if (strcmp(t.status, "Ended") == 0 || strcmp(t.status, "Failed") == 0)
		return 0;           /* nothing to write; after() answers ok */
	if (strcmp(call_id, t.current_call) != 0 || strcmp(t.status, "Transferring") == 0
			|| t.callback)
		return 1;           /* a transfer's leg, a callback: alone */
	*order = t.agent_id;
	g = calloc(1, sizeof(*g));
	if (!g)
		return 1;
	req_event_time(r, at, sizeof(at));
	g->t = t;
	snprintf(g->result, sizeof(g->result), "%s", qb_ended_writes(m, w, &t, by, at));
	ended_after_data(r, &t, call_id, g->result);
	free(r->group_data);
	r->group_data = g;
	return 0;
}

static void group_ended_after(struct req *r, MYSQL *m)
{
	struct ended_group *g = r->group_data;
	if (g)
		ended_views(r, m, &g->t, strcmp(g->result, "answered") == 0);
	reply_simple(r, "ok", 0, NULL);
}

static const struct op_group group_ended = { group_ended_read, group_ended_write,
	group_ended_after };

static void after_ended(struct req *r)
{
	struct call_after *a = r->after_data;
	if (a)
		calls_forget(a->call_id);
	after_call(r);
}

/* ---- device.contact ------------------------------------------------------ */

static int run_device_contact(struct req *r, MYSQL *m)
{
	char user[65], domain[129], q[1400];
	uint64_t dev = 0, expires = 3600;
	int all = 0, before = 0, after = -1;
	const msgpack_object *cs;
	struct qb qq;
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "registration reports are for the SIP proxy");
	if (arg_str(r, "username", user, sizeof(user), 1) < 0
			|| arg_str(r, "domain", domain, sizeof(domain), 1) < 0
			|| arg_uint(r, "expires", &expires, 0, 86400 * 7) < 0
			|| arg_bool(r, "all", &all, 0) < 0)
		return -1;
	/* the device, locked (two reports of one device follow each other),
	 * and whether it is registered now: a refresh that leaves it
	 * registered changes nothing the member views hold */
	if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
		return -1;
	qb_init(&qq);
	qb_add(&qq, "SELECT d.id, (SELECT COUNT(*) FROM device_contact c WHERE c.device_id = d.id "
		"AND c.expires_at > UTC_TIMESTAMP(3)) > 0 FROM device d WHERE d.username = ");
	qb_str(&qq, m, user, strlen(user));
	qb_add(&qq, " AND d.domain = ");
	qb_str(&qq, m, domain, strlen(domain));
	qb_add(&qq, " FOR UPDATE");
	if (!(res = req_select_qb(r, m, &qq)))
		goto fail;
	if ((row = mysql_fetch_row(res))) {
		dev = strtoull(row[0], NULL, 10);
		before = atoi(row[1]) != 0;
	}
	mysql_free_result(res);
	if (!dev) {
		mysql_query(m, "ROLLBACK");
		return req_fail(r, CCQ_E_NOT_FOUND, "no device %s@%s", user, domain);
	}
	if (all) {
		after = -2;   /* read below */
		snprintf(q, sizeof(q), "DELETE FROM device_contact WHERE device_id = %llu",
			(unsigned long long)dev);
		if (db_exec(&r->j, m, q, strlen(q)) < 0)
			goto fail;
	}
	cs = ccq_map_get(r->args, "contacts");
	if (cs && cs->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < cs->via.array.size; i++) {
			char uri[256] = "";
			uint64_t exp = expires;
			const msgpack_object *c = &cs->via.array.ptr[i];
			if (ccq_map_strcpy(c, "uri", uri, sizeof(uri)) != 1 || !uri[0])
				continue;
			ccq_map_uint(c, "expires", &exp);
			qb_init(&qq);
			if (exp == 0)
				after = -2;
			else if (after == -1)
				after = 1;   /* a binding with time left: registered */
			if (exp == 0) {
				qb_add(&qq, "DELETE FROM device_contact WHERE device_id = %llu AND contact = ",
					(unsigned long long)dev);
				qb_str(&qq, m, uri, strlen(uri));
			} else {
				qb_add(&qq, "INSERT INTO device_contact (device_id, contact, expires_at) VALUES "
					"(%llu, ", (unsigned long long)dev);
				qb_str(&qq, m, uri, strlen(uri));
				qb_add(&qq, ", UTC_TIMESTAMP(3) + INTERVAL %llu SECOND) ON DUPLICATE KEY UPDATE "
					"expires_at = VALUES(expires_at)", (unsigned long long)exp);
			}
			if (qq.oom || db_exec(&r->j, m, qq.buf, qq.len) < 0) {
				qb_free(&qq);
				goto fail;
			}
			qb_free(&qq);
		}
	}
	if (after < 0) {
		/* a removal, or nothing with time left: ask */
		uint64_t n;
		int found;
		snprintf(q, sizeof(q), "SELECT COUNT(*) FROM device_contact WHERE device_id = %llu "
			"AND expires_at > UTC_TIMESTAMP(3)", (unsigned long long)dev);
		if (sql_u64(r, m, q, strlen(q), &n, &found) < 0)
			goto fail;
		after = found && n > 0;
	}
	if (db_exec(&r->j, m, "COMMIT", 6) < 0)
		return -1;
	if (after != before) {
		/* who can be rung changed: the views are read again, and a
		 * callback waiting for a device may go */
		av_hard_dirty();
		after_of(r)->wake_dispatch = 1;
	}
	reply_simple(r, "ok", 0, NULL);
	return 0;
fail:
	return req_rollback(r, m);
}


/* ---- call.outbound: a device's call through the compliance gate ---------- */

/*
 * The module evaluated the gate (from shared memory) and reports the call:
 * a TXN (outbound) with "Outgoing call initiated from Extension <key> -
 * <name>", "Call routed to Inbox [<name>]" (the user's first inbox), and the
 * verdict: blocked calls end here as Failed with the rule.
 */
static int run_call_outbound(struct req *r, MYSQL *m)
{
	char call_id[256], user[65], domain[129], number[24], verdict[8], rule[24], reason[64];
	char q[1600], text[400], at[64], ext[33] = "", name[101] = "", caller[24] = "";
	char inbox_name[101] = "", cust[101] = "", device[140] = "", rec_rule[16];
	char inbox_note[300] = "";
	uint64_t uid = 0, dev = 0, org = 0, inbox = 0, txn, cust_id = 0, cb_txn = 0, want = 0;
	int found, blocked, record;
	struct qb qq;
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (req_who(r, m) < 0)
		return -1;
	if (!r->who.operator)
		return req_fail(r, CCQ_E_DENIED, "call reports are for the SIP proxy (local operator)");
	if (arg_str(r, "call_id", call_id, sizeof(call_id), 1) < 0
			|| arg_str(r, "username", user, sizeof(user), 1) < 0
			|| arg_str(r, "domain", domain, sizeof(domain), 1) < 0
			|| arg_str(r, "number", number, sizeof(number), 0) < 0
			|| arg_str(r, "verdict", verdict, sizeof(verdict), 1) < 0
			|| arg_str(r, "rule", rule, sizeof(rule), 0) < 0
			|| arg_str(r, "reason", reason, sizeof(reason), 0) < 0
			|| arg_uint(r, "callback_txn", &cb_txn, 0, UINT64_MAX) < 0
			|| arg_uint(r, "inbox_id", &want, 0, UINT32_MAX) < 0
			|| rec_outbound_args(r, &record, rec_rule, sizeof(rec_rule)) < 0)
		return -1;
	blocked = strcmp(verdict, "allow") != 0;
	req_event_time(r, at, sizeof(at));
	if (cb_txn) {
		/* the customer leg of a callback joins the callback's TXN */
		if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
			return -1;
		if (callbacks_customer_leg(r, m, cb_txn, call_id, user, domain, number, blocked, rule,
				reason, at) < 0)
			goto fail;
		/* the module decided recording from its snapshot (a blocked call is not made) */
		if (record >= 0 && !blocked && rec_journey(r, m, cb_txn, record, rec_rule, at) < 0)
			goto fail;
		if (db_exec(&r->j, m, "COMMIT", 6) < 0)
			return -1;
		after_of(r)->wake_dispatch = blocked;
		return 0;
	}
	/* one round trip: the device and its user (the caller ID as the
	 * module's loader gives it, ccq_comp.c: the user's, else the first DID
	 * of the default inbox, else none), the default inbox's name, the
	 * customer with the dialled number in the user's organisation, and
	 * whether this Call-ID was already reported (a retransmitted INVITE) */
	qb_init(&qq);
	qb_add(&qq, "SELECT d.id, u.id, u.org_id, u.ext_key, u.name, COALESCE(NULLIF(u.caller_id, ''), "
		"(SELECT MIN(x.did) FROM inbox_did x WHERE x.inbox_id = (SELECT MIN(im.inbox_id) "
		"FROM inbox_member im WHERE im.user_id = u.id)), ''), "
		"(SELECT MIN(im.inbox_id) FROM inbox_member im WHERE im.user_id = u.id), d.kind, d.label, "
		"COALESCE((SELECT i.name FROM inbox i WHERE i.id = (SELECT MIN(im.inbox_id) "
		"FROM inbox_member im WHERE im.user_id = u.id)), '') "
		"FROM device d JOIN user u ON u.id = d.user_id WHERE d.username = ");
	qb_str(&qq, m, user, strlen(user));
	qb_add(&qq, " AND d.domain = ");
	qb_str(&qq, m, domain, strlen(domain));
	qb_add(&qq, ";SELECT c.id, c.name FROM customer_number n JOIN customer c ON c.id = "
		"n.customer_id JOIN device d ON d.username = ");
	qb_str(&qq, m, user, strlen(user));
	qb_add(&qq, " AND d.domain = ");
	qb_str(&qq, m, domain, strlen(domain));
	qb_add(&qq, " JOIN user u ON u.id = d.user_id WHERE n.org_id = u.org_id AND n.number = ");
	/* only an E.164 number can be a customer's (customer_by_number) */
	qb_str(&qq, m, number[0] == '+' && strlen(number) <= 20 ? number : "", number[0] == '+'
		&& strlen(number) <= 20 ? strlen(number) : 0);
	qb_add(&qq, ";START TRANSACTION;SELECT l.txn_id FROM txn_leg l WHERE l.call_id = ");
	qb_str(&qq, m, call_id, strlen(call_id));
	{
		MYSQL_RES *rs[4];
		int rc = req_multi_qb(r, m, &qq, rs, 4, NULL);
		if (rc < 0)
			goto fail;
		if ((row = mysql_fetch_row(rs[0]))) {
			dev = strtoull(row[0], NULL, 10);
			uid = strtoull(row[1], NULL, 10);
			org = strtoull(row[2], NULL, 10);
			snprintf(ext, sizeof(ext), "%s", row[3]);
			snprintf(name, sizeof(name), "%s", row[4]);
			snprintf(caller, sizeof(caller), "%s", row[5]);
			inbox = row[6] ? strtoull(row[6], NULL, 10) : 0;
			snprintf(device, sizeof(device), "%s%s%s%s", row[7], row[8][0] ? " (" : "", row[8],
				row[8][0] ? ")" : "");
			snprintf(inbox_name, sizeof(inbox_name), "%s", row[9]);
		}
		if ((row = mysql_fetch_row(rs[1]))) {
			cust_id = strtoull(row[0], NULL, 10);
			snprintf(cust, sizeof(cust), "%s", row[1]);
		}
		found = mysql_fetch_row(rs[3]) != NULL;
		for (int i = 0; i < 4; i++)
			if (rs[i])
				mysql_free_result(rs[i]);
	}
	if (!uid) {
		mysql_query(m, "ROLLBACK");
		return req_fail(r, CCQ_E_NOT_FOUND, "no device %s@%s", user, domain);
	}
	if (found) { /* a retransmitted INVITE already reported */
		mysql_query(m, "ROLLBACK");
		reply_simple(r, "ok", 0, NULL);
		return 0;
	}
	if (want && want != inbox) {
		/* dialled with **<inbox id>*: that inbox if the extension may work in
		 * it (a member, or an owner/admin with the add-on of the same org) */
		snprintf(q, sizeof(q), "SELECT i.id, i.name FROM inbox i JOIN user u ON u.id = %llu "
			"WHERE i.id = %llu AND i.org_id = u.org_id AND (EXISTS (SELECT 1 FROM inbox_member im "
			"WHERE im.inbox_id = i.id AND im.user_id = u.id) OR (u.role IN ('owner','admin') "
			"AND u.cc_addon = 1))", (unsigned long long)uid, (unsigned long long)want);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			goto fail;
		if ((row = mysql_fetch_row(res))) {
			inbox = want;
			snprintf(inbox_name, sizeof(inbox_name), "%s", row[1]);
		} else {
			snprintf(inbox_note, sizeof(inbox_note), "Inbox %llu is not one of extension %s's "
				"inboxes", (unsigned long long)want, ext);
		}
		mysql_free_result(res);
	}
	/* the TXN, its first leg and its journey so far, committed: one round trip */
	qb_init(&qq);
	qb_add(&qq, "INSERT INTO txn (id, org_id, inbox_id, customer_id, agent_id, device_id, kind, "
		"direction, call_type, status, sip_call_id, current_call_id, caller_id, number, result, "
		"failure_reason, created_at, updated_at, ended_at) VALUES (" TXN_NEW_ID ", %llu, %s%llu, "
		"%s%llu, %llu, %llu, 'call', 'outbound', 'outbound', '%s', ", (unsigned long long)org,
		inbox ? "" : "NULL + ", (unsigned long long)inbox, cust_id ? "" : "NULL + ",
		(unsigned long long)cust_id, (unsigned long long)uid, (unsigned long long)dev,
		blocked ? "Failed" : "Assigning");
	qb_str(&qq, m, call_id, strlen(call_id));
	qb_add(&qq, ", ");
	qb_str(&qq, m, call_id, strlen(call_id));
	qb_add(&qq, ", ");
	qb_str(&qq, m, caller[0] ? caller : NULL, strlen(caller));
	qb_add(&qq, ", ");
	qb_str(&qq, m, number[0] ? number : NULL, strlen(number));
	qb_add(&qq, ", %s, ", blocked ? "'blocked'" : "NULL");
	qb_str(&qq, m, blocked ? reason : NULL, strlen(reason));
	qb_add(&qq, ", %s, UTC_TIMESTAMP(3), %s);SET @ccq_txn = LAST_INSERT_ID();"
		"INSERT INTO txn_leg (call_id, txn_id, kind, created_at) VALUES (", at,
		blocked ? at : "NULL");
	qb_str(&qq, m, call_id, strlen(call_id));
	qb_add(&qq, ", @ccq_txn, 'first', %s);INSERT INTO txn_event (txn_id, at, kind, text) VALUES ",
		at);
	/* the events in journey order, in one statement (ids follow the rows) */
#define OUT_EVENT(kind, txt) do { \
		qb_add(&qq, "%s(@ccq_txn, %s, '%s', ", nev++ ? ", " : "", at, kind); \
		qb_str(&qq, m, txt, utf8_cut(txt, CCQ_EVENT_TEXT_MAX)); \
		qb_add(&qq, ")"); \
	} while (0)
	{
		int nev = 0;
		snprintf(text, sizeof(text), "Outgoing call initiated from Extension %s - %s", ext, name);
		OUT_EVENT("initiated", text);
		if (inbox_note[0]) {
			snprintf(text, sizeof(text), "%s: the default inbox is used", inbox_note);
			OUT_EVENT("inbox_refused", text);
		}
		if (inbox_name[0]) {
			snprintf(text, sizeof(text), "Call routed to Inbox [%s]", inbox_name);
			OUT_EVENT("routed", text);
		}
		if (blocked) {
			snprintf(text, sizeof(text), "Blocked by compliance: %s (rule %s)", reason, rule);
			OUT_EVENT("blocked", text);
		} else {
			/* the agent is on the line from the start: the product's journey
			 * names the extension's device before the customer answers */
			snprintf(text, sizeof(text), "Answered by %s - %s - %s", ext, name, device);
			OUT_EVENT("agent_answered", text);
			snprintf(text, sizeof(text), "Compliance check passed; dialling %s%s%s%s", number,
				cust[0] ? " (" : "", cust, cust[0] ? ")" : "");
			OUT_EVENT("dialling", text);
			if (record >= 0) {
				/* a new TXN has no recording line to repeat */
				rec_journey_text(text, sizeof(text), record, rec_rule);
				OUT_EVENT("recording", text);
			}
		}
	}
#undef OUT_EVENT
	qb_add(&qq, ";COMMIT");
	{
		int rc = req_multi_qb(r, m, &qq, NULL, 0, &txn);
		if (rc < 0)
			goto fail;
	}
	{
		msgpack_packer *pk = req_reply(r);
		msgpack_pack_map(pk, 1);
		ccq_pack_kv_uint(pk, "txn", txn);
	}
	return 0;
fail:
	return req_rollback(r, m);
}

/* ---- watch and me -------------------------------------------------------- */

static int run_watch(struct req *r, MYSQL *m)
{
	char q[600];
	uint64_t only = 0;
	MYSQL_RES *res = NULL;
	MYSQL_ROW row;
	struct watch_filter *wf;
	size_t n = 0;

	if (req_who(r, m) < 0 || arg_uint(r, "inbox", &only, 0, UINT32_MAX) < 0)
		return -1;
	if (!acl_all_inboxes(&r->who)) {
		snprintf(q, sizeof(q), "SELECT inbox_id FROM inbox_member WHERE user_id = %u",
			r->who.user_id);
		if (!(res = db_select(&r->j, m, q, strlen(q))))
			return -1;
		n = (size_t)mysql_num_rows(res);
	}
	wf = calloc(1, sizeof(*wf) + n * sizeof(uint32_t));
	if (!wf) {
		if (res)
			mysql_free_result(res);
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	}
	wf->everything = r->who.operator;
	wf->org_id = r->who.org_id;
	wf->all_inboxes = acl_all_inboxes(&r->who);
	wf->only_inbox = (uint32_t)only;
	if (res) {
		while ((row = mysql_fetch_row(res)))
			wf->inboxes[wf->n++] = (uint32_t)strtoul(row[0], NULL, 10);
		mysql_free_result(res);
	}
	free(r->after_data);
	r->after_data = wf;
	{
		msgpack_packer *pk = req_reply(r);
		msgpack_pack_map(pk, 1);
		ccq_pack_kv_bool(pk, "watching", 1);
	}
	return 0;
}

static void after_watch(struct req *r)
{
	/* the connection takes the filter */
	conn_watch(r->c, r->after_data);
	r->after_data = NULL;
}

static int run_me(struct req *r, MYSQL *m)
{
	char q[1600];
	MYSQL_RES *res;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (req_who(r, m) < 0)
		return -1;
	if (r->who.operator)
		return req_fail(r, CCQ_E_BAD_REQUEST, "the operator has no calls: use --as EXT@ORG");
	snprintf(q, sizeof(q), "SELECT t.id AS txn, t.status, t.caller_id, t.number, "
		"c.name AS customer, i.name AS inbox, d.kind AS device, d.label AS device_label, "
		TS("t.answered_at") " AS since, " TS("t.created_at") " AS created_at "
		"FROM txn t LEFT JOIN customer c ON c.id = t.customer_id "
		"LEFT JOIN inbox i ON i.id = t.inbox_id LEFT JOIN device d ON d.id = t.device_id "
		"WHERE t.agent_id = %u AND t.status IN ('Assigning','Assigned','Transferring') "
		"ORDER BY t.id", r->who.user_id);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	pk = req_reply(r);
	msgpack_pack_map(pk, 4);
	ccq_pack_kv_str(pk, "ext", r->who.ext);
	ccq_pack_kv_str(pk, "name", r->who.name);
	ccq_pack_kv_str(pk, "org", r->who.org_name);
	ccq_pack_str(pk, "calls");
	msgpack_pack_array(pk, (size_t)mysql_num_rows(res));
	while ((row = mysql_fetch_row(res)))
		pack_row(pk, res, row, 0);
	mysql_free_result(res);
	return 0;
}

/* ---- the queue sweep (dispatch and maximum wait) ------------------------- */

/*
 * For every TXN waiting in a queue that a call.wait is registered for, in
 * arrival order: past the inbox's maximum wait -> missed-call flow; else an
 * available agent -> ring. The loop pushes the outcome to the module.
 */
struct sweep_out {
	int n;
	struct {
		char call_id[256];
		int missed;
		uint32_t org_id, inbox_id;
		uint64_t txn;
		char text[300];
		char inbox[101];
		unsigned ring_timeout;
		struct ring_pick pick;
	} item[32];
};

static int run_sweep(struct req *r, MYSQL *m)
{
	/* a rerun (lost connection) keeps what the first run committed */
	struct sweep_out *out = r->after_data ? r->after_data : calloc(1, sizeof(*out));
	const msgpack_object *calls = ccq_map_get(r->args, "calls");

	if (!out)
		return req_fail(r, CCQ_E_INTERNAL, "out of memory");
	r->after_data = out;
	r->who.operator = 1;
	if (!calls || calls->type != MSGPACK_OBJECT_ARRAY)
		goto done;
	for (uint32_t i = 0; i < calls->via.array.size && out->n < 32; i++) {
		const msgpack_object *o = &calls->via.array.ptr[i];
		char call_id[256];
		struct txn_row t;
		int rc;

		if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof(call_id))
			continue;
		memcpy(call_id, o->via.str.ptr, o->via.str.size);
		call_id[o->via.str.size] = '\0';
		if (db_exec(&r->j, m, "START TRANSACTION", 17) < 0)
			return -1;
		if (txn_by_call(r, m, call_id, &t, 1) < 0) {
			mysql_query(m, "ROLLBACK");
			if (r->j.conn_lost)
				return -1;
			/* gone, or its row busy with its own report: the next sweep */
			r->j.err = 0;
			r->j.lock_lost = 0;
			continue;
		}
		if (strcmp(t.status, "Waiting") != 0) {
			mysql_query(m, "ROLLBACK");
			continue;
		}
		if ((long)t.max_wait - t.waited <= 0) {
			/* missed: reuse calls_missed, which records the event in after_data;
			 * keep our own record instead */
			void *saved = r->after_data;
			struct call_after *ca;
			r->after_data = NULL;
			rc = calls_missed(r, m, t.id, t.org_id, t.inbox_id, t.inbox, t.number, NULL);
			ca = r->after_data;
			r->after_data = saved;
			if (rc < 0) {
				free(ca);
				goto fail;
			}
			snprintf(out->item[out->n].call_id, sizeof(out->item[0].call_id), "%s", call_id);
			out->item[out->n].missed = 1;
			out->item[out->n].org_id = t.org_id;
			out->item[out->n].inbox_id = t.inbox_id;
			out->item[out->n].txn = t.id;
			snprintf(out->item[out->n].inbox, sizeof(out->item[0].inbox), "%s", t.inbox);
			snprintf(out->item[out->n].text, sizeof(out->item[0].text), "%.299s",
				ca ? ca->text : "missed call");
			free(ca);
			out->n++;
		} else {
			rc = pick_agent(r, m, t.id, t.inbox_id, &out->item[out->n].pick);
			if (rc < 0 && r->j.lock_lost) {
				/* a decision on another worker won: this call waits for
				 * the next sweep */
				mysql_query(m, "ROLLBACK");
				r->j.err = 0;
				r->j.lock_lost = 0;
				continue;
			}
			if (rc < 0)
				goto fail;
			if (rc == 0) {
				mysql_query(m, "ROLLBACK");
				continue;
			}
			snprintf(out->item[out->n].call_id, sizeof(out->item[0].call_id), "%s", call_id);
			out->item[out->n].txn = t.id;
			out->item[out->n].ring_timeout = t.ring_timeout;
			snprintf(out->item[out->n].inbox, sizeof(out->item[0].inbox), "%s", t.inbox);
			out->n++;
		}
		if (db_exec(&r->j, m, "COMMIT", 6) < 0)
			return -1;
	}
done:
	if (out->n)
		av_soft_dirty();   /* agents rung or calls missed (agentview.h) */
	{
		msgpack_packer *pk = req_reply(r);
		msgpack_pack_nil(pk);
	}
	return 0;
fail:
	if (out->n)
		av_soft_dirty();
	return req_rollback(r, m);
}

static void after_sweep(struct req *r)
{
	struct sweep_out *out = r->after_data;
	if (!out)
		return;
	for (int i = 0; i < out->n; i++) {
		ccq_enc e;
		ccq_enc_init(&e);
		msgpack_pack_map(&e.pk, out->item[i].missed ? 6 : 8);
		ccq_pack_kv_str(&e.pk, "call_id", out->item[i].call_id);
		ccq_pack_kv_uint(&e.pk, "txn", out->item[i].txn);
		ccq_pack_kv_str(&e.pk, "inbox", out->item[i].inbox);
		if (out->item[i].missed) {
			ccq_pack_kv_str(&e.pk, "action", "missed");
			ccq_pack_kv_uint(&e.pk, "code", 480);
			ccq_pack_kv_str(&e.pk, "reason", "Temporarily Unavailable");
			calls_notify("call.missed", out->item[i].org_id, out->item[i].inbox_id,
				out->item[i].txn, out->item[i].text, "", "", out->item[i].inbox);
		} else {
			ccq_pack_kv_str(&e.pk, "action", "ring");
			ccq_pack_kv_uint(&e.pk, "ring_timeout", out->item[i].ring_timeout);
			pack_ring_targets(&e.pk, &out->item[i].pick);
		}
		calls_resume(out->item[i].call_id, &e);
		ccq_enc_free(&e);
	}
}


/* ---- inbox.state (supervisors, kamcmd ccq.inbox) ------------------------- */

static int run_inbox_state(struct req *r, MYSQL *m)
{
	char name[101], org_name[101] = "", esc[210], esc2[210], q[3000], cond[200];
	uint64_t inbox = 0, org = 0;
	MYSQL_RES *res, *agents;
	MYSQL_ROW row;
	msgpack_packer *pk;

	if (req_who(r, m) < 0 || arg_str(r, "inbox", name, sizeof(name), 1) < 0
			|| arg_str(r, "org", org_name, sizeof(org_name), 0) < 0)
		return -1;
	if (r->who.operator && !org_name[0])
		return req_fail(r, CCQ_E_BAD_REQUEST, "argument 'org' is required");
	mysql_real_escape_string(m, esc, name, strlen(name));
	mysql_real_escape_string(m, esc2, org_name, strlen(org_name));
	acl_inbox_cond(cond, sizeof(cond), &r->who, "i.id");
	if (r->who.operator)
		snprintf(q, sizeof(q), "SELECT i.id, i.org_id FROM inbox i JOIN org o ON o.id = i.org_id "
			"WHERE i.name = '%s' AND o.name = '%s'", esc, esc2);
	else
		snprintf(q, sizeof(q), "SELECT i.id, i.org_id FROM inbox i WHERE i.name = '%s' "
			"AND i.org_id = %u%s", esc, r->who.org_id, cond);
	if (sql_u64(r, m, q, strlen(q), &inbox, (int[]){0}) < 0)
		return -1;
	if (!inbox)
		return req_fail(r, CCQ_E_NOT_FOUND, "no inbox '%s'", name);
	(void)org;
	snprintf(q, sizeof(q), "SELECT t.id AS txn, t.number, c.name AS customer, "
		"TIMESTAMPDIFF(SECOND, t.queued_at, UTC_TIMESTAMP(3)) AS waiting_seconds "
		"FROM txn t LEFT JOIN customer c ON c.id = t.customer_id WHERE t.inbox_id = %llu "
		"AND t.status = 'Waiting' AND t.kind = 'call' AND t.queued_at IS NOT NULL "
		"ORDER BY t.queued_at, t.id", (unsigned long long)inbox);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	snprintf(q, sizeof(q), "SELECT u.ext_key AS ext, u.name, CASE "
		"WHEN NOT EXISTS (SELECT 1 FROM device d JOIN device_contact dc ON dc.device_id = d.id "
		"  WHERE d.user_id = u.id AND d.enabled = 1 AND dc.expires_at > UTC_TIMESTAMP(3)) THEN 'offline' "
		"WHEN EXISTS (SELECT 1 FROM txn a WHERE a.agent_id = u.id AND a.status = 'Assigning') THEN 'ringing' "
		"WHEN EXISTS (SELECT 1 FROM txn a WHERE a.agent_id = u.id AND a.kind = 'call' "
		"  AND a.status IN ('Assigned','Transferring')) THEN 'on a call' "
		"WHEN s.wrapup_until > UTC_TIMESTAMP(3) THEN 'wrap-up' ELSE 'available' END AS state, "
		"(SELECT COUNT(*) FROM txn a WHERE a.agent_id = u.id "
		"  AND a.status IN ('Assigning','Assigned','Transferring')) AS calls, u.max_calls, "
		"DATE_FORMAT(s.last_call_end, '%%Y-%%m-%%d %%H:%%i:%%s') AS idle_since "
		"FROM inbox_member im JOIN user u ON u.id = im.user_id "
		"LEFT JOIN agent_state s ON s.user_id = u.id WHERE im.inbox_id = %llu "
		"ORDER BY u.ext_key", (unsigned long long)inbox);
	if (!(agents = db_select(&r->j, m, q, strlen(q)))) {
		mysql_free_result(res);
		return -1;
	}
	pk = req_reply(r);
	msgpack_pack_map(pk, 3);
	ccq_pack_kv_str(pk, "inbox", name);
	ccq_pack_str(pk, "waiting");
	pack_rows(pk, res);
	ccq_pack_str(pk, "agents");
	pack_rows(pk, agents);
	mysql_free_result(agents);
	mysql_free_result(res);
	(void)row;
	return 0;
}

/* the reports that run in groups (db.h struct db_group) */
const struct op_grouped ops_grouped[] = {
	{ "call.answered", &group_answered },
	{ "call.ended", &group_ended },
	{ NULL, NULL }
};

const struct op_def ops_call[] = {
	{ "call.route", run_call_route, NULL, after_call, OP_VIEW_SAFE | OP_URGENT | OP_SHED },
	{ "call.ring_failed", run_call_ring_failed, NULL, after_call, OP_VIEW_SAFE },
	{ "call.answered", run_call_answered, NULL, after_call, OP_RETRY | OP_VIEW_SAFE },
	{ "call.ended", run_call_ended, NULL, after_ended, OP_RETRY | OP_VIEW_SAFE },
	/* urgent too: the transfer's second leg (a call.route) must not
	 * overtake the report that makes its TXN Transferring */
	{ "call.transfer", run_call_transfer, NULL, after_call, OP_RETRY | OP_URGENT },
	{ "call.outbound", run_call_outbound, NULL, after_call, OP_RETRY },
	{ "call.wait", NULL, calls_op_wait, NULL, 0 },
	{ "device.contact", run_device_contact, NULL, after_call, OP_RETRY | OP_VIEW_SAFE },
	{ "watch", run_watch, NULL, after_watch, OP_VIEW_SAFE },
	{ "me", run_me, NULL, NULL, OP_VIEW_SAFE },
	{ "inbox.state", run_inbox_state, NULL, NULL, OP_VIEW_SAFE },
	{ NULL, NULL, NULL, NULL, 0 }
};


/* ---- janitor: calls whose state was lost ---------------------------------- */

/*
 * A call that has been Waiting or Assigning for longer than its inbox could
 * keep it (maximum wait plus two ring timeouts plus two minutes) was lost
 * on the way (a proxy restart takes its transactions with it): end it as
 * Failed so that agents and queues are not held by a ghost. Callback TXNs
 * wait in their extension's queue as long as their request lives: the
 * callback dispatcher looks after them (ops_callback.c).
 */
/* max_call_duration, read by the worker (set on the loop at start and reload) */
static volatile unsigned g_max_call_duration = 14400;

void calls_reconfigure(const struct queued_config *cfg)
{
	g_max_call_duration = cfg->max_call_duration;
}

/*
 * An answered call whose end never came (a BYE lost with a proxy restart)
 * would hold its agent's call slot for ever: after max_call_duration it is
 * ended, and the journey says why.
 */
static int janitor_answered(struct req *r, MYSQL *m)
{
	char q[800], text[200];
	MYSQL_RES *res;
	MYSQL_ROW row;
	unsigned max = g_max_call_duration;

	if (!max)
		return 0;
	snprintf(q, sizeof(q), "SELECT t.id FROM txn t WHERE t.kind = 'call' "
		"AND t.status IN ('Assigned','Transferring') "
		"AND COALESCE(t.answered_at, t.updated_at) < UTC_TIMESTAMP(3) - INTERVAL %u SECOND "
		"AND t.updated_at < UTC_TIMESTAMP(3) - INTERVAL %u SECOND LIMIT 100", max, max);
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	snprintf(text, sizeof(text), "No end of the call reported within %u s (call state lost); "
		"ended", max);
	while ((row = mysql_fetch_row(res))) {
		unsigned long long id = strtoull(row[0], NULL, 10);
		/* the condition again in the UPDATE: the call may have ended (or
		 * moved on) since the SELECT, on another worker */
		snprintf(q, sizeof(q), "UPDATE txn SET status = 'Ended', result = COALESCE(result, "
			"'answered'), failure_reason = 'call state lost', ended_at = UTC_TIMESTAMP(3), "
			"updated_at = UTC_TIMESTAMP(3) WHERE id = %llu AND status IN ('Assigned','Transferring') "
			"AND COALESCE(answered_at, updated_at) < UTC_TIMESTAMP(3) - INTERVAL %u SECOND "
			"AND updated_at < UTC_TIMESTAMP(3) - INTERVAL %u SECOND", id, max, max);
		if (db_exec(&r->j, m, q, strlen(q)) < 0) {
			mysql_free_result(res);
			return -1;
		}
		if (mysql_affected_rows(m) != 1)
			continue;
		if (journey(r, m, id, "lost", text) < 0) {
			mysql_free_result(res);
			return -1;
		}
		LOG_W("txn %llu: answered, but no end reported within %u s; marked Ended", id, max);
	}
	mysql_free_result(res);
	return 0;
}

static int run_janitor(struct req *r, MYSQL *m)
{
	char q[800];
	MYSQL_RES *res;
	MYSQL_ROW row;

	r->who.operator = 1;
	snprintf(q, sizeof(q), "SELECT t.id FROM txn t JOIN inbox i ON i.id = t.inbox_id "
		"WHERE t.kind = 'call' AND t.call_type <> 'callback' "
		"AND t.status IN ('Waiting','Assigning') AND t.updated_at < "
		"UTC_TIMESTAMP(3) - INTERVAL (i.max_wait + 2 * i.ring_timeout + 120) SECOND LIMIT 100");
	if (!(res = db_select(&r->j, m, q, strlen(q))))
		return -1;
	while ((row = mysql_fetch_row(res))) {
		unsigned long long id = strtoull(row[0], NULL, 10);
		snprintf(q, sizeof(q), "UPDATE txn t JOIN inbox i ON i.id = t.inbox_id SET "
			"t.status = 'Failed', t.result = 'failed', t.failure_reason = 'call state lost', "
			"t.ended_at = UTC_TIMESTAMP(3), t.updated_at = UTC_TIMESTAMP(3) WHERE t.id = %llu "
			"AND t.status IN ('Waiting','Assigning') AND t.updated_at < UTC_TIMESTAMP(3) - "
			"INTERVAL (i.max_wait + 2 * i.ring_timeout + 120) SECOND", id);
		if (db_exec(&r->j, m, q, strlen(q)) < 0) {
			mysql_free_result(res);
			return -1;
		}
		if (mysql_affected_rows(m) != 1)
			continue;   /* news came meanwhile */
		if (journey(r, m, id, "lost", "Call state lost (no news from the proxy); ended") < 0) {
			mysql_free_result(res);
			return -1;
		}
		LOG_W("txn %llu: no news of its call for too long; marked Failed", id);
	}
	mysql_free_result(res);
	if (janitor_answered(r, m) < 0)
		return -1;
	msgpack_pack_nil(req_reply(r));
	return 0;
}

const struct op_def calls_janitor_op = { "call.janitor", run_janitor, NULL, NULL, 0 };

const struct op_def calls_sweep_op = { "call.sweep", run_sweep, NULL, after_sweep,
	OP_KEEP_AFTER | OP_VIEW_SAFE };
