/*
 * Blocking client for queued's protocol, with deadlines on every step.
 * Used by ccqctl and by the Kamailio module (one client per process).
 */
#ifndef CCQ_CLIENT_H
#define CCQ_CLIENT_H

#include <sys/socket.h>
#include "ccq_wire.h"

typedef struct ccq_client {
	int fd;                /* -1 when not connected */
	uint64_t next_id;
	uint32_t max_frame;
	uint8_t *rbuf;         /* bytes received, not yet consumed */
	size_t rlen, rcap;
	uint8_t *payload;      /* payload of the last reply (msg points into it) */
} ccq_client;

/*
 * Parse "unix:/path", "/path", "tcp:host:port" or "host:port" (IPv4/IPv6
 * literal or name). Returns 0 or -1 with a reason in err.
 */
int ccq_addr_parse(const char *addr, struct sockaddr_storage *ss,
		socklen_t *sslen, char *err, size_t errlen);

void ccq_client_init(ccq_client *c);
int ccq_client_connect(ccq_client *c, const char *addr, int timeout_ms,
		char *err, size_t errlen);
void ccq_client_close(ccq_client *c);
void ccq_client_free(ccq_client *c);

/* A fresh request id, unique for this client. */
uint64_t ccq_client_id(ccq_client *c);

/*
 * Send the finished frame in enc and wait for the reply carrying id,
 * skipping pushed events. On success returns 0 and *reply is decoded
 * (valid until the next call; free it with ccq_msg_free). On any I/O error,
 * timeout or protocol error returns -1, closes the connection and says why
 * in err (a retry must reconnect).
 */
int ccq_client_call(ccq_client *c, ccq_enc *enc, uint64_t id, int timeout_ms,
		ccq_msg *reply, char *err, size_t errlen);

/*
 * Wait up to timeout_ms for the next pushed event or reply (for watchers).
 * Returns 1 with *msg decoded, 0 on timeout, -1 on error/close.
 */
int ccq_client_next(ccq_client *c, int timeout_ms, ccq_msg *msg,
		char *err, size_t errlen);

#endif
