/*
 * ccq outbound compliance gate: the decision for one outbound call, from
 * already loaded lists, with no I/O. The Kamailio module calls it from
 * shared memory for manual outbound calls and for the customer leg of
 * callbacks; `ccq.compliance.check` calls it as a dry run.
 *
 * Rule order (DESIGN.md "Compliance gate"; doc/compliance.md):
 *   0. the destination must be a normalised E.164 number  (invalid_number)
 *   1. country whitelist: if the organisation has one, the destination's
 *      country must be in it                             (country_whitelist)
 *   2. company blacklist: block                          (company_blacklist)
 *   3. company whitelist, then personal whitelist: allow, DNC skipped
 *                                  (company_whitelist, personal_whitelist)
 *   4. DNC registry: block                               (dnc)
 *   5. PIN, also after a whitelist match (a whitelist answers "may we call
 *      this number", the PIN "may this user place this class of call"):
 *      policy none: skipped, any dialled PIN ignored;
 *      otherwise: user locked out -> pin_locked (every call of that user);
 *      a PIN was dialled and is wrong -> pin_wrong;
 *      PIN needed (policy all, or international and the destination
 *      country differs from the organisation's) and none dialled
 *      -> pin_required
 *   6. allowed: by the whitelist that matched, else default_allow.
 */
#ifndef CCQ_GATE_H
#define CCQ_GATE_H

#include <stddef.h>
#include <time.h>

enum ccq_gate_verdict {
	CCQ_GATE_BLOCK = 0,
	CCQ_GATE_ALLOW = 1,
};

enum ccq_gate_rule {
	CCQ_RULE_INVALID_NUMBER = 0,
	CCQ_RULE_COUNTRY_WHITELIST,
	CCQ_RULE_COMPANY_BLACKLIST,
	CCQ_RULE_COMPANY_WHITELIST,
	CCQ_RULE_PERSONAL_WHITELIST,
	CCQ_RULE_DNC,
	CCQ_RULE_PIN_REQUIRED,
	CCQ_RULE_PIN_WRONG,
	CCQ_RULE_PIN_LOCKED,
	CCQ_RULE_DEFAULT_ALLOW,
	CCQ_RULE_MAX_
};

enum ccq_pin_policy {
	CCQ_PIN_POLICY_NONE = 0,
	CCQ_PIN_POLICY_INTERNATIONAL = 1,
	CCQ_PIN_POLICY_ALL = 2,
};

/* What the caller found out about the PIN before asking the gate. */
enum ccq_pin_state {
	CCQ_PIN_ABSENT = 0, /* no PIN dialled */
	CCQ_PIN_VALID = 1,  /* dialled, matches the user's stored hash */
	CCQ_PIN_WRONG = 2,  /* dialled, does not match (or user has no PIN) */
};

struct ccq_gate_input {
	const char *number;            /* E.164 digits, no '+', from ccq_e164_normalize() */
	const char *org_country;       /* ISO alpha-2 of the organisation ("SG") */
	/* "SG,MY, th": ISO alpha-2 codes separated by commas and/or blanks,
	 * case-insensitive; NULL or empty = every country allowed */
	const char *country_whitelist;
	/* ccq_numset images; NULL = empty list */
	const void *company_blacklist;
	const void *company_whitelist;
	const void *personal_whitelist;
	const void *dnc;
	enum ccq_pin_policy pin_policy;
	enum ccq_pin_state pin;
	int pin_locked;                /* ccq_pin_locked() of the calling user */
};

struct ccq_gate_result {
	enum ccq_gate_verdict verdict;
	enum ccq_gate_rule rule;       /* the rule that decided */
	const char *country;           /* destination region ("SG"), NULL if unknown */
	int international;             /* destination country != org country */
	int pin_needed;                /* the policy asks a PIN for this call */
};

/* Decide; always fills *res. Returns the verdict. */
enum ccq_gate_verdict ccq_gate_eval(const struct ccq_gate_input *in,
		struct ccq_gate_result *res);

/* "dnc", "company_blacklist", ...; "unknown" out of range. */
const char *ccq_gate_rule_name(enum ccq_gate_rule rule);

/*
 * Human text for the rule, fit for a SIP reason phrase (ASCII, no CR/LF):
 * "Blocked by DNC registry".
 */
const char *ccq_gate_rule_reason(enum ccq_gate_rule rule);

/* Rule from its name (for scripts and RPC); -1 if unknown. */
int ccq_gate_rule_from_name(const char *name);

/*
 * 1 if iso (2 letters, any case) is in the comma/blank separated list.
 */
int ccq_gate_country_listed(const char *list, const char *iso);

/*
 * Check a configured country whitelist: every item 2 letters and a region
 * ccq_e164 knows. Returns 0, or -1 with *why set.
 */
int ccq_gate_country_list_check(const char *list, const char **why);

/* ---- PIN dialling ------------------------------------------------------- */

#define CCQ_PIN_MIN_LEN 4
#define CCQ_PIN_MAX_LEN 12

/*
 * Dialling format: <prefix><PIN><prefix><number>, e.g. "*1234*6591234567"
 * with prefix '*'. The PIN is digits only; with pin_len > 0 it must have
 * exactly pin_len digits, with pin_len 0 any length from CCQ_PIN_MIN_LEN to
 * CCQ_PIN_MAX_LEN. The number part is returned as dialled (separators and
 * all) for ccq_e164_normalize().
 *
 * dialled is len bytes (a SIP R-URI user part, not NUL-terminated).
 * Returns
 *    0  no PIN: dialled does not start with prefix; number = dialled
 *    1  PIN found: pin and number filled (NUL-terminated)
 *   <0  malformed ("*12a4*..."), PIN of the wrong length, no second prefix,
 *       no number after the PIN, or a buffer too small; *why says which.
 * pin needs pin_size >= PIN length + 1, number number_size >= its length + 1.
 */
int ccq_gate_split_pin(const char *dialled, size_t len, char prefix,
		unsigned pin_len, char *pin, size_t pin_size,
		char *number, size_t number_size, const char **why);

/* ---- PIN lockout -------------------------------------------------------- */

/*
 * Per-user state, kept by the caller (in shared memory, under the caller's
 * lock: these functions do not synchronise). All zero = fresh.
 * Use a clock that does not jump (monotonic seconds) for now.
 */
struct ccq_pin_lock {
	unsigned fails;       /* wrong PINs in a row (within the window) */
	time_t last_fail;     /* time of the latest of them */
	time_t locked_until;  /* locked while now < locked_until */
};

struct ccq_pin_lock_cfg {
	unsigned max_fails;     /* wrong PINs that lock, e.g. 5 (0 = never lock) */
	unsigned lock_seconds;  /* how long, e.g. 900 */
	unsigned fail_window;   /* forget a run of fails after this many seconds
	                         * without one, e.g. 3600 (0 = never forget) */
};

/* 1 while locked. */
int ccq_pin_locked(const struct ccq_pin_lock *l, time_t now);

/* Seconds of lock left (0 if not locked). */
unsigned ccq_pin_lock_remaining(const struct ccq_pin_lock *l, time_t now);

/*
 * Record a wrong PIN. Returns 1 if this one locked the user (the count
 * starts again from 0 after the lock), else 0. A wrong PIN while locked is
 * not counted and does not extend the lock.
 */
int ccq_pin_lock_fail(struct ccq_pin_lock *l, const struct ccq_pin_lock_cfg *cfg,
		time_t now);

/* Record a correct PIN: the run of fails is forgotten (a lock stays). */
void ccq_pin_lock_ok(struct ccq_pin_lock *l);

#endif /* CCQ_GATE_H */
