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

/* Slots of the queued-jobs-per-key counts (a hash of the key). */
#define JOBQ_KEY_SLOTS 4096

/* Zero-initialised. The counts keep jobq_take cheap with thousands of
 * reports queued (a backlog under overload): the urgent pass visits only
 * as many jobs as it needs to find the urgent ones, and looks for an
 * earlier job of the same key only when another job of a key with that
 * hash is queued at all (rare: a decision's Call-ID is new). */
struct jobq {
	struct db_job *head, *tail;
	unsigned urgent;                        /* urgent jobs queued */
	uint16_t keys[JOBQ_KEY_SLOTS];          /* queued jobs per key hash */
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
 *
 * plain_ok 0 (the caller is a worker kept for decisions: the others are
 * all running jobs that are not urgent) returns only an urgent job,
 * unless the oldest job has waited JOBQ_AGE_NS: then the reports are not
 * keeping up, and it takes the oldest urgent job, else the oldest job.
 * (The workers not kept take the oldest jobs then, so reports still
 * progress when decisions come faster than the kept workers take them.)
 */
struct db_job *jobq_take(struct jobq *q, int (*busy)(uint64_t key, void *arg), void *arg,
		uint64_t now_ns, int plain_ok);

/*
 * After jobq_take gave a job with a group (db.h struct db_group): the next
 * job to run in the same transaction, or NULL. It is the oldest job that
 * has a group, is not urgent (the decisions are for the workers kept for
 * them), may run (as above: no job of its key running or queued before
 * it) and whose key is not one of the group's keys[0..nkeys-1]. Only the
 * first JOBQ_GROUP_SCAN queued jobs are looked at, so that a long backlog
 * does not hold the workers' mutex.
 */
#define JOBQ_GROUP_SCAN 512
struct db_job *jobq_take_group(struct jobq *q, int (*busy)(uint64_t key, void *arg), void *arg,
		const uint64_t *keys, unsigned nkeys);

#endif
