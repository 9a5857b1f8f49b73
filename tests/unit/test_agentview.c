/* Unit tests for queued's view of the inboxes' members (queued/agentview.c):
 * the order of offers, what makes a member not offered, counts shared by
 * the views of all of an agent's inboxes, and when a view is read again. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "agentview.h"
#include "dircache.h"

#define NOW 1800000000000LL

static struct av_member mem(uint64_t id, unsigned calls, int64_t last_end)
{
	struct av_member a;
	memset(&a, 0, sizeof(a));
	a.id = id;
	snprintf(a.ext, sizeof(a.ext), "%llu", (unsigned long long)id);
	a.max_calls = 2;
	a.calls = calls;
	a.last_end_ms = last_end;
	a.registered = 1;
	return a;
}

/* install members of inbox as read now */
static void load(uint32_t inbox, const struct av_member *m, size_t n, int64_t now)
{
	struct av_token t;
	av_stale(inbox, now, AV_MAX_AGE_MS, &t);
	av_install(inbox, m, n, &t, now);
}

static int setup(void **state)
{
	(void)state;
	av_clear();
	return 0;
}

static uint64_t take(uint32_t inbox, int64_t now)
{
	struct av_member out;
	return av_take(inbox, NULL, 0, now, &out) ? out.id : 0;
}

static void test_order_of_offers(void **state)
{
	/* 4: busy; 3: idle since NOW-5s; 2: idle since NOW-10s; 1: never called */
	struct av_member m[] = { mem(4, 1, 0), mem(3, 0, NOW - 5000), mem(2, 0, NOW - 10000),
		mem(1, 0, 0) };
	(void)state;
	load(7, m, 4, NOW);
	assert_int_equal(take(7, NOW), 1);   /* never called first */
	assert_int_equal(take(7, NOW), 2);   /* then idle longest */
	assert_int_equal(take(7, NOW), 3);
	/* now everyone has one call: never called first (1, then 4 by id),
	 * then the oldest end */
	assert_int_equal(take(7, NOW), 1);
	assert_int_equal(take(7, NOW), 4);
	assert_int_equal(take(7, NOW), 2);
	assert_int_equal(take(7, NOW), 3);
	/* everyone at max_calls (2) */
	assert_int_equal(take(7, NOW), 0);
}

static void test_not_offered(void **state)
{
	struct av_member m[] = { mem(1, 0, 0), mem(2, 0, 0), mem(3, 0, 0), mem(4, 0, 0),
		mem(5, 0, 0) };
	uint64_t skip[] = { 5 };
	struct av_member out;
	(void)state;
	m[0].registered = 0;                  /* no registered device */
	m[1].wrapup_until_ms = NOW + 1000;    /* in wrap-up */
	m[2].max_calls = 0;                   /* may take no call */
	load(8, m, 5, NOW);
	assert_int_equal(av_take(8, skip, 1, NOW, &out), 1);
	assert_int_equal(out.id, 4);
	/* the claim refused 4: not offered again until the view is read */
	av_untake(8, 4, 1);
	assert_int_equal(av_take(8, skip, 1, NOW, &out), 0);
	assert_int_equal(take(8, NOW), 5);
	/* wrap-up over */
	assert_int_equal(take(8, NOW + 1000), 2);
	/* no view: nobody */
	assert_int_equal(take(9, NOW), 0);
}

static void test_counts_shared_by_inboxes(void **state)
{
	/* agent 1 in inboxes 10 and 11; agent 2 only in 11, called more recently */
	struct av_member a[] = { mem(1, 0, NOW - 9000) };
	struct av_member b[] = { mem(1, 0, NOW - 9000), mem(2, 0, NOW - 1000) };
	(void)state;
	load(10, a, 1, NOW);
	load(11, b, 2, NOW);
	assert_int_equal(take(10, NOW), 1);
	/* inbox 11 sees agent 1's call: agent 2 (fewer calls) first */
	assert_int_equal(take(11, NOW), 2);
	/* agent 1's call ends, talked: idle from now, in both views */
	av_call_over(1, 1, NOW + 10);
	av_call_over(2, 0, NOW + 10);    /* agent 2's ring ended unanswered */
	/* agent 2 idle since NOW-1000, agent 1 since NOW+10 */
	assert_int_equal(take(11, NOW + 20), 2);
	/* untake without refusal: offered again */
	av_untake(11, 2, 0);
	assert_int_equal(take(11, NOW + 20), 2);
}

static void test_wrapup_after_a_talked_call(void **state)
{
	struct av_member m[] = { mem(1, 0, 0), mem(2, 0, NOW - 100000) };
	(void)state;
	m[0].wrapup_seconds = 30;
	load(12, m, 2, NOW);
	assert_int_equal(take(12, NOW), 1);
	av_call_over(1, 1, NOW + 1000);
	/* 1 is in wrap-up for 30 s, 2 is offered even with an older end... */
	assert_int_equal(take(12, NOW + 2000), 2);
	av_call_over(2, 0, NOW + 2000);
	/* ...and after the wrap-up, 2 (idle since NOW-100 s) before 1 */
	assert_int_equal(take(12, NOW + 31001), 2);
	assert_int_equal(take(12, NOW + 31001), 1);
}

static void test_when_a_view_is_read_again(void **state)
{
	struct av_member m[] = { mem(1, 0, 0) };
	struct av_token t;
	(void)state;
	assert_int_equal(av_stale(13, NOW, AV_MAX_AGE_MS, &t), 1);          /* none yet */
	av_install(13, m, 1, &t, NOW);
	assert_int_equal(av_stale(13, NOW + 10, AV_MAX_AGE_MS, &t), 0);
	/* call states changed elsewhere: not before AV_REFRESH_MS */
	av_soft_dirty();
	assert_int_equal(av_stale(13, NOW + AV_REFRESH_MS - 1, AV_MAX_AGE_MS, &t), 0);
	assert_int_equal(av_stale(13, NOW + AV_REFRESH_MS, AV_MAX_AGE_MS, &t), 1);
	av_install(13, m, 1, &t, NOW + AV_REFRESH_MS);
	/* a registration or a directory change: at once */
	av_hard_dirty();
	assert_int_equal(av_stale(13, NOW + AV_REFRESH_MS + 1, AV_MAX_AGE_MS, &t), 1);
	av_install(13, m, 1, &t, NOW + AV_REFRESH_MS + 1);
	assert_int_equal(av_stale(13, NOW + AV_REFRESH_MS + 2, AV_MAX_AGE_MS, &t), 0);
	dircache_bump();
	assert_int_equal(av_stale(13, NOW + AV_REFRESH_MS + 2, AV_MAX_AGE_MS, &t), 1);
	av_install(13, m, 1, &t, NOW + 200);
	/* old age */
	assert_int_equal(av_stale(13, NOW + 200 + AV_MAX_AGE_MS - 1, AV_MAX_AGE_MS, &t), 0);
	assert_int_equal(av_stale(13, NOW + 200 + AV_MAX_AGE_MS, AV_MAX_AGE_MS, &t), 1);
	/* a read that started before a change is installed stale */
	av_hard_dirty();                       /* (t was filled before it) */
	av_install(13, m, 1, &t, NOW + 2000);
	assert_int_equal(av_stale(13, NOW + 2001, AV_MAX_AGE_MS, &t), 1);
	av_install(13, m, 1, &t, NOW + 2001);
	/* a take during the read: read again after AV_REFRESH_MS */
	(void)av_stale(13, NOW + 2001, AV_MAX_AGE_MS, &t);   /* a read starts */
	assert_int_equal(take(13, NOW + 2001), 1);
	av_install(13, m, 1, &t, NOW + 2002);
	assert_int_equal(av_stale(13, NOW + 2003, AV_MAX_AGE_MS, &t), 0);
	assert_int_equal(av_stale(13, NOW + 2002 + AV_REFRESH_MS, AV_MAX_AGE_MS, &t), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_order_of_offers, setup),
		cmocka_unit_test_setup(test_not_offered, setup),
		cmocka_unit_test_setup(test_counts_shared_by_inboxes, setup),
		cmocka_unit_test_setup(test_wrapup_after_a_talked_call, setup),
		cmocka_unit_test_setup(test_when_a_view_is_read_again, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
