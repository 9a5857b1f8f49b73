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
	int own_record;                /* the user's own setting: 1, 0, -1 inherit */
	int org_record;                /* the organisation's setting: 1, 0 */
	int all_inboxes;               /* an owner or admin with the add-on: any inbox of the org */
};

/* An inbox, for the recording of a call routed to it with **<inbox id>*. */
struct comp_inbox {
	uint32_t id;
	uint32_t org_id;
	int record;                    /* 1, 0, -1 inherit */
};

/* One membership (user id, inbox id); sorted by user, then inbox. */
struct comp_member {
	uint32_t user_id, inbox_id;
};

struct comp_device {
	char username[65];
	char domain[129];
	uint32_t user;                 /* index into users */
	int enabled;
};

/*
 * The DNC registry's base image in its own shared memory block, shared by
 * every snapshot built while it is current (a change of users or lists, or a
 * few DNC numbers, makes a new snapshot that points at the same base).
 */
struct comp_dnc {
	int snaps;                     /* snapshots using it, + 1 while current (loader only) */
	size_t size;                   /* bytes of the block */
	uint64_t version;              /* list_version 'dnc' the image holds */
	uint64_t built_at;             /* unix ms */
	uint32_t load_ms;              /* reading + building + checking */
	uint64_t image_off;            /* from the block's start */
};

struct comp_snap {
	int refs;                      /* readers using it (under the lock) */
	size_t size;                   /* bytes of this block (not the DNC base) */
	uint64_t version;              /* sum of list_version it reflects */
	uint64_t dir_version;          /* of the rows other than 'dnc' */
	uint64_t dnc_version;          /* DNC changes reflected up to this version */
	uint64_t loaded_at;            /* unix ms */
	uint32_t load_ms;              /* building this snapshot (not the base) */
	uint32_t norgs, nusers, ndevices, ninboxes, nmembers;
	uint64_t orgs_off, users_off, devices_off, inboxes_off, members_off;
	uint64_t dnc_off;              /* the DNC overlay (base + delta) in this block, 0 = none */
	struct comp_dnc *dnc;          /* the DNC base; NULL = empty registry */
	uint32_t delta_adds, delta_removes; /* entries of the overlay */
	uint64_t dnc_count, numbers;   /* DNC entries (with the delta); all list entries */
	struct comp_snap *next_retired; /* loader's list of replaced snapshots */
};

/* What the loader did (kamcmd ccq.compliance.stats). */
struct comp_stats {
	uint64_t snapshots;            /* published */
	uint64_t full_builds;          /* DNC base images built from dnc_number */
	uint64_t delta_applies;        /* snapshots that applied DNC log rows as a delta */
	uint64_t dir_loads;            /* reads of organisations, users, devices, lists */
	uint64_t bulk_rows;            /* 'bulk' rows seen (batches of imports) */
	uint64_t base_version;         /* of the current base */
	uint32_t base_load_ms;         /* of the current base */
	uint64_t base_built_at;        /* unix ms */
	int rebuilding;                /* a base is being built in the background */
	int rebuild_pending;           /* changes wait for a base rebuild (import) */
	char rebuild_reason[32];       /* why the current / last base was built */
	int64_t last_change_ms;        /* last change in MySQL -> its snapshot in use; -1 none */
	char last_change_kind[16];     /* "dnc delta", "dnc base", "directory" */
	uint64_t last_error_at;        /* unix ms, 0 none */
	char last_error[256];
};

int ccq_comp_init(const char *db_url, int poll_ms);
int ccq_comp_fork(void);

/* Take / release the current snapshot (NULL if none loaded yet). */
struct comp_snap *ccq_comp_get(void);
void ccq_comp_put(struct comp_snap *s);
/* Ask the loader to reload now (everything, the DNC base too). */
void ccq_comp_reload(void);
/* A copy of the loader's counters. 0, or -1 without a loader (no db_url). */
int ccq_comp_stats(struct comp_stats *st);
/* The DNC set the gate uses (overlay or base image), NULL if empty. */
const void *comp_dnc_set(const struct comp_snap *s);
/* Bytes of the DNC base image in use (0 if none). */
size_t comp_dnc_base_bytes(const struct comp_snap *s);

const struct comp_org *comp_orgs(const struct comp_snap *s);
const struct comp_user *comp_users(const struct comp_snap *s);
const void *comp_image(const struct comp_snap *s, uint64_t off);
/* A user by extension and organisation name, or by device; NULL if none. */
const struct comp_user *comp_user_by_ext(const struct comp_snap *s, const char *org,
		const char *ext);
const struct comp_user *comp_user_by_device(const struct comp_snap *s, const char *username,
		const char *domain);

/*
 * The recording of user u's outbound call routed to inbox inbox_id (0 or
 * u's default inbox: u->record). Returns 1 if u may work in that inbox (a
 * member, or an owner/admin with the add-on of the same organisation, the
 * rule queued applies to call.outbound's inbox_id): *record and *rule are
 * then the most specific setting (user, that inbox, the organisation);
 * 0 if not (the call stays in the default inbox: u's own resolution).
 */
int comp_user_record(const struct comp_snap *s, const struct comp_user *u, uint32_t inbox_id,
		int *record, const char **rule);

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
