/* queued's request handlers (one per protocol operation). */
#ifndef QUEUED_OPS_H
#define QUEUED_OPS_H

#include "ccq_wire.h"

struct conn;

/* Set once at start-up: the schema version the database is at. */
void ops_set_schema(int version);
/*
 * Handle one request. The handler answers exactly once with conn_send()
 * or conn_reply_err(), now or after a database job. m and everything it
 * points to are only valid during the call.
 */
void ops_dispatch(struct conn *c, const ccq_msg *m);

#endif
