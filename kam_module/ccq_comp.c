/*
 * The compliance snapshot and its loader process; see ccq_comp.h and
 * kam_module/doc/ccq.md section 14.
 *
 * A snapshot is one shared memory block (organisations, users, devices,
 * company and personal lists, and a small DNC overlay) plus a pointer to the
 * DNC registry's base image, which lives in its own block and is shared by
 * every snapshot built while it is current. Readers take a reference to the
 * snapshot under a short lock; a replaced snapshot is freed when its last
 * reader is done, a base when its last snapshot is freed: a load never
 * blocks a call, and calls always see a whole snapshot.
 *
 * The loader polls list_version (one tiny query) every poll interval:
 *  - a change of a row other than 'dnc' rereads the directory and lists
 *    (small) and reuses the DNC base and delta;
 *  - a change of 'dnc' reads the change log dnc_change (sql/006) above the
 *    version it has: numbers added and removed since the base was built are
 *    kept as a delta (last change of a number wins) and published as an
 *    overlay at once; a 'bulk' row (a batch of an import), a gap in the log,
 *    or a delta above DELTA_MAX entries asks for a new base, which a thread
 *    of the loader builds from dnc_number in the background (its own MySQL
 *    connection, a consistent snapshot read) while the loop goes on applying
 *    small changes. Bulk rows are debounced: the rebuild starts once no bulk
 *    row came for BULK_QUIET_MS, or BULK_MAX_WAIT_MS after the first one.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <signal.h>
#include <mysql.h>

#include "core/dprint.h"
#include "core/locking.h"
#include "core/mem/shm_mem.h"
#include "core/pt.h"
#include "core/sr_module.h"
#include "core/cfg/cfg_struct.h"

#include "ccq_comp.h"
#include "ccq_e164.h"
#include "ccq_numset.h"

/* Distinct DNC entries kept as a delta before the base is rebuilt. */
#define DELTA_MAX 10000
/* A bulk import: rebuild once no batch came for this long ... */
#define BULK_QUIET_MS 1000
/* ... or this long after the first batch not in the base (a long import). */
#define BULK_MAX_WAIT_MS 30000

struct comp_shm {
	gen_lock_t lock;
	struct comp_snap *cur;
	volatile int reload;
	struct comp_stats st;          /* written by the loader under the lock */
};

static struct comp_shm *g_cs;
static char g_db_url[256];
static int g_poll_ms = 500;

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int ccq_comp_init(const char *db_url, int poll_ms)
{
	snprintf(g_db_url, sizeof(g_db_url), "%s", db_url ? db_url : "");
	if (!g_db_url[0])
		return 0;
	if (strncmp(g_db_url, "mysql://", 8) != 0) {
		LM_ERR("modparam db_url must be mysql://user:password@host[:port]/database\n");
		return -1;
	}
	g_poll_ms = poll_ms > 0 ? poll_ms : 500;
	g_cs = shm_malloc(sizeof(*g_cs));
	if (!g_cs) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(g_cs, 0, sizeof(*g_cs));
	if (!lock_init(&g_cs->lock)) {
		shm_free(g_cs);
		g_cs = NULL;
		return -1;
	}
	register_procs(1);
	cfg_register_child(1);
	return 0;
}

struct comp_snap *ccq_comp_get(void)
{
	struct comp_snap *s;
	if (!g_cs)
		return NULL;
	lock_get(&g_cs->lock);
	s = g_cs->cur;
	if (s)
		s->refs++;
	lock_release(&g_cs->lock);
	return s;
}

void ccq_comp_put(struct comp_snap *s)
{
	if (!s || !g_cs)
		return;
	lock_get(&g_cs->lock);
	s->refs--;
	lock_release(&g_cs->lock);
}

void ccq_comp_reload(void)
{
	if (g_cs)
		g_cs->reload = 1;
}

int ccq_comp_stats(struct comp_stats *st)
{
	if (!g_cs)
		return -1;
	lock_get(&g_cs->lock);
	*st = g_cs->st;
	lock_release(&g_cs->lock);
	return 0;
}

static const void *dnc_base_image(const struct comp_dnc *d)
{
	return d ? (const char *)d + d->image_off : NULL;
}

const void *comp_dnc_set(const struct comp_snap *s)
{
	return s->dnc_off ? (const char *)s + s->dnc_off : dnc_base_image(s->dnc);
}

size_t comp_dnc_base_bytes(const struct comp_snap *s)
{
	return s->dnc ? ccq_numset_bytes(dnc_base_image(s->dnc)) : 0;
}

const struct comp_org *comp_orgs(const struct comp_snap *s)
{
	return (const struct comp_org *)((const char *)s + s->orgs_off);
}

const struct comp_user *comp_users(const struct comp_snap *s)
{
	return (const struct comp_user *)((const char *)s + s->users_off);
}

static const struct comp_device *comp_devices(const struct comp_snap *s)
{
	return (const struct comp_device *)((const char *)s + s->devices_off);
}

const void *comp_image(const struct comp_snap *s, uint64_t off)
{
	return off ? (const char *)s + off : NULL;
}

const struct comp_user *comp_user_by_ext(const struct comp_snap *s, const char *org,
		const char *ext)
{
	const struct comp_user *u = comp_users(s), *found = NULL;
	const struct comp_org *o = comp_orgs(s);
	int n = 0;
	for (uint32_t i = 0; i < s->nusers; i++) {
		if (strcmp(u[i].ext, ext) != 0)
			continue;
		if (org && org[0] && strcmp(o[u[i].org].name, org) != 0)
			continue;
		found = &u[i];
		n++;
	}
	return n == 1 ? found : NULL; /* ambiguous without the organisation */
}

/* Devices by username (bytes), then domain (any case, then bytes: the
 * unique key compares bytes, so two domains may differ in case only, and
 * the lookup must find the same one after every rebuild): the order the
 * snapshot keeps them in, for comp_user_by_device's binary search. */
static int device_cmp(const void *a, const void *b)
{
	const struct comp_device *x = a, *y = b;
	int c = strcmp(x->username, y->username);
	if (!c)
		c = strcasecmp(x->domain, y->domain);
	return c ? c : strcmp(x->domain, y->domain);
}

/* Every outbound call from a device asks this: a binary search (a site
 * has thousands of devices; the snapshot is sorted when built). */
const struct comp_user *comp_user_by_device(const struct comp_snap *s, const char *username,
		const char *domain)
{
	const struct comp_device *d = comp_devices(s);
	size_t lo = 0, hi = s->ndevices;

	while (lo < hi) {   /* the first device with this username */
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(d[mid].username, username) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < s->ndevices && strcmp(d[lo].username, username) == 0; lo++)
		if (d[lo].enabled && (!domain || strcasecmp(d[lo].domain, domain) == 0))
			return &comp_users(s)[d[lo].user];
	return NULL;
}

/* The index of the element with this id in an array of n elements of
 * `size` bytes that start with their uint32_t id (struct comp_org,
 * comp_user), sorted by id (the queries' ORDER BY): a binary search; 0 if
 * none (cannot happen: foreign keys, and snap_build reads everything in one
 * consistent snapshot). The loader links each user to its org and each
 * device to its user this way. */
_Static_assert(offsetof(struct comp_org, id) == 0, "index_by_id reads the id first");
_Static_assert(offsetof(struct comp_user, id) == 0, "index_by_id reads the id first");

static uint32_t index_by_id(const void *arr, size_t size, uint32_t n, uint32_t id)
{
	uint32_t lo = 0, hi = n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2, v;
		memcpy(&v, (const char *)arr + (size_t)mid * size, sizeof(v));
		if (v == id)
			return mid;
		if (v < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

int comp_user_record(const struct comp_snap *s, const struct comp_user *u, uint32_t inbox_id,
		int *record, const char **rule)
{
	const struct comp_inbox *ib = (const struct comp_inbox *)((const char *)s + s->inboxes_off);
	const struct comp_member *mb = (const struct comp_member *)((const char *)s + s->members_off);
	const struct comp_inbox *found = NULL;
	size_t lo, hi;
	int member = 0;

	*record = u->record;
	*rule = u->record_rule;
	if (!inbox_id || inbox_id == u->inbox_id)
		return 1;
	for (lo = 0, hi = s->ninboxes; lo < hi;) { /* sorted by id */
		size_t mid = lo + (hi - lo) / 2;
		if (ib[mid].id == inbox_id) {
			found = &ib[mid];
			break;
		}
		if (ib[mid].id < inbox_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!found || found->org_id != comp_orgs(s)[u->org].id)
		return 0;
	for (lo = 0, hi = s->nmembers; lo < hi && !member;) { /* by (user, inbox) */
		size_t mid = lo + (hi - lo) / 2;
		if (mb[mid].user_id == u->id && mb[mid].inbox_id == inbox_id)
			member = 1;
		else if (mb[mid].user_id < u->id || (mb[mid].user_id == u->id
				&& mb[mid].inbox_id < inbox_id))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!member && !u->all_inboxes)
		return 0;
	if (u->own_record >= 0) {
		*record = u->own_record;
		*rule = "user";
	} else if (found->record >= 0) {
		*record = found->record;
		*rule = "inbox";
	} else {
		*record = u->org_record;
		*rule = "organisation";
	}
	return 1;
}

static enum ccq_gate_verdict gate_eval(const struct comp_snap *s, const struct comp_user *u,
		const struct comp_org *o, struct comp_verdict *v, enum ccq_pin_state pin_state,
		int pin_locked);

enum ccq_gate_verdict ccq_comp_check(const struct comp_snap *s, const struct comp_user *u,
		const char *dialled, size_t len, enum ccq_pin_state pin_state, int pin_locked,
		struct comp_verdict *v)
{
	const struct comp_org *o = &comp_orgs(s)[u->org];

	memset(v, 0, sizeof(*v));
	if (ccq_e164_normalize(dialled, len, o->country, v->number, &v->why) < 0) {
		v->res.verdict = CCQ_GATE_BLOCK;
		v->res.rule = CCQ_RULE_INVALID_NUMBER;
		return CCQ_GATE_BLOCK;
	}
	/*
	 * A number dialled without '+' or 00 that starts with the
	 * organisation's own calling code ("6591234567" in Singapore) could be
	 * meant either way; the national reading ("+65 6591234567") must not let
	 * the international one slip past a list: evaluate both, and block if
	 * the international reading is blocked.
	 */
	if (len > 0 && dialled[0] != '+' && !(len > 1 && dialled[0] == '0' && dialled[1] == '0')) {
		char plus[72], alt[CCQ_E164_BUFSZ];
		const char *why2;
		size_t n = len < sizeof(plus) - 2 ? len : sizeof(plus) - 2;
		plus[0] = '+';
		memcpy(plus + 1, dialled, n);
		plus[n + 1] = '\0';
		if (ccq_e164_normalize(plus, n + 1, NULL, alt, &why2) == 0 && strcmp(alt, v->number) != 0
				&& ccq_e164_country_code(alt) == ccq_e164_region_code(o->country)) {
			struct comp_verdict v2;
			memset(&v2, 0, sizeof(v2));
			snprintf(v2.number, sizeof(v2.number), "%s", alt);
			if (gate_eval(s, u, o, &v2, pin_state, pin_locked) == CCQ_GATE_BLOCK
					&& v2.res.rule != CCQ_RULE_PIN_REQUIRED && v2.res.rule != CCQ_RULE_PIN_WRONG
					&& v2.res.rule != CCQ_RULE_PIN_LOCKED) {
				*v = v2;
				return CCQ_GATE_BLOCK;
			}
		}
	}
	return gate_eval(s, u, o, v, pin_state, pin_locked);
}

static enum ccq_gate_verdict gate_eval(const struct comp_snap *s, const struct comp_user *u,
		const struct comp_org *o, struct comp_verdict *v, enum ccq_pin_state pin_state,
		int pin_locked)
{
	struct ccq_gate_input in;

	memset(&in, 0, sizeof(in));
	in.number = v->number;
	in.org_country = o->country;
	in.country_whitelist = o->country_whitelist;
	in.company_blacklist = comp_image(s, o->blacklist_off);
	in.company_whitelist = comp_image(s, o->whitelist_off);
	in.personal_whitelist = comp_image(s, u->personal_off);
	in.dnc = comp_dnc_set(s);
	in.pin_policy = (enum ccq_pin_policy)o->pin_policy;
	in.pin = pin_state;
	in.pin_locked = pin_locked;
	return ccq_gate_eval(&in, &v->res);
}

/* ---- the loader ------------------------------------------------------------ */

static MYSQL *db_open(char *err, size_t errlen)
{
	char url[256], *user, *pass = NULL, *host, *db, *p;
	unsigned port = 0, ct = 5, rt = 60;
	MYSQL *m;

	snprintf(url, sizeof(url), "%s", g_db_url + 8);
	user = url;
	if (!(p = strrchr(url, '@'))) {
		snprintf(err, errlen, "db_url has no user@host");
		return NULL;
	}
	*p = '\0';
	host = p + 1;
	if ((p = strchr(user, ':'))) {
		*p = '\0';
		pass = p + 1;
	}
	if (!(db = strchr(host, '/'))) {
		snprintf(err, errlen, "db_url has no /database");
		return NULL;
	}
	*db++ = '\0';
	if ((p = strchr(host, ':'))) {
		*p = '\0';
		port = (unsigned)atoi(p + 1);
	}
	if (!(m = mysql_init(NULL))) {
		snprintf(err, errlen, "mysql_init failed");
		return NULL;
	}
	mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
	mysql_options(m, MYSQL_OPT_READ_TIMEOUT, &rt);
	/* host "localhost": the unix socket (MYSQL_UNIX_PORT picks another one) */
	if (!mysql_real_connect(m, host, user, pass, db, port, NULL, 0)
			/* list_version.changed_at is UTC: UNIX_TIMESTAMP() must read it so */
			|| mysql_query(m, "SET time_zone = '+00:00'") != 0) {
		snprintf(err, errlen, "%s", mysql_error(m));
		mysql_close(m);
		return NULL;
	}
	return m;
}

static int q_u64(MYSQL *m, const char *q, uint64_t *v)
{
	MYSQL_RES *r;
	MYSQL_ROW row;
	if (mysql_query(m, q) != 0 || !(r = mysql_store_result(m)))
		return -1;
	row = mysql_fetch_row(r);
	*v = row && row[0] ? strtoull(row[0], NULL, 10) : 0;
	mysql_free_result(r);
	return 0;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A list being built, for one owner (an org's list, a user). */
struct blist {
	uint32_t owner;               /* org id or user id */
	int kind;                     /* 0 blacklist, 1 whitelist, 2 personal */
	ccq_numset_builder *b;
	size_t size;
	uint64_t off;
};

#define ALIGN64(x) (((x) + 63) & ~(size_t)63)

static int stream_into(MYSQL *m, const char *q, struct blist **lists, size_t *nlists,
		size_t *cap, int kind_col, int fixed_kind, uint64_t *count)
{
	MYSQL_RES *r;
	MYSQL_ROW row;
	struct blist *cur = NULL;

	if (mysql_query(m, q) != 0 || !(r = mysql_use_result(m)))
		return -1;
	while ((row = mysql_fetch_row(r))) {
		uint32_t owner = (uint32_t)strtoul(row[0], NULL, 10);
		int kind = fixed_kind >= 0 ? fixed_kind : (strcmp(row[kind_col], "whitelist") == 0);
		const char *num = row[kind_col >= 0 ? 2 : 1];
		if (!cur || cur->owner != owner || cur->kind != kind) {
			if (*nlists == *cap) {
				size_t nc = *cap ? *cap * 2 : 64;
				struct blist *nl = realloc(*lists, nc * sizeof(*nl));
				if (!nl)
					goto oom;
				*lists = nl;
				*cap = nc;
			}
			cur = &(*lists)[(*nlists)++];
			memset(cur, 0, sizeof(*cur));
			cur->owner = owner;
			cur->kind = kind;
			if (!(cur->b = ccq_numset_builder_new()))
				goto oom;
		}
		if (num && ccq_numset_builder_add(cur->b, num) == 0)
			(*count)++;
	}
	if (mysql_errno(m)) /* the stream broke off */
		goto oom;
	mysql_free_result(r);
	return 0;
oom:
	mysql_free_result(r);
	return -1;
}

/*
 * The users, with their recording setting resolved (user, then their default
 * inbox, then the organisation: doc/recording.md). A schema from before
 * recording (no record_calls columns) reads as "off".
 */
static MYSQL_RES *users_query(MYSQL *m)
{
	/* the caller ID the trunk sees: the user's own, else the first DID of
	 * their default inbox (the number the customer would call back) */
	static const char *with_rec =
		"SELECT u.id, u.org_id, u.ext_key, u.name, COALESCE(NULLIF(u.caller_id, ''), "
		"(SELECT MIN(x.did) FROM inbox_did x WHERE x.inbox_id = d.inbox_id), ''), "
		"COALESCE(u.pin_hash, ''), COALESCE(d.inbox_id, 0), "
		"COALESCE(u.record_calls, i.record_calls, o.record_calls, 0), "
		"CASE WHEN u.record_calls IS NOT NULL THEN 'user' "
		"WHEN i.record_calls IS NOT NULL THEN 'inbox' ELSE 'organisation' END, "
		"COALESCE(u.record_calls, -1), o.record_calls, "
		"u.role IN ('owner', 'admin') AND u.cc_addon = 1 "
		"FROM user u JOIN org o ON o.id = u.org_id "
		"LEFT JOIN (SELECT user_id, MIN(inbox_id) AS inbox_id FROM inbox_member "
		"GROUP BY user_id) d ON d.user_id = u.id "
		"LEFT JOIN inbox i ON i.id = d.inbox_id ORDER BY u.id";
	static const char *without =
		"SELECT u.id, u.org_id, u.ext_key, u.name, COALESCE(u.caller_id, ''), "
		"COALESCE(u.pin_hash, ''), COALESCE((SELECT MIN(im.inbox_id) FROM inbox_member im "
		"WHERE im.user_id = u.id), 0), 0, 'organisation', -1, 0, "
		"u.role IN ('owner', 'admin') AND u.cc_addon = 1 FROM user u ORDER BY u.id";

	if (mysql_query(m, with_rec) == 0)
		return mysql_store_result(m);
	if (mysql_errno(m) != 1054) /* ER_BAD_FIELD_ERROR: an older schema */
		return NULL;
	if (mysql_query(m, without) != 0)
		return NULL;
	return mysql_store_result(m);
}

/* The inboxes with their own recording setting (-1 inherit, also before 005). */
static MYSQL_RES *inboxes_query(MYSQL *m)
{
	if (mysql_query(m, "SELECT id, org_id, COALESCE(record_calls, -1) FROM inbox ORDER BY id") == 0)
		return mysql_store_result(m);
	if (mysql_errno(m) != 1054)
		return NULL;
	if (mysql_query(m, "SELECT id, org_id, -1 FROM inbox ORDER BY id") != 0)
		return NULL;
	return mysql_store_result(m);
}

/* ---- the DNC delta (loader's private memory) --------------------------------- */

/* One row of dnc_change read since the base was built. */
struct dnc_row {
	uint64_t seq, version;
	char num[18];                 /* as in dnc_number: digits, or digits + '*' */
	int present;                  /* add 1, remove 0 */
};

static struct dnc_row *g_rows;
static size_t g_nrows, g_caprows;

static int row_cmp(const void *a, const void *b)
{
	const struct dnc_row *x = a, *y = b;
	int c = strcmp(x->num, y->num);
	return c ? c : (x->seq < y->seq ? -1 : x->seq > y->seq);
}

/* Forget the rows a base of `version` already holds. */
static void rows_drop_upto(uint64_t version)
{
	size_t o = 0;
	for (size_t i = 0; i < g_nrows; i++)
		if (g_rows[i].version > version)
			g_rows[o++] = g_rows[i];
	g_nrows = o;
}

/*
 * The delta as two builders (the last change of each entry wins), NULL when
 * there is nothing. Sorts g_rows by entry (then log order). Returns the
 * number of distinct entries, or -1 (out of memory).
 */
static long delta_build(ccq_numset_builder **adds, ccq_numset_builder **rems)
{
	long distinct = 0;

	*adds = *rems = NULL;
	if (!g_nrows)
		return 0;
	qsort(g_rows, g_nrows, sizeof(*g_rows), row_cmp);
	if (!(*adds = ccq_numset_builder_new()) || !(*rems = ccq_numset_builder_new()))
		goto oom;
	for (size_t i = 0; i < g_nrows; i++) {
		if (i + 1 < g_nrows && strcmp(g_rows[i].num, g_rows[i + 1].num) == 0)
			continue; /* a later change of the same entry decides */
		distinct++;
		if (ccq_numset_builder_add(g_rows[i].present ? *adds : *rems, g_rows[i].num) == -CCQ_NUMSET_E_NOMEM)
			goto oom;
	}
	return distinct;
oom:
	ccq_numset_builder_free(*adds);
	ccq_numset_builder_free(*rems);
	*adds = *rems = NULL;
	return -1;
}

static long delta_distinct(void)
{
	long n = 0;
	if (g_nrows)
		qsort(g_rows, g_nrows, sizeof(*g_rows), row_cmp);
	for (size_t i = 0; i < g_nrows; i++)
		n += !(i + 1 < g_nrows && strcmp(g_rows[i].num, g_rows[i + 1].num) == 0);
	return n;
}

/* ---- the DNC base, built in a thread of the loader --------------------------- */

struct rebuild {
	pthread_t th;
	int running;                  /* loop thread only */
	int done;                     /* set by the builder (atomic) */
	int ok;
	ccq_numset_builder *b;        /* sorted: _size() is cheap afterwards */
	uint64_t version;             /* list_version 'dnc' of the read */
	uint64_t rows;
	uint32_t ms;
	char reason[32];
	char err[256];
};

/*
 * Read dnc_number at one consistent point together with the 'dnc' version
 * (REPEATABLE READ, a consistent snapshot: the version and the rows match)
 * and sort it into rb->b. No Kamailio calls here: it runs in a thread.
 */
static void rebuild_run(struct rebuild *rb)
{
	uint64_t t0 = mono_ms();
	MYSQL *m;
	MYSQL_RES *r;
	MYSQL_ROW row;

	rb->ok = 0;
	rb->rows = 0;
	if (!(m = db_open(rb->err, sizeof(rb->err))))
		return;
	if (mysql_query(m, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ") != 0
			|| mysql_query(m, "START TRANSACTION WITH CONSISTENT SNAPSHOT") != 0
			|| q_u64(m, "SELECT version FROM list_version WHERE name = 'dnc'", &rb->version) < 0
			|| mysql_query(m, "SELECT number FROM dnc_number") != 0
			|| !(r = mysql_use_result(m))) {
		snprintf(rb->err, sizeof(rb->err), "reading the DNC registry: %s", mysql_error(m));
		mysql_close(m);
		return;
	}
	if (!(rb->b = ccq_numset_builder_new())) {
		snprintf(rb->err, sizeof(rb->err), "out of memory");
		mysql_free_result(r);
		mysql_close(m);
		return;
	}
	while ((row = mysql_fetch_row(r)))
		if (row[0] && ccq_numset_builder_add(rb->b, row[0]) == 0)
			rb->rows++;
	if (mysql_errno(m)) {
		snprintf(rb->err, sizeof(rb->err), "reading the DNC registry: %s", mysql_error(m));
		mysql_free_result(r);
		mysql_close(m);
		return;
	}
	mysql_free_result(r);
	mysql_query(m, "COMMIT");
	mysql_close(m);
	if (!ccq_numset_builder_size(rb->b)) {
		snprintf(rb->err, sizeof(rb->err), "out of memory sorting the DNC registry");
		return;
	}
	rb->ms = (uint32_t)(mono_ms() - t0);
	rb->ok = 1;
}

static void *rebuild_thread(void *arg)
{
	struct rebuild *rb = arg;

	mysql_thread_init();
	rebuild_run(rb);
	mysql_thread_end();
	__atomic_store_n(&rb->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int rebuild_start(struct rebuild *rb, const char *reason)
{
	sigset_t all, old;
	int rc;

	ccq_numset_builder_free(rb->b);
	rb->b = NULL;
	rb->done = 0;
	rb->err[0] = '\0';
	snprintf(rb->reason, sizeof(rb->reason), "%s", reason);
	/* the builder takes no signal meant for the Kamailio process */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&rb->th, NULL, rebuild_thread, rb);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		LM_ERR("ccq loader: cannot start the DNC builder thread (%d); building in the loop\n", rc);
		rebuild_run(rb);
		rb->done = 1;
		return 0;
	}
	rb->running = 1;
	return 0;
}

/* The built registry into its own shared memory block (loop thread). */
static struct comp_dnc *base_to_shm(struct rebuild *rb, char *err, size_t errlen)
{
	uint64_t t0 = mono_ms();
	size_t sz = ccq_numset_builder_size(rb->b), off = ALIGN64(sizeof(struct comp_dnc));
	struct comp_dnc *d = sz ? shm_malloc(off + sz) : NULL;
	int rc;

	if (!d) {
		snprintf(err, errlen, "no shared memory for a %zu-byte DNC image (raise kamailio -m)",
			off + sz);
		return NULL;
	}
	memset(d, 0, sizeof(*d));
	if ((rc = ccq_numset_builder_finish(rb->b, (char *)d + off, sz)) < 0
			|| (rc = ccq_numset_check((char *)d + off, sz)) < 0) {
		snprintf(err, errlen, "the DNC image failed its check: %s", ccq_numset_strerror(rc));
		shm_free(d);
		return NULL;
	}
	d->snaps = 1;
	d->size = off + sz;
	d->version = rb->version;
	d->image_off = off;
	d->built_at = wall_ms();
	d->load_ms = rb->ms + (uint32_t)(mono_ms() - t0);
	ccq_numset_builder_free(rb->b);
	rb->b = NULL;
	return d;
}

/* Loader-only: a snapshot or the loop let go of a base. */
static void base_unref(struct comp_dnc *d)
{
	if (d && --d->snaps == 0)
		shm_free(d);
}

/* ---- a snapshot --------------------------------------------------------------- */

/*
 * A new snapshot: the directory and lists read from MySQL (m) or copied from
 * prev (m NULL), the DNC base `base`, and the delta of g_rows as an overlay.
 */
static struct comp_snap *snap_build(MYSQL *m, const struct comp_snap *prev, struct comp_dnc *base,
		char *err, size_t errlen)
{
	uint64_t t0 = mono_ms();
	MYSQL_RES *ro = NULL, *ru = NULL, *rd = NULL, *ri = NULL, *rm = NULL;
	struct blist *lists = NULL;
	ccq_numset_builder *adds = NULL, *rems = NULL;
	size_t nlists = 0, cap = 0, dir_end, ovl = 0, total;
	uint64_t numbers = 0;
	struct comp_snap *s = NULL;
	uint32_t no = 0, nu = 0, nd = 0, ni = 0, nm = 0;

	if (delta_build(&adds, &rems) < 0) {
		snprintf(err, errlen, "out of memory building the DNC delta");
		return NULL;
	}
	if (adds || rems)
		ovl = ccq_numset_overlay_size(adds, rems);
	if (m) {
		/* one consistent view of the directory and lists: a user created
		 * between two of these reads would name an org or a device a user
		 * that the other read did not see (linked by index_by_id) */
		if (mysql_query(m, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ") != 0
				|| mysql_query(m, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
				!= 0) {
			snprintf(err, errlen, "starting to read the directory: %s", mysql_error(m));
			goto out;
		}
		if (mysql_query(m, "SELECT o.id, o.name, o.default_country, COALESCE(p.country_whitelist, ''), "
				"COALESCE(p.pin_policy, 'none') FROM org o LEFT JOIN compliance_policy p "
				"ON p.org_id = o.id ORDER BY o.id") != 0 || !(ro = mysql_store_result(m))
				|| !(ru = users_query(m))
				|| mysql_query(m, "SELECT username, domain, user_id, enabled FROM device") != 0
				|| !(rd = mysql_store_result(m))
				|| !(ri = inboxes_query(m))
				|| mysql_query(m, "SELECT user_id, inbox_id FROM inbox_member "
					"ORDER BY user_id, inbox_id") != 0
				|| !(rm = mysql_store_result(m))) {
			snprintf(err, errlen, "reading the directory: %s", mysql_error(m));
			goto out;
		}
		if (stream_into(m, "SELECT org_id, list, number FROM org_list_number ORDER BY org_id, list",
					&lists, &nlists, &cap, 1, -1, &numbers) < 0
				|| stream_into(m, "SELECT user_id, number FROM user_list_number ORDER BY user_id",
					&lists, &nlists, &cap, -1, 2, &numbers) < 0) {
			snprintf(err, errlen, "reading the lists: %s", mysql_error(m));
			goto out;
		}
		if (mysql_query(m, "COMMIT") != 0) {
			snprintf(err, errlen, "reading the directory: %s", mysql_error(m));
			goto out;
		}
		no = (uint32_t)mysql_num_rows(ro);
		nu = (uint32_t)mysql_num_rows(ru);
		nd = (uint32_t)mysql_num_rows(rd);
		ni = (uint32_t)mysql_num_rows(ri);
		nm = (uint32_t)mysql_num_rows(rm);
		dir_end = ALIGN64(sizeof(*s));
		dir_end += ALIGN64((size_t)no * sizeof(struct comp_org));
		dir_end += ALIGN64((size_t)nu * sizeof(struct comp_user));
		dir_end += ALIGN64((size_t)nd * sizeof(struct comp_device));
		dir_end += ALIGN64((size_t)ni * sizeof(struct comp_inbox));
		dir_end += ALIGN64((size_t)nm * sizeof(struct comp_member));
		for (size_t i = 0; i < nlists; i++) {
			lists[i].size = ccq_numset_builder_size(lists[i].b);
			if (!lists[i].size) {
				snprintf(err, errlen, "a number set could not be sized");
				goto out;
			}
			dir_end += ALIGN64(lists[i].size);
		}
	} else {
		dir_end = prev->dnc_off ? prev->dnc_off : prev->size;
		numbers = prev->numbers - prev->dnc_count;
	}
	total = dir_end + ALIGN64(ovl);
	s = shm_malloc(total);
	if (!s) {
		snprintf(err, errlen, "no shared memory for a %zu-byte snapshot (raise kamailio -m)", total);
		goto out;
	}
	if (!m) {
		memcpy(s, prev, dir_end);
	} else {
		size_t off = ALIGN64(sizeof(*s));
		char *b = (char *)s;
		struct comp_org *orgs;
		struct comp_user *users;
		struct comp_device *devs;
		struct comp_inbox *inboxes;
		struct comp_member *members;
		MYSQL_ROW row;
		uint32_t i;

		memset(s, 0, sizeof(*s));
		s->norgs = no;
		s->nusers = nu;
		s->ndevices = nd;
		s->orgs_off = off;
		orgs = (struct comp_org *)(b + off);
		off += ALIGN64((size_t)no * sizeof(struct comp_org));
		s->users_off = off;
		users = (struct comp_user *)(b + off);
		off += ALIGN64((size_t)nu * sizeof(struct comp_user));
		s->devices_off = off;
		devs = (struct comp_device *)(b + off);
		off += ALIGN64((size_t)nd * sizeof(struct comp_device));
		s->ninboxes = ni;
		s->inboxes_off = off;
		inboxes = (struct comp_inbox *)(b + off);
		off += ALIGN64((size_t)ni * sizeof(struct comp_inbox));
		s->nmembers = nm;
		s->members_off = off;
		members = (struct comp_member *)(b + off);
		off += ALIGN64((size_t)nm * sizeof(struct comp_member));
		for (size_t k = 0; k < nlists; k++) {
			if (ccq_numset_builder_finish(lists[k].b, b + off, lists[k].size) < 0
					|| ccq_numset_check(b + off, lists[k].size) != 0) {
				snprintf(err, errlen, "a number set failed its check");
				shm_free(s);
				s = NULL;
				goto out;
			}
			lists[k].off = off;
			off += ALIGN64(lists[k].size);
		}
		for (i = 0; (row = mysql_fetch_row(ro)); i++) {
			memset(&orgs[i], 0, sizeof(orgs[i]));
			orgs[i].id = (uint32_t)strtoul(row[0], NULL, 10);
			snprintf(orgs[i].name, sizeof(orgs[i].name), "%s", row[1]);
			snprintf(orgs[i].country, sizeof(orgs[i].country), "%s", row[2]);
			snprintf(orgs[i].country_whitelist, sizeof(orgs[i].country_whitelist), "%s", row[3]);
			orgs[i].pin_policy = strcmp(row[4], "all") == 0 ? CCQ_PIN_POLICY_ALL
				: strcmp(row[4], "international") == 0 ? CCQ_PIN_POLICY_INTERNATIONAL
				: CCQ_PIN_POLICY_NONE;
			for (size_t k = 0; k < nlists; k++)
				if (lists[k].kind <= 1 && lists[k].owner == orgs[i].id) {
					if (lists[k].kind == 0)
						orgs[i].blacklist_off = lists[k].off;
					else
						orgs[i].whitelist_off = lists[k].off;
				}
		}
		for (i = 0; (row = mysql_fetch_row(ru)); i++) {
			uint32_t org_id = (uint32_t)strtoul(row[1], NULL, 10);
			memset(&users[i], 0, sizeof(users[i]));
			users[i].id = (uint32_t)strtoul(row[0], NULL, 10);
			users[i].org = index_by_id(orgs, sizeof(*orgs), no, org_id);
			snprintf(users[i].ext, sizeof(users[i].ext), "%s", row[2]);
			snprintf(users[i].name, sizeof(users[i].name), "%s", row[3]);
			snprintf(users[i].caller_id, sizeof(users[i].caller_id), "%s", row[4]);
			snprintf(users[i].pin_hash, sizeof(users[i].pin_hash), "%s", row[5]);
			users[i].inbox_id = (uint32_t)strtoul(row[6], NULL, 10);
			users[i].record = atoi(row[7]) ? 1 : 0;
			snprintf(users[i].record_rule, sizeof(users[i].record_rule), "%s", row[8]);
			users[i].own_record = row[9] ? atoi(row[9]) : -1;
			users[i].org_record = row[10] && atoi(row[10]) ? 1 : 0;
			users[i].all_inboxes = row[11] && atoi(row[11]) ? 1 : 0;
			for (size_t k = 0; k < nlists; k++)
				if (lists[k].kind == 2 && lists[k].owner == users[i].id)
					users[i].personal_off = lists[k].off;
		}
		for (i = 0; (row = mysql_fetch_row(rd)); i++) {
			uint32_t uid = (uint32_t)strtoul(row[2], NULL, 10);
			memset(&devs[i], 0, sizeof(devs[i]));
			snprintf(devs[i].username, sizeof(devs[i].username), "%s", row[0]);
			snprintf(devs[i].domain, sizeof(devs[i].domain), "%s", row[1]);
			devs[i].enabled = atoi(row[3]);
			devs[i].user = index_by_id(users, sizeof(*users), nu, uid);
		}
		qsort(devs, nd, sizeof(*devs), device_cmp);
		/* both in the order comp_user_record()'s binary searches need */
		for (i = 0; (row = mysql_fetch_row(ri)); i++) {
			inboxes[i].id = (uint32_t)strtoul(row[0], NULL, 10);
			inboxes[i].org_id = (uint32_t)strtoul(row[1], NULL, 10);
			inboxes[i].record = atoi(row[2]);
		}
		for (i = 0; (row = mysql_fetch_row(rm)); i++) {
			members[i].user_id = (uint32_t)strtoul(row[0], NULL, 10);
			members[i].inbox_id = (uint32_t)strtoul(row[1], NULL, 10);
		}
	}
	s->refs = 0;
	s->next_retired = NULL;
	s->size = total;
	s->dnc = base;
	s->dnc_off = 0;
	s->delta_adds = s->delta_removes = 0;
	if (ovl) {
		int rc = ccq_numset_overlay_write((char *)s + dir_end, ovl, dnc_base_image(base), adds, rems);
		if (rc < 0 || (rc = ccq_numset_check((char *)s + dir_end, ovl)) < 0) {
			snprintf(err, errlen, "the DNC delta failed: %s", ccq_numset_strerror(rc));
			shm_free(s);
			s = NULL;
			goto out;
		}
		s->dnc_off = dir_end;
		s->delta_adds = (uint32_t)ccq_numset_overlay_adds((char *)s + dir_end);
		s->delta_removes = (uint32_t)ccq_numset_overlay_removes((char *)s + dir_end);
	}
	if (base)
		base->snaps++;
	s->dnc_count = ccq_numset_count(comp_dnc_set(s)) + ccq_numset_prefix_count(comp_dnc_set(s));
	s->numbers = numbers + s->dnc_count;
	s->load_ms = (uint32_t)(mono_ms() - t0);
	s->loaded_at = wall_ms();
out:
	ccq_numset_builder_free(adds);
	ccq_numset_builder_free(rems);
	for (size_t k = 0; k < nlists; k++)
		ccq_numset_builder_free(lists[k].b);
	free(lists);
	if (ro)
		mysql_free_result(ro);
	if (ru)
		mysql_free_result(ru);
	if (rd)
		mysql_free_result(rd);
	if (ri)
		mysql_free_result(ri);
	if (rm)
		mysql_free_result(rm);
	return s;
}

static struct comp_snap *g_retired; /* loader-only list of replaced snapshots */

/*
 * Swap s in, and count what it did in the same lock, so that a reader of the
 * stats who sees s sees its counters: dir (the directory was read), delta
 * (DNC log rows applied), changed_at (unix ms of the change it is the first
 * to show, 0 none) and kind.
 */
static void publish(struct comp_snap *s, int dir, int delta, uint64_t changed_at,
		const char *kind)
{
	lock_get(&g_cs->lock);
	if (g_cs->cur) {
		g_cs->cur->next_retired = g_retired;
		g_retired = g_cs->cur;
	}
	g_cs->cur = s;
	g_cs->st.snapshots++;
	g_cs->st.dir_loads += dir;
	g_cs->st.delta_applies += delta;
	if (changed_at) {
		int64_t d = (int64_t)(s->loaded_at - changed_at);
		g_cs->st.last_change_ms = d < 0 ? 0 : d;
		snprintf(g_cs->st.last_change_kind, sizeof(g_cs->st.last_change_kind), "%s", kind);
	}
	lock_release(&g_cs->lock);
}

static void free_retired(void)
{
	struct comp_snap **pp = &g_retired, *s;

	lock_get(&g_cs->lock);
	while ((s = *pp)) {
		if (s->refs == 0) {
			*pp = s->next_retired;
			base_unref(s->dnc);
			shm_free(s);
		} else {
			pp = &s->next_retired;
		}
	}
	lock_release(&g_cs->lock);
}

static void loader_error(const char *what, const char *err)
{
	LM_ERR("ccq loader: %s (%s); the previous snapshot stays in use\n", what, err);
	lock_get(&g_cs->lock);
	snprintf(g_cs->st.last_error, sizeof(g_cs->st.last_error), "%s", err);
	g_cs->st.last_error_at = wall_ms();
	lock_release(&g_cs->lock);
}

/* ---- the loop ----------------------------------------------------------------- */

struct versions {
	uint64_t dir, dnc;            /* sum of the rows other than 'dnc'; the 'dnc' row */
	uint64_t dir_changed_ms, dnc_changed_ms; /* newest changed_at, unix ms */
};

static int read_versions(MYSQL *m, struct versions *v)
{
	MYSQL_RES *r;
	MYSQL_ROW row;

	memset(v, 0, sizeof(*v));
	if (mysql_query(m, "SELECT name, version, CAST(UNIX_TIMESTAMP(changed_at) * 1000 AS UNSIGNED) "
			"FROM list_version") != 0 || !(r = mysql_store_result(m)))
		return -1;
	while ((row = mysql_fetch_row(r))) {
		uint64_t ver = strtoull(row[1], NULL, 10), at = row[2] ? strtoull(row[2], NULL, 10) : 0;
		if (strcmp(row[0], "dnc") == 0) {
			v->dnc = ver;
			v->dnc_changed_ms = at;
		} else {
			v->dir += ver;
			if (at > v->dir_changed_ms)
				v->dir_changed_ms = at;
		}
	}
	mysql_free_result(r);
	return 0;
}

/* The loop's DNC state (loader process only). */
static struct comp_dnc *g_base;   /* current base (holds one of its snaps) */
static uint64_t g_applied;        /* dnc_change read up to this version */
static uint64_t g_pend_from, g_pend_to; /* versions only a new base can show; 0 none */
static int g_pend_now;            /* rebuild without waiting (reload, gap, no log) */
static char g_pend_reason[32];
static uint64_t g_bulk_first, g_bulk_last; /* mono ms of the bulk rows not in the base */

static void pend(uint64_t from, uint64_t to, int now, const char *reason)
{
	if (!g_pend_from || from < g_pend_from)
		g_pend_from = from;
	if (to > g_pend_to)
		g_pend_to = to;
	g_pend_now |= now;
	snprintf(g_pend_reason, sizeof(g_pend_reason), "%s", reason);
}

/* DNC versions the published snapshot can claim: all of them up to ... */
static uint64_t dnc_reflected(void)
{
	return g_pend_from ? g_pend_from - 1 : g_applied;
}

/*
 * Read dnc_change above g_applied up to `upto` (the 'dnc' version just read:
 * every row up to it is committed). 1 if rows were taken into the delta, 0 if
 * none, -1 on a MySQL error.
 */
static int read_log(MYSQL *m, uint64_t upto)
{
	char q[200];
	MYSQL_RES *r;
	MYSQL_ROW row;
	uint64_t versions = 0, last = 0, bulk = 0;
	int took = 0;

	snprintf(q, sizeof(q), "SELECT seq, version, op, COALESCE(number, '') FROM dnc_change "
		"WHERE version > %llu AND version <= %llu ORDER BY seq", (unsigned long long)g_applied,
		(unsigned long long)upto);
	if (mysql_query(m, q) != 0) {
		if (mysql_errno(m) == 1146) { /* ER_NO_SUCH_TABLE: a schema before 006 */
			pend(g_applied + 1, upto, 1, "no change log");
			g_applied = upto;
			return 0;
		}
		return -1;
	}
	if (!(r = mysql_store_result(m)))
		return -1;
	while ((row = mysql_fetch_row(r))) {
		uint64_t ver = strtoull(row[1], NULL, 10);
		if (ver != last)
			versions++;
		last = ver;
		if (strcmp(row[2], "bulk") == 0) {
			bulk++;
			pend(ver, ver, 0, "bulk import");
			continue;
		}
		if (g_nrows == g_caprows) {
			size_t nc = g_caprows ? g_caprows * 2 : 1024;
			struct dnc_row *n = realloc(g_rows, nc * sizeof(*n));
			if (!n) {
				pend(ver, upto, 1, "out of memory");
				break;
			}
			g_rows = n;
			g_caprows = nc;
		}
		g_rows[g_nrows].seq = strtoull(row[0], NULL, 10);
		g_rows[g_nrows].version = ver;
		snprintf(g_rows[g_nrows].num, sizeof(g_rows[g_nrows].num), "%s", row[3]);
		g_rows[g_nrows].present = strcmp(row[2], "add") == 0;
		g_nrows++;
		took = 1;
	}
	mysql_free_result(r);
	/* every version is one transaction with at least one row: else a gap */
	if (versions != upto - g_applied)
		pend(g_applied + 1, upto, 1, "gap in the change log");
	if (bulk) {
		uint64_t now = mono_ms();
		if (!g_bulk_first)
			g_bulk_first = now;
		g_bulk_last = now;
		lock_get(&g_cs->lock);
		g_cs->st.bulk_rows += bulk;
		lock_release(&g_cs->lock);
	}
	g_applied = upto;
	return took;
}

/* A new base is in shared memory: it becomes the current one. */
static void base_install(struct comp_dnc *d, const char *reason)
{
	base_unref(g_base);
	g_base = d;
	rows_drop_upto(d->version);
	if (d->version > g_applied)
		g_applied = d->version;
	if (g_pend_to && d->version >= g_pend_to) {
		g_pend_from = g_pend_to = 0;
		g_pend_now = 0;
		g_bulk_first = g_bulk_last = 0;
	} else if (g_pend_to) {
		/* more import batches came while it was built: wait for the next */
		if (d->version >= g_pend_from)
			g_pend_from = d->version + 1;
		if (g_bulk_first)
			g_bulk_first = mono_ms();
	}
	lock_get(&g_cs->lock);
	g_cs->st.full_builds++;
	g_cs->st.base_version = d->version;
	g_cs->st.base_load_ms = d->load_ms;
	g_cs->st.base_built_at = d->built_at;
	snprintf(g_cs->st.rebuild_reason, sizeof(g_cs->st.rebuild_reason), "%s", reason);
	lock_release(&g_cs->lock);
	LM_NOTICE("ccq loader: DNC base image of version %llu built in %u ms (%s): %zu entries, "
		"%zu bytes\n", (unsigned long long)d->version, d->load_ms, reason,
		ccq_numset_count(dnc_base_image(d)) + ccq_numset_prefix_count(dnc_base_image(d)), d->size);
}

/* Should a new base be built now? Its reason, or NULL. */
static const char *rebuild_due(void)
{
	uint64_t now = mono_ms();

	if (g_pend_to && g_pend_now)
		return g_pend_reason;
	if (g_pend_to && g_bulk_last && (now - g_bulk_last >= BULK_QUIET_MS
			|| now - g_bulk_first >= BULK_MAX_WAIT_MS))
		return "bulk import";
	if (g_nrows > DELTA_MAX && delta_distinct() > DELTA_MAX)
		return "delta full";
	return NULL;
}

static void loader_loop(void)
{
	MYSQL *m = NULL;
	struct rebuild rb;
	int logged_down = 0;

	memset(&rb, 0, sizeof(rb));
	for (;;) {
		char err[256];
		struct versions v;
		struct comp_snap *cur, *s;
		int dir_changed, log_took = 0, new_base = 0;
		const char *why;

		cfg_update();
		free_retired();
		if (!m && !(m = db_open(err, sizeof(err)))) {
			if (!logged_down)
				LM_ERR("ccq loader: cannot reach MySQL (%s); the last loaded compliance lists "
					"stay in use\n", err);
			logged_down = 1;
			sleep(2);
			continue;
		}
		if (logged_down)
			LM_NOTICE("ccq loader: MySQL reachable again\n");
		logged_down = 0;
		if (read_versions(m, &v) < 0) {
			LM_WARN("ccq loader: %s\n", mysql_error(m));
			mysql_close(m);
			m = NULL;
			continue;
		}
		cur = g_cs->cur; /* only this process changes it */
		if (g_cs->reload) {
			g_cs->reload = 0;
			/* a base of the version it has (or newer) ends it */
			pend(g_applied + 1, v.dnc > g_applied ? v.dnc : g_applied, 1, "reload");
			cur = NULL; /* the directory too */
		}
		/* the first base: built here, nothing to serve meanwhile */
		if (!g_base && !rb.running) {
			snprintf(rb.reason, sizeof(rb.reason), "start");
			rebuild_run(&rb);
			rb.done = 1;
		}
		if (v.dnc > g_applied && g_base) {
			int rc = read_log(m, v.dnc);
			if (rc < 0) {
				LM_WARN("ccq loader: %s\n", mysql_error(m));
				mysql_close(m);
				m = NULL;
				continue;
			}
			log_took = rc;
		}
		/* a base built by the thread (or just now) */
		if (rb.running ? __atomic_load_n(&rb.done, __ATOMIC_ACQUIRE) : rb.done) {
			struct comp_dnc *d = NULL;
			if (rb.running)
				pthread_join(rb.th, NULL);
			rb.running = 0;
			rb.done = 0;
			if (!rb.ok || !(d = base_to_shm(&rb, err, sizeof(err))))
				loader_error("building the DNC registry failed", rb.ok ? err : rb.err);
			ccq_numset_builder_free(rb.b);
			rb.b = NULL;
			if (d) {
				base_install(d, rb.reason);
				new_base = 1;
			} else if (!g_base) {
				sleep(1);
				continue;
			}
		}
		if (!rb.running && (why = rebuild_due()))
			rebuild_start(&rb, why);
		lock_get(&g_cs->lock);
		g_cs->st.rebuilding = rb.running;
		g_cs->st.rebuild_pending = g_pend_to != 0;
		lock_release(&g_cs->lock);

		dir_changed = !cur || cur->dir_version != v.dir;
		if (dir_changed || new_base || log_took || cur->dnc_version != dnc_reflected()
				|| cur->dnc != g_base) {
			s = snap_build(dir_changed ? m : NULL, cur, g_base, err, sizeof(err));
			if (!s) {
				loader_error("load failed", err);
				mysql_close(m);
				m = NULL;
				sleep(1);
				continue;
			}
			s->dir_version = dir_changed ? v.dir : cur->dir_version;
			s->dnc_version = dnc_reflected();
			s->version = s->dir_version + s->dnc_version;
			{
				uint64_t at = dir_changed ? v.dir_changed_ms : 0;
				const char *kind = dir_changed ? "directory" : new_base ? "dnc base" : "dnc delta";
				if ((log_took || (new_base && g_base->version == v.dnc)) && v.dnc_changed_ms > at) {
					at = v.dnc_changed_ms;
					kind = log_took ? "dnc delta" : "dnc base";
				}
				publish(s, dir_changed, log_took, cur ? at : 0, kind);
			}
			LM_NOTICE("ccq loader: compliance snapshot %llu loaded in %u ms: %llu DNC entries "
				"(delta +%u -%u), %llu list entries, %u users, %zu bytes (+%zu DNC base)\n",
				(unsigned long long)s->version, s->load_ms, (unsigned long long)s->dnc_count,
				s->delta_adds, s->delta_removes, (unsigned long long)(s->numbers - s->dnc_count),
				s->nusers, s->size, g_base ? g_base->size : 0);
		}
		/* sleep, but pick up a finished base at once */
		for (int slept = 0; slept < g_poll_ms; slept += 20) {
			if (rb.running && __atomic_load_n(&rb.done, __ATOMIC_ACQUIRE))
				break;
			usleep(20000);
		}
	}
}

int ccq_comp_fork(void)
{
	int pid;
	if (!g_cs)
		return 0;
	pid = fork_process(PROC_NOCHLDINIT, "ccq loader", 1);
	if (pid < 0)
		return -1;
	if (pid == 0) {
		if (cfg_child_init())
			exit(1);
		mysql_thread_init();
		g_cs->st.last_change_ms = -1;
		loader_loop();
		exit(0);
	}
	return 0;
}
