/* The workers' job queue and its order (see jobq.h). */
#include "jobq.h"

#include <stddef.h>

static unsigned slot(uint64_t key)
{
	key ^= key >> 29;
	key *= 0xbf58476d1ce4e5b9ull;
	key ^= key >> 32;
	return (unsigned)(key % JOBQ_KEY_SLOTS);
}

void jobq_push(struct jobq *q, struct db_job *j)
{
	if (j->urgent)
		q->urgent++;
	if (j->key && q->keys[slot(j->key)] < UINT16_MAX)
		q->keys[slot(j->key)]++;
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

/* Is a job with this key queued before 'before'? */
static int key_queued_before(const struct jobq *q, uint64_t key, const struct db_job *before)
{
	if (!key || q->keys[slot(key)] < 2)
		return 0;       /* 'before' itself is the only one of that hash */
	for (const struct db_job *j = q->head; j && j != before; j = j->next)
		if (j->key == key)
			return 1;
	return 0;
}

static void unlink_job(struct jobq *q, struct db_job *j, struct db_job *prev)
{
	if (prev)
		prev->next = j->next;
	else
		q->head = j->next;
	if (q->tail == j)
		q->tail = prev;
	j->next = NULL;
	if (j->urgent)
		q->urgent--;
	if (j->key && q->keys[slot(j->key)] > 0 && q->keys[slot(j->key)] < UINT16_MAX)
		q->keys[slot(j->key)]--;
}

struct db_job *jobq_take(struct jobq *q, int (*busy)(uint64_t key, void *arg), void *arg,
		uint64_t now_ns, int plain_ok)
{
	struct db_job *prev = NULL, *j;
	int aged = q->head && now_ns > q->head->t_submit
		&& now_ns - q->head->t_submit > JOBQ_AGE_NS;
	unsigned left = q->urgent;      /* urgent jobs not visited yet */

	/* a worker kept for decisions takes them first even then: the
	 * others take the aged jobs oldest first, so nothing starves */
	for (j = aged && plain_ok ? NULL : q->head; j && left; prev = j, j = j->next) {
		if (!j->urgent)
			continue;
		left--;
		if (!(j->key && busy(j->key, arg)) && !key_queued_before(q, j->key, j)) {
			unlink_job(q, j, prev);
			return j;
		}
	}
	if (!plain_ok && !aged)
		return NULL;
	/* oldest first; a job of a running key is skipped, and so are the
	 * later jobs of that key (they see it running too) */
	prev = NULL;
	for (j = q->head; j; prev = j, j = j->next) {
		if (j->key && busy(j->key, arg))
			continue;
		unlink_job(q, j, prev);
		return j;
	}
	return NULL;
}

struct db_job *jobq_take_group(struct jobq *q, int (*busy)(uint64_t key, void *arg), void *arg,
		const uint64_t *keys, unsigned nkeys)
{
	struct db_job *prev = NULL, *j;
	unsigned seen = 0;

	for (j = q->head; j && seen < JOBQ_GROUP_SCAN; prev = j, j = j->next, seen++) {
		unsigned i;
		if (!j->group || j->urgent)
			continue;
		if (j->key && busy(j->key, arg))
			continue;
		for (i = 0; i < nkeys && keys[i] != j->key; i++)
			;
		if (i < nkeys || key_queued_before(q, j->key, j))
			continue;
		unlink_job(q, j, prev);
		return j;
	}
	return NULL;
}
