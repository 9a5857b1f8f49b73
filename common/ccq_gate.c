/*
 * ccq outbound compliance gate; see ccq_gate.h and doc/compliance.md.
 */
#include "ccq_gate.h"
#include "ccq_e164.h"
#include "ccq_numset.h"

#include <string.h>

static const char *const rule_names[CCQ_RULE_MAX_] = {
	[CCQ_RULE_INVALID_NUMBER] = "invalid_number",
	[CCQ_RULE_COUNTRY_WHITELIST] = "country_whitelist",
	[CCQ_RULE_COMPANY_BLACKLIST] = "company_blacklist",
	[CCQ_RULE_COMPANY_WHITELIST] = "company_whitelist",
	[CCQ_RULE_PERSONAL_WHITELIST] = "personal_whitelist",
	[CCQ_RULE_DNC] = "dnc",
	[CCQ_RULE_PIN_REQUIRED] = "pin_required",
	[CCQ_RULE_PIN_WRONG] = "pin_wrong",
	[CCQ_RULE_PIN_LOCKED] = "pin_locked",
	[CCQ_RULE_DEFAULT_ALLOW] = "default_allow",
};

static const char *const rule_reasons[CCQ_RULE_MAX_] = {
	[CCQ_RULE_INVALID_NUMBER] = "Blocked: invalid number",
	[CCQ_RULE_COUNTRY_WHITELIST] = "Blocked: destination country not allowed",
	[CCQ_RULE_COMPANY_BLACKLIST] = "Blocked by company blacklist",
	[CCQ_RULE_COMPANY_WHITELIST] = "Allowed by company whitelist",
	[CCQ_RULE_PERSONAL_WHITELIST] = "Allowed by personal whitelist",
	[CCQ_RULE_DNC] = "Blocked by DNC registry",
	[CCQ_RULE_PIN_REQUIRED] = "Blocked: PIN required",
	[CCQ_RULE_PIN_WRONG] = "Blocked: wrong PIN",
	[CCQ_RULE_PIN_LOCKED] = "Blocked: PIN locked after too many wrong PINs",
	[CCQ_RULE_DEFAULT_ALLOW] = "Allowed",
};

const char *ccq_gate_rule_name(enum ccq_gate_rule rule)
{
	if ((unsigned)rule >= CCQ_RULE_MAX_)
		return "unknown";
	return rule_names[rule];
}

const char *ccq_gate_rule_reason(enum ccq_gate_rule rule)
{
	if ((unsigned)rule >= CCQ_RULE_MAX_)
		return "Blocked";
	return rule_reasons[rule];
}

int ccq_gate_rule_from_name(const char *name)
{
	int i;

	if (!name)
		return -1;
	for (i = 0; i < CCQ_RULE_MAX_; i++)
		if (strcmp(name, rule_names[i]) == 0)
			return i;
	return -1;
}

/* ---- country lists ------------------------------------------------------ */

static int is_sep(char c)
{
	return c == ',' || c == ' ' || c == '\t' || c == ';';
}

static int upper(int c)
{
	return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

static int is_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Next item of a list: *start and its length; 0 at the end. */
static size_t next_item(const char **p, const char **start)
{
	const char *s = *p;
	size_t n = 0;

	while (*s && is_sep(*s))
		s++;
	*start = s;
	while (s[n] && !is_sep(s[n]))
		n++;
	*p = s + n;
	return n;
}

int ccq_gate_country_listed(const char *list, const char *iso)
{
	const char *p = list, *item;
	size_t n, il;

	if (!list || !iso)
		return 0;
	il = strlen(iso);
	while ((n = next_item(&p, &item)) > 0) {
		size_t i;

		if (n != il)
			continue;
		for (i = 0; i < n; i++)
			if (upper((unsigned char)item[i]) != upper((unsigned char)iso[i]))
				break;
		if (i == n)
			return 1;
	}
	return 0;
}

int ccq_gate_country_list_check(const char *list, const char **why)
{
	const char *p = list, *item;
	size_t n;

	if (!list)
		return 0;
	while ((n = next_item(&p, &item)) > 0) {
		char iso[3];

		if (n != 2 || !is_alpha(item[0]) || !is_alpha(item[1])) {
			if (why)
				*why = "country whitelist items must be ISO 3166 alpha-2 codes (\"SG,MY\")";
			return -1;
		}
		iso[0] = (char)upper((unsigned char)item[0]);
		iso[1] = (char)upper((unsigned char)item[1]);
		iso[2] = '\0';
		if (!ccq_e164_region_known(iso)) {
			if (why)
				*why = "country whitelist names a country with no known calling code";
			return -1;
		}
	}
	return 0;
}

static int list_empty(const char *list)
{
	const char *p = list, *item;

	return !list || next_item(&p, &item) == 0;
}

/* ---- evaluation --------------------------------------------------------- */

static int valid_e164(const char *d)
{
	size_t n;

	if (!d)
		return 0;
	for (n = 0; d[n]; n++)
		if (d[n] < '0' || d[n] > '9' || n >= CCQ_E164_MAX_DIGITS)
			return 0;
	return n >= CCQ_E164_MIN_DIGITS && ccq_e164_country_code(d) != 0;
}

static int same_country(const char *a, const char *b)
{
	if (!a || !b || strlen(a) != 2 || strlen(b) != 2)
		return 0;
	return upper((unsigned char)a[0]) == upper((unsigned char)b[0])
		&& upper((unsigned char)a[1]) == upper((unsigned char)b[1]);
}

static enum ccq_gate_verdict decide(struct ccq_gate_result *res,
		enum ccq_gate_verdict v, enum ccq_gate_rule rule)
{
	res->verdict = v;
	res->rule = rule;
	return v;
}

enum ccq_gate_verdict ccq_gate_eval(const struct ccq_gate_input *in,
		struct ccq_gate_result *res)
{
	enum ccq_gate_rule allow_rule = CCQ_RULE_DEFAULT_ALLOW;
	struct ccq_numset_query q;

	memset(res, 0, sizeof(*res));
	if (!in || !valid_e164(in->number) || ccq_numset_query_init(&q, in->number) < 0)
		return decide(res, CCQ_GATE_BLOCK, CCQ_RULE_INVALID_NUMBER);
	/* the big list: its cache miss overlaps the work below */
	ccq_numset_prefetch(in->dnc, &q);

	res->country = ccq_e164_country(in->number);
	/* no (known) organisation country: everything counts as international */
	res->international = !same_country(res->country, in->org_country);
	res->pin_needed = in->pin_policy == CCQ_PIN_POLICY_ALL
		|| (in->pin_policy == CCQ_PIN_POLICY_INTERNATIONAL && res->international);

	/* 1. country whitelist */
	if (!list_empty(in->country_whitelist)
			&& !(res->country && ccq_gate_country_listed(in->country_whitelist, res->country)))
		return decide(res, CCQ_GATE_BLOCK, CCQ_RULE_COUNTRY_WHITELIST);

	/* 2. company blacklist */
	if (ccq_numset_contains_query(in->company_blacklist, &q))
		return decide(res, CCQ_GATE_BLOCK, CCQ_RULE_COMPANY_BLACKLIST);

	/* 3. whitelists skip the DNC; 4. DNC */
	if (ccq_numset_contains_query(in->company_whitelist, &q))
		allow_rule = CCQ_RULE_COMPANY_WHITELIST;
	else if (ccq_numset_contains_query(in->personal_whitelist, &q))
		allow_rule = CCQ_RULE_PERSONAL_WHITELIST;
	else if (ccq_numset_contains_query(in->dnc, &q))
		return decide(res, CCQ_GATE_BLOCK, CCQ_RULE_DNC);

	/* 5. PIN */
	if (in->pin_policy != CCQ_PIN_POLICY_NONE) {
		if (in->pin_locked)
			return decide(res, CCQ_GATE_BLOCK, CCQ_RULE_PIN_LOCKED);
		if (in->pin == CCQ_PIN_WRONG)
			return decide(res, CCQ_GATE_BLOCK, CCQ_RULE_PIN_WRONG);
		if (res->pin_needed && in->pin != CCQ_PIN_VALID)
			return decide(res, CCQ_GATE_BLOCK, CCQ_RULE_PIN_REQUIRED);
	}
	return decide(res, CCQ_GATE_ALLOW, allow_rule);
}

/* ---- PIN dialling ------------------------------------------------------- */

static int split_fail(const char **why, const char *text, int rc)
{
	if (why)
		*why = text;
	return rc;
}

int ccq_gate_split_pin(const char *dialled, size_t len, char prefix,
		unsigned pin_len, char *pin, size_t pin_size,
		char *number, size_t number_size, const char **why)
{
	size_t i, plen, rest;

	if (why)
		*why = NULL;
	if (pin && pin_size)
		pin[0] = '\0';
	if (number && number_size)
		number[0] = '\0';
	if (!dialled || !number || number_size == 0)
		return split_fail(why, "no dialled string or no number buffer", -1);
	if (pin_len > CCQ_PIN_MAX_LEN)
		return split_fail(why, "configured PIN length above CCQ_PIN_MAX_LEN", -1);

	if (len == 0 || dialled[0] != prefix) {
		if (len >= number_size)
			return split_fail(why, "dialled number too long", -1);
		memcpy(number, dialled, len);
		number[len] = '\0';
		return 0;
	}

	for (i = 1; i < len && dialled[i] >= '0' && dialled[i] <= '9'; i++)
		;
	plen = i - 1;
	if (i == len) {
		if (plen == 0)
			return split_fail(why, "PIN prefix with no PIN and no number", -2);
		return split_fail(why, "PIN prefix with no number (expected <prefix><PIN><prefix><number>)", -2);
	}
	if (dialled[i] != prefix)
		return split_fail(why, "PIN must be digits followed by the prefix character", -3);
	if (pin_len ? plen != pin_len : (plen < CCQ_PIN_MIN_LEN || plen > CCQ_PIN_MAX_LEN))
		return split_fail(why, "PIN of the wrong length", -4);

	rest = len - i - 1;
	{
		size_t k;
		int any = 0;

		for (k = i + 1; k < len; k++)
			if (dialled[k] != ' ' && dialled[k] != '\t')
				any = 1;
		if (!any)
			return split_fail(why, "PIN prefix with no number (expected <prefix><PIN><prefix><number>)", -2);
	}
	if (!pin || pin_size <= plen || number_size <= rest)
		return split_fail(why, "PIN or number buffer too small", -1);
	memcpy(pin, dialled + 1, plen);
	pin[plen] = '\0';
	memcpy(number, dialled + i + 1, rest);
	number[rest] = '\0';
	return 1;
}

/* ---- PIN lockout -------------------------------------------------------- */

int ccq_pin_locked(const struct ccq_pin_lock *l, time_t now)
{
	return l && now < l->locked_until;
}

unsigned ccq_pin_lock_remaining(const struct ccq_pin_lock *l, time_t now)
{
	if (!ccq_pin_locked(l, now))
		return 0;
	return (unsigned)(l->locked_until - now);
}

int ccq_pin_lock_fail(struct ccq_pin_lock *l, const struct ccq_pin_lock_cfg *cfg,
		time_t now)
{
	if (!l || !cfg)
		return 0;
	if (ccq_pin_locked(l, now))
		return 0;
	if (l->fails && cfg->fail_window && now - l->last_fail > (time_t)cfg->fail_window)
		l->fails = 0;
	l->fails++;
	l->last_fail = now;
	if (cfg->max_fails && l->fails >= cfg->max_fails) {
		l->fails = 0;
		l->locked_until = now + (time_t)cfg->lock_seconds;
		return 1;
	}
	return 0;
}

void ccq_pin_lock_ok(struct ccq_pin_lock *l)
{
	if (l)
		l->fails = 0;
}
