/*
 * The compliance snapshot and its loader process; see ccq_comp.h.
 *
 * The loader polls list_version (one tiny query) every poll interval; when
 * the sum changed it reads the lists with streaming queries, builds the
 * number sets in its private memory, copies everything into ONE new shared
 * memory block, and swaps the pointer under a short lock. Readers take a
 * reference, so the old snapshot is freed only when the last reader is done:
 * a large load never blocks a call, and calls always see a whole snapshot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
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

#define RETIRED_MAX 8

struct comp_shm {
	gen_lock_t lock;
	struct comp_snap *cur;
	struct comp_snap *retired[RETIRED_MAX];
	volatile int reload;
	volatile uint64_t last_error_at;
	char last_error[256];
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

const struct comp_user *comp_user_by_device(const struct comp_snap *s, const char *username,
		const char *domain)
{
	const struct comp_device *d = comp_devices(s);
	for (uint32_t i = 0; i < s->ndevices; i++)
		if (d[i].enabled && strcmp(d[i].username, username) == 0
				&& (!domain || strcasecmp(d[i].domain, domain) == 0))
			return &comp_users(s)[d[i].user];
	return NULL;
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
	in.dnc = comp_image(s, s->dnc_off);
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
	if (!mysql_real_connect(m, host, user, pass, db, port, NULL, 0)) {
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

/* A list being built, for one owner (an org's list, a user, the DNC). */
struct blist {
	uint32_t owner;               /* org id or user id */
	int kind;                     /* 0 blacklist, 1 whitelist, 2 personal, 3 dnc */
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
		uint32_t owner = fixed_kind == 3 ? 0 : (uint32_t)strtoul(row[0], NULL, 10);
		int kind = fixed_kind >= 0 ? fixed_kind : (strcmp(row[kind_col], "whitelist") == 0);
		const char *num = row[fixed_kind == 3 ? 0 : (kind_col >= 0 ? 2 : 1)];
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
	static const char *with_rec =
		"SELECT u.id, u.org_id, u.ext_key, u.name, COALESCE(u.caller_id, ''), "
		"COALESCE(u.pin_hash, ''), COALESCE(d.inbox_id, 0), "
		"COALESCE(u.record_calls, i.record_calls, o.record_calls, 0), "
		"CASE WHEN u.record_calls IS NOT NULL THEN 'user' "
		"WHEN i.record_calls IS NOT NULL THEN 'inbox' ELSE 'organisation' END "
		"FROM user u JOIN org o ON o.id = u.org_id "
		"LEFT JOIN (SELECT user_id, MIN(inbox_id) AS inbox_id FROM inbox_member "
		"GROUP BY user_id) d ON d.user_id = u.id "
		"LEFT JOIN inbox i ON i.id = d.inbox_id ORDER BY u.id";
	static const char *without =
		"SELECT u.id, u.org_id, u.ext_key, u.name, COALESCE(u.caller_id, ''), "
		"COALESCE(u.pin_hash, ''), COALESCE((SELECT MIN(im.inbox_id) FROM inbox_member im "
		"WHERE im.user_id = u.id), 0), 0, 'organisation' FROM user u ORDER BY u.id";

	if (mysql_query(m, with_rec) == 0)
		return mysql_store_result(m);
	if (mysql_errno(m) != 1054) /* ER_BAD_FIELD_ERROR: an older schema */
		return NULL;
	if (mysql_query(m, without) != 0)
		return NULL;
	return mysql_store_result(m);
}

static struct comp_snap *build(MYSQL *m, uint64_t version, char *err, size_t errlen)
{
	struct timespec t0, t1;
	MYSQL_RES *ro = NULL, *ru = NULL, *rd = NULL;
	struct blist *lists = NULL;
	size_t nlists = 0, cap = 0, total;
	uint64_t numbers = 0, dnc = 0;
	struct comp_snap *s = NULL;
	uint32_t no, nu, nd;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (mysql_query(m, "SELECT o.id, o.name, o.default_country, COALESCE(p.country_whitelist, ''), "
			"COALESCE(p.pin_policy, 'none') FROM org o LEFT JOIN compliance_policy p "
			"ON p.org_id = o.id ORDER BY o.id") != 0 || !(ro = mysql_store_result(m))
			|| !(ru = users_query(m))
			|| mysql_query(m, "SELECT username, domain, user_id, enabled FROM device") != 0
			|| !(rd = mysql_store_result(m))) {
		snprintf(err, errlen, "reading the directory: %s", mysql_error(m));
		goto out;
	}
	if (stream_into(m, "SELECT number FROM dnc_number", &lists, &nlists, &cap, -1, 3, &dnc) < 0
			|| stream_into(m, "SELECT org_id, list, number FROM org_list_number ORDER BY org_id, list",
				&lists, &nlists, &cap, 1, -1, &numbers) < 0
			|| stream_into(m, "SELECT user_id, number FROM user_list_number ORDER BY user_id",
				&lists, &nlists, &cap, -1, 2, &numbers) < 0) {
		snprintf(err, errlen, "reading the lists: %s", mysql_error(m));
		goto out;
	}
	numbers += dnc;
	no = (uint32_t)mysql_num_rows(ro);
	nu = (uint32_t)mysql_num_rows(ru);
	nd = (uint32_t)mysql_num_rows(rd);
	total = ALIGN64(sizeof(*s));
	total += ALIGN64((size_t)no * sizeof(struct comp_org));
	total += ALIGN64((size_t)nu * sizeof(struct comp_user));
	total += ALIGN64((size_t)nd * sizeof(struct comp_device));
	for (size_t i = 0; i < nlists; i++) {
		lists[i].size = ccq_numset_builder_size(lists[i].b);
		if (!lists[i].size) {
			snprintf(err, errlen, "a number set could not be sized");
			goto out;
		}
		total += ALIGN64(lists[i].size);
	}
	s = shm_malloc(total);
	if (!s) {
		snprintf(err, errlen, "no shared memory for a %zu-byte snapshot (raise kamailio -m)", total);
		goto out;
	}
	memset(s, 0, sizeof(*s));
	s->size = total;
	s->version = version;
	s->norgs = no;
	s->nusers = nu;
	s->ndevices = nd;
	s->dnc_count = dnc;
	s->numbers = numbers;
	{
		size_t off = ALIGN64(sizeof(*s));
		char *base = (char *)s;
		struct comp_org *orgs;
		struct comp_user *users;
		struct comp_device *devs;
		MYSQL_ROW row;
		uint32_t i;

		s->orgs_off = off;
		orgs = (struct comp_org *)(base + off);
		off += ALIGN64((size_t)no * sizeof(struct comp_org));
		s->users_off = off;
		users = (struct comp_user *)(base + off);
		off += ALIGN64((size_t)nu * sizeof(struct comp_user));
		s->devices_off = off;
		devs = (struct comp_device *)(base + off);
		off += ALIGN64((size_t)nd * sizeof(struct comp_device));
		for (size_t k = 0; k < nlists; k++) {
			if (ccq_numset_builder_finish(lists[k].b, base + off, lists[k].size) < 0
					|| ccq_numset_check(base + off, lists[k].size) != 0) {
				snprintf(err, errlen, "a number set failed its check");
				shm_free(s);
				s = NULL;
				goto out;
			}
			lists[k].off = off;
			if (lists[k].kind == 3)
				s->dnc_off = off;
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
			for (uint32_t k = 0; k < no; k++)
				if (orgs[k].id == org_id)
					users[i].org = k;
			snprintf(users[i].ext, sizeof(users[i].ext), "%s", row[2]);
			snprintf(users[i].name, sizeof(users[i].name), "%s", row[3]);
			snprintf(users[i].caller_id, sizeof(users[i].caller_id), "%s", row[4]);
			snprintf(users[i].pin_hash, sizeof(users[i].pin_hash), "%s", row[5]);
			users[i].inbox_id = (uint32_t)strtoul(row[6], NULL, 10);
			users[i].record = atoi(row[7]) ? 1 : 0;
			snprintf(users[i].record_rule, sizeof(users[i].record_rule), "%s", row[8]);
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
			for (uint32_t k = 0; k < nu; k++)
				if (users[k].id == uid)
					devs[i].user = k;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s->load_ms = (uint32_t)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
	s->loaded_at = wall_ms();
out:
	for (size_t k = 0; k < nlists; k++)
		ccq_numset_builder_free(lists[k].b);
	free(lists);
	if (ro)
		mysql_free_result(ro);
	if (ru)
		mysql_free_result(ru);
	if (rd)
		mysql_free_result(rd);
	return s;
}

static void publish(struct comp_snap *s)
{
	lock_get(&g_cs->lock);
	if (g_cs->cur) {
		int placed = 0;
		for (int i = 0; i < RETIRED_MAX && !placed; i++)
			if (!g_cs->retired[i]) {
				g_cs->retired[i] = g_cs->cur;
				placed = 1;
			}
		if (!placed)
			LM_WARN("ccq loader: too many retired snapshots in use; one is leaked\n");
	}
	g_cs->cur = s;
	lock_release(&g_cs->lock);
}

static void free_retired(void)
{
	lock_get(&g_cs->lock);
	for (int i = 0; i < RETIRED_MAX; i++)
		if (g_cs->retired[i] && g_cs->retired[i]->refs == 0) {
			shm_free(g_cs->retired[i]);
			g_cs->retired[i] = NULL;
		}
	lock_release(&g_cs->lock);
}

static void loader_loop(void)
{
	MYSQL *m = NULL;
	uint64_t have = 0;
	int logged_down = 0;

	for (;;) {
		char err[256];
		uint64_t v;

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
		if (q_u64(m, "SELECT SUM(version) FROM list_version", &v) < 0) {
			LM_WARN("ccq loader: %s\n", mysql_error(m));
			mysql_close(m);
			m = NULL;
			continue;
		}
		if (v != have || g_cs->reload) {
			struct comp_snap *s;
			g_cs->reload = 0;
			s = build(m, v, err, sizeof(err));
			if (s) {
				publish(s);
				have = v;
				LM_NOTICE("ccq loader: compliance snapshot %llu loaded in %u ms: %llu DNC "
					"entries, %llu list entries, %u users, %zu bytes\n",
					(unsigned long long)v, s->load_ms, (unsigned long long)s->dnc_count,
					(unsigned long long)(s->numbers - s->dnc_count), s->nusers, s->size);
			} else {
				LM_ERR("ccq loader: load failed (%s); the previous snapshot stays in use\n", err);
				snprintf(g_cs->last_error, sizeof(g_cs->last_error), "%s", err);
				g_cs->last_error_at = wall_ms();
				mysql_close(m);
				m = NULL;
				sleep(1);
				continue;
			}
		}
		usleep((useconds_t)g_poll_ms * 1000);
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
		loader_loop();
		exit(0);
	}
	return 0;
}
