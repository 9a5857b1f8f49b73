/*
 * Call recording in the call operations (doc/recording.md): what a ring
 * decision says about recording, and the journey line of a decision.
 * Worker side, inside the caller's SQL transaction (ops_recording.c).
 */
#ifndef QUEUED_RECORDING_H
#define QUEUED_RECORDING_H

#include <stddef.h>
#include <stdint.h>
#include <mysql.h>

struct req;

/* Recording of one ring: on/off, whose setting decided it, and the metadata
 * string for rtpengine ("ccq_txn:12|ccq_org:1|ccq_inbox:3|ccq_agent:1001";
 * only [A-Za-z0-9_:|.-], it goes into an rtpengine flag unquoted). */
struct rec_decision {
	int record;
	char rule[16];          /* "user", "inbox", "organisation" */
	char meta[160];
};

/*
 * The policy for TXN txn ringing user uid: user ?? the TXN's inbox ?? the
 * organisation. Adds "Recording on (inbox policy)" to the journey unless
 * the TXN's last recording line says the same. Returns 0 or -1.
 */
int rec_decide(struct req *r, MYSQL *m, uint64_t txn, uint64_t uid, struct rec_decision *d);

/* The same decision from the three settings at hand (-1: not set; the
 * organisation's is 0 or 1), for a TXN that has no recording line yet. */
void rec_settle(struct rec_decision *d, int user, int inbox, int org);
/* d->meta for TXN txn of org/inbox ringing extension ext_key. */
void rec_meta(struct rec_decision *d, uint64_t txn, uint64_t org, uint64_t inbox,
		const char *ext_key);
/* "Recording on (user policy)": the journey line of a decision. */
void rec_journey_text(char *text, size_t size, int record, const char *rule);

/*
 * The journey line of a decision made elsewhere (call.outbound: the
 * module's snapshot): "Recording on (user policy)", or without the
 * parenthesis when rule is "". Not repeated. at: SQL time (NULL = now).
 */
int rec_journey(struct req *r, MYSQL *m, uint64_t txn, int record, const char *rule,
		const char *at);

/* call.outbound's optional "record" (0/1 or a bool; *record -1 when absent)
 * and "record_rule". Returns 0, or -1 with the request failed. */
int rec_outbound_args(struct req *r, int *record, char *rule, size_t size);

#endif
