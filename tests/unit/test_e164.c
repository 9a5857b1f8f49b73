/*
 * Unit tests for E.164 normalisation (common/ccq_e164.[ch]).
 * Table-driven: every accepted format, every rejection.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ccq_e164.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

struct norm_case {
	const char *in;
	const char *country;  /* default country */
	const char *want;     /* expected digits, or NULL for a rejection */
	int err;              /* expected CCQ_E164_E_* when want is NULL */
};

static const struct norm_case accept_cases[] = {
	/* Singapore: no trunk prefix */
	{ "+65 9123 4567", "SG", "6591234567", 0 },
	{ "+6591234567", NULL, "6591234567", 0 },
	{ "91234567", "SG", "6591234567", 0 },
	{ "9123-4567", "sg", "6591234567", 0 },
	{ "9123.4567", "SG", "6591234567", 0 },
	{ "(+65) 9123 4567", "SG", "6591234567", 0 },
	{ "0065 9123 4567", "SG", "6591234567", 0 },
	{ "  +65\t6123 4567  ", "MY", "6561234567", 0 },
	{ "1800 123 4567", "SG", "6518001234567", 0 },
	/* Malaysia, Indonesia, Thailand, Philippines, Vietnam: trunk 0 */
	{ "012-345 6789", "MY", "60123456789", 0 },
	{ "03-2123 4567", "MY", "60321234567", 0 },
	{ "+60 12-345 6789", "SG", "60123456789", 0 },
	{ "0812-3456-7890", "ID", "6281234567890", 0 },
	{ "021 1234 5678", "ID", "622112345678", 0 },
	{ "081 234 5678", "TH", "66812345678", 0 },
	{ "02 123 4567", "TH", "6621234567", 0 },
	{ "0917 123 4567", "PH", "639171234567", 0 },
	{ "(02) 8123 4567", "PH", "63281234567", 0 },
	{ "091 234 56 78", "VN", "84912345678", 0 },
	{ "+84 (0)91 234 5678", NULL, "84912345678", 0 },
	/* Australia (IDD 0011), New Zealand */
	{ "0412 345 678", "AU", "61412345678", 0 },
	{ "(02) 9876 5432", "AU", "61298765432", 0 },
	{ "0011 65 9123 4567", "AU", "6591234567", 0 },
	{ "00 65 9123 4567", "AU", "6591234567", 0 },
	{ "021 123 4567", "NZ", "64211234567", 0 },
	{ "09-123 4567", "NZ", "6491234567", 0 },
	/* United Kingdom, France, Germany, Netherlands */
	{ "020 7946 0000", "GB", "442079460000", 0 },
	{ "+44 (0)20 7946 0000", "SG", "442079460000", 0 },
	{ "0044 20 7946 0000", "FR", "442079460000", 0 },
	{ "07700 900123", "GB", "447700900123", 0 },
	{ "01 23 45 67 89", "FR", "33123456789", 0 },
	{ "+33 6 12 34 56 78", NULL, "33612345678", 0 },
	{ "06.12.34.56.78", "fr", "33612345678", 0 },
	{ "030/1234567", "DE", "49301234567", 0 },
	{ "0151 2345 6789", "DE", "4915123456789", 0 },
	{ "020-123 4567", "NL", "31201234567", 0 },
	{ "06 1234 5678", "NL", "31612345678", 0 },
	/* Spain: no trunk prefix; Italy: the leading 0 is part of the number */
	{ "912 34 56 78", "ES", "34912345678", 0 },
	{ "+34 612 34 56 78", NULL, "34612345678", 0 },
	{ "06 1234 5678", "IT", "390612345678", 0 },
	{ "+39 06 1234 5678", NULL, "390612345678", 0 },
	{ "312 345 6789", "IT", "393123456789", 0 },
	/* NANP: 10-digit national numbers, trunk 1, IDD 011 */
	{ "(212) 555-1234", "US", "12125551234", 0 },
	{ "212.555.1234", "US", "12125551234", 0 },
	{ "1-212-555-1234", "US", "12125551234", 0 },
	{ "+1 212 555 1234", "SG", "12125551234", 0 },
	{ "011 44 20 7946 0000", "US", "442079460000", 0 },
	{ "011 65 9123 4567", "CA", "6591234567", 0 },
	{ "416-555-0123", "CA", "14165550123", 0 },
	{ "876 555 1234", "JM", "18765551234", 0 },
	/* India, Japan (IDD 010), China, Hong Kong, UAE */
	{ "098765 43210", "IN", "919876543210", 0 },
	{ "+91 98765 43210", NULL, "919876543210", 0 },
	{ "03-1234-5678", "JP", "81312345678", 0 },
	{ "090-1234-5678", "JP", "819012345678", 0 },
	{ "010 65 9123 4567", "JP", "6591234567", 0 },
	{ "010 1234 5678", "CN", "861012345678", 0 },
	{ "138 0013 8000", "CN", "8613800138000", 0 },
	{ "9123 4567", "HK", "85291234567", 0 },
	{ "+852 2123 4567", NULL, "85221234567", 0 },
	{ "050 123 4567", "AE", "971501234567", 0 },
	{ "04 123 4567", "AE", "97141234567", 0 },
	/* other trunk prefixes: 8 (RU, with IDD 810), 06 (HU) */
	{ "8 (495) 123-45-67", "RU", "74951234567", 0 },
	{ "810 65 9123 4567", "RU", "6591234567", 0 },
	{ "8 701 123 4567", "KZ", "77011234567", 0 },
	{ "06 1 234 5678", "HU", "3612345678", 0 },
	/* shortest numbers in service: 7 digits in all */
	{ "+683 4002", NULL, "6834002", 0 },
	/* 15 digits, the E.164 maximum */
	{ "+49 1512 3456 7890 1", NULL, "491512345678901", 0 },
};

static const struct norm_case reject_cases[] = {
	{ "", "SG", NULL, CCQ_E164_E_EMPTY },
	{ "   ", "SG", NULL, CCQ_E164_E_EMPTY },
	{ " - . ( ) ", "SG", NULL, CCQ_E164_E_EMPTY },
	{ "+", "SG", NULL, CCQ_E164_E_ONLY_PLUS },
	{ " + ", NULL, NULL, CCQ_E164_E_ONLY_PLUS },
	{ "+ ( ) -", NULL, NULL, CCQ_E164_E_ONLY_PLUS },
	{ "00", "SG", NULL, CCQ_E164_E_ONLY_PLUS },
	{ "011", "US", NULL, CCQ_E164_E_ONLY_PLUS },
	{ "+65 9123 ABCD", "SG", NULL, CCQ_E164_E_LETTERS },
	{ "tel:+6591234567", "SG", NULL, CCQ_E164_E_LETTERS },
	{ "6591234567x12", "SG", NULL, CCQ_E164_E_LETTERS },
	{ "1-800-FLOWERS", "US", NULL, CCQ_E164_E_LETTERS },
	{ "+65#91234567", "SG", NULL, CCQ_E164_E_BAD_CHAR },
	{ "*1234*91234567", "SG", NULL, CCQ_E164_E_BAD_CHAR },
	{ "9123\n4567", "SG", NULL, CCQ_E164_E_BAD_CHAR },
	{ "9123_4567", "SG", NULL, CCQ_E164_E_BAD_CHAR },
	{ "9123\xc2\xa0" "4567", "SG", NULL, CCQ_E164_E_BAD_CHAR },
	{ "65+91234567", "SG", NULL, CCQ_E164_E_PLUS },
	{ "++6591234567", "SG", NULL, CCQ_E164_E_PLUS },
	{ "+65 9123 +4567", "SG", NULL, CCQ_E164_E_PLUS },
	{ "+65 123", "SG", NULL, CCQ_E164_E_TOO_SHORT },
	{ "9123 456", "SG", NULL, CCQ_E164_E_TOO_SHORT },
	{ "+683 40", NULL, NULL, CCQ_E164_E_TOO_SHORT },
	{ "+1 212 555 123", NULL, NULL, CCQ_E164_E_TOO_SHORT },
	{ "+6", NULL, NULL, CCQ_E164_E_TOO_SHORT },
	{ "0", "GB", NULL, CCQ_E164_E_TOO_SHORT },
	{ "+65 9123 4567 8901 2345", NULL, NULL, CCQ_E164_E_TOO_LONG },
	{ "+1 212 555 12345", NULL, NULL, CCQ_E164_E_TOO_LONG },
	{ "+49 1512 3456 7890 12", NULL, NULL, CCQ_E164_E_TOO_LONG },
	{ "1234567890123456789012345678901234567890", "SG", NULL, CCQ_E164_E_TOO_LONG },
	{ "+28 1234 5678", NULL, NULL, CCQ_E164_E_UNKNOWN_CC },
	{ "+425 123 4567", NULL, NULL, CCQ_E164_E_UNKNOWN_CC },
	{ "+999 123 4567", NULL, NULL, CCQ_E164_E_UNKNOWN_CC },
	{ "+0 123 4567", NULL, NULL, CCQ_E164_E_UNKNOWN_CC },
	{ "0028 1234 5678", "SG", NULL, CCQ_E164_E_UNKNOWN_CC },
	{ "91234567", NULL, NULL, CCQ_E164_E_NO_COUNTRY },
	{ "91234567", "", NULL, CCQ_E164_E_NO_COUNTRY },
	{ "91234567", "XX", NULL, CCQ_E164_E_NO_COUNTRY },
	{ "91234567", "SGP", NULL, CCQ_E164_E_NO_COUNTRY },
	{ "9 1234 5678", "CL", NULL, CCQ_E164_E_NATIONAL },
	{ "+1 012 555 1234", NULL, NULL, CCQ_E164_E_BAD_NUMBER },
	{ "212 055 1234", "US", NULL, CCQ_E164_E_BAD_NUMBER },
	{ "+65 0 9123 4567", NULL, NULL, CCQ_E164_E_BAD_NUMBER },
	{ "0 9123 4567", "SG", NULL, CCQ_E164_E_BAD_NUMBER },
	{ "+44 (0)0 7946 0000", NULL, NULL, CCQ_E164_E_BAD_NUMBER },
	{ "+81 00 0044 2094", NULL, NULL, CCQ_E164_E_BAD_NUMBER },
	{ "810 81 0000 44 2094", "RU", NULL, CCQ_E164_E_BAD_NUMBER },
};

static void run_case(const struct norm_case *c)
{
	char out[CCQ_E164_BUFSZ];
	const char *why = "unset";
	int rc;

	memset(out, 'X', sizeof(out));
	rc = ccq_e164_normalize(c->in, c->in ? strlen(c->in) : 0, c->country, out, &why);
	if (c->want) {
		if (rc != 0)
			fail_msg("\"%s\" (%s): rejected (%s), want %s", c->in,
					c->country ? c->country : "-", why, c->want);
		if (strcmp(out, c->want) != 0)
			fail_msg("\"%s\" (%s): got %s, want %s", c->in,
					c->country ? c->country : "-", out, c->want);
		assert_null(why);
	} else {
		if (rc != -c->err)
			fail_msg("\"%s\" (%s): rc %d (%s, out \"%s\"), want -%d (%s)", c->in,
					c->country ? c->country : "-", rc, rc ? why : "accepted",
					rc ? "" : out, c->err, ccq_e164_strerror(c->err));
		assert_string_equal(out, "");
		assert_non_null(why);
		assert_string_equal(why, ccq_e164_strerror(c->err));
	}
}

static void test_accepts(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(accept_cases); i++)
		run_case(&accept_cases[i]);
}

static void test_rejects(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(reject_cases); i++)
		run_case(&reject_cases[i]);
}

/* The result, written back as "+digits", normalises to itself. */
static void test_idempotent(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(accept_cases); i++) {
		char out[CCQ_E164_BUFSZ], again[CCQ_E164_BUFSZ], plus[CCQ_E164_BUFSZ + 1];

		assert_int_equal(ccq_e164_normalize(accept_cases[i].in,
				strlen(accept_cases[i].in), accept_cases[i].country, out, NULL), 0);
		snprintf(plus, sizeof(plus), "+%s", out);
		assert_int_equal(ccq_e164_normalize(plus, strlen(plus), "SG", again, NULL), 0);
		assert_string_equal(out, again);
	}
}

static void test_not_nul_terminated(void **state)
{
	const char buf[] = "+6591234567999";
	char out[CCQ_E164_BUFSZ];
	char *heap;

	(void)state;
	/* only the first 11 bytes count */
	assert_int_equal(ccq_e164_normalize(buf, 11, NULL, out, NULL), 0);
	assert_string_equal(out, "6591234567");
	/* exactly len bytes on the heap: valgrind sees any overread */
	heap = malloc(10);
	assert_non_null(heap);
	memcpy(heap, "+852212345", 10);
	assert_int_equal(ccq_e164_normalize(heap, 10, NULL, out, NULL),
			-CCQ_E164_E_TOO_SHORT);
	free(heap);
	/* NUL inside the length is a bad character */
	assert_int_equal(ccq_e164_normalize("9123\0" "4567", 9, "SG", out, NULL),
			-CCQ_E164_E_BAD_CHAR);
	/* NULL input is empty; NULL why is allowed */
	assert_int_equal(ccq_e164_normalize(NULL, 5, "SG", out, NULL), -CCQ_E164_E_EMPTY);
}

struct country_case {
	const char *digits;
	const char *iso; /* NULL: unknown */
	int cc;
};

static const struct country_case country_cases[] = {
	{ "6591234567", "SG", 65 },
	{ "60123456789", "MY", 60 },
	{ "6281234567890", "ID", 62 },
	{ "66812345678", "TH", 66 },
	{ "639171234567", "PH", 63 },
	{ "84912345678", "VN", 84 },
	{ "61412345678", "AU", 61 },
	{ "61891621234", "CC", 61 },
	{ "64211234567", "NZ", 64 },
	{ "442079460000", "GB", 44 },
	{ "441481123456", "GG", 44 },
	{ "441534123456", "JE", 44 },
	{ "447624123456", "IM", 44 },
	{ "33123456789", "FR", 33 },
	{ "49301234567", "DE", 49 },
	{ "31201234567", "NL", 31 },
	{ "34912345678", "ES", 34 },
	{ "390612345678", "IT", 39 },
	{ "39066981234", "VA", 39 },
	{ "12125551234", "US", 1 },
	{ "18005551234", "US", 1 },
	{ "14165550123", "CA", 1 },
	{ "16045550123", "CA", 1 },
	{ "18765551234", "JM", 1 },
	{ "17875551234", "PR", 1 },
	{ "18095551234", "DO", 1 },
	{ "12425551234", "BS", 1 },
	{ "16715551234", "GU", 1 },
	{ "919876543210", "IN", 91 },
	{ "819012345678", "JP", 81 },
	{ "8613800138000", "CN", 86 },
	{ "85291234567", "HK", 852 },
	{ "85361234567", "MO", 853 },
	{ "971501234567", "AE", 971 },
	{ "74951234567", "RU", 7 },
	{ "77011234567", "KZ", 7 },
	{ "358181234567", "AX", 358 },
	{ "358401234567", "FI", 358 },
	{ "262269123456", "YT", 262 },
	{ "262262123456", "RE", 262 },
	{ "59991234567", "CW", 599 },
	{ "5997171234", "BQ", 599 },
	{ "6834002", "NU", 683 },
	{ "80012345678", "001", 800 },
	{ "881612345678", "001", 881 },
	{ "2812345678", NULL, 0 },
	{ "4251234567", NULL, 0 },
	{ "0123456789", NULL, 0 },
	{ "", NULL, 0 },
	{ "65a1234567", NULL, 0 },
	{ "+6591234567", NULL, 0 },
	{ "6591234567890123", NULL, 0 }, /* 16 digits */
};

static void test_country(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(country_cases); i++) {
		const struct country_case *c = &country_cases[i];
		const char *iso = ccq_e164_country(c->digits);

		if (c->iso == NULL ? iso != NULL : (iso == NULL || strcmp(iso, c->iso) != 0))
			fail_msg("%s: country %s, want %s", c->digits, iso ? iso : "NULL",
					c->iso ? c->iso : "NULL");
		if (ccq_e164_country_code(c->digits) != c->cc)
			fail_msg("%s: calling code %d, want %d", c->digits,
					ccq_e164_country_code(c->digits), c->cc);
	}
	assert_null(ccq_e164_country(NULL));
	assert_int_equal(ccq_e164_country_code(NULL), 0);
}

static void test_regions(void **state)
{
	(void)state;
	assert_true(ccq_e164_region_known("SG"));
	assert_true(ccq_e164_region_known("sg"));
	assert_true(ccq_e164_region_known("CA"));
	assert_true(ccq_e164_region_known("KZ"));
	assert_true(ccq_e164_region_known("GG"));
	assert_false(ccq_e164_region_known("XX"));
	assert_false(ccq_e164_region_known("001"));
	assert_false(ccq_e164_region_known(""));
	assert_false(ccq_e164_region_known(NULL));
	assert_int_equal(ccq_e164_region_code("SG"), 65);
	assert_int_equal(ccq_e164_region_code("US"), 1);
	assert_int_equal(ccq_e164_region_code("CA"), 1);
	assert_int_equal(ccq_e164_region_code("JM"), 1);
	assert_int_equal(ccq_e164_region_code("KZ"), 7);
	assert_int_equal(ccq_e164_region_code("GG"), 44);
	assert_int_equal(ccq_e164_region_code("HK"), 852);
	assert_int_equal(ccq_e164_region_code("AE"), 971);
	assert_int_equal(ccq_e164_region_code("ZZ"), 0);
}

/* Every calling code 1..999 the table knows gives a number that normalises. */
static void test_every_code_round_trips(void **state)
{
	int code, known = 0;

	(void)state;
	for (code = 1; code < 1000; code++) {
		char in[32], out[CCQ_E164_BUFSZ], digits[16];
		int rc;

		snprintf(digits, sizeof(digits), "%d", code);
		if (ccq_e164_country_code(digits) != code)
			continue;
		known++;
		assert_non_null(ccq_e164_country(digits));
		/* try NSN lengths until the country's bounds accept one */
		for (int l = 4; l <= 14; l++) {
			snprintf(in, sizeof(in), "+%d%.*s", code, l, "23456789234567");
			rc = ccq_e164_normalize(in, strlen(in), NULL, out, NULL);
			if (rc == 0)
				break;
		}
		if (rc != 0)
			fail_msg("no length of +%d normalises", code);
		assert_int_equal(ccq_e164_country_code(out), code);
	}
	assert_true(known > 200);
}

static void test_strerror(void **state)
{
	(void)state;
	assert_string_equal(ccq_e164_strerror(0), "ok");
	assert_string_equal(ccq_e164_strerror(-CCQ_E164_E_LETTERS), "contains letters");
	assert_string_equal(ccq_e164_strerror(CCQ_E164_E_TOO_SHORT), "too short");
	assert_string_equal(ccq_e164_strerror(999), "unknown error");
	for (int i = 0; i < CCQ_E164_E_MAX_; i++)
		assert_non_null(ccq_e164_strerror(i));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accepts),
		cmocka_unit_test(test_rejects),
		cmocka_unit_test(test_idempotent),
		cmocka_unit_test(test_not_nul_terminated),
		cmocka_unit_test(test_country),
		cmocka_unit_test(test_regions),
		cmocka_unit_test(test_every_code_round_trips),
		cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
