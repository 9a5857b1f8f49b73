/*
 * The inboxes' member views (see agentview.h).
 */
#include "agentview.h"
#include "dircache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct view {
	uint32_t inbox;
	int64_t loaded_ms;
	uint64_t dgen, hard, soft;   /* what the view was read after */
	size_t n;
	struct av_member *m;
	unsigned char *refused;      /* a claim failed: not offered until the next read */
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct view *g_v;
static size_t g_nv;
static _Atomic uint64_t g_hard = 1, g_soft = 1;
/* changes made to the views here (takes, untakes, ends): a read that
 * overlapped one may have missed it, and is read again soon */
static _Atomic uint64_t g_local;

static struct view *find(uint32_t inbox)
{
	for (size_t i = 0; i < g_nv; i++)
		if (g_v[i].inbox == inbox)
			return &g_v[i];
	return NULL;
}

int av_stale(uint32_t inbox, int64_t now_ms, int64_t max_age_ms, struct av_token *t)
{
	struct view *v;
	int stale;

	/* read before the caller's query: a change after this makes what it
	 * installs stale again */
	t->dgen = dircache_gen();
	t->hard = atomic_load(&g_hard);
	t->soft = atomic_load(&g_soft);
	t->local = atomic_load(&g_local);
	pthread_mutex_lock(&g_mu);
	v = find(inbox);
	stale = !v || v->dgen != t->dgen || v->hard != t->hard
		|| now_ms - v->loaded_ms >= max_age_ms || now_ms < v->loaded_ms
		|| (v->soft != t->soft && now_ms - v->loaded_ms >= AV_REFRESH_MS);
	pthread_mutex_unlock(&g_mu);
	return stale;
}

void av_install(uint32_t inbox, const struct av_member *m, size_t n, const struct av_token *t,
		int64_t now_ms)
{
	struct view *v;
	struct av_member *copy = n ? malloc(n * sizeof(*copy)) : NULL;
	unsigned char *refused = n ? calloc(n, 1) : NULL;

	if (n && (!copy || !refused)) {
		free(copy);
		free(refused);
		return;
	}
	if (n)
		memcpy(copy, m, n * sizeof(*copy));
	pthread_mutex_lock(&g_mu);
	v = find(inbox);
	if (!v) {
		struct view *nv = realloc(g_v, (g_nv + 1) * sizeof(*nv));
		if (!nv) {
			pthread_mutex_unlock(&g_mu);
			free(copy);
			free(refused);
			return;
		}
		g_v = nv;
		v = &g_v[g_nv++];
		memset(v, 0, sizeof(*v));
		v->inbox = inbox;
	}
	free(v->m);
	free(v->refused);
	v->m = copy;
	v->refused = refused;
	v->n = n;
	v->loaded_ms = now_ms;
	/* a change during the read shows as a difference at the next check */
	v->dgen = t->dgen;
	v->hard = t->hard;
	/* a take or an end during the read: soft-stale (0 is never current) */
	v->soft = atomic_load(&g_local) == t->local ? t->soft : 0;
	pthread_mutex_unlock(&g_mu);
}

/* agent's calls in progress, in every view (g_mu held) */
static void add_calls(uint64_t agent, int d)
{
	atomic_fetch_add(&g_local, 1);
	for (size_t k = 0; k < g_nv; k++)
		for (size_t i = 0; i < g_v[k].n; i++) {
			struct av_member *a = &g_v[k].m[i];
			if (a->id != agent)
				continue;
			if (d > 0)
				a->calls++;
			else if (a->calls)
				a->calls--;
		}
}

/* a before b in the order of offers? */
static int before(const struct av_member *a, const struct av_member *b)
{
	if (a->calls != b->calls)
		return a->calls < b->calls;
	if ((a->last_end_ms == 0) != (b->last_end_ms == 0))
		return a->last_end_ms == 0;
	if (a->last_end_ms != b->last_end_ms)
		return a->last_end_ms < b->last_end_ms;
	return a->id < b->id;
}

int av_take(uint32_t inbox, const uint64_t *skip, size_t nskip, int64_t now_ms,
		struct av_member *out)
{
	struct view *v;
	struct av_member *best = NULL;

	pthread_mutex_lock(&g_mu);
	v = find(inbox);
	for (size_t i = 0; v && i < v->n; i++) {
		struct av_member *a = &v->m[i];
		int skipped = 0;
		if (!a->registered || a->calls >= a->max_calls || v->refused[i]
				|| (a->wrapup_until_ms && a->wrapup_until_ms > now_ms))
			continue;
		for (size_t k = 0; k < nskip && !skipped; k++)
			skipped = skip[k] == a->id;
		if (!skipped && (!best || before(a, best)))
			best = a;
	}
	if (best) {
		*out = *best;
		out->calls++;
		add_calls(best->id, 1);   /* in the views of all the agent's inboxes */
	}
	pthread_mutex_unlock(&g_mu);
	return best != NULL;
}

void av_untake(uint32_t inbox, uint64_t agent, int refused)
{
	struct view *v;
	pthread_mutex_lock(&g_mu);
	add_calls(agent, -1);
	v = find(inbox);
	for (size_t i = 0; refused && v && i < v->n; i++)
		if (v->m[i].id == agent)
			v->refused[i] = 1;
	pthread_mutex_unlock(&g_mu);
	if (refused)
		av_soft_dirty();
}

void av_call_over(uint64_t agent, int answered, int64_t now_ms)
{
	pthread_mutex_lock(&g_mu);
	add_calls(agent, -1);
	for (size_t k = 0; k < g_nv; k++)
		for (size_t i = 0; i < g_v[k].n; i++) {
			struct av_member *a = &g_v[k].m[i];
			if (a->id != agent)
				continue;
			if (answered && now_ms > a->last_end_ms)
				a->last_end_ms = now_ms;
			if (answered && now_ms + (int64_t)a->wrapup_seconds * 1000 > a->wrapup_until_ms)
				a->wrapup_until_ms = now_ms + (int64_t)a->wrapup_seconds * 1000;
		}
	pthread_mutex_unlock(&g_mu);
}

void av_soft_dirty(void)
{
	atomic_fetch_add(&g_soft, 1);
}

void av_hard_dirty(void)
{
	atomic_fetch_add(&g_hard, 1);
}

void av_clear(void)
{
	pthread_mutex_lock(&g_mu);
	for (size_t k = 0; k < g_nv; k++) {
		free(g_v[k].m);
		free(g_v[k].refused);
	}
	free(g_v);
	g_v = NULL;
	g_nv = 0;
	pthread_mutex_unlock(&g_mu);
}
