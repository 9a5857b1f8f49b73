/*
 * Directory cache (see dircache.h): one hash table per kind of fact, each
 * behind its own mutex (lookups are a hash and a memcpy, far shorter than
 * any MySQL round trip the workers would otherwise make).
 */
#include "dircache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUCKETS 1024

struct entry {
	struct entry *next;
	uint64_t gen, at_ms;
	size_t size;
	char *key;
	unsigned char val[];
};

struct table {
	pthread_mutex_t mu;
	struct entry *b[BUCKETS];
	size_t n;
};

static struct table g_t[DC_NTABLES] = {
	{ .mu = PTHREAD_MUTEX_INITIALIZER }, { .mu = PTHREAD_MUTEX_INITIALIZER },
};
static _Atomic uint64_t g_gen = 1;

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t (*g_now)(void) = mono_ms;

void dircache_set_clock(uint64_t (*now_ms)(void))
{
	g_now = now_ms ? now_ms : mono_ms;
}

uint64_t dircache_gen(void)
{
	return atomic_load(&g_gen);
}

void dircache_bump(void)
{
	atomic_fetch_add(&g_gen, 1);
}

static unsigned hash(const char *s)
{
	uint32_t h = 2166136261u;   /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % BUCKETS;
}

static void flush_locked(struct table *t)
{
	for (unsigned i = 0; i < BUCKETS; i++) {
		struct entry *e = t->b[i], *nx;
		for (; e; e = nx) {
			nx = e->next;
			free(e->key);
			free(e);
		}
		t->b[i] = NULL;
	}
	t->n = 0;
}

int dircache_get(enum dircache_table tab, const char *key, void *val, size_t size)
{
	struct table *t = &g_t[tab];
	unsigned h = hash(key);
	uint64_t gen = dircache_gen(), now = g_now();
	int hit = 0;

	pthread_mutex_lock(&t->mu);
	for (struct entry *e = t->b[h]; e; e = e->next)
		if (strcmp(e->key, key) == 0) {
			if (e->gen == gen && now - e->at_ms < DIRCACHE_TTL_MS && e->size == size) {
				memcpy(val, e->val, size);
				hit = 1;
			}
			break;
		}
	pthread_mutex_unlock(&t->mu);
	return hit;
}

void dircache_put(enum dircache_table tab, const char *key, const void *val, size_t size,
		uint64_t gen)
{
	struct table *t = &g_t[tab];
	unsigned h = hash(key);
	struct entry *e, **pp;

	if (gen != dircache_gen())
		return;       /* read before a change: never store it */
	pthread_mutex_lock(&t->mu);
	for (pp = &t->b[h]; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->key, key) == 0) {
			e = *pp;
			*pp = e->next;
			free(e->key);
			free(e);
			t->n--;
			break;
		}
	if (t->n >= DIRCACHE_MAX)
		flush_locked(t);   /* rare (many source addresses): start over */
	e = malloc(sizeof(*e) + size);
	if (e && !(e->key = strdup(key))) {
		free(e);
		e = NULL;
	}
	if (e) {
		e->gen = gen;
		e->at_ms = g_now();
		e->size = size;
		memcpy(e->val, val, size);
		e->next = t->b[h];
		t->b[h] = e;
		t->n++;
	}
	pthread_mutex_unlock(&t->mu);
}

size_t dircache_count(enum dircache_table tab)
{
	size_t n;
	pthread_mutex_lock(&g_t[tab].mu);
	n = g_t[tab].n;
	pthread_mutex_unlock(&g_t[tab].mu);
	return n;
}

void dircache_clear(void)
{
	for (int i = 0; i < DC_NTABLES; i++) {
		pthread_mutex_lock(&g_t[i].mu);
		flush_locked(&g_t[i]);
		pthread_mutex_unlock(&g_t[i].mu);
	}
}
