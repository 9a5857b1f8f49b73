/*
 * The ccq module's API for other Kamailio modules: the outbound compliance
 * gate, evaluated from the shared-memory snapshot with no round trip (the
 * same evaluation as ccq_outbound() and the ccq.compliance.check dry run).
 *
 *   #include "<path to ccq>/kam_module/ccq_api.h"
 *   static ccq_api_t ccq;
 *   mod_init: if (ccq_load_api(&ccq) < 0) return -1;
 *   ...
 *   struct ccq_gate_answer a;
 *   if (ccq.gate_check("1001", "Acme", "+6591234567", CCQ_API_PIN_NONE, &a) == 1)
 *       ... allowed, a.number is the E.164 number to dial
 *
 * Nothing is reported to queued: the caller decides what happens next.
 */
#ifndef CCQ_API_H
#define CCQ_API_H

#include "core/sr_module.h"
#include "core/dprint.h"

enum ccq_api_pin { CCQ_API_PIN_NONE = 0, CCQ_API_PIN_VALID = 1, CCQ_API_PIN_WRONG = 2 };

struct ccq_gate_answer {
	int allowed;              /* 1 allow, 0 block */
	int locked;               /* the extension is locked after wrong PINs */
	int pin_needed;           /* the policy wants a PIN for this destination */
	int international;
	char rule[24];            /* "dnc", "company_blacklist", ... ("allowed" when allowed) */
	char reason[64];          /* the 403 reason phrase */
	char number[20];          /* "+E164", "" when it could not be normalised */
	char country[3];          /* ISO 3166 alpha-2, "" when unknown */
	char why[80];             /* why the number could not be normalised, else "" */
};

/*
 * Evaluate the gate for extension ext of organisation org (NULL: the only
 * extension with that key) dialling number (no PIN prefix; say what PIN
 * was given with pin). Returns 1 allowed, 0 blocked (a filled in), -1 no
 * compliance data loaded yet, -2 no such extension.
 */
typedef int (*ccq_gate_check_f)(const char *ext, const char *org, const char *number,
		int pin, struct ccq_gate_answer *a);

typedef struct ccq_api {
	ccq_gate_check_f gate_check;
} ccq_api_t;

typedef int (*bind_ccq_f)(ccq_api_t *api);

static inline int ccq_load_api(ccq_api_t *api)
{
	bind_ccq_f bind = (bind_ccq_f)find_export("bind_ccq", 0, 0);
	if (!bind) {
		LM_ERR("cannot find bind_ccq: load the ccq module first\n");
		return -1;
	}
	return bind(api);
}

#endif
