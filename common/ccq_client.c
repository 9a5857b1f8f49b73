/*
 * Blocking client for queued's protocol; see ccq_client.h.
 */
#include "ccq_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/un.h>

#define SETERR(...) do { if (err && errlen) snprintf(err, errlen, __VA_ARGS__); } while (0)

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ccq_addr_parse(const char *addr, struct sockaddr_storage *ss,
		socklen_t *sslen, char *err, size_t errlen)
{
	const char *path = NULL;

	memset(ss, 0, sizeof(*ss));
	if (!addr || !*addr) {
		SETERR("empty address");
		return -1;
	}
	if (strncmp(addr, "unix:", 5) == 0)
		path = addr + 5;
	else if (addr[0] == '/' || addr[0] == '.' || !strchr(addr, ':'))
		path = addr; /* a path, absolute or relative */
	if (path) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		if (strlen(path) == 0 || strlen(path) >= sizeof(sun->sun_path)) {
			SETERR("unix socket path '%s' is empty or longer than %zu bytes",
				path, sizeof(sun->sun_path) - 1);
			return -1;
		}
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, path);
		*sslen = sizeof(*sun);
		return 0;
	}
	if (strncmp(addr, "tcp:", 4) == 0)
		addr += 4;
	{
		char host[256];
		const char *colon = strrchr(addr, ':');
		const char *h = addr;
		size_t hl;
		struct addrinfo hints, *res = NULL;
		int rc;

		if (!colon || !colon[1]) {
			SETERR("address '%s' needs a port (host:port) or unix:/path", addr);
			return -1;
		}
		hl = (size_t)(colon - addr);
		if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
			h++;
			hl -= 2;
		}
		if (hl == 0 || hl >= sizeof(host)) {
			SETERR("bad host in address '%s'", addr);
			return -1;
		}
		memcpy(host, h, hl);
		host[hl] = '\0';
		memset(&hints, 0, sizeof(hints));
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV;
		rc = getaddrinfo(host, colon + 1, &hints, &res);
		if (rc != 0 || !res) {
			SETERR("cannot resolve '%s': %s", addr, gai_strerror(rc));
			return -1;
		}
		memcpy(ss, res->ai_addr, res->ai_addrlen);
		*sslen = res->ai_addrlen;
		freeaddrinfo(res);
	}
	return 0;
}

void ccq_client_init(ccq_client *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->max_frame = CCQ_FRAME_HARD_MAX;
	c->next_id = ((uint64_t)getpid() << 32) | ((uint64_t)now_ms() & 0xffffff) << 8;
}

void ccq_client_close(ccq_client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->rlen = 0;
}

void ccq_client_free(ccq_client *c)
{
	ccq_client_close(c);
	free(c->rbuf);
	free(c->payload);
	c->rbuf = c->payload = NULL;
	c->rcap = 0;
}

uint64_t ccq_client_id(ccq_client *c)
{
	return ++c->next_id;
}

int ccq_client_connect(ccq_client *c, const char *addr, int timeout_ms,
		char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, rc;

	ccq_client_close(c);
	if (ccq_addr_parse(addr, &ss, &sl, err, errlen) < 0)
		return -1;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		SETERR("socket: %s", strerror(errno));
		return -1;
	}
	rc = connect(fd, (struct sockaddr *)&ss, sl);
	if (rc < 0 && errno == EINPROGRESS) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		int soerr = 0;
		socklen_t el = sizeof(soerr);
		rc = poll(&pfd, 1, timeout_ms);
		if (rc == 0) {
			SETERR("connect to %s timed out after %d ms", addr, timeout_ms);
			close(fd);
			return -1;
		}
		if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &el) < 0 || soerr) {
			SETERR("connect to %s: %s", addr, strerror(soerr ? soerr : errno));
			close(fd);
			return -1;
		}
	} else if (rc < 0) {
		SETERR("connect to %s: %s", addr, strerror(errno));
		close(fd);
		return -1;
	}
	if (ss.ss_family != AF_UNIX) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	c->fd = fd;
	c->rlen = 0;
	return 0;
}

static int send_all(ccq_client *c, const uint8_t *p, size_t n, int64_t deadline,
		char *err, size_t errlen)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
			int left = (int)(deadline - now_ms());
			if (left <= 0 || poll(&pfd, 1, left) <= 0) {
				SETERR("timed out sending to queued");
				return -1;
			}
			continue;
		}
		SETERR("send to queued: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Read until one whole frame is buffered; move its payload to c->payload. */
static int read_frame(ccq_client *c, int64_t deadline, uint32_t *plen,
		char *err, size_t errlen)
{
	for (;;) {
		uint32_t n = 0;
		int st = ccq_frame_peek(c->rbuf, c->rlen, c->max_frame, &n);
		if (st == CCQ_FRAME_READY) {
			uint8_t *p = realloc(c->payload, n);
			if (!p) {
				SETERR("out of memory for a %u-byte reply", n);
				return -1;
			}
			c->payload = p;
			memcpy(p, c->rbuf + CCQ_FRAME_HDR, n);
			c->rlen -= CCQ_FRAME_HDR + n;
			memmove(c->rbuf, c->rbuf + CCQ_FRAME_HDR + n, c->rlen);
			*plen = n;
			return 1;
		}
		if (st == CCQ_FRAME_TOO_LARGE || st == CCQ_FRAME_EMPTY) {
			SETERR("queued sent a frame of invalid length %u", n);
			return -1;
		}
		if (c->rcap - c->rlen < 65536) {
			size_t cap = c->rcap ? c->rcap * 2 : 65536;
			uint8_t *b;
			if (cap > (size_t)c->max_frame + CCQ_FRAME_HDR + 65536)
				cap = (size_t)c->max_frame + CCQ_FRAME_HDR + 65536;
			if (cap <= c->rcap)
				cap = c->rcap;
			else {
				b = realloc(c->rbuf, cap);
				if (!b) {
					SETERR("out of memory");
					return -1;
				}
				c->rbuf = b;
				c->rcap = cap;
			}
		}
		{
			struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
			int left = (int)(deadline - now_ms());
			ssize_t r;
			int pr;
			if (left < 0)
				left = 0;
			pr = poll(&pfd, 1, left);
			if (pr == 0)
				return 0;
			if (pr < 0) {
				if (errno == EINTR)
					continue;
				SETERR("poll: %s", strerror(errno));
				return -1;
			}
			r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
			if (r == 0) {
				SETERR("queued closed the connection");
				return -1;
			}
			if (r < 0) {
				if (errno == EINTR || errno == EAGAIN)
					continue;
				SETERR("recv from queued: %s", strerror(errno));
				return -1;
			}
			c->rlen += (size_t)r;
		}
	}
}

int ccq_client_next(ccq_client *c, int timeout_ms, ccq_msg *msg,
		char *err, size_t errlen)
{
	uint32_t n;
	int rc;
	char derr[160];

	memset(msg, 0, sizeof(*msg));
	msgpack_unpacked_init(&msg->up_);
	if (c->fd < 0) {
		SETERR("not connected to queued");
		return -1;
	}
	rc = read_frame(c, now_ms() + timeout_ms, &n, err, errlen);
	if (rc <= 0) {
		if (rc < 0)
			ccq_client_close(c);
		return rc;
	}
	ccq_msg_free(msg);
	rc = ccq_msg_decode(msg, c->payload, n, derr, sizeof(derr));
	if (rc != CCQ_OK) {
		SETERR("undecodable message from queued: %s", derr);
		ccq_msg_free(msg);
		ccq_client_close(c);
		return -1;
	}
	return 1;
}

int ccq_client_call(ccq_client *c, ccq_enc *enc, uint64_t id, int timeout_ms,
		ccq_msg *reply, char *err, size_t errlen)
{
	const uint8_t *buf;
	size_t len;
	int64_t deadline = now_ms() + timeout_ms;

	memset(reply, 0, sizeof(*reply));
	msgpack_unpacked_init(&reply->up_);
	if (c->fd < 0) {
		SETERR("not connected to queued");
		return -1;
	}
	if (ccq_enc_finish(enc, c->max_frame, &buf, &len) < 0) {
		SETERR("request larger than the frame cap");
		return -1;
	}
	if (send_all(c, buf, len, deadline, err, errlen) < 0) {
		ccq_client_close(c);
		return -1;
	}
	for (;;) {
		int left = (int)(deadline - now_ms());
		int rc;
		if (left < 0)
			left = 0;
		ccq_msg_free(reply);
		rc = ccq_client_next(c, left, reply, err, errlen);
		if (rc < 0)
			return -1;
		if (rc == 0) {
			SETERR("no reply from queued within %d ms", timeout_ms);
			ccq_msg_free(reply);
			/* a late reply would confuse the next call: start over */
			ccq_client_close(c);
			return -1;
		}
		if (reply->kind == CCQ_KIND_REPLY && reply->id == id)
			return 0;
		if (reply->kind == CCQ_KIND_REPLY && reply->id == 0 && reply->code != 0) {
			/* connection-level error (framing): the server closes */
			SETERR("queued refused the frame: %s: %.*s", ccq_err_name(reply->code),
				(int)reply->errmsg_len, reply->errmsg);
			ccq_msg_free(reply);
			ccq_client_close(c);
			return -1;
		}
		/* an event, or a stale reply: skip */
	}
}
