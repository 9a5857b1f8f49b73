/* Callback tokens: sign, verify, and every way a token can be wrong. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ccq_token.h"

static const char SECRET[] = "s3cret-for-tests";
#define SL (sizeof(SECRET) - 1)

static void make(struct ccq_token *t, char purpose)
{
	memset(t, 0, sizeof(*t));
	t->purpose = purpose;
	t->txn = 4242;
	strcpy(t->ext, "1001");
	strcpy(t->digits, "6591234567");
	t->exp = 2000000000;
}

static void test_roundtrip(void **state)
{
	struct ccq_token t, v;
	char tok[CCQ_TOKEN_MAX];
	(void)state;
	make(&t, 'a');
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), CCQ_TOKEN_OK);
	assert_int_equal(strlen(t.nonce), 16);
	assert_int_equal(ccq_token_verify(SECRET, SL, tok, strlen(tok), 1900000000, &v), CCQ_TOKEN_OK);
	assert_int_equal(v.purpose, 'a');
	assert_int_equal(v.txn, 4242);
	assert_string_equal(v.ext, "1001");
	assert_string_equal(v.digits, "6591234567");
	assert_string_equal(v.flags, "-");
	assert_string_equal(v.nonce, t.nonce);
}

/* A customer leg's flags: the PIN check and queued's recording decision
 * ("pri": PIN verified, record, inbox policy) come back as signed. */
static void test_customer_leg_flags(void **state)
{
	struct ccq_token t, v;
	char tok[CCQ_TOKEN_MAX];
	(void)state;
	make(&t, 'c');
	strcpy(t.flags, "pri");
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), CCQ_TOKEN_OK);
	assert_int_equal(ccq_token_verify(SECRET, SL, tok, strlen(tok), 1900000000, &v), CCQ_TOKEN_OK);
	assert_string_equal(v.flags, "pri");
	strcpy(t.flags, "nPo");   /* upper case is not a flag */
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), CCQ_TOKEN_MALFORMED);
}

static void test_golden(void **state)
{
	/* a fixed nonce gives a fixed token: the format is a contract between
	 * queued and every proxy, which may run different builds */
	struct ccq_token t;
	char tok[CCQ_TOKEN_MAX];
	(void)state;
	make(&t, 'c');
	strcpy(t.flags, "p");
	strcpy(t.nonce, "0123456789abcdef");
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), CCQ_TOKEN_OK);
	assert_memory_equal(tok, "1.c.4242.1001.6591234567.p.2000000000.0123456789abcdef.", 55);
	assert_int_equal(strlen(tok), 55 + 32);
}

static void test_two_tokens_differ(void **state)
{
	struct ccq_token a, b;
	char ta[CCQ_TOKEN_MAX], tb[CCQ_TOKEN_MAX];
	(void)state;
	make(&a, 'a');
	make(&b, 'a');
	assert_int_equal(ccq_token_sign(SECRET, SL, &a, ta, sizeof(ta)), 0);
	assert_int_equal(ccq_token_sign(SECRET, SL, &b, tb, sizeof(tb)), 0);
	assert_string_not_equal(ta, tb); /* random nonces */
}

static void test_tampered(void **state)
{
	struct ccq_token t, v;
	char tok[CCQ_TOKEN_MAX], bad[CCQ_TOKEN_MAX];
	(void)state;
	make(&t, 'a');
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), 0);
	/* another number, same MAC */
	strcpy(bad, tok);
	bad[strlen("1.a.4242.1001.659123456")] = '8';
	assert_int_equal(ccq_token_verify(SECRET, SL, bad, strlen(bad), 0, &v), CCQ_TOKEN_BAD_MAC);
	/* another purpose */
	strcpy(bad, tok);
	bad[2] = 'c';
	assert_int_equal(ccq_token_verify(SECRET, SL, bad, strlen(bad), 0, &v), CCQ_TOKEN_BAD_MAC);
	/* the MAC itself */
	strcpy(bad, tok);
	bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
	assert_int_equal(ccq_token_verify(SECRET, SL, bad, strlen(bad), 0, &v), CCQ_TOKEN_BAD_MAC);
	/* another secret */
	assert_int_equal(ccq_token_verify("other", 5, tok, strlen(tok), 0, &v), CCQ_TOKEN_BAD_MAC);
	assert_int_equal(v.txn, 0); /* nothing leaks from a bad token */
}

static void test_expired(void **state)
{
	struct ccq_token t, v;
	char tok[CCQ_TOKEN_MAX];
	(void)state;
	make(&t, 'a');
	t.exp = 1000;
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), 0);
	assert_int_equal(ccq_token_verify(SECRET, SL, tok, strlen(tok), 1001, &v), CCQ_TOKEN_EXPIRED);
	assert_int_equal(v.txn, 4242);
	assert_int_equal(ccq_token_verify(SECRET, SL, tok, strlen(tok), 1000, &v), CCQ_TOKEN_OK);
}

static void test_malformed(void **state)
{
	static const char *bad[] = {
		"", "1", "1.a.1.1001.65.-.9.0123456789abcdef", /* no mac */
		"2.a.1.1001.65.-.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.x.1.1001.65.-.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.0.1001.65.-.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.1..65.-.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.1.1001.6a5.-.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.1.1001.1234567890123456.-.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.1.1001.65.-.9999999999.0123456789ABCDEF.00000000000000000000000000000000",
		"1.a.1.1001.65.-.9999999999.0123456789abcdef.0000000000000000000000000000000",
		"1.a.1.10 01.65.-.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.1.1001.65.-.99999999999999999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.1.1001.65.-.9999999999.0123456789abcdef.00000000000000000000000000000000.x",
		"1.a.1.1001.65.;.9999999999.0123456789abcdef.00000000000000000000000000000000",
		"1.a.1.1001.65.-.9999999999.0123456789abcdef.0000000000000000000000000000000%",
	};
	struct ccq_token v;
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = ccq_token_verify(SECRET, SL, bad[i], strlen(bad[i]), 0, &v);
		if (rc != CCQ_TOKEN_MALFORMED)
			fail_msg("case %zu (%s): %d", i, bad[i], rc);
	}
	/* embedded NUL: the length counts, not the string */
	assert_int_equal(ccq_token_verify(SECRET, SL, "1.a\0", 4, 0, &v), CCQ_TOKEN_MALFORMED);
	assert_int_equal(ccq_token_verify(SECRET, 0, bad[3], strlen(bad[3]), 0, &v),
		CCQ_TOKEN_NO_SECRET);
}

static void test_sign_refuses_bad_fields(void **state)
{
	struct ccq_token t;
	char tok[CCQ_TOKEN_MAX];
	(void)state;
	make(&t, 'a');
	strcpy(t.ext, "10 01");
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), CCQ_TOKEN_MALFORMED);
	make(&t, 'a');
	strcpy(t.digits, "+6591");
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), CCQ_TOKEN_MALFORMED);
	make(&t, 'q');
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, sizeof(tok)), CCQ_TOKEN_MALFORMED);
	make(&t, 'a');
	assert_int_equal(ccq_token_sign(NULL, 0, &t, tok, sizeof(tok)), CCQ_TOKEN_NO_SECRET);
	make(&t, 'a');
	assert_int_equal(ccq_token_sign(SECRET, SL, &t, tok, 40), CCQ_TOKEN_MALFORMED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_customer_leg_flags),
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_two_tokens_differ),
		cmocka_unit_test(test_tampered),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_sign_refuses_bad_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
