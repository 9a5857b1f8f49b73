/*
 * queued's view of each inbox's members, for the order in which a new call
 * offers them (ops_call.c): who is registered, how many calls they have in
 * progress, when their last call ended, their wrap-up, their devices.
 *
 * The view only orders. Whether an agent may really be rung is still
 * decided by MySQL when the decision claims the agent's row (claim_agent:
 * registered enabled device, below max_calls, not in wrap-up, a member),
 * so a stale view costs a failed claim, never a wrong ring.
 *
 * It is read from MySQL (one query per inbox) when it is missing, after a
 * directory change or a registration (at once), after call reports that
 * changed agents' states in ways it does not follow (at most every
 * AV_REFRESH_MS), and at least every AV_MAX_AGE_MS (what the view does not follow itself: callbacks,
 * chats, transfers, queued's janitor). In between, the decisions and
 * reports of this queued adjust it: a ring adds a call to the agent, the
 * end of a ring or a call takes it away.
 *
 * Shared by the MySQL workers (one mutex; every operation is short).
 */
#ifndef QUEUED_AGENTVIEW_H
#define QUEUED_AGENTVIEW_H

#include <stddef.h>
#include <stdint.h>

#define AV_REFRESH_MS 100
#define AV_MAX_AGE_MS 1000
#define AV_DECISION_AGE_MS 5000
#define AV_DEVICES 2400

struct av_member {
	uint64_t id;
	char ext[33], name[101];
	int record;              /* the user's record_calls, -1: not set */
	unsigned max_calls, calls, wrapup_seconds;
	int64_t last_end_ms;     /* epoch ms of the last call's end, 0: never */
	int64_t wrapup_until_ms; /* epoch ms, 0: none */
	int registered;          /* has a registered, enabled device */
	int cut;                 /* devices may be cut (read them on their own) */
	char devices[AV_DEVICES];
};

/* The generations a view is read after (see av_stale). */
struct av_token {
	uint64_t dgen, hard, soft, local;
};
/* Does the view of inbox need a read from MySQL? 1 (then query, and
 * install with t: av_stale fills it before the query), or 0. max_age_ms:
 * how old a view may be (the reports of calls keep it AV_MAX_AGE_MS
 * fresh; a decision, which a caller waits for, accepts AV_DECISION_AGE_MS
 * before reading it itself). */
int av_stale(uint32_t inbox, int64_t now_ms, int64_t max_age_ms, struct av_token *t);
/* Replace inbox's view with n members read after t. */
void av_install(uint32_t inbox, const struct av_member *m, size_t n, const struct av_token *t,
		int64_t now_ms);

/*
 * The next member to offer a new call to: registered, below max_calls,
 * not in wrap-up, not in skip[0..nskip); the fewest calls in progress
 * first, then idle longest (never called first), then the lowest id. The
 * member's call count goes up at once, in the views of all the inboxes
 * the agent is in (a concurrent decision sees it).
 * Returns 1 with *out filled, 0 if nobody (or no view).
 */
int av_take(uint32_t inbox, const uint64_t *skip, size_t nskip, int64_t now_ms,
		struct av_member *out);
/* A take that did not become a ring. refused: MySQL's claim said no (the
 * agent is not offered again from inbox's view until it is read again). */
void av_untake(uint32_t inbox, uint64_t agent, int refused);
/* One of agent's calls or rings ended (answered: the call was talked,
 * its end starts the idle time and the wrap-up); in every inbox's view. */
void av_call_over(uint64_t agent, int answered, int64_t now_ms);
/* Call states changed in ways the view does not follow: read again soon. */
void av_soft_dirty(void);
/* Registrations or the directory changed: read again before the next use. */
void av_hard_dirty(void);
/* Drop every view (tests). */
void av_clear(void);

#endif
