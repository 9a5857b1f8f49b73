/*
 * Unit tests for the outbound compliance gate (common/ccq_gate.[ch]):
 * every rule, their order, the PIN policies, PIN dialling and lockout.
 * Links the real ccq_numset and ccq_e164.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ccq_gate.h"
#include "ccq_numset.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the lists ---------------------------------------------------------- */

/*
 * 6580000001  blacklist, company whitelist, personal whitelist, DNC
 * 6580000002  company whitelist, DNC
 * 6580000003  personal whitelist, DNC
 * 6580000004  DNC
 * 6580000005  company and personal whitelist
 * 447700900123 DNC, company whitelist
 * 447700900999 DNC
 * 6599*       blacklist (prefix)
 * 6591234567  in no list
 */
static const char *const blacklist[] = { "6580000001", "6599*" };
static const char *const company_wl[] = { "6580000001", "6580000002", "6580000005",
	"447700900123" };
static const char *const personal_wl[] = { "6580000001", "6580000003", "6580000005" };
static const char *const dnc[] = { "6580000001", "6580000002", "6580000003",
	"6580000004", "447700900123", "447700900999", "18765550000" };

struct lists {
	void *blacklist, *company_wl, *personal_wl, *dnc;
};

static void *image_of(const char *const *e, size_t n)
{
	ccq_numset_builder *b = ccq_numset_builder_new();
	size_t sz, i;
	void *img;

	assert_non_null(b);
	for (i = 0; i < n; i++)
		assert_int_equal(ccq_numset_builder_add(b, e[i]), 0);
	sz = ccq_numset_builder_size(b);
	img = malloc(sz);
	assert_non_null(img);
	assert_int_equal(ccq_numset_builder_finish(b, img, sz), 0);
	assert_int_equal(ccq_numset_check(img, sz), 0);
	ccq_numset_builder_free(b);
	return img;
}

static int setup(void **state)
{
	struct lists *l = calloc(1, sizeof(*l));

	l->blacklist = image_of(blacklist, ARRAY_LEN(blacklist));
	l->company_wl = image_of(company_wl, ARRAY_LEN(company_wl));
	l->personal_wl = image_of(personal_wl, ARRAY_LEN(personal_wl));
	l->dnc = image_of(dnc, ARRAY_LEN(dnc));
	*state = l;
	return 0;
}

static int teardown(void **state)
{
	struct lists *l = *state;

	free(l->blacklist);
	free(l->company_wl);
	free(l->personal_wl);
	free(l->dnc);
	free(l);
	return 0;
}

/* ---- the decision table --------------------------------------------------- */

#define NOLISTS 1  /* flag: evaluate with no lists loaded */

#define A CCQ_GATE_ALLOW
#define B CCQ_GATE_BLOCK
#define P_NONE CCQ_PIN_POLICY_NONE
#define P_INTL CCQ_PIN_POLICY_INTERNATIONAL
#define P_ALL CCQ_PIN_POLICY_ALL
#define ABSENT CCQ_PIN_ABSENT
#define VALID CCQ_PIN_VALID
#define WRONG CCQ_PIN_WRONG

struct gate_case {
	const char *what;
	const char *number;
	const char *org;
	const char *countries;
	enum ccq_pin_policy policy;
	enum ccq_pin_state pin;
	int locked;
	int flags;
	enum ccq_gate_verdict verdict;
	enum ccq_gate_rule rule;
	int international; /* -1: don't care */
};

static const struct gate_case cases[] = {
	/* 0: invalid destinations are blocked before anything */
	{ "no number", NULL, "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_INVALID_NUMBER, 0 },
	{ "empty", "", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_INVALID_NUMBER, 0 },
	{ "too short", "659123", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_INVALID_NUMBER, 0 },
	{ "16 digits", "6591234567890123", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_INVALID_NUMBER, 0 },
	{ "with +", "+6591234567", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_INVALID_NUMBER, 0 },
	{ "unknown cc", "2812345678", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_INVALID_NUMBER, 0 },
	{ "invalid beats blacklist prefix", "659", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_INVALID_NUMBER, 0 },

	/* no list matches, no restriction */
	{ "plain call", "6591234567", "SG", NULL, P_NONE, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "plain international", "442079460000", "SG", "", P_NONE, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 1 },

	/* 1: country whitelist */
	{ "country listed", "6591234567", "SG", "SG,MY", P_NONE, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "country listed, other case and blanks", "60123456789", "SG", " sg ,  my ", P_NONE, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 1 },
	{ "country not listed", "442079460000", "SG", "SG,MY", P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COUNTRY_WHITELIST, 1 },
	{ "country first: beats company whitelist", "447700900123", "SG", "SG", P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COUNTRY_WHITELIST, 1 },
	{ "country first: beats DNC", "447700900999", "SG", "SG", P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COUNTRY_WHITELIST, 1 },
	{ "country first: beats PIN lock", "442079460000", "SG", "MY", P_ALL, WRONG, 1, 0, B, CCQ_RULE_COUNTRY_WHITELIST, 1 },
	{ "blacklisted number, country listed", "6580000001", "SG", "SG", P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COMPANY_BLACKLIST, 0 },
	{ "NANP: US listed, Jamaica is not", "18765551234", "US", "US", P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COUNTRY_WHITELIST, 1 },
	{ "NANP: US listed, Canada is not", "14165550123", "US", "US", P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COUNTRY_WHITELIST, 1 },
	{ "NANP: US listed, US number", "12125551234", "US", "US", P_NONE, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "non-geographic never listed", "80012345678", "SG", "SG,US", P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COUNTRY_WHITELIST, 1 },
	{ "list of separators only = no restriction", "442079460000", "SG", " , ", P_NONE, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 1 },

	/* 2: company blacklist beats every whitelist and the DNC */
	{ "blacklist beats whitelists", "6580000001", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COMPANY_BLACKLIST, 0 },
	{ "blacklist prefix", "6599123456", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_COMPANY_BLACKLIST, 0 },
	{ "blacklist beats valid PIN", "6580000001", "SG", NULL, P_ALL, VALID, 0, 0, B, CCQ_RULE_COMPANY_BLACKLIST, 0 },
	{ "blacklist beats lock", "6580000001", "SG", NULL, P_ALL, ABSENT, 1, 0, B, CCQ_RULE_COMPANY_BLACKLIST, 0 },

	/* 3: whitelists skip the DNC; company first */
	{ "company whitelist beats DNC", "6580000002", "SG", NULL, P_NONE, ABSENT, 0, 0, A, CCQ_RULE_COMPANY_WHITELIST, 0 },
	{ "personal whitelist beats DNC", "6580000003", "SG", NULL, P_NONE, ABSENT, 0, 0, A, CCQ_RULE_PERSONAL_WHITELIST, 0 },
	{ "both whitelists: company named", "6580000005", "SG", NULL, P_NONE, ABSENT, 0, 0, A, CCQ_RULE_COMPANY_WHITELIST, 0 },
	{ "international whitelisted in DNC", "447700900123", "SG", "SG,GB", P_NONE, ABSENT, 0, 0, A, CCQ_RULE_COMPANY_WHITELIST, 1 },

	/* 4: DNC */
	{ "DNC", "6580000004", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_DNC, 0 },
	{ "DNC international", "447700900999", "SG", NULL, P_NONE, ABSENT, 0, 0, B, CCQ_RULE_DNC, 1 },
	{ "DNC beats valid PIN", "6580000004", "SG", NULL, P_ALL, VALID, 0, 0, B, CCQ_RULE_DNC, 0 },
	{ "DNC before PIN lock", "6580000004", "SG", NULL, P_ALL, ABSENT, 1, 0, B, CCQ_RULE_DNC, 0 },
	{ "no lists loaded: DNC number passes", "6580000004", "SG", NULL, P_NONE, ABSENT, 0, NOLISTS, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "no lists loaded: blacklisted passes", "6580000001", "SG", NULL, P_NONE, ABSENT, 0, NOLISTS, A, CCQ_RULE_DEFAULT_ALLOW, 0 },

	/* 5: PIN, policy none: any PIN and any lock ignored */
	{ "none: wrong PIN ignored", "442079460000", "SG", NULL, P_NONE, WRONG, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 1 },
	{ "none: lock ignored", "442079460000", "SG", NULL, P_NONE, ABSENT, 1, 0, A, CCQ_RULE_DEFAULT_ALLOW, 1 },

	/* policy international */
	{ "intl: domestic, no PIN", "6591234567", "SG", NULL, P_INTL, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "intl: domestic, org code lower case", "6591234567", "sg", NULL, P_INTL, ABSENT, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "intl: domestic, valid PIN", "6591234567", "SG", NULL, P_INTL, VALID, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "intl: domestic, wrong PIN refused", "6591234567", "SG", NULL, P_INTL, WRONG, 0, 0, B, CCQ_RULE_PIN_WRONG, 0 },
	{ "intl: international, no PIN", "442079460000", "SG", NULL, P_INTL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 1 },
	{ "intl: international, valid PIN", "442079460000", "SG", NULL, P_INTL, VALID, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 1 },
	{ "intl: international, wrong PIN", "442079460000", "SG", NULL, P_INTL, WRONG, 0, 0, B, CCQ_RULE_PIN_WRONG, 1 },
	{ "intl: locked, international", "442079460000", "SG", NULL, P_INTL, VALID, 1, 0, B, CCQ_RULE_PIN_LOCKED, 1 },
	{ "intl: locked blocks domestic too", "6591234567", "SG", NULL, P_INTL, ABSENT, 1, 0, B, CCQ_RULE_PIN_LOCKED, 0 },
	{ "intl: US org, Canada is international", "14165550123", "US", NULL, P_INTL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 1 },
	{ "intl: US org, Jamaica is international", "18765551234", "US", NULL, P_INTL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 1 },
	{ "intl: no org country = all international", "6591234567", NULL, NULL, P_INTL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 1 },
	{ "intl: whitelisted international still needs PIN", "447700900123", "SG", NULL, P_INTL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 1 },
	{ "intl: whitelisted international with PIN", "447700900123", "SG", NULL, P_INTL, VALID, 0, 0, A, CCQ_RULE_COMPANY_WHITELIST, 1 },

	/* policy all */
	{ "all: domestic, no PIN", "6591234567", "SG", NULL, P_ALL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 0 },
	{ "all: domestic, valid PIN", "6591234567", "SG", NULL, P_ALL, VALID, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 0 },
	{ "all: domestic, wrong PIN", "6591234567", "SG", NULL, P_ALL, WRONG, 0, 0, B, CCQ_RULE_PIN_WRONG, 0 },
	{ "all: locked with valid PIN", "6591234567", "SG", NULL, P_ALL, VALID, 1, 0, B, CCQ_RULE_PIN_LOCKED, 0 },
	{ "all: company-whitelisted still needs PIN", "6580000002", "SG", NULL, P_ALL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 0 },
	{ "all: personal-whitelisted still needs PIN", "6580000003", "SG", NULL, P_ALL, ABSENT, 0, 0, B, CCQ_RULE_PIN_REQUIRED, 0 },
	{ "all: whitelisted with PIN", "6580000003", "SG", NULL, P_ALL, VALID, 0, 0, A, CCQ_RULE_PERSONAL_WHITELIST, 0 },
	{ "all: whitelisted, wrong PIN", "6580000002", "SG", NULL, P_ALL, WRONG, 0, 0, B, CCQ_RULE_PIN_WRONG, 0 },
	{ "all: country listed, valid PIN", "60123456789", "SG", "SG,MY", P_ALL, VALID, 0, 0, A, CCQ_RULE_DEFAULT_ALLOW, 1 },
};

static void test_rules(void **state)
{
	struct lists *l = *state;
	size_t i;

	for (i = 0; i < ARRAY_LEN(cases); i++) {
		const struct gate_case *c = &cases[i];
		struct ccq_gate_input in = {
			.number = c->number,
			.org_country = c->org,
			.country_whitelist = c->countries,
			.pin_policy = c->policy,
			.pin = c->pin,
			.pin_locked = c->locked,
		};
		struct ccq_gate_result res;
		enum ccq_gate_verdict v;

		if (!(c->flags & NOLISTS)) {
			in.company_blacklist = l->blacklist;
			in.company_whitelist = l->company_wl;
			in.personal_whitelist = l->personal_wl;
			in.dnc = l->dnc;
		}
		memset(&res, 0x5a, sizeof(res));
		v = ccq_gate_eval(&in, &res);
		if (v != res.verdict || v != c->verdict || res.rule != c->rule)
			fail_msg("case %zu \"%s\": got %s/%s, want %s/%s", i, c->what,
					v == A ? "ALLOW" : "BLOCK", ccq_gate_rule_name(res.rule),
					c->verdict == A ? "ALLOW" : "BLOCK", ccq_gate_rule_name(c->rule));
		if (c->rule != CCQ_RULE_INVALID_NUMBER && res.international != c->international)
			fail_msg("case %zu \"%s\": international %d, want %d", i, c->what,
					res.international, c->international);
		if (c->rule == CCQ_RULE_INVALID_NUMBER)
			assert_null(res.country);
		else
			assert_non_null(res.country);
	}
	/* no input at all */
	{
		struct ccq_gate_result res;

		assert_int_equal(ccq_gate_eval(NULL, &res), CCQ_GATE_BLOCK);
		assert_int_equal(res.rule, CCQ_RULE_INVALID_NUMBER);
	}
}

/* pin_needed follows the policy and the destination class */
static void test_pin_needed(void **state)
{
	struct ccq_gate_input in = { .number = "442079460000", .org_country = "SG" };
	struct ccq_gate_result res;

	(void)state;
	in.pin_policy = P_NONE;
	ccq_gate_eval(&in, &res);
	assert_false(res.pin_needed);
	assert_string_equal(res.country, "GB");
	in.pin_policy = P_INTL;
	ccq_gate_eval(&in, &res);
	assert_true(res.pin_needed);
	in.number = "6591234567";
	ccq_gate_eval(&in, &res);
	assert_false(res.pin_needed);
	in.pin_policy = P_ALL;
	ccq_gate_eval(&in, &res);
	assert_true(res.pin_needed);
}

static void test_rule_names(void **state)
{
	static const char *const names[] = { "invalid_number", "country_whitelist",
		"company_blacklist", "company_whitelist", "personal_whitelist", "dnc",
		"pin_required", "pin_wrong", "pin_locked", "default_allow" };
	int i;

	(void)state;
	assert_int_equal(ARRAY_LEN(names), CCQ_RULE_MAX_);
	for (i = 0; i < CCQ_RULE_MAX_; i++) {
		const char *r = ccq_gate_rule_reason((enum ccq_gate_rule)i), *p;

		assert_string_equal(ccq_gate_rule_name((enum ccq_gate_rule)i), names[i]);
		assert_int_equal(ccq_gate_rule_from_name(names[i]), i);
		/* a SIP reason phrase: printable ASCII, no CR/LF */
		assert_true(strlen(r) > 0 && strlen(r) < 64);
		for (p = r; *p; p++)
			assert_true(*p >= 0x20 && *p < 0x7f);
	}
	assert_string_equal(ccq_gate_rule_reason(CCQ_RULE_DNC), "Blocked by DNC registry");
	assert_string_equal(ccq_gate_rule_name(CCQ_RULE_MAX_), "unknown");
	assert_string_equal(ccq_gate_rule_reason(CCQ_RULE_MAX_), "Blocked");
	assert_int_equal(ccq_gate_rule_from_name("DNC"), -1);
	assert_int_equal(ccq_gate_rule_from_name(NULL), -1);
}

static void test_country_lists(void **state)
{
	const char *why = NULL;

	(void)state;
	assert_true(ccq_gate_country_listed("SG,MY", "MY"));
	assert_true(ccq_gate_country_listed("sg;my\tth", "TH"));
	assert_false(ccq_gate_country_listed("SG,MY", "M"));
	assert_false(ccq_gate_country_listed("SGP,MY", "SG"));
	assert_false(ccq_gate_country_listed("", "SG"));
	assert_false(ccq_gate_country_listed(NULL, "SG"));
	assert_false(ccq_gate_country_listed("SG", NULL));
	assert_int_equal(ccq_gate_country_list_check("SG, my,GB", &why), 0);
	assert_int_equal(ccq_gate_country_list_check("", &why), 0);
	assert_int_equal(ccq_gate_country_list_check(NULL, &why), 0);
	assert_int_equal(ccq_gate_country_list_check("SG,SGP", &why), -1);
	assert_non_null(why);
	why = NULL;
	assert_int_equal(ccq_gate_country_list_check("SG,XX", &why), -1);
	assert_non_null(why);
	assert_int_equal(ccq_gate_country_list_check("S1", NULL), -1);
	assert_int_equal(ccq_gate_country_list_check("'; DROP TABLE x;--", NULL), -1);
}

/* ---- PIN dialling ------------------------------------------------------- */

struct split_case {
	const char *dialled;
	char prefix;
	unsigned pin_len;
	int rc;
	const char *pin;
	const char *number;
};

static const struct split_case split_cases[] = {
	{ "*1234*6591234567", '*', 4, 1, "1234", "6591234567" },
	{ "*1234*+65 9123 4567", '*', 4, 1, "1234", "+65 9123 4567" },
	{ "*0000*0044 20 7946 0000", '*', 4, 1, "0000", "0044 20 7946 0000" },
	{ "#987654#6591234567", '#', 6, 1, "987654", "6591234567" },
	{ "*123456*6591234567", '*', 0, 1, "123456", "6591234567" },
	{ "*1234*6591234567", '*', 0, 1, "1234", "6591234567" },
	{ "6591234567", '*', 4, 0, "", "6591234567" },
	{ "+6591234567", '*', 4, 0, "", "+6591234567" },
	{ "", '*', 4, 0, "", "" },
	{ "#1234#6591234567", '*', 4, 0, "", "#1234#6591234567" },
	/* PIN prefix with no number */
	{ "*1234*", '*', 4, -2, "", "" },
	{ "*1234*  ", '*', 4, -2, "", "" },
	{ "*1234", '*', 4, -2, "", "" },
	{ "*", '*', 4, -2, "", "" },
	/* malformed PIN */
	{ "*12a4*6591234567", '*', 4, -3, "", "" },
	{ "*1234#6591234567", '*', 4, -3, "", "" },
	{ "**6591234567", '*', 4, -4, "", "" },
	{ "*123*6591234567", '*', 4, -4, "", "" },
	{ "*12345*6591234567", '*', 4, -4, "", "" },
	{ "*123*6591234567", '*', 0, -4, "", "" },
	{ "*1234567890123*6591234567", '*', 0, -4, "", "" },
};

static void test_split_pin(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(split_cases); i++) {
		const struct split_case *c = &split_cases[i];
		char pin[CCQ_PIN_MAX_LEN + 1], number[64];
		const char *why = NULL;
		int rc;

		rc = ccq_gate_split_pin(c->dialled, strlen(c->dialled), c->prefix, c->pin_len,
				pin, sizeof(pin), number, sizeof(number), &why);
		if (rc != c->rc)
			fail_msg("\"%s\": rc %d (%s), want %d", c->dialled, rc,
					why ? why : "-", c->rc);
		assert_string_equal(pin, c->pin);
		assert_string_equal(number, c->number);
		if (rc < 0)
			assert_non_null(why);
		else
			assert_null(why);
	}
}

static void test_split_pin_buffers(void **state)
{
	char pin[5], number[11], *heap;
	const char *why;

	(void)state;
	/* not NUL-terminated: a SIP R-URI user part */
	heap = malloc(16);
	memcpy(heap, "*1234*6591234567", 16);
	assert_int_equal(ccq_gate_split_pin(heap, 16, '*', 4, pin, sizeof(pin),
			number, sizeof(number), &why), 1);
	assert_string_equal(number, "6591234567");
	assert_int_equal(ccq_gate_split_pin(heap, 10, '*', 4, pin, sizeof(pin),
			number, sizeof(number), &why), 1);
	assert_string_equal(number, "6591");
	free(heap);
	/* buffers too small */
	assert_int_equal(ccq_gate_split_pin("*1234*65912345678", 17, '*', 4, pin,
			sizeof(pin), number, sizeof(number), &why), -1);
	assert_int_equal(ccq_gate_split_pin("*1234*6591", 10, '*', 4, pin, 4,
			number, sizeof(number), &why), -1);
	assert_int_equal(ccq_gate_split_pin("65912345678", 11, '*', 4, pin,
			sizeof(pin), number, sizeof(number), &why), -1);
	assert_int_equal(ccq_gate_split_pin("*1234*6591", 10, '*', 4, NULL, 0,
			number, sizeof(number), &why), -1);
	assert_int_equal(ccq_gate_split_pin(NULL, 0, '*', 4, pin, sizeof(pin),
			number, sizeof(number), &why), -1);
	assert_int_equal(ccq_gate_split_pin("*1234*6591", 10, '*', 4, pin, sizeof(pin),
			NULL, 0, NULL), -1);
	assert_int_equal(ccq_gate_split_pin("*1234*6591", 10, '*', CCQ_PIN_MAX_LEN + 1,
			pin, sizeof(pin), number, sizeof(number), &why), -1);
}

/* ---- lockout ------------------------------------------------------------ */

static void test_lockout(void **state)
{
	const struct ccq_pin_lock_cfg cfg = { .max_fails = 5, .lock_seconds = 900,
		.fail_window = 3600 };
	struct ccq_pin_lock l = { 0 };
	time_t t = 1000000;
	int i;

	(void)state;
	assert_false(ccq_pin_locked(&l, t));
	assert_false(ccq_pin_locked(NULL, t));
	for (i = 0; i < 4; i++)
		assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + i), 0);
	assert_false(ccq_pin_locked(&l, t + 4));
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + 4), 1); /* 5th: locked */
	assert_true(ccq_pin_locked(&l, t + 4));
	assert_int_equal(ccq_pin_lock_remaining(&l, t + 4), 900);
	assert_true(ccq_pin_locked(&l, t + 4 + 899));
	assert_int_equal(ccq_pin_lock_remaining(&l, t + 4 + 899), 1);
	assert_false(ccq_pin_locked(&l, t + 4 + 900));
	assert_int_equal(ccq_pin_lock_remaining(&l, t + 4 + 900), 0);

	/* wrong PINs while locked neither count nor extend */
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + 10), 0);
	assert_int_equal(l.fails, 0);
	assert_false(ccq_pin_locked(&l, t + 4 + 900));

	/* after the lock, a fresh count */
	t += 1000;
	for (i = 0; i < 4; i++)
		assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + i), 0);
	/* a correct PIN forgets the run */
	ccq_pin_lock_ok(&l);
	for (i = 0; i < 4; i++)
		assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + 10 + i), 0);
	assert_false(ccq_pin_locked(&l, t + 20));
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + 20), 1);
	assert_true(ccq_pin_locked(&l, t + 21));
	/* a correct PIN does not lift a lock */
	ccq_pin_lock_ok(&l);
	assert_true(ccq_pin_locked(&l, t + 21));
	ccq_pin_lock_ok(NULL);
}

static void test_lockout_window(void **state)
{
	struct ccq_pin_lock_cfg cfg = { .max_fails = 3, .lock_seconds = 60,
		.fail_window = 100 };
	struct ccq_pin_lock l = { 0 };
	time_t t = 5000;
	int i;

	(void)state;
	/* fails further apart than the window never add up */
	for (i = 0; i < 10; i++)
		assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + i * 101), 0);
	assert_int_equal(l.fails, 1);
	/* within the window they do */
	t += 5000;
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t), 0);
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + 100), 0);
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, t + 200), 1);
	/* window 0: never forget; max_fails 0: never lock */
	memset(&l, 0, sizeof(l));
	cfg.fail_window = 0;
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, 0), 0);
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, 1000000), 0);
	assert_int_equal(ccq_pin_lock_fail(&l, &cfg, 2000000), 1);
	memset(&l, 0, sizeof(l));
	cfg.max_fails = 0;
	for (i = 0; i < 100; i++)
		assert_int_equal(ccq_pin_lock_fail(&l, &cfg, i), 0);
	assert_false(ccq_pin_locked(&l, 100));
	assert_int_equal(ccq_pin_lock_fail(NULL, &cfg, 0), 0);
	assert_int_equal(ccq_pin_lock_fail(&l, NULL, 0), 0);
}

/* The module's sequence: split, verify (stubbed), lock bookkeeping, gate. */
static void test_lockout_through_gate(void **state)
{
	struct lists *l = *state;
	const struct ccq_pin_lock_cfg cfg = { 5, 900, 3600 };
	struct ccq_pin_lock lock = { 0 };
	struct ccq_gate_input in = {
		.number = "442079460000", .org_country = "SG",
		.company_blacklist = l->blacklist, .company_whitelist = l->company_wl,
		.personal_whitelist = l->personal_wl, .dnc = l->dnc,
		.pin_policy = P_INTL,
	};
	struct ccq_gate_result res;
	time_t now = 100;
	int i;

	for (i = 0; i < 5; i++) {
		in.pin = WRONG;
		in.pin_locked = ccq_pin_locked(&lock, now);
		assert_int_equal(ccq_gate_eval(&in, &res), CCQ_GATE_BLOCK);
		assert_int_equal(res.rule, CCQ_RULE_PIN_WRONG);
		ccq_pin_lock_fail(&lock, &cfg, now++);
	}
	/* now even the right PIN, and a domestic call, are refused */
	in.pin = VALID;
	in.pin_locked = ccq_pin_locked(&lock, now);
	ccq_gate_eval(&in, &res);
	assert_int_equal(res.rule, CCQ_RULE_PIN_LOCKED);
	in.number = "6591234567";
	in.pin = ABSENT;
	ccq_gate_eval(&in, &res);
	assert_int_equal(res.rule, CCQ_RULE_PIN_LOCKED);
	/* fifteen minutes later the right PIN works */
	now += 900;
	in.number = "442079460000";
	in.pin = VALID;
	in.pin_locked = ccq_pin_locked(&lock, now);
	assert_int_equal(ccq_gate_eval(&in, &res), CCQ_GATE_ALLOW);
	ccq_pin_lock_ok(&lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rules, setup, teardown),
		cmocka_unit_test(test_pin_needed),
		cmocka_unit_test(test_rule_names),
		cmocka_unit_test(test_country_lists),
		cmocka_unit_test(test_split_pin),
		cmocka_unit_test(test_split_pin_buffers),
		cmocka_unit_test(test_lockout),
		cmocka_unit_test(test_lockout_window),
		cmocka_unit_test_setup_teardown(test_lockout_through_gate, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
