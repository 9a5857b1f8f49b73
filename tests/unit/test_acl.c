/* Unit tests for the access rules (queued/acl.c) and event filters (queued/watch.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "acl.h"
#include "watch.h"

static struct who user(int role, int addon, uint32_t org, uint32_t uid)
{
	struct who w;
	memset(&w, 0, sizeof(w));
	w.role = role;
	w.addon = addon;
	w.org_id = org;
	w.user_id = uid;
	return w;
}

static void test_all_inboxes(void **state)
{
	struct who op;
	struct who owner_addon = user(ROLE_OWNER, 1, 1, 1);
	struct who admin_addon = user(ROLE_ADMIN, 1, 1, 2);
	struct who owner_plain = user(ROLE_OWNER, 0, 1, 3);
	struct who admin_plain = user(ROLE_ADMIN, 0, 1, 4);
	struct who member_addon = user(ROLE_MEMBER, 1, 1, 5);
	(void)state;
	memset(&op, 0, sizeof(op));
	op.operator = 1;
	assert_true(acl_all_inboxes(&op));
	assert_true(acl_all_inboxes(&owner_addon));
	assert_true(acl_all_inboxes(&admin_addon));
	assert_false(acl_all_inboxes(&owner_plain));
	assert_false(acl_all_inboxes(&admin_plain));
	/* the add-on alone does not make a member see everything */
	assert_false(acl_all_inboxes(&member_addon));
}

static void test_manage(void **state)
{
	struct who admin = user(ROLE_ADMIN, 0, 7, 1), member = user(ROLE_MEMBER, 1, 7, 2);
	(void)state;
	assert_true(acl_can_manage_org(&admin, 7));
	assert_false(acl_can_manage_org(&admin, 8));   /* another organisation */
	assert_false(acl_can_manage_org(&member, 7));
}

static void test_inbox_cond(void **state)
{
	char buf[200];
	struct who op, owner = user(ROLE_OWNER, 1, 3, 9), member = user(ROLE_MEMBER, 0, 3, 11);
	(void)state;
	memset(&op, 0, sizeof(op));
	op.operator = 1;
	acl_inbox_cond(buf, sizeof(buf), &op, "t.inbox_id");
	assert_string_equal(buf, "");
	acl_inbox_cond(buf, sizeof(buf), &owner, "t.inbox_id");
	assert_string_equal(buf, " AND t.inbox_id IN (SELECT id FROM inbox WHERE org_id = 3)");
	acl_inbox_cond(buf, sizeof(buf), &member, "i.id");
	assert_string_equal(buf, " AND i.id IN (SELECT inbox_id FROM inbox_member WHERE user_id = 11)");
}

static void test_roles(void **state)
{
	(void)state;
	assert_int_equal(role_parse("owner"), ROLE_OWNER);
	assert_int_equal(role_parse("admin"), ROLE_ADMIN);
	assert_int_equal(role_parse("member"), ROLE_MEMBER);
	assert_int_equal(role_parse("Owner"), -1);
	assert_int_equal(role_parse(""), -1);
	assert_string_equal(role_name(ROLE_ADMIN), "admin");
}

static void test_watch_filter(void **state)
{
	struct watch_filter *member = calloc(1, sizeof(*member) + 2 * sizeof(uint32_t));
	struct watch_filter everything, org_all, narrowed;
	(void)state;
	assert_non_null(member);
	member->org_id = 1;
	member->n = 2;
	member->inboxes[0] = 10;
	member->inboxes[1] = 12;
	assert_true(watch_filter_match(member, 1, 10));
	assert_true(watch_filter_match(member, 1, 12));
	assert_false(watch_filter_match(member, 1, 11));
	assert_false(watch_filter_match(member, 2, 10));   /* same inbox id, other org */
	assert_true(watch_filter_match(member, 1, 0));     /* organisation-wide */
	assert_false(watch_filter_match(NULL, 1, 10));

	memset(&everything, 0, sizeof(everything));
	everything.everything = 1;
	assert_true(watch_filter_match(&everything, 5, 99));

	memset(&org_all, 0, sizeof(org_all));
	org_all.org_id = 4;
	org_all.all_inboxes = 1;
	assert_true(watch_filter_match(&org_all, 4, 77));
	assert_false(watch_filter_match(&org_all, 3, 77));

	narrowed = org_all;
	narrowed.only_inbox = 5;
	assert_true(watch_filter_match(&narrowed, 4, 5));
	assert_false(watch_filter_match(&narrowed, 4, 6));
	free(member);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_inboxes),
		cmocka_unit_test(test_manage),
		cmocka_unit_test(test_inbox_cond),
		cmocka_unit_test(test_roles),
		cmocka_unit_test(test_watch_filter),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
