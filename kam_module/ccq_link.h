/*
 * The module's link to queued: one blocking client per Kamailio process,
 * opened after the fork, with the cfg framework's timeout and retries.
 * Outages are tracked in shared memory so that they are logged once, not
 * once per call per process.
 */
#ifndef CCQ_LINK_H
#define CCQ_LINK_H

#include "ccq_client.h"

/* In mod_init: shared state. */
int ccq_link_init_shm(void);
void ccq_link_destroy_shm(void);
/* In child_init: remember the address, try a first connection. */
void ccq_link_child_init(const char *addr);
/* Only remember the address (the main process: no connection). */
void ccq_link_set_addr(const char *addr);

/*
 * Send the request in enc (built with ccq_enc_request(..., id, ...)) and
 * wait for its reply, retrying on a fresh connection per the cfg settings.
 * Returns 0 with *reply decoded (the caller frees it; reply->code may be an
 * error from queued), or -1 if queued could not be reached (link failure).
 * enc is freed in every case.
 */
int ccq_link_call(ccq_enc *enc, uint64_t id, ccq_msg *reply);
uint64_t ccq_link_next_id(void);

struct ccq_link_stats {
	int outage;             /* 1 while queued is unreachable */
	long outage_since;      /* unix time */
	unsigned long requests, ok, failed, fallbacks;
};
void ccq_link_get_stats(struct ccq_link_stats *st);
void ccq_link_count_fallback(void);
const char *ccq_link_addr(void);
int ccq_link_connected(void);

#endif
