/*
 * Listeners and connections; see server.h.
 *
 * One struct per connection holds its watchers and buffers. After every
 * event the interest set is recomputed: a client whose replies pile up
 * (it does not read) or that has too many requests in flight is not read
 * from until it catches up, so it cannot grow queued's memory.
 */
#define _GNU_SOURCE
#include "server.h"
#include "ops.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <pwd.h>
#include <pthread.h>

#include "ccq_client.h" /* ccq_addr_parse */

#define OUT_HIGH_WATER (4u * 1024u * 1024u)
#define MAX_INFLIGHT 256
#define READ_CHUNK 65536

/*
 * Threads: everything here belongs to the loop thread, except that a MySQL
 * worker may send an early answer straight to the socket (conn_send_now):
 * the fd, the output buffer (out, out_len, out_off, out_cap) and dead are
 * then read and changed under mu, on the loop too. refs, inflight and the
 * watchers stay the loop's (the worker's request holds a reference).
 */
struct conn {
	pthread_mutex_t mu;
	int fd;
	int is_unix;
	ev_io rio, wio;
	uint8_t *in;
	size_t in_len, in_cap;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	unsigned inflight;     /* requests handed to handlers, not yet answered */
	unsigned refs;         /* jobs holding the struct */
	int closing;           /* close once the output is flushed */
	int dead;              /* fd closed; freed when refs drop to 0 */
	uid_t uid;
	pid_t pid;
	struct actor actor;
	int watching;          /* subscribed to events */
	struct watch_filter *wf;
	char name[96];
	struct conn *prev, *next;
};

struct listener {
	int fd;
	ev_io io;
	char path[108];        /* unix socket to unlink */
};

static struct ev_loop *g_loop;
static struct listener g_lis[2];
static int g_nlis;
static struct conn *g_conns;
static unsigned g_nconns;
static uint32_t g_max_frame = CCQ_FRAME_DEFAULT_MAX;
static unsigned g_max_clients = 1024;
static int g_shutdown;
static uid_t g_operator_uids[16];
static int g_noperators;
static void (*g_close_hook)(struct conn *c);

static void conn_update(struct conn *c);
static void conn_close(struct conn *c, const char *why);
static void conn_process(struct conn *c);

const char *conn_name(const struct conn *c)
{
	return c->name;
}

int conn_peer_uid(const struct conn *c, uid_t *uid, pid_t *pid)
{
	if (!c->is_unix)
		return -1;
	*uid = c->uid;
	*pid = c->pid;
	return 0;
}

void conn_hold(struct conn *c)
{
	c->refs++;
}

static void conn_free(struct conn *c)
{
	pthread_mutex_destroy(&c->mu);
	free(c->wf);
	free(c->in);
	free(c->out);
	free(c);
}

void conn_release(struct conn *c)
{
	if (--c->refs == 0 && c->dead)
		conn_free(c);
}

/* with c->mu held */
static int out_append(struct conn *c, const uint8_t *p, size_t n)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		uint8_t *b;
		if (c->out_off > 0) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		while (cap < c->out_len + n)
			cap *= 2;
		if (cap > c->out_cap) {
			b = realloc(c->out, cap);
			if (!b)
				return -1;
			c->out = b;
			c->out_cap = cap;
		}
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
	return 0;
}

static void send_frame(struct conn *c, ccq_enc *e)
{
	const uint8_t *buf;
	size_t len;
	int rc;

	if (c->dead) {
		ccq_enc_free(e);
		return;
	}
	if (ccq_enc_finish(e, g_max_frame, &buf, &len) < 0) {
		/* A reply above the cap: say so instead of breaking the stream. */
		ccq_enc_free(e);
		LOG_E("%s: a frame exceeded the frame cap (%u bytes) and was dropped",
			c->name, g_max_frame);
		return;
	}
	pthread_mutex_lock(&c->mu);
	rc = out_append(c, buf, len);
	pthread_mutex_unlock(&c->mu);
	ccq_enc_free(e);
	if (rc < 0) {
		conn_close(c, "out of memory for replies");
		return;
	}
	conn_update(c);
}

void conn_send(struct conn *c, ccq_enc *e)
{
	if (c->inflight > 0)
		c->inflight--;
	send_frame(c, e);
}

/*
 * Any thread. Nothing waits in the buffer ahead of it: one non-blocking
 * send of the whole frame (what the kernel does not take is buffered for
 * the loop's write watcher); else the frame goes behind what waits. The
 * loop learns of it from conn_sent, which the caller has the loop run.
 */
int conn_send_now(struct conn *c, ccq_enc *e)
{
	const uint8_t *buf;
	size_t len, off = 0;
	int rc = 0;

	if (ccq_enc_finish(e, __atomic_load_n(&g_max_frame, __ATOMIC_RELAXED), &buf, &len) < 0)
		return -1;   /* above the cap: the loop's conn_send says so */
	pthread_mutex_lock(&c->mu);
	if (c->dead) {
		rc = 1;      /* closed: nobody to answer; dropped */
	} else {
		if (c->out_len == c->out_off) {
			ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0)
				off = (size_t)n;
			/* an error: buffered; the loop's write watcher meets it too */
		}
		if (off < len && out_append(c, buf + off, len - off) < 0) {
			/* out of memory: the loop closes the connection (conn_sent);
			 * until then nothing may follow a frame cut short */
			if (off > 0)
				shutdown(c->fd, SHUT_WR);
			rc = -2;
		}
	}
	pthread_mutex_unlock(&c->mu);
	ccq_enc_free(e);
	return rc == 1 ? 0 : rc;
}

void conn_sent(struct conn *c, int rc)
{
	if (c->inflight > 0)
		c->inflight--;
	if (rc == -2) {
		conn_close(c, "out of memory for replies");
		return;
	}
	/* as on_write: requests read but not handled while the connection was
	 * at MAX_INFLIGHT wait in the input buffer; nothing else would handle
	 * them if no more bytes come (a frame sent whole by the worker never
	 * starts the write watcher) */
	conn_hold(c);
	if (!c->dead && !c->closing && c->in_len > 0)
		conn_process(c);
	conn_update(c);
	conn_release(c);
}

void conn_reply_err(struct conn *c, uint64_t id, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	ccq_enc e;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ccq_enc_init(&e);
	ccq_enc_reply_err(&e, id, code, "%s", msg);
	conn_send(c, &e);
}

/* A reply not tied to a dispatched request (framing errors). */
static void conn_error_frame(struct conn *c, uint64_t id, int code, const char *msg)
{
	ccq_enc e;
	ccq_enc_init(&e);
	ccq_enc_reply_err(&e, id, code, "%s", msg);
	send_frame(c, &e);
}

static void conn_close(struct conn *c, const char *why)
{
	if (c->dead)
		return;
	LOG_D("%s: closing (%s)", c->name, why);
	/* before c is marked dead: the hook may release the references it holds */
	if (g_close_hook)
		g_close_hook(c);
	ev_io_stop(g_loop, &c->rio);
	ev_io_stop(g_loop, &c->wio);
	/* a worker's conn_send_now must not write to the number once reused */
	pthread_mutex_lock(&c->mu);
	close(c->fd);
	c->fd = -1;
	c->dead = 1;
	pthread_mutex_unlock(&c->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		g_conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	g_nconns--;
	if (c->refs == 0)
		conn_free(c);
}

static void conn_update(struct conn *c)
{
	int want_read, want_write;
	size_t queued;

	if (c->dead)
		return;
	pthread_mutex_lock(&c->mu);
	want_write = c->out_len > c->out_off;
	queued = c->out_len - c->out_off;
	pthread_mutex_unlock(&c->mu);
	if (c->closing && !want_write) {
		conn_close(c, "closed after an error reply");
		return;
	}
	want_read = !c->closing && !g_shutdown
		&& queued < OUT_HIGH_WATER
		&& c->inflight < MAX_INFLIGHT;
	if (want_read && !ev_is_active(&c->rio))
		ev_io_start(g_loop, &c->rio);
	else if (!want_read && ev_is_active(&c->rio))
		ev_io_stop(g_loop, &c->rio);
	if (want_write && !ev_is_active(&c->wio))
		ev_io_start(g_loop, &c->wio);
	else if (!want_write && ev_is_active(&c->wio))
		ev_io_stop(g_loop, &c->wio);
}

/* Handle every complete frame in the input buffer. */
static void conn_process(struct conn *c)
{
	size_t off = 0;

	while (!c->dead && !c->closing && !g_shutdown && c->inflight < MAX_INFLIGHT) {
		uint32_t n = 0;
		int st = ccq_frame_peek(c->in + off, c->in_len - off, g_max_frame, &n);
		ccq_msg m;
		char err[200];
		int rc;

		if (st == CCQ_FRAME_NEED_MORE)
			break;
		if (st == CCQ_FRAME_TOO_LARGE) {
			char msg[160];
			LOG_W("%s: frame of %u bytes exceeds the cap of %u bytes; closing", c->name,
				n, g_max_frame);
			snprintf(msg, sizeof(msg), "frame of %u bytes exceeds the cap of %u bytes", n,
				g_max_frame);
			conn_error_frame(c, 0, CCQ_E_FRAME_TOO_LARGE, msg);
			c->closing = 1;
			break;
		}
		if (st == CCQ_FRAME_EMPTY) {
			LOG_W("%s: empty frame; closing", c->name);
			conn_error_frame(c, 0, CCQ_E_BAD_FRAME, "empty frame");
			c->closing = 1;
			break;
		}
		rc = ccq_msg_decode(&m, c->in + off + CCQ_FRAME_HDR, n, err, sizeof(err));
		off += CCQ_FRAME_HDR + (size_t)n;
		if (rc != CCQ_OK) {
			LOG_I("%s: %s in request %llu: %s", c->name, ccq_err_name(rc),
				(unsigned long long)m.id, err);
			conn_error_frame(c, m.id, rc == CCQ_E_BAD_FRAME ? CCQ_E_BAD_REQUEST : rc, err);
		} else if (m.kind != CCQ_KIND_REQUEST) {
			conn_error_frame(c, m.id, CCQ_E_BAD_REQUEST, "clients may only send requests");
		} else {
			c->inflight++;
			ops_dispatch(c, &m, c->in + off - n, n);
		}
		ccq_msg_free(&m);
	}
	if (off > 0 && !c->dead) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	ssize_t r;
	(void)loop; (void)revents;

	if (c->in_cap - c->in_len < READ_CHUNK / 4) {
		size_t need = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
		size_t limit = (size_t)g_max_frame + CCQ_FRAME_HDR + READ_CHUNK;
		uint8_t *b;
		if (need > limit)
			need = limit;
		if (need > c->in_cap) {
			b = realloc(c->in, need);
			if (!b) {
				conn_close(c, "out of memory");
				return;
			}
			c->in = b;
			c->in_cap = need;
		}
	}
	r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
	if (r == 0) {
		conn_close(c, "peer closed");
		return;
	}
	if (r < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_close(c, strerror(errno));
		return;
	}
	c->in_len += (size_t)r;
	conn_hold(c);
	conn_process(c);
	conn_update(c);
	conn_release(c);
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	ssize_t r;
	(void)loop; (void)revents;

	pthread_mutex_lock(&c->mu);
	r = c->out_len > c->out_off
		? send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL) : 0;
	if (r < 0) {
		int e = errno;
		pthread_mutex_unlock(&c->mu);
		if (e != EAGAIN && e != EINTR)
			conn_close(c, strerror(e));
		return;
	}
	c->out_off += (size_t)r;
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	pthread_mutex_unlock(&c->mu);
	conn_hold(c);
	/* the client caught up: frames already buffered may now be handled */
	if (!c->closing && c->in_len > 0)
		conn_process(c);
	conn_update(c);
	conn_release(c);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	struct conn *c;
	int fd;
	(void)revents;

	fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			LOG_W("accept: %s", strerror(errno));
		return;
	}
	if (g_nconns >= g_max_clients) {
		LOG_W("refusing a client: max_clients (%u) reached", g_max_clients);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->fd = fd;
	pthread_mutex_init(&c->mu, NULL);
	if (ss.ss_family == AF_UNIX) {
		struct ucred cr;
		socklen_t cl = sizeof(cr);
		c->is_unix = 1;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0) {
			c->uid = cr.uid;
			c->pid = cr.pid;
			/* root and queued's own user are the local operator */
			c->actor.operator = cr.uid == 0 || cr.uid == geteuid();
			for (int i = 0; i < g_noperators; i++)
				c->actor.operator |= cr.uid == g_operator_uids[i];
		}
		c->actor.is_unix = 1;
		c->actor.uid = c->uid;
		snprintf(c->name, sizeof(c->name), "unix client pid %d uid %u", (int)c->pid,
			(unsigned)c->uid);
	} else {
		char host[INET6_ADDRSTRLEN] = "?";
		int port = 0, one = 1;
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
			port = ntohs(s4->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
			port = ntohs(s6->sin6_port);
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		snprintf(c->name, sizeof(c->name), "tcp client %s:%d", host, port);
	}
	ev_io_init(&c->rio, on_read, fd, EV_READ);
	ev_io_init(&c->wio, on_write, fd, EV_WRITE);
	c->rio.data = c->wio.data = c;
	c->next = g_conns;
	if (g_conns)
		g_conns->prev = c;
	g_conns = c;
	g_nconns++;
	LOG_D("%s: connected", c->name);
	conn_update(c);
	(void)loop;
}

static int listen_on(const char *addr, unsigned mode, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	struct listener *l = &g_lis[g_nlis];
	int fd, one = 1;

	if (ccq_addr_parse(addr, &ss, &sl, err, errlen) < 0)
		return -1;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket for %s: %s", addr, strerror(errno));
		return -1;
	}
	memset(l->path, 0, sizeof(l->path));
	if (ss.ss_family == AF_UNIX) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
		/* a stale socket from a previous run is removed; a live one is not */
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)sun, sl) == 0) {
			close(probe);
			close(fd);
			snprintf(err, errlen, "%s is in use by another running process", sun->sun_path);
			return -1;
		}
		if (probe >= 0)
			close(probe);
		unlink(sun->sun_path);
		memcpy(l->path, sun->sun_path, sizeof(l->path) - 1);
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	if (l->path[0] && chmod(l->path, mode) < 0)
		LOG_W("chmod %s: %s", l->path, strerror(errno));
	l->fd = fd;
	ev_io_init(&l->io, on_accept, fd, EV_READ);
	l->io.data = l;
	ev_io_start(g_loop, &l->io);
	g_nlis++;
	LOG_N("listening on %s", addr);
	return 0;
}

int server_listen(struct ev_loop *loop, const struct queued_config *cfg,
		char *err, size_t errlen)
{
	g_loop = loop;
	server_reconfigure(cfg);
	if (cfg->listen_unix[0] && listen_on(cfg->listen_unix, cfg->listen_unix_mode, err, errlen) < 0)
		return -1;
	if (cfg->listen_tcp[0] && listen_on(cfg->listen_tcp, 0, err, errlen) < 0) {
		server_stop_listening();
		return -1;
	}
	return 0;
}

void server_reconfigure(const struct queued_config *cfg)
{
	char list[256], *save = NULL, *tok;

	__atomic_store_n(&g_max_frame, cfg->max_frame, __ATOMIC_RELAXED);
	g_max_clients = cfg->max_clients;
	/* unix users (e.g. kamailio) whose connections act as the local operator */
	g_noperators = 0;
	snprintf(list, sizeof(list), "%s", cfg->operators);
	for (tok = strtok_r(list, ", ", &save); tok && g_noperators < 16;
			tok = strtok_r(NULL, ", ", &save)) {
		struct passwd *pw = getpwnam(tok);
		if (!pw) {
			LOG_W("operators: no unix user '%s' on this system; ignored", tok);
			continue;
		}
		g_operator_uids[g_noperators++] = pw->pw_uid;
	}
}

uint32_t server_max_frame(void)
{
	return g_max_frame;
}

void server_stop_listening(void)
{
	for (int i = 0; i < g_nlis; i++) {
		ev_io_stop(g_loop, &g_lis[i].io);
		close(g_lis[i].fd);
		if (g_lis[i].path[0])
			unlink(g_lis[i].path);
	}
	g_nlis = 0;
}

int server_shutting_down(void)
{
	return g_shutdown;
}

void server_begin_shutdown(void)
{
	g_shutdown = 1;
	for (struct conn *c = g_conns, *n; c; c = n) {
		n = c->next;
		conn_update(c);
	}
}

int server_drained(void)
{
	for (struct conn *c = g_conns; c; c = c->next) {
		int behind;
		pthread_mutex_lock(&c->mu);
		behind = c->out_len > c->out_off;
		pthread_mutex_unlock(&c->mu);
		if (c->inflight > 0 || behind)
			return 0;
	}
	return 1;
}

void server_close_all(void)
{
	while (g_conns)
		conn_close(g_conns, "shutdown");
}

const struct actor *conn_actor(const struct conn *c)
{
	return &c->actor;
}

void conn_set_user(struct conn *c, uint32_t user_id)
{
	c->actor.user_id = user_id;
}

void conn_watch(struct conn *c, struct watch_filter *wf)
{
	free(c->wf);
	c->wf = wf;
	c->watching = 1;
}

void server_push_event(const char *name, uint32_t org_id, uint32_t inbox_id,
		const uint8_t *data, size_t len)
{
	static uint64_t seq;
	ccq_enc e;
	size_t behind;

	seq++;
	for (struct conn *c = g_conns, *n; c; c = n) {
		n = c->next;
		if (!c->watching || c->dead)
			continue;
		if (!watch_filter_match(c->wf, org_id, inbox_id))
			continue;
		/* a watcher that does not read loses events rather than memory */
		pthread_mutex_lock(&c->mu);
		behind = c->out_len - c->out_off;
		pthread_mutex_unlock(&c->mu);
		if (behind > OUT_HIGH_WATER) {
			LOG_W("%s: not reading its events; dropping one", c->name);
			continue;
		}
		ccq_enc_init(&e);
		ccq_enc_event(&e, seq, name);
		msgpack_sbuffer_write(&e.sb, (const char *)data, len);
		send_frame(c, &e);
	}
}

void conn_push_event(struct conn *c, const char *name, const uint8_t *data, size_t len)
{
	static uint64_t seq;
	ccq_enc e;

	if (c->dead)
		return;
	ccq_enc_init(&e);
	ccq_enc_event(&e, ++seq, name);
	msgpack_sbuffer_write(&e.sb, (const char *)data, len);
	send_frame(c, &e);
}

void server_on_close(void (*fn)(struct conn *c))
{
	g_close_hook = fn;
}

unsigned server_clients(void)
{
	return g_nconns;
}
