/*
 * The queue of jobs waiting for a MySQL worker, and the order in which
 * the workers take them (db.c holds it under its mutex; kept apart from
 * the threads so that the order can be tested on its own).
 */
#ifndef QUEUED_JOBQ_H
#define QUEUED_JOBQ_H

#include <stdint.h>
#include "db.h"

/* No job overtakes one that has waited this long (ns). */
#define JOBQ_AGE_NS 100000000ull

struct jobq {
	struct db_job *head, *tail;
};

/* Append j (submission order). */
void jobq_push(struct jobq *q, struct db_job *j);

/*
 * Unlink and return the next job to run, or NULL: the oldest urgent job
 * that may run, else the oldest job that may run. A job may run when no
 * job of its key is running (busy(key, arg)) and none is queued before
 * it, so each key's jobs run in submission order and only jobs of other
 * keys are overtaken. Once the oldest job has waited JOBQ_AGE_NS (now_ns
 * minus its t_submit), nothing overtakes: jobs are taken oldest first, so
 * that reports are not starved when decisions come faster than the
 * workers take them.
 */
struct db_job *jobq_take(struct jobq *q, int (*busy)(uint64_t key, void *arg), void *arg,
		uint64_t now_ns);

#endif
