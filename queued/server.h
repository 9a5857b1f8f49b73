/*
 * queued's listeners and client connections: framing, back-pressure and
 * the shutdown drain. Requests are handed to ops_dispatch().
 */
#ifndef QUEUED_SERVER_H
#define QUEUED_SERVER_H

#include <stdint.h>
#include <sys/types.h>
#include <ev.h>
#include "config.h"
#include "ccq_wire.h"
#include "acl.h"
#include "watch.h"

struct conn;

int server_listen(struct ev_loop *loop, const struct queued_config *cfg,
		char *err, size_t errlen);
/* Apply reloadable settings (frame cap, client limit). */
void server_reconfigure(const struct queued_config *cfg);
/* Close the listeners (and unlink the unix socket). */
void server_stop_listening(void);
/* Stop reading requests; in-flight work still completes. */
void server_begin_shutdown(void);
int server_shutting_down(void);
/* Nothing in flight and every reply written. */
int server_drained(void);
void server_close_all(void);
unsigned server_clients(void);
uint32_t server_max_frame(void);
/* Call fn for every connection that closes, before it is released (one hook). */
void server_on_close(void (*fn)(struct conn *c));

/* ---- for request handlers -------------------------------------------- */

/* Finish the frame in e and queue it; e is freed. Dropped if c is closed. */
void conn_send(struct conn *c, ccq_enc *e);
void conn_reply_err(struct conn *c, uint64_t id, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/*
 * From any thread (a MySQL worker's early answer): finish e's frame and
 * send it at once if nothing waits in c's buffer, else queue it behind; e
 * is freed. 0: done (or c is closed: dropped); -1: above the frame cap, e
 * is kept (send it with conn_send on the loop); -2: out of memory. The
 * loop must then call conn_sent(c, rc) (the request is answered: the
 * in-flight count, the watchers).
 */
int conn_send_now(struct conn *c, ccq_enc *e);
void conn_sent(struct conn *c, int rc);
/* Keep c allocated while a job refers to it. */
void conn_hold(struct conn *c);
void conn_release(struct conn *c);
/* Peer credentials on a unix socket; -1 for TCP clients. */
int conn_peer_uid(const struct conn *c, uid_t *uid, pid_t *pid);
const char *conn_name(const struct conn *c);
const struct actor *conn_actor(const struct conn *c);
/* After a successful "auth": the connection acts as this user. */
void conn_set_user(struct conn *c, uint32_t user_id);
/* Make c an event subscriber (takes ownership of wf). */
void conn_watch(struct conn *c, struct watch_filter *wf);
/*
 * Push an event to every subscriber allowed to see it. data is the packed
 * msgpack map of the event (already encoded once for all subscribers).
 */
/* Push one event to one connection (data: a packed msgpack map). */
void conn_push_event(struct conn *c, const char *name, const uint8_t *data, size_t len);
void server_push_event(const char *name, uint32_t org_id, uint32_t inbox_id,
		const uint8_t *data, size_t len);

#endif
