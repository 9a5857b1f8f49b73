/* The order in which MySQL workers take jobs (queued/jobq.c): urgent jobs
 * (call decisions) before older reports, each key's jobs in order, no
 * overtaking of a job that has waited JOBQ_AGE_NS. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "jobq.h"

#define MS 1000000ull

static uint64_t g_running[4];   /* keys of the jobs "running" */

static int busy(uint64_t key, void *arg)
{
	(void)arg;
	for (size_t i = 0; i < sizeof(g_running) / sizeof(g_running[0]); i++)
		if (g_running[i] == key)
			return 1;
	return 0;
}

static void job(struct jobq *q, struct db_job *j, uint64_t key, int urgent, uint64_t at)
{
	memset(j, 0, sizeof(*j));
	j->key = key;
	j->urgent = urgent;
	j->t_submit = at;
	jobq_push(q, j);
}

/* any non-NULL group marks a groupable job (jobq never calls it) */
static const struct db_group g_grp;

static void report(struct jobq *q, struct db_job *j, uint64_t key, uint64_t at)
{
	job(q, j, key, 0, at);
	j->group = &g_grp;
}

static void setup_none_running(void)
{
	memset(g_running, 0, sizeof(g_running));
}

static void test_fifo_without_urgent_jobs(void **state)
{
	struct jobq q = { 0 };
	struct db_job a, b, c;
	(void)state;
	setup_none_running();
	job(&q, &a, 1, 0, 0);
	job(&q, &b, 2, 0, 0);
	job(&q, &c, 0, 0, 0);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &a);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &b);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &c);
	assert_null(jobq_take(&q, busy, NULL, 1 * MS, 1));
	assert_null(q.head);
	assert_null(q.tail);
}

static void test_urgent_job_overtakes_reports_of_other_keys(void **state)
{
	struct jobq q = { 0 };
	struct db_job r1, r2, d, r3;
	(void)state;
	setup_none_running();
	job(&q, &r1, 1, 0, 0);
	job(&q, &r2, 2, 0, 0);
	job(&q, &d, 3, 1, 0);
	job(&q, &r3, 4, 0, 0);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS, 1), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS, 1), &r1);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS, 1), &r2);
	/* the tail is kept right after unlinking from the middle */
	assert_ptr_equal(q.tail, &r3);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS, 1), &r3);
	assert_null(q.tail);
}

static void test_urgent_jobs_among_themselves_in_order(void **state)
{
	struct jobq q = { 0 };
	struct db_job r, t, d;
	(void)state;
	setup_none_running();
	/* a blind transfer's report (urgent) and then its second leg's
	 * decision (urgent, another key): the report first */
	job(&q, &r, 1, 0, 0);
	job(&q, &t, 2, 1, 0);
	job(&q, &d, 3, 1, 0);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &t);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &r);
}

static void test_urgent_job_keeps_its_keys_order(void **state)
{
	struct jobq q = { 0 };
	struct db_job r1, d, r2;
	(void)state;
	setup_none_running();
	/* a report of the same call queued before the decision: it goes first */
	job(&q, &r1, 7, 0, 0);
	job(&q, &r2, 8, 0, 0);
	job(&q, &d, 7, 1, 0);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &r1);
	/* now the decision may run, ahead of the other key's report */
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &r2);
}

static void test_running_key_is_skipped(void **state)
{
	struct jobq q = { 0 };
	struct db_job d1, r, d2;
	(void)state;
	setup_none_running();
	g_running[0] = 5;       /* a job of key 5 runs on a worker */
	job(&q, &d1, 5, 1, 0);
	job(&q, &r, 6, 0, 0);
	job(&q, &d2, 5, 0, 0);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &r);
	assert_null(jobq_take(&q, busy, NULL, 1 * MS, 1));   /* only key 5 left */
	g_running[0] = 0;
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &d1);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &d2);
}

static void test_no_overtaking_an_aged_job(void **state)
{
	struct jobq q = { 0 };
	struct db_job r, d;
	(void)state;
	setup_none_running();
	job(&q, &r, 1, 0, 0);
	job(&q, &d, 2, 1, 50 * MS);
	/* the report has waited more than JOBQ_AGE_NS: it goes first */
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS, 1), &r);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS, 1), &d);
	/* and just under it, the decision overtakes */
	job(&q, &r, 1, 0, 0);
	job(&q, &d, 2, 1, 0);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS - 1 * MS, 1), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS - 1 * MS, 1), &r);
}

static void test_kept_worker_takes_only_decisions(void **state)
{
	struct jobq q = { 0 };
	struct db_job r1, r2, d;
	(void)state;
	setup_none_running();
	/* the other workers all run reports: this one is kept for decisions */
	job(&q, &r1, 1, 0, 0);
	job(&q, &r2, 2, 0, 0);
	assert_null(jobq_take(&q, busy, NULL, 1 * MS, 0));
	assert_ptr_equal(q.head, &r1);
	job(&q, &d, 3, 1, 2 * MS);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 3 * MS, 0), &d);
	assert_null(jobq_take(&q, busy, NULL, 3 * MS, 0));
	/* reports left for the workers that may take them, in order */
	assert_ptr_equal(jobq_take(&q, busy, NULL, 3 * MS, 1), &r1);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 3 * MS, 1), &r2);
}

static void test_kept_worker_helps_once_reports_fall_behind(void **state)
{
	struct jobq q = { 0 };
	struct db_job r1, d, r2, r3;
	(void)state;
	setup_none_running();
	/* the oldest report has waited JOBQ_AGE_NS: a worker not kept takes
	 * jobs oldest first, the report before the decision */
	job(&q, &r1, 1, 0, 0);
	job(&q, &d, 2, 1, 10 * MS);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS, 1), &r1);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS, 1), &d);
	/* a kept worker still takes a decision first, then helps with the
	 * aged reports, oldest first */
	job(&q, &r1, 1, 0, 0);
	job(&q, &d, 2, 1, 10 * MS);
	job(&q, &r2, 3, 0, 20 * MS);
	job(&q, &r3, 4, 0, 30 * MS);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS, 0), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS, 0), &r1);
	/* r2 has not aged yet: kept again */
	assert_null(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS, 0));
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 22 * MS, 0), &r2);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 22 * MS, 1), &r3);
	assert_null(q.head);
}

static void test_counts_follow_the_queue(void **state)
{
	static struct jobq q;
	static struct db_job jobs[3000];
	struct db_job d1, d2;
	(void)state;
	setup_none_running();
	/* a backlog of reports, then a decision; a second decision of a key
	 * that has a report queued waits for it */
	for (unsigned i = 0; i < 3000; i++)
		job(&q, &jobs[i], 1000 + i, 0, 0);
	job(&q, &d1, 5000, 1, 0);
	job(&q, &d2, 1500, 1, 0);
	assert_int_equal(q.urgent, 2);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 0), &d1);
	assert_null(jobq_take(&q, busy, NULL, 1 * MS, 0));
	assert_int_equal(q.urgent, 1);
	for (unsigned i = 0; i < 501; i++)
		assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &jobs[i]);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 0), &d2);
	assert_int_equal(q.urgent, 0);
	for (unsigned i = 501; i < 3000; i++)
		assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS, 1), &jobs[i]);
	assert_null(q.head);
	for (unsigned i = 0; i < JOBQ_KEY_SLOTS; i++)
		assert_int_equal(q.keys[i], 0);
}

/* A group takes the other groupable reports that may run now: not an
 * urgent job, not a job without a group, not a key already in the group,
 * running, or with an earlier job of its key left in the queue. */
static void test_group_takes_the_reports_that_may_run(void **state)
{
	struct jobq q = { 0 };
	struct db_job r1, d, other, r2, r1b, r3, r4, r5;
	uint64_t keys[8];
	unsigned n = 0;
	struct db_job *j;
	(void)state;
	setup_none_running();
	g_running[0] = 5;                /* a key running on another worker */
	report(&q, &r1, 1, 0);
	job(&q, &d, 2, 1, 0);            /* a decision */
	job(&q, &other, 3, 0, 0);        /* a job without a group (an API request) */
	report(&q, &r2, 4, 0);
	report(&q, &r1b, 1, 0);          /* key 1 again: not with r1 */
	report(&q, &r3, 3, 0);           /* key 3: 'other' is queued before it */
	report(&q, &r4, 5, 0);           /* key 5 runs */
	report(&q, &r5, 6, 0);
	j = jobq_take(&q, busy, NULL, 1 * MS, 1);
	assert_ptr_equal(j, &d);         /* the decision first, as ever */
	j = jobq_take(&q, busy, NULL, 1 * MS, 1);
	assert_ptr_equal(j, &r1);
	keys[n++] = j->key;
	while ((j = jobq_take_group(&q, busy, NULL, keys, n)))
		keys[n++] = j->key;
	assert_int_equal(n, 3);
	assert_int_equal(keys[1], 4);
	assert_int_equal(keys[2], 6);
	/* what is left, in order */
	assert_ptr_equal(q.head, &other);
	assert_ptr_equal(other.next, &r1b);
	assert_ptr_equal(r1b.next, &r3);
	assert_ptr_equal(r3.next, &r4);
	assert_ptr_equal(q.tail, &r4);
	assert_int_equal(q.urgent, 0);
}

/* A long backlog: a group looks at the first JOBQ_GROUP_SCAN jobs only. */
static void test_group_scan_is_bounded(void **state)
{
	static struct db_job plain[JOBQ_GROUP_SCAN + 10];
	struct jobq q = { 0 };
	struct db_job last;
	uint64_t key = 1;
	(void)state;
	setup_none_running();
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		job(&q, &plain[i], 100 + i, 0, 0);
	report(&q, &last, 99, 0);
	assert_null(jobq_take_group(&q, busy, NULL, &key, 1));
	assert_ptr_equal(q.tail, &last);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifo_without_urgent_jobs),
		cmocka_unit_test(test_urgent_job_overtakes_reports_of_other_keys),
		cmocka_unit_test(test_urgent_jobs_among_themselves_in_order),
		cmocka_unit_test(test_urgent_job_keeps_its_keys_order),
		cmocka_unit_test(test_running_key_is_skipped),
		cmocka_unit_test(test_no_overtaking_an_aged_job),
		cmocka_unit_test(test_kept_worker_takes_only_decisions),
		cmocka_unit_test(test_kept_worker_helps_once_reports_fall_behind),
		cmocka_unit_test(test_counts_follow_the_queue),
		cmocka_unit_test(test_group_takes_the_reports_that_may_run),
		cmocka_unit_test(test_group_scan_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
