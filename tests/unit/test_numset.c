/*
 * Unit tests for the compact number set (common/ccq_numset.[ch]).
 *
 * Large sets are compared with a reference: the same numbers as strings,
 * sorted with qsort and searched with bsearch.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ccq_numset.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* header fields (doc/compliance.md, "Number-set image") */
#define OFF_VERSION 8
#define OFF_TOTAL 16
#define OFF_COUNT 24
#define OFF_BITS 32
#define OFF_SLOT 33
#define OFF_DATA 40
#define OFF_CHECKSUM 56

/* ---- helpers ------------------------------------------------------------ */

/* Build an image of the given entries into an exactly sized heap buffer. */
static void *build(const char *const *entries, size_t n, size_t *len)
{
	ccq_numset_builder *b = ccq_numset_builder_new();
	void *img;
	size_t i, sz;

	assert_non_null(b);
	for (i = 0; i < n; i++)
		assert_int_equal(ccq_numset_builder_add(b, entries[i]), 0);
	sz = ccq_numset_builder_size(b);
	assert_true(sz >= 64);
	img = malloc(sz); /* malloc is 16-byte aligned on glibc */
	assert_non_null(img);
	assert_int_equal(ccq_numset_builder_finish(b, img, sz), 0);
	assert_int_equal(ccq_numset_check(img, sz), 0);
	assert_int_equal(ccq_numset_bytes(img), sz);
	ccq_numset_builder_free(b);
	if (len)
		*len = sz;
	return img;
}

static void reseal(uint8_t *img, size_t len)
{
	uint64_t c = ccq_numset_checksum(img, len);

	memcpy(img + OFF_CHECKSUM, &c, 8);
}

/* xorshift64*: reproducible random numbers */
static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

/* A random number of 7..15 digits (leading zeros possible, they count). */
static void random_number(char *out)
{
	unsigned len = 7 + (unsigned)(rnd() % 9), i;

	for (i = 0; i < len; i++)
		out[i] = (char)('0' + rnd() % 10);
	out[len] = '\0';
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

/* ---- tests -------------------------------------------------------------- */

static void test_empty(void **state)
{
	size_t len;
	void *img = build(NULL, 0, &len);

	(void)state;
	assert_int_equal(len, ccq_numset_image_size(0, 0));
	assert_int_equal(ccq_numset_count(img), 0);
	assert_int_equal(ccq_numset_prefix_count(img), 0);
	assert_false(ccq_numset_contains(img, "6591234567"));
	assert_false(ccq_numset_contains(img, "0"));
	free(img);
	/* a NULL image is an empty list */
	assert_false(ccq_numset_contains(NULL, "6591234567"));
	assert_int_equal(ccq_numset_count(NULL), 0);
	assert_int_equal(ccq_numset_bytes(NULL), 0);
}

static void test_one(void **state)
{
	const char *one[] = { "6591234567" };
	void *img = build(one, 1, NULL);

	(void)state;
	assert_int_equal(ccq_numset_count(img), 1);
	assert_true(ccq_numset_contains(img, "6591234567"));
	assert_false(ccq_numset_contains(img, "6591234568"));
	assert_false(ccq_numset_contains(img, "6591234566"));
	assert_false(ccq_numset_contains(img, "659123456"));
	assert_false(ccq_numset_contains(img, "65912345670"));
	assert_false(ccq_numset_contains(img, "06591234567"));
	/* not a number: never contained */
	assert_false(ccq_numset_contains(img, "+6591234567"));
	assert_false(ccq_numset_contains(img, "6591234567 "));
	assert_false(ccq_numset_contains(img, ""));
	assert_false(ccq_numset_contains(img, NULL));
	free(img);
}

static void test_duplicates(void **state)
{
	const char *dups[] = { "6591234567", "6591234567", "6581234567",
		"6591234567", "6581234567", "65*", "65*" };
	void *img = build(dups, ARRAY_LEN(dups), NULL);
	ccq_numset_builder *b = ccq_numset_builder_new();

	(void)state;
	assert_int_equal(ccq_numset_count(img), 2);
	assert_int_equal(ccq_numset_prefix_count(img), 1);
	free(img);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(ccq_numset_builder_add(b, "12125551234"), 0);
	assert_int_equal(ccq_numset_builder_count(b), 1);
	assert_int_equal(ccq_numset_builder_size(b), ccq_numset_image_size(1, 0));
	ccq_numset_builder_free(b);
}

/* Every length 1..15, and numbers that differ only in length or zeros. */
static void test_lengths(void **state)
{
	static const char *nums[] = {
		"1", "12", "123", "1234", "12345", "123456", "1234567", "12345678",
		"123456789", "1234567890", "12345678901", "123456789012",
		"1234567890123", "12345678901234", "123456789012345",
		"0000000", "00000000", "000000000000000", "999999999999999",
		"9999999", "1000000",
	};
	static const char *absent[] = {
		"0", "00", "01234567", "000000", "0000000000", "12345678901234567",
		"1234567890123456", "99999999", "999999999999998", "1000001",
		"2", "124", "0123456",
	};
	void *img = build(nums, ARRAY_LEN(nums), NULL);
	size_t i;

	(void)state;
	assert_int_equal(ccq_numset_count(img), ARRAY_LEN(nums));
	for (i = 0; i < ARRAY_LEN(nums); i++)
		if (!ccq_numset_contains(img, nums[i]))
			fail_msg("%s missing", nums[i]);
	for (i = 0; i < ARRAY_LEN(absent); i++)
		if (ccq_numset_contains(img, absent[i]))
			fail_msg("%s found but never added", absent[i]);
	free(img);
}

static void test_invalid_adds(void **state)
{
	static const char *bad[] = {
		"", "+6591234567", "65 91234567", "6591234567a", "abc",
		"1234567890123456", "*", "65*9", "65**", "-1", "６５",
	};
	ccq_numset_builder *b = ccq_numset_builder_new();
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(bad); i++)
		if (ccq_numset_builder_add(b, bad[i]) != -CCQ_NUMSET_E_INVALID)
			fail_msg("\"%s\" accepted", bad[i]);
	assert_int_equal(ccq_numset_builder_add(b, NULL), -CCQ_NUMSET_E_INVALID);
	assert_int_equal(ccq_numset_builder_add(NULL, "6591234567"), -CCQ_NUMSET_E_INVALID);
	/* add_n honours the length */
	assert_int_equal(ccq_numset_builder_add_n(b, "6591234567XYZ", 10), 0);
	assert_int_equal(ccq_numset_builder_add_n(b, "6591234567XYZ", 11), -CCQ_NUMSET_E_INVALID);
	assert_int_equal(ccq_numset_builder_count(b), 1);
	ccq_numset_builder_free(b);
	ccq_numset_builder_free(NULL);
	assert_string_equal(ccq_numset_strerror(-CCQ_NUMSET_E_CHECKSUM),
			"number-set checksum mismatch (corrupt image)");
	assert_string_equal(ccq_numset_strerror(1000), "unknown error");
}

static void test_prefixes(void **state)
{
	static const char *entries[] = { "6531*", "1876*", "447700900123", "4*4" };
	static const char *good[] = { "6531*", "1876*", "447700900123", "882*",
		"123456789012345*" };
	void *img;

	(void)state;
	{
		ccq_numset_builder *b = ccq_numset_builder_new();

		assert_int_equal(ccq_numset_builder_add(b, entries[3]), -CCQ_NUMSET_E_INVALID);
		ccq_numset_builder_free(b);
	}
	img = build(good, ARRAY_LEN(good), NULL);
	assert_int_equal(ccq_numset_count(img), 1);
	assert_int_equal(ccq_numset_prefix_count(img), 4);
	assert_true(ccq_numset_contains(img, "6531234567"));
	assert_true(ccq_numset_contains(img, "65310000"));
	assert_true(ccq_numset_contains(img, "6531"));
	assert_false(ccq_numset_contains(img, "653"));
	assert_false(ccq_numset_contains(img, "6532123456"));
	assert_false(ccq_numset_contains(img, "6591234567"));
	assert_true(ccq_numset_contains(img, "18765551234"));
	assert_false(ccq_numset_contains(img, "12125551234"));
	assert_true(ccq_numset_contains(img, "447700900123"));
	assert_false(ccq_numset_contains(img, "447700900124"));
	assert_true(ccq_numset_contains(img, "882161234567"));
	assert_true(ccq_numset_contains(img, "123456789012345"));
	assert_false(ccq_numset_contains(img, "123456789012346"));
	free(img);
}

/* The image has no pointers: a copy elsewhere answers the same. */
static void test_position_independent(void **state)
{
	static const char *nums[] = { "6591234567", "6581234567", "6531*" };
	size_t len;
	void *img = build(nums, ARRAY_LEN(nums), &len);
	uint8_t *big = malloc(len + 64);
	void *copy;

	(void)state;
	assert_non_null(big);
	copy = big + 32; /* another 8-aligned address */
	memcpy(copy, img, len);
	memset(img, 0xA5, len);
	free(img);
	assert_int_equal(ccq_numset_check(copy, len + 32), 0); /* buffer may be larger */
	assert_true(ccq_numset_contains(copy, "6591234567"));
	assert_true(ccq_numset_contains(copy, "65319999"));
	assert_false(ccq_numset_contains(copy, "6571234567"));
	free(big);
}

/* Random sets against qsort + bsearch over the same strings. */
static void compare_with_reference(size_t n, int clustered, int want_slot)
{
	char (*ref)[16] = malloc(n * 16);
	char q[16];
	ccq_numset_builder *b = ccq_numset_builder_new();
	void *img;
	size_t i, sz, distinct = 0;

	assert_non_null(ref);
	assert_int_equal(ccq_numset_builder_reserve(b, n), 0);
	for (i = 0; i < n; i++) {
		if (clustered)
			/* a national DNC: one country, consecutive ranges, some repeats */
			snprintf(ref[i], 16, "659%07u", (unsigned)(i * 3 / 2));
		else
			random_number(ref[i]);
		assert_int_equal(ccq_numset_builder_add(b, ref[i]), 0);
	}
	qsort(ref, n, 16, cmp_str);
	for (i = 0; i < n; i++)
		if (i == 0 || strcmp(ref[i], ref[distinct - 1]) != 0)
			memmove(ref[distinct++], ref[i], 16);

	sz = ccq_numset_builder_size(b);
	assert_int_equal(ccq_numset_builder_count(b), distinct);
	assert_int_equal(sz, ccq_numset_image_size(distinct, 0));
	img = malloc(sz);
	assert_non_null(img);
	assert_int_equal(ccq_numset_builder_finish(b, img, sz), 0);
	ccq_numset_builder_free(b);
	assert_int_equal(ccq_numset_check(img, sz), 0);
	assert_int_equal(ccq_numset_count(img), distinct);
	if (want_slot)
		assert_int_equal(((uint8_t *)img)[OFF_SLOT], want_slot);

	for (i = 0; i < distinct; i++)
		if (!ccq_numset_contains(img, ref[i]))
			fail_msg("member %s not found (n=%zu)", ref[i], n);
	for (i = 0; i < 2 * n; i++) {
		int want, got;

		if (clustered && (i & 1))
			snprintf(q, sizeof(q), "659%07u", (unsigned)(rnd() % (n * 2)));
		else
			random_number(q);
		want = bsearch(q, ref, distinct, 16, cmp_str) != NULL;
		got = ccq_numset_contains(img, q);
		if (want != got)
			fail_msg("%s: set says %d, reference %d (n=%zu)", q, got, want, n);
	}
	free(img);
	free(ref);
}

static void test_random_small(void **state)
{
	(void)state;
	for (size_t n = 1; n < 300; n += 7)
		compare_with_reference(n, 0, 0);
}

static void test_random_large(void **state)
{
	(void)state;
	compare_with_reference(1, 0, 7);      /* B = 0: whole 50-bit keys */
	compare_with_reference(1000, 0, 6);
	compare_with_reference(200000, 0, 5); /* radix sort path */
	compare_with_reference(300000, 1, 5);
}

static void test_random_very_large(void **state)
{
	(void)state;
	compare_with_reference(1000000, 0, 4); /* B >= 18: 4-byte slots */
	compare_with_reference(1200000, 1, 4);
}

/* The size formula of doc/compliance.md, and its bytes per number. */
static void test_size_formula(void **state)
{
	static const size_t ns[] = { 0, 1, 2, 31, 32, 33, 1000, 65536, 1000000,
		2000000, 10000000, 50000000 };
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(ns); i++) {
		size_t n = ns[i], best = (size_t)-1;
		unsigned b, bmin = 0;

		while (((size_t)64 << bmin) < n)
			bmin++;
		/* smallest image among the allowed bucket counts */
		for (b = bmin; b <= 30 && b <= (bmin < 18 ? 18 : bmin); b++) {
			size_t w = (50 - b + 7) / 8;
			size_t s = 64 + ((((size_t)4 << b) + 4 + 7) & ~(size_t)7)
				+ ((n * w + 7) & ~(size_t)7) + 8;

			if (s < best)
				best = s;
		}
		assert_int_equal(ccq_numset_image_size(n, 0), best);
		assert_int_equal(ccq_numset_image_size(n, 3), best + 24);
	}
	/* the target: under 8 bytes per number at 1M and 10M */
	assert_true(ccq_numset_image_size(1000000, 0) < 8 * 1000000);
	assert_true(ccq_numset_image_size(10000000, 0) < 5 * 10000000);
}

static void test_finish_errors(void **state)
{
	static const char *nums[] = { "6591234567", "6581234567" };
	ccq_numset_builder *b = ccq_numset_builder_new();
	size_t sz;
	uint64_t *buf;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(nums); i++)
		assert_int_equal(ccq_numset_builder_add(b, nums[i]), 0);
	sz = ccq_numset_builder_size(b);
	buf = malloc(sz + 8);
	assert_int_equal(ccq_numset_builder_finish(b, buf, sz - 1), -CCQ_NUMSET_E_SMALL);
	assert_int_equal(ccq_numset_builder_finish(b, (char *)buf + 4, sz), -CCQ_NUMSET_E_ALIGN);
	assert_int_equal(ccq_numset_builder_finish(b, NULL, sz), -CCQ_NUMSET_E_INVALID);
	assert_int_equal(ccq_numset_builder_finish(b, buf, sz + 8), 0);
	assert_int_equal(ccq_numset_check(buf, sz), 0);
	/* the builder stays usable: add more, finish again */
	assert_int_equal(ccq_numset_builder_add(b, "6571234567"), 0);
	assert_true(ccq_numset_builder_size(b) >= sz);
	free(buf);
	sz = ccq_numset_builder_size(b);
	buf = malloc(sz);
	assert_int_equal(ccq_numset_builder_finish(b, buf, sz), 0);
	assert_int_equal(ccq_numset_count(buf), 3);
	assert_true(ccq_numset_contains(buf, "6571234567"));
	assert_true(ccq_numset_contains(buf, "6591234567"));
	free(buf);
	ccq_numset_builder_free(b);
}

static void test_corrupt(void **state)
{
	const char *nums[64];
	char store[64][16];
	size_t len, i;
	uint8_t *img, *bad;
	uint32_t v32;
	uint64_t v64;

	(void)state;
	for (i = 0; i < 64; i++) {
		snprintf(store[i], 16, "6591%06zu", i * 7919);
		nums[i] = store[i];
	}
	img = build(nums, 64, &len);
	bad = malloc(len);

	/* every single byte changed is refused */
	for (i = 0; i < len; i++) {
		memcpy(bad, img, len);
		bad[i] ^= 0x40;
		if (ccq_numset_check(bad, len) == 0)
			fail_msg("flipped byte %zu of %zu not detected", i, len);
	}
	/* truncated buffers */
	for (i = 0; i < len; i += 8)
		assert_int_not_equal(ccq_numset_check(img, i), 0);
	assert_int_equal(ccq_numset_check(img, 10), -CCQ_NUMSET_E_TRUNCATED);
	assert_int_equal(ccq_numset_check(img, len - 1), -CCQ_NUMSET_E_TRUNCATED);
	assert_int_equal(ccq_numset_check(NULL, len), -CCQ_NUMSET_E_INVALID);
	/* misaligned */
	{
		uint8_t *mis = malloc(len + 1);

		memcpy(mis + 1, img, len);
		assert_int_equal(ccq_numset_check(mis + 1, len), -CCQ_NUMSET_E_ALIGN);
		free(mis);
	}
	/* specific fields, resealed so only the field check can catch them */
	memcpy(bad, img, len);
	bad[0] = 'X';
	assert_int_equal(ccq_numset_check(bad, len), -CCQ_NUMSET_E_MAGIC);
	assert_false(ccq_numset_contains(bad, nums[0])); /* not an image */
	memcpy(bad, img, len);
	v32 = 2;
	memcpy(bad + OFF_VERSION, &v32, 4);
	reseal(bad, len);
	assert_int_equal(ccq_numset_check(bad, len), -CCQ_NUMSET_E_VERSION);
	memcpy(bad, img, len);
	bad[OFF_SLOT]++;
	reseal(bad, len);
	assert_int_equal(ccq_numset_check(bad, len), -CCQ_NUMSET_E_LAYOUT);
	memcpy(bad, img, len);
	bad[OFF_BITS] = 31;
	reseal(bad, len);
	assert_int_equal(ccq_numset_check(bad, len), -CCQ_NUMSET_E_LAYOUT);
	memcpy(bad, img, len);
	memcpy(&v32, bad + OFF_COUNT, 4);
	v32++;
	memcpy(bad + OFF_COUNT, &v32, 4);
	reseal(bad, len);
	assert_int_equal(ccq_numset_check(bad, len), -CCQ_NUMSET_E_LAYOUT);
	memcpy(bad, img, len);
	memcpy(&v64, bad + OFF_TOTAL, 8);
	v64 += 8;
	memcpy(bad + OFF_TOTAL, &v64, 8);
	reseal(bad, len);
	assert_int_equal(ccq_numset_check(bad, len + 8), -CCQ_NUMSET_E_LAYOUT);
	/* data: two slots swapped inside the largest bucket -> out of order */
	{
		uint64_t data_off;
		unsigned w = img[OFF_SLOT];
		uint8_t tmp[8];

		size_t nb = (size_t)1 << img[OFF_BITS], k;
		uint32_t first = 0, next;

		memcpy(&data_off, img + OFF_DATA, 8);
		memcpy(bad, img, len);
		/* find a bucket of two or more and swap its first two slots */
		for (k = 0; k < nb; k++) {
			memcpy(&first, img + 64 + 4 * k, 4);
			memcpy(&next, img + 64 + 4 * (k + 1), 4);
			if (next - first >= 2)
				break;
		}
		assert_true(k < nb);
		memcpy(tmp, bad + data_off + first * w, w);
		memcpy(bad + data_off + first * w, bad + data_off + (first + 1) * w, w);
		memcpy(bad + data_off + (first + 1) * w, tmp, w);
		reseal(bad, len);
		assert_int_equal(ccq_numset_check(bad, len), -CCQ_NUMSET_E_ORDER);
		/* an index entry past the count */
		memcpy(bad, img, len);
		v32 = 1000;
		memcpy(bad + 64, &v32, 4);
		reseal(bad, len);
		assert_int_equal(ccq_numset_check(bad, len), -CCQ_NUMSET_E_ORDER);
	}
	free(bad);
	free(img);
}

/* The query API answers like ccq_numset_contains(); prefetch is harmless. */
static void test_query_api(void **state)
{
	static const char *entries[] = { "6591234567", "6531*", "12125551234",
		"1876*", "447700900123" };
	static const char *queries[] = { "6591234567", "6591234568", "65310000",
		"6531", "653", "12125551234", "18765551234", "1", "447700900123",
		"", "65a", "1234567890123456", "+6591234567" };
	void *img = build(entries, ARRAY_LEN(entries), NULL);
	void *noprefix;
	size_t i;

	(void)state;
	noprefix = build(entries, 1, NULL);
	for (i = 0; i < ARRAY_LEN(queries); i++) {
		struct ccq_numset_query q;
		int valid = ccq_numset_query_init(&q, queries[i]) == 0;

		ccq_numset_prefetch(img, &q);
		ccq_numset_prefetch(noprefix, &q);
		ccq_numset_prefetch(NULL, &q);
		assert_int_equal(ccq_numset_contains_query(img, &q),
				ccq_numset_contains(img, queries[i]));
		assert_int_equal(ccq_numset_contains_query(noprefix, &q),
				ccq_numset_contains(noprefix, queries[i]));
		if (!valid)
			assert_false(ccq_numset_contains_query(img, &q));
	}
	assert_int_equal(ccq_numset_query_init(&(struct ccq_numset_query){ 0 }, NULL),
			-CCQ_NUMSET_E_INVALID);
	assert_false(ccq_numset_contains_query(img, NULL));
	ccq_numset_prefetch(img, NULL);
	free(noprefix);
	free(img);
}

/* ---- overlays: a base image plus explicit adds and removes ---------------- */

/* Reference: is q matched by an entry of the list (number, or prefix "d*")? */
static int ref_match(char (*list)[20], size_t n, const char *q)
{
	size_t i, l;

	for (i = 0; i < n; i++) {
		l = strlen(list[i]);
		if (l && list[i][l - 1] == '*') {
			if (strlen(q) >= l - 1 && strncmp(q, list[i], l - 1) == 0)
				return 1;
		} else if (strcmp(q, list[i]) == 0) {
			return 1;
		}
	}
	return 0;
}

static int ref_has(char (*list)[20], size_t n, const char *e)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], e) == 0)
			return 1;
	return 0;
}

static void *overlay_of(const void *base, ccq_numset_builder *a, ccq_numset_builder *r)
{
	size_t sz = ccq_numset_overlay_size(a, r);
	void *o = malloc(sz);

	assert_non_null(o);
	assert_int_equal(ccq_numset_overlay_write(o, sz, base, a, r), 0);
	assert_int_equal(ccq_numset_check(o, sz), 0);
	assert_true(ccq_numset_is_overlay(o));
	assert_ptr_equal(ccq_numset_overlay_base(o), base);
	assert_int_equal(ccq_numset_bytes(o), sz);
	return o;
}

/* The rule of an overlay, by hand: removes beat the base, adds beat both. */
static void test_overlay_rules(void **state)
{
	static const char *base_e[] = { "6591234567", "6591234568", "6531*", "1876*" };
	void *base = build(base_e, ARRAY_LEN(base_e), NULL), *o;
	ccq_numset_builder *a = ccq_numset_builder_new(), *r = ccq_numset_builder_new();

	(void)state;
	assert_int_equal(ccq_numset_builder_add(a, "6599999999"), 0);
	assert_int_equal(ccq_numset_builder_add(a, "4420*"), 0);
	assert_int_equal(ccq_numset_builder_add(a, "6591234567"), 0); /* already in the base */
	assert_int_equal(ccq_numset_builder_add(r, "6591234568"), 0);
	assert_int_equal(ccq_numset_builder_add(r, "1876*"), 0);
	assert_int_equal(ccq_numset_builder_add(r, "6531000000"), 0); /* under a kept prefix */
	assert_int_equal(ccq_numset_builder_add(r, "6500000000"), 0); /* not in the base */
	o = overlay_of(base, a, r);
	assert_true(ccq_numset_contains(o, "6591234567"));
	assert_false(ccq_numset_contains(o, "6591234568"));
	assert_true(ccq_numset_contains(o, "6599999999"));
	assert_true(ccq_numset_contains(o, "442071234567"));
	assert_false(ccq_numset_contains(o, "18765550000"));
	/* removing a number does not remove the prefix that covers it */
	assert_true(ccq_numset_contains(o, "6531000000"));
	assert_true(ccq_numset_contains(o, "6531000001"));
	assert_false(ccq_numset_contains(o, "6500000000"));
	/* base 2 numbers; +1 new, -1 removed */
	assert_int_equal(ccq_numset_count(o), 2);
	assert_int_equal(ccq_numset_prefix_count(o), 2); /* 6531* 4420* */
	assert_int_equal(ccq_numset_overlay_adds(o), 3);
	assert_int_equal(ccq_numset_overlay_removes(o), 4);
	free(o);

	/* an entry in both is refused */
	assert_int_equal(ccq_numset_builder_add(a, "6500000000"), 0);
	{
		char buf[4096] __attribute__((aligned(8)));
		assert_int_equal(ccq_numset_overlay_write(buf, sizeof(buf), base, a, r),
				-CCQ_NUMSET_E_INVALID);
		assert_int_equal(ccq_numset_overlay_write(buf + 4, sizeof(buf) - 8, base, a, NULL),
				-CCQ_NUMSET_E_ALIGN);
		assert_int_equal(ccq_numset_overlay_write(buf, 64, base, a, NULL), -CCQ_NUMSET_E_SMALL);
	}
	/* empty delta, empty base */
	o = overlay_of(NULL, NULL, NULL);
	assert_false(ccq_numset_contains(o, "6591234567"));
	assert_int_equal(ccq_numset_count(o), 0);
	free(o);
	/* a plain image is not an overlay */
	assert_false(ccq_numset_is_overlay(base));
	assert_null(ccq_numset_overlay_base(base));
	assert_int_equal(ccq_numset_overlay_adds(base), 0);
	ccq_numset_builder_free(a);
	ccq_numset_builder_free(r);
	free(base);
}

/* Random base and delta against the reference (the effective entry list). */
static void test_overlay_random(void **state)
{
	enum { NB = 3000, ND = 400, NQ = 20000 };
	static char basel[NB][20], eff[NB + ND][20], adds[ND][20], rems[ND][20];
	size_t nb = 0, na = 0, nr = 0, ne = 0, i;
	ccq_numset_builder *bb = ccq_numset_builder_new(), *a = ccq_numset_builder_new();
	ccq_numset_builder *r = ccq_numset_builder_new();
	void *base, *o;
	size_t bsz;
	unsigned seed = 12345;
	size_t exact = 0;

	(void)state;
	srand(seed);
	/* small number space (65 + 4 digits) so that queries hit often */
	for (i = 0; i < NB; i++) {
		int v = rand() % 10000;
		if (rand() % 50 == 0)
			snprintf(basel[nb], 20, "65%02d*", v % 100);
		else
			snprintf(basel[nb], 20, "65%04d", v);
		if (!ref_has(basel, nb, basel[nb]))
			assert_int_equal(ccq_numset_builder_add(bb, basel[nb++]), 0);
	}
	bsz = ccq_numset_builder_size(bb);
	base = malloc(bsz);
	assert_int_equal(ccq_numset_builder_finish(bb, base, bsz), 0);
	for (i = 0; i < ND; i++) {
		char e[20];
		int v = rand() % 10000;
		if (rand() % 20 == 0)
			snprintf(e, 20, "65%02d*", v % 100);
		else if (rand() % 2 && nb)
			snprintf(e, 20, "%s", basel[rand() % nb]);
		else
			snprintf(e, 20, "65%04d", v);
		if (ref_has(adds, na, e) || ref_has(rems, nr, e))
			continue;
		if (rand() % 2)
			snprintf(adds[na++], 20, "%s", e);
		else
			snprintf(rems[nr++], 20, "%s", e);
	}
	for (i = 0; i < na; i++)
		assert_int_equal(ccq_numset_builder_add(a, adds[i]), 0);
	for (i = 0; i < nr; i++)
		assert_int_equal(ccq_numset_builder_add(r, rems[i]), 0);
	for (i = 0; i < nb; i++)
		if (!ref_has(rems, nr, basel[i]))
			memcpy(eff[ne++], basel[i], 20);
	for (i = 0; i < na; i++)
		if (!ref_has(eff, ne, adds[i]))
			memcpy(eff[ne++], adds[i], 20);
	o = overlay_of(base, a, r);
	for (i = 0; i < ne; i++)
		exact += strchr(eff[i], '*') == NULL;
	assert_int_equal(ccq_numset_count(o), exact);
	assert_int_equal(ccq_numset_prefix_count(o), ne - exact);
	for (i = 0; i < NQ; i++) {
		char q[20];
		struct ccq_numset_query qq;
		int want;

		snprintf(q, sizeof(q), "65%04d", rand() % 10000);
		want = ref_match(eff, ne, q);
		assert_int_equal(ccq_numset_contains(o, q), want);
		assert_int_equal(ccq_numset_query_init(&qq, q), 0);
		ccq_numset_prefetch(o, &qq);
		assert_int_equal(ccq_numset_contains_query(o, &qq), want);
	}
	/* a corrupt delta image is found by the check */
	{
		size_t sz = ccq_numset_bytes(o);
		uint8_t *c = malloc(sz);
		memcpy(c, o, sz);
		c[64 + 70] ^= 1;
		assert_int_not_equal(ccq_numset_check(c, sz), 0);
		assert_int_equal(ccq_numset_check(o, sz - 8), -CCQ_NUMSET_E_TRUNCATED);
		free(c);
	}
	free(o);
	free(base);
	ccq_numset_builder_free(bb);
	ccq_numset_builder_free(a);
	ccq_numset_builder_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_one),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_invalid_adds),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_position_independent),
		cmocka_unit_test(test_random_small),
		cmocka_unit_test(test_random_large),
		cmocka_unit_test(test_random_very_large),
		cmocka_unit_test(test_size_formula),
		cmocka_unit_test(test_finish_errors),
		cmocka_unit_test(test_corrupt),
		cmocka_unit_test(test_query_api),
		cmocka_unit_test(test_overlay_rules),
		cmocka_unit_test(test_overlay_random),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
