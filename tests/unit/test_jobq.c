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
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &a);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &b);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &c);
	assert_null(jobq_take(&q, busy, NULL, 1 * MS));
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
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS), &r1);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS), &r2);
	/* the tail is kept right after unlinking from the middle */
	assert_ptr_equal(q.tail, &r3);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 5 * MS), &r3);
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
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &t);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &r);
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
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &r1);
	/* now the decision may run, ahead of the other key's report */
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &r2);
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
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &r);
	assert_null(jobq_take(&q, busy, NULL, 1 * MS));   /* only key 5 left */
	g_running[0] = 0;
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &d1);
	assert_ptr_equal(jobq_take(&q, busy, NULL, 1 * MS), &d2);
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
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS), &r);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS + 1 * MS), &d);
	/* and just under it, the decision overtakes */
	job(&q, &r, 1, 0, 0);
	job(&q, &d, 2, 1, 0);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS - 1 * MS), &d);
	assert_ptr_equal(jobq_take(&q, busy, NULL, JOBQ_AGE_NS - 1 * MS), &r);
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
