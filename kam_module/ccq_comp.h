/*
 * The compliance snapshot in shared memory: organisations' policies, users
 * and devices, and the number sets (DNC registry, company blacklists and
 * whitelists, personal whitelists), loaded from MySQL by the "ccq loader"
 * process and swapped in whole, so that SIP workers evaluate the gate with
 * no round trip and never wait for a load.
 */
#ifndef CCQ_COMP_H
#define CCQ_COMP_H

#include <stdint.h>
#include <stddef.h>
#include "ccq_gate.h"

struct comp_org {
	uint32_t id;
	char name[101];
	char country[3];
	char country_whitelist[416];    /* compliance_policy.country_whitelist is VARCHAR(400) */
	int pin_policy;                /* enum ccq_pin_policy */
	uint64_t blacklist_off, whitelist_off; /* image offsets in the snapshot, 0 = empty */
};

struct comp_user {
	uint32_t id;
	uint32_t org;                  /* index into orgs */
	char ext[33];
	char name[101];
	char caller_id[24];
	char pin_hash[128];
	uint64_t personal_off;
	uint32_t inbox_id;             /* the default inbox (lowest id it is a member of), 0 none */
	int record;                    /* recording of outbound calls: 1 on, 0 off */
	char record_rule[16];          /* "user", "inbox", "organisation" (whose setting won) */
};

struct comp_device {
	char username[65];
	char domain[129];
	uint32_t user;                 /* index into users */
	int enabled;
};

struct comp_snap {
	int refs;                      /* readers using it (under the lock) */
	size_t size;
	uint64_t version;              /* sum of list_version */
	uint64_t loaded_at;            /* unix ms */
	uint32_t load_ms;
	uint32_t norgs, nusers, ndevices;
	uint64_t orgs_off, users_off, devices_off, dnc_off;
	uint64_t dnc_count, numbers;   /* DNC entries; all list entries */
};

int ccq_comp_init(const char *db_url, int poll_ms);
int ccq_comp_fork(void);

/* Take / release the current snapshot (NULL if none loaded yet). */
struct comp_snap *ccq_comp_get(void);
void ccq_comp_put(struct comp_snap *s);
/* Ask the loader to reload now. */
void ccq_comp_reload(void);

const struct comp_org *comp_orgs(const struct comp_snap *s);
const struct comp_user *comp_users(const struct comp_snap *s);
const void *comp_image(const struct comp_snap *s, uint64_t off);
/* A user by extension and organisation name, or by device; NULL if none. */
const struct comp_user *comp_user_by_ext(const struct comp_snap *s, const char *org,
		const char *ext);
const struct comp_user *comp_user_by_device(const struct comp_snap *s, const char *username,
		const char *domain);

struct comp_verdict {
	struct ccq_gate_result res;
	char number[20];               /* E.164 digits */
	const char *why;               /* a number that could not be normalised */
};

/*
 * Evaluate the gate for user u dialling `dialled` (a PIN prefix already
 * removed: pin_state says what was found). Returns the verdict.
 */
enum ccq_gate_verdict ccq_comp_check(const struct comp_snap *s, const struct comp_user *u,
		const char *dialled, size_t len, enum ccq_pin_state pin_state, int pin_locked,
		struct comp_verdict *v);

#endif
