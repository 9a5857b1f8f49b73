/*
 * Link to queued; see ccq_link.h.
 */
#include <string.h>
#include <time.h>

#include "core/dprint.h"
#include "core/locking.h"
#include "core/mem/shm_mem.h"
#include "core/timer.h"
#include "core/pt.h"

#include "ccq_link.h"
#include "ccq_cfg.h"

struct link_shm {
	gen_lock_t lock;
	struct ccq_link_stats st;
};

static struct link_shm *g_shm;
static ccq_client g_cl;
static int g_cl_ready;
static char g_addr[256];
static long long g_next_connect_ms; /* per process: no attempt before this */

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ccq_link_init_shm(void)
{
	g_shm = shm_malloc(sizeof(*g_shm));
	if (!g_shm) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(g_shm, 0, sizeof(*g_shm));
	if (!lock_init(&g_shm->lock)) {
		LM_ERR("cannot initialise the link lock\n");
		shm_free(g_shm);
		g_shm = NULL;
		return -1;
	}
	return 0;
}

void ccq_link_destroy_shm(void)
{
	if (g_shm) {
		lock_destroy(&g_shm->lock);
		shm_free(g_shm);
		g_shm = NULL;
	}
}

const char *ccq_link_addr(void)
{
	return g_addr;
}

int ccq_link_connected(void)
{
	return g_cl_ready && g_cl.fd >= 0;
}

static void mark_failure(const char *why)
{
	int first = 0;

	lock_get(&g_shm->lock);
	g_shm->st.failed++;
	if (!g_shm->st.outage) {
		g_shm->st.outage = 1;
		g_shm->st.outage_since = (long)time(NULL);
		first = 1;
	}
	lock_release(&g_shm->lock);
	if (first)
		LM_ERR("queued at %s is unreachable (%s): ccq_classify() calls proceed without a "
			"transaction and RPCs fail until it is back; this is logged once per outage\n",
			g_addr, why);
	else
		LM_DBG("queued still unreachable: %s\n", why);
}

static void mark_success(void)
{
	long since = 0;
	unsigned long fallbacks = 0;

	lock_get(&g_shm->lock);
	g_shm->st.ok++;
	if (g_shm->st.outage) {
		g_shm->st.outage = 0;
		since = g_shm->st.outage_since;
		fallbacks = g_shm->st.fallbacks;
	}
	lock_release(&g_shm->lock);
	if (since)
		LM_NOTICE("queued at %s is reachable again after %ld s of outage "
			"(%lu fallbacks so far)\n", g_addr, (long)time(NULL) - since, fallbacks);
}

void ccq_link_count_fallback(void)
{
	lock_get(&g_shm->lock);
	g_shm->st.fallbacks++;
	lock_release(&g_shm->lock);
}

void ccq_link_get_stats(struct ccq_link_stats *st)
{
	lock_get(&g_shm->lock);
	*st = g_shm->st;
	lock_release(&g_shm->lock);
}

static int ensure_connected(char *err, size_t errlen)
{
	long long now;

	if (g_cl.fd >= 0)
		return 0;
	now = mono_ms();
	if (now < g_next_connect_ms) {
		snprintf(err, errlen, "waiting %lld ms before reconnecting", g_next_connect_ms - now);
		return -1;
	}
	if (ccq_client_connect(&g_cl, g_addr, cfg_get(ccq, ccq_cfg, timeout), err, errlen) < 0) {
		g_next_connect_ms = now + cfg_get(ccq, ccq_cfg, reconnect_interval);
		return -1;
	}
	LM_DBG("process %d connected to queued at %s\n", my_pid(), g_addr);
	return 0;
}

void ccq_link_set_addr(const char *addr)
{
	snprintf(g_addr, sizeof(g_addr), "%s", addr);
}

void ccq_link_child_init(const char *addr)
{
	char err[256];

	snprintf(g_addr, sizeof(g_addr), "%s", addr);
	ccq_client_init(&g_cl);
	g_cl_ready = 1;
	if (ensure_connected(err, sizeof(err)) < 0)
		LM_DBG("no connection to queued yet: %s\n", err);
}

uint64_t ccq_link_next_id(void)
{
	return ccq_client_id(&g_cl);
}

int ccq_link_call(ccq_enc *enc, uint64_t id, ccq_msg *reply)
{
	char err[256] = "";
	int attempts = 1 + cfg_get(ccq, ccq_cfg, retries);

	if (!g_cl_ready) {
		ccq_enc_free(enc);
		return -1;
	}
	lock_get(&g_shm->lock);
	g_shm->st.requests++;
	lock_release(&g_shm->lock);
	for (int i = 0; i < attempts; i++) {
		if (ensure_connected(err, sizeof(err)) < 0)
			break; /* no point retrying a refused connection at once */
		/* The same id on every attempt: queued's operations are idempotent
		 * for a retried request (txn.create by Call-ID). */
		if (ccq_client_call(&g_cl, enc, id, cfg_get(ccq, ccq_cfg, timeout), reply,
				err, sizeof(err)) == 0) {
			ccq_enc_free(enc);
			mark_success();
			return 0;
		}
		LM_DBG("attempt %d of %d to queued failed: %s\n", i + 1, attempts, err);
	}
	ccq_enc_free(enc);
	mark_failure(err);
	return -1;
}
