/*
 * Callback tokens: what proves that a call to an agent's device (and the
 * agent's call to the customer that follows) was placed by ccq itself.
 *
 *   1.<purpose>.<txn>.<ext>.<digits>.<flags>.<exp>.<nonce>.<mac>
 *
 *   purpose  'a' the agent leg (X-CCQ-Callback header of the INVITE to the
 *            agent's device), 'c' the customer leg (the ccqcb parameter of
 *            the Refer-To URI the agent's phone calls)
 *   txn      the callback TXN id (decimal)
 *   ext      the extension key ([A-Za-z0-9_-], 1..32)
 *   digits   the customer's E.164 number without '+' (1..15 digits)
 *   flags    "-" or lowercase letters: 'p' = the agent's PIN was verified by
 *            queued; on a customer leg, 'r' / 'n' = record it or not, as
 *            queued decided with the callback's inbox, and whose setting
 *            won: 'u' user, 'i' inbox, 'o' organisation
 *   exp      expiry, unix seconds
 *   nonce    16 hex digits, random: single use is enforced by the proxy
 *   mac      the first 32 hex digits of HMAC-SHA256(secret, everything
 *            before ".<mac>")
 *
 * Every character is URI- and header-safe, so the token travels as a SIP
 * header value and as a URI parameter unchanged.
 */
#ifndef CCQ_TOKEN_H
#define CCQ_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define CCQ_TOKEN_MAX 160

struct ccq_token {
	char purpose;             /* 'a' or 'c' */
	uint64_t txn;
	char ext[33];
	char digits[16];
	char flags[8];
	uint64_t exp;
	char nonce[17];
};

enum ccq_token_err {
	CCQ_TOKEN_OK = 0,
	CCQ_TOKEN_MALFORMED = -1,
	CCQ_TOKEN_BAD_MAC = -2,
	CCQ_TOKEN_EXPIRED = -3,
	CCQ_TOKEN_NO_SECRET = -4,
};

/* Sign t (nonce filled in from the system's random source when empty).
 * out must hold CCQ_TOKEN_MAX bytes. Returns 0 or an error (bad field). */
int ccq_token_sign(const char *secret, size_t secret_len, struct ccq_token *t, char *out,
		size_t size);
/* Verify a token of len bytes at now (unix seconds). Fills t on success and
 * on CCQ_TOKEN_EXPIRED (so the caller can log what it was). */
int ccq_token_verify(const char *secret, size_t secret_len, const char *tok, size_t len,
		uint64_t now, struct ccq_token *t);
const char *ccq_token_strerror(int err);

#endif
