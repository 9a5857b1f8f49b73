/*
 * Callbacks: the calls ccq places to an agent's device and connects to a
 * customer (doc/callbacks.md).
 *
 * queued sends a "callback.dial" event to the "ccq async" process, which
 * acts as the controller: it sends an INVITE to the agent's device through
 * the proxy itself (so the script rings the device and engages rtpengine),
 * with the token queued signed in X-CCQ-Callback; when the agent answers,
 * rtpengine plays the prompt to the agent; then a REFER sends the agent's
 * phone to the customer (sip:+<number>@<proxy>;ccqcb=<customer token>),
 * and the controller hangs up its own leg. Progress goes back to queued as
 * "callback.progress" reports. SIP workers see the controller's dialogs
 * through a small table in shared memory (NOTIFY/BYE addressed to the
 * controller, tokens already used).
 */
#ifndef CCQ_CB_H
#define CCQ_CB_H

#include <stdint.h>
#include <stddef.h>
#include "core/parser/msg_parser.h"
#include "ccq_wire.h"
#include "ccq_token.h"

/* mod_init. secret or secret_file (either); prompt: WAV for rtpengine;
 * proxy: "host:port" the controller sends through ("" = first UDP socket,
 * resolved in the async process). */
int ccq_cb_init(const char *secret, const char *secret_file, const char *prompt,
		const char *proxy);
int ccq_cb_enabled(void);

/* ---- SIP workers ---- */

/*
 * Verify a token of the given purpose for the request with this Call-ID,
 * and consume it (a nonce used by another Call-ID is a replay). 0 valid
 * (t filled); -1 refused (*why says why, for the log).
 */
int ccq_cb_token_check(const char *tok, size_t len, char purpose, const char *callid,
		struct ccq_token *t, const char **why);
/* An in-dialog request addressed to the controller (NOTIFY, BYE ... from an
 * agent's phone): answered here. 1 consumed, -1 not ours. */
int ccq_cb_own_request(struct sip_msg *msg);
/* 1 when callid is one of the controller's legs to an agent. */
int ccq_cb_is_agent_leg(const char *callid);
/* The agent's phone has placed the customer leg of callback TXN txn. */
void ccq_cb_customer_leg(uint64_t txn);

/* ---- the async process ---- */

/* A "callback.dial" event from queued. */
void ccq_cb_dial(const msgpack_object *body);
/* A message from a SIP worker (tm callbacks, NOTIFY, BYE). */
void ccq_cb_on_chan(const void *p, size_t n);
/* Timers; call often (the loop runs at least every 50 ms). */
void ccq_cb_tick(void);
/* After every (re)connection to queued: attach as a dialer. */
void ccq_cb_on_connect(void);
/* For RPC: active controller legs. */
int ccq_cb_active(void);

#endif
