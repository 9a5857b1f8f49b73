/* Unit tests for queued's directory cache (queued/dircache.c): an entry read
 * before a directory change is never used after it, entries expire, and
 * not-found answers are cached like the others. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "dircache.h"

static uint64_t g_clock = 1000000;
static uint64_t fake_now(void)
{
	return g_clock;
}

struct val {
	uint64_t id;
	char name[32];
};

static int setup(void **state)
{
	(void)state;
	dircache_set_clock(fake_now);
	dircache_clear();
	return 0;
}

static void test_hit_and_miss(void **state)
{
	struct val v = { 7, "carrier" }, out;
	uint64_t g = dircache_gen();
	(void)state;
	assert_int_equal(dircache_get(DC_TRUNK, "127.0.0.1:5080", &out, sizeof(out)), 0);
	dircache_put(DC_TRUNK, "127.0.0.1:5080", &v, sizeof(v), g);
	assert_int_equal(dircache_get(DC_TRUNK, "127.0.0.1:5080", &out, sizeof(out)), 1);
	assert_int_equal(out.id, 7);
	assert_string_equal(out.name, "carrier");
	/* tables are separate */
	assert_int_equal(dircache_get(DC_DID, "127.0.0.1:5080", &out, sizeof(out)), 0);
	/* a value of another size is not handed out */
	assert_int_equal(dircache_get(DC_TRUNK, "127.0.0.1:5080", &out, sizeof(out.id)), 0);
}

static void test_change_makes_entries_stale(void **state)
{
	struct val v = { 1, "old" }, out;
	uint64_t g = dircache_gen();
	(void)state;
	dircache_put(DC_DID, "+6560000001", &v, sizeof(v), g);
	dircache_bump();
	assert_int_equal(dircache_get(DC_DID, "+6560000001", &out, sizeof(out)), 0);
	/* stored again under the new generation: a hit again */
	g = dircache_gen();
	v.id = 2;
	dircache_put(DC_DID, "+6560000001", &v, sizeof(v), g);
	assert_int_equal(dircache_get(DC_DID, "+6560000001", &out, sizeof(out)), 1);
	assert_int_equal(out.id, 2);
	assert_int_equal(dircache_count(DC_DID), 1);
}

static void test_read_before_change_is_not_stored(void **state)
{
	struct val v = { 3, "read before the change" }, out;
	uint64_t g = dircache_gen();     /* reader: generation, then MySQL */
	(void)state;
	dircache_bump();                 /* a change commits meanwhile */
	dircache_put(DC_TRUNK, "10.0.0.1:5060", &v, sizeof(v), g);
	assert_int_equal(dircache_get(DC_TRUNK, "10.0.0.1:5060", &out, sizeof(out)), 0);
	assert_int_equal(dircache_count(DC_TRUNK), 0);
}

static void test_entries_expire(void **state)
{
	struct val v = { 4, "x" }, out;
	(void)state;
	dircache_put(DC_TRUNK, "a", &v, sizeof(v), dircache_gen());
	g_clock += DIRCACHE_TTL_MS - 1;
	assert_int_equal(dircache_get(DC_TRUNK, "a", &out, sizeof(out)), 1);
	g_clock += 1;
	assert_int_equal(dircache_get(DC_TRUNK, "a", &out, sizeof(out)), 0);
}

static void test_full_table_starts_over(void **state)
{
	struct val v = { 5, "y" }, out;
	char key[32];
	uint64_t g = dircache_gen();
	(void)state;
	for (int i = 0; i < DIRCACHE_MAX; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		dircache_put(DC_TRUNK, key, &v, sizeof(v), g);
	}
	assert_int_equal(dircache_count(DC_TRUNK), DIRCACHE_MAX);
	/* a key stored again replaces its entry */
	dircache_put(DC_TRUNK, "k0", &v, sizeof(v), g);
	assert_int_equal(dircache_count(DC_TRUNK), DIRCACHE_MAX);
	dircache_put(DC_TRUNK, "one more", &v, sizeof(v), g);
	assert_int_equal(dircache_count(DC_TRUNK), 1);
	assert_int_equal(dircache_get(DC_TRUNK, "one more", &out, sizeof(out)), 1);
	assert_int_equal(dircache_get(DC_TRUNK, "k1", &out, sizeof(out)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_hit_and_miss, setup),
		cmocka_unit_test_setup(test_change_makes_entries_stale, setup),
		cmocka_unit_test_setup(test_read_before_change_is_not_stored, setup),
		cmocka_unit_test_setup(test_entries_expire, setup),
		cmocka_unit_test_setup(test_full_table_starts_over, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
