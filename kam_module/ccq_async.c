/*
 * The "ccq async" process, the "ccq resume" processes and the worker side
 * of them; see ccq_async.h.
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include "core/dprint.h"
#include "core/pt.h"
#include "core/route.h"
#include "core/sr_module.h"
#include "core/cfg/cfg_struct.h"
#include "core/mem/shm_mem.h"
#include "modules/tm/tm_load.h"

#include "ccq_async.h"
#include "ccq_cfg.h"
#include "ccq_link.h"
#include "ccq_cb.h"

struct ccq_result ccq_async_result;
int ccq_resume_procs = 2;

static struct tm_binds tmb;
static int g_tm_loaded;
static int g_chan[2] = { -1, -1 };   /* [0] workers write, [1] async reads */
static int g_rchan[2] = { -1, -1 };  /* [0] async writes, [1] resume processes read */
static int g_async_pid;
static int g_resume_slot = -1;       /* in a resume process: its number, from 0 */
static uint64_t g_id_seq;

#define CHAN_MAGIC 0x63637161u /* "ccqa" */
#define CHAN_MAX 65536

struct chan_hdr {
	uint32_t magic;
	int64_t sent_us;          /* monotonic, when the worker handed it over */
	uint32_t kind;
	uint32_t tindex, tlabel;
	int32_t route;
	int32_t timeout_ms;
	uint64_t id;
	char call_id[256];
};

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * Decision latency (worker hand-over to the start of the resumed route) in
 * shared memory: log-spaced buckets, written by whichever process starts
 * the resumed route (atomic updates), read by RPC. Next to it, how many
 * resumes each resume process ran (one writer per slot).
 */
#define LAT_BUCKETS 64
struct lat_hist {
	unsigned long count[LAT_BUCKETS];
	unsigned long total;
	int64_t max_us;
	unsigned long resumed[CCQ_RESUME_MAX];
	unsigned long resumed_in_async;   /* resume_processes 0, or the pool overrun */
	unsigned long backlog_max;        /* most hand-overs ever waiting for the pool */
};
static struct lat_hist *g_lat;

static double bucket_upper_us(int i)
{
	/* 20 us * 1.25^i: 20 us .. ~30 s */
	double v = 20.0;
	for (int k = 0; k < i; k++)
		v *= 1.25;
	return v;
}

static void lat_record(int64_t us)
{
	int i = 0;
	int64_t mx;
	if (!g_lat)
		return;
	while (i < LAT_BUCKETS - 1 && (double)us > bucket_upper_us(i))
		i++;
	__atomic_fetch_add(&g_lat->count[i], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&g_lat->total, 1, __ATOMIC_RELAXED);
	mx = __atomic_load_n(&g_lat->max_us, __ATOMIC_RELAXED);
	while (us > mx && !__atomic_compare_exchange_n(&g_lat->max_us, &mx, us, 0,
			__ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

int ccq_async_latency(double *p50_ms, double *p99_ms, double *max_ms, unsigned long *n)
{
	struct lat_hist h;
	unsigned long acc = 0;
	int got50 = 0;

	if (!g_lat)
		return -1;
	h = *g_lat;
	/* the copy is not one atomic snapshot: count what the buckets hold */
	h.total = 0;
	for (int i = 0; i < LAT_BUCKETS; i++)
		h.total += h.count[i];
	*n = h.total;
	*p50_ms = *p99_ms = 0;
	*max_ms = (double)h.max_us / 1000.0;
	if (h.total == 0)
		return 0;
	for (int i = 0; i < LAT_BUCKETS; i++) {
		acc += h.count[i];
		if (!got50 && acc * 2 >= h.total) {
			*p50_ms = bucket_upper_us(i) / 1000.0;
			got50 = 1;
		}
		if (acc * 100 >= h.total * 99) {
			*p99_ms = bucket_upper_us(i) / 1000.0;
			break;
		}
	}
	/* buckets give upper bounds: never report more than the maximum seen */
	if (*p50_ms > *max_ms)
		*p50_ms = *max_ms;
	if (*p99_ms > *max_ms)
		*p99_ms = *max_ms;
	return 0;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t ccq_async_next_id(void)
{
	/* unique across processes: pid in the high bits */
	return ((uint64_t)my_pid() << 32) | (++g_id_seq & 0xffffffffu);
}

void ccq_async_rpc_stats(rpc_t *rpc, void *th)
{
	char per[CCQ_RESUME_MAX * 21 + 1];
	size_t off = 0;
	unsigned long total = 0;

	if (!g_lat)
		return;
	per[0] = '\0';
	for (int i = 0; i < ccq_resume_procs && i < CCQ_RESUME_MAX; i++) {
		unsigned long v = __atomic_load_n(&g_lat->resumed[i], __ATOMIC_RELAXED);
		total += v;
		off += (size_t)snprintf(per + off, sizeof(per) - off, "%s%lu", i ? " " : "", v);
	}
	total += g_lat->resumed_in_async;
	rpc->struct_add(th, "dusuu", "resume_processes", ccq_resume_procs,
		"resumes", (unsigned)total, "resumes_per_process", per,
		"resumes_in_async", (unsigned)g_lat->resumed_in_async,
		"resume_backlog_max", (unsigned)g_lat->backlog_max);
}

int ccq_async_init(void)
{
	if (ccq_resume_procs < 0 || ccq_resume_procs > CCQ_RESUME_MAX) {
		LM_ERR("modparam resume_processes must be 0..%d, not %d\n", CCQ_RESUME_MAX,
			ccq_resume_procs);
		return -1;
	}
	if (load_tm_api(&tmb) < 0) {
		LM_ERR("the ccq module needs the tm module for asynchronous decisions: load tm.so first\n");
		return -1;
	}
	g_tm_loaded = 1;
	g_lat = shm_malloc(sizeof(*g_lat));
	if (!g_lat) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(g_lat, 0, sizeof(*g_lat));
	/* an internal channel between our own processes, not a network socket */
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, g_chan) < 0) {
		LM_ERR("socketpair: %s\n", strerror(errno));
		return -1;
	}
	fcntl(g_chan[0], F_SETFL, O_NONBLOCK);
	fcntl(g_chan[1], F_SETFL, O_NONBLOCK);
	{
		int sz = 4 * 1024 * 1024;
		setsockopt(g_chan[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		setsockopt(g_chan[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	if (ccq_resume_procs > 0) {
		/* the resume pool: every resume process reads the same end, and a
		 * datagram goes to exactly one of them (whichever is free first);
		 * blocking reads, so that the kernel wakes one reader per datagram */
		int sz = 4 * 1024 * 1024;
		if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, g_rchan) < 0) {
			LM_ERR("socketpair: %s\n", strerror(errno));
			return -1;
		}
		fcntl(g_rchan[0], F_SETFL, O_NONBLOCK);
		setsockopt(g_rchan[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
		setsockopt(g_rchan[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	register_procs(1 + ccq_resume_procs);
	cfg_register_child(1 + ccq_resume_procs);
	return 0;
}

void ccq_async_child(void)
{
	if (g_async_pid != getpid() && g_chan[1] >= 0) {
		close(g_chan[1]);
		g_chan[1] = -1;
	}
	if (g_async_pid != getpid() && g_rchan[0] >= 0) {
		close(g_rchan[0]);
		g_rchan[0] = -1;
	}
	if (g_resume_slot < 0 && g_rchan[1] >= 0) {
		close(g_rchan[1]);
		g_rchan[1] = -1;
	}
}

static int chan_send(struct chan_hdr *h, ccq_enc *enc)
{
	const uint8_t *frame;
	size_t flen;
	struct iovec iov[2];
	struct msghdr mh;

	if (ccq_enc_finish(enc, CHAN_MAX - sizeof(*h), &frame, &flen) < 0) {
		LM_ERR("request for queued too large for the async channel\n");
		return -1;
	}
	iov[0].iov_base = h;
	iov[0].iov_len = sizeof(*h);
	iov[1].iov_base = (void *)frame;
	iov[1].iov_len = flen;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	if (sendmsg(g_chan[0], &mh, MSG_DONTWAIT) < 0) {
		LM_ERR("cannot hand a request to the ccq async process: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * A final failure reply sent to the caller (an error, a timeout, 480, 503,
 * 487) ends the call: tell queued, so that the TXN never stays Waiting or
 * Assigning for a call that is gone. queued ignores it for TXNs already
 * ended (missed, abandoned).
 */
static void on_final_reply(struct cell *t, int type, struct tmcb_params *ps)
{
	ccq_enc e;
	uint64_t id;
	char callid[256], by[16];

	(void)type;
	if (ps->code < 300 || !t || t->callid.len <= 0)
		return;
	/* callid_hdr holds the whole header line: "Call-ID: value\r\n" */
	{
		str v = t->callid;
		char *colon = memchr(v.s, ':', v.len);
		int n;
		if (!colon)
			return;
		v.len -= (int)(colon + 1 - v.s);
		v.s = colon + 1;
		while (v.len > 0 && (*v.s == ' ' || *v.s == '\t')) {
			v.s++;
			v.len--;
		}
		while (v.len > 0 && (v.s[v.len - 1] == '\r' || v.s[v.len - 1] == '\n'
				|| v.s[v.len - 1] == ' '))
			v.len--;
		n = v.len < (int)sizeof(callid) - 1 ? v.len : (int)sizeof(callid) - 1;
		memcpy(callid, v.s, n);
		callid[n] = '\0';
	}
	snprintf(by, sizeof(by), "failed:%d", ps->code);
	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "call.ended", 3);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	ccq_pack_kv_str(&e.pk, "by", by);
	{
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ccq_pack_kv_uint(&e.pk, "at_ms", (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	}
	ccq_async_report(&e, id);
}

int ccq_async_watch_final(struct sip_msg *msg)
{
	struct cell *t = tmb.t_gett();
	if (t == NULL || t == T_UNDEFINED)
		return -1;
	if (tmb.register_tmcb(msg, t, TMCB_RESPONSE_OUT, on_final_reply, 0, 0) <= 0) {
		LM_ERR("cannot watch the final reply of the transaction\n");
		return -1;
	}
	return 0;
}

int ccq_async_suspend(struct sip_msg *msg, int kind, int route_idx, ccq_enc *enc,
		uint64_t id, const char *call_id, int timeout_ms)
{
	struct chan_hdr h;
	struct cell *t;
	unsigned int tindex = 0, tlabel = 0;

	memset(&h, 0, sizeof(h));
	t = tmb.t_gett();
	if (t == NULL || t == T_UNDEFINED) {
		if (tmb.t_newtran(msg) < 0) {
			LM_ERR("cannot create the transaction\n");
			ccq_enc_free(enc);
			return -1;
		}
	}
	if (tmb.t_suspend(msg, &tindex, &tlabel) < 0) {
		LM_ERR("cannot suspend the transaction\n");
		ccq_enc_free(enc);
		return -1;
	}
	h.magic = CHAN_MAGIC;
	h.sent_us = mono_us();
	h.kind = (uint32_t)kind;
	h.tindex = tindex;
	h.tlabel = tlabel;
	h.route = route_idx;
	h.timeout_ms = timeout_ms;
	h.id = id;
	if (call_id)
		snprintf(h.call_id, sizeof(h.call_id), "%s", call_id);
	if (chan_send(&h, enc) < 0) {
		ccq_enc_free(enc);
		/* undo: the script falls back on its own */
		tmb.t_cancel_suspend(tindex, tlabel);
		return -1;
	}
	ccq_enc_free(enc);
	return 1;
}

int ccq_async_report(ccq_enc *enc, uint64_t id)
{
	struct chan_hdr h;
	int rc;
	memset(&h, 0, sizeof(h));
	h.magic = CHAN_MAGIC;
	h.kind = CCQ_ASYNC_REPORT;
	h.id = id;
	rc = chan_send(&h, enc);
	ccq_enc_free(enc);
	return rc;
}

int ccq_async_cb_send(const void *p, size_t n)
{
	struct chan_hdr h;
	struct iovec iov[2];
	struct msghdr mh;

	if (n > CHAN_MAX - sizeof(h))
		return -1;
	memset(&h, 0, sizeof(h));
	h.magic = CHAN_MAGIC;
	h.kind = CCQ_ASYNC_CB;
	iov[0].iov_base = &h;
	iov[0].iov_len = sizeof(h);
	iov[1].iov_base = (void *)p;
	iov[1].iov_len = n;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 2;
	if (sendmsg(g_chan[0], &mh, MSG_DONTWAIT) < 0) {
		LM_ERR("cannot hand a callback event to the ccq async process: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- the async process ------------------------------------------------- */

struct pending {
	struct chan_hdr h;
	long long deadline;       /* monotonic ms */
	struct pending *next;
};

/*
 * Frames for queued, oldest first. Reports and waits survive a lost
 * connection and are sent again whole on the next one (queued applies them
 * idempotently); decision requests are dropped with the connection, because
 * their calls have already fallen back.
 */
struct outframe {
	struct outframe *next;
	int kind;              /* enum ccq_async_kind */
	size_t len, off;       /* off: bytes of this frame already written */
	uint8_t data[];
};

#define OUT_MAX_FRAMES 20000 /* about a minute of reports at a busy site */

static struct pending *g_pending;
static int g_qfd = -1;
static struct outframe *g_out_head, **g_out_tail = &g_out_head;
static unsigned g_out_count;
static unsigned long g_out_dropped;
static uint8_t *g_in;
static size_t g_in_len, g_in_cap;
static long long g_next_connect;
static int g_down_logged;

static void q_close(const char *why)
{
	if (g_qfd >= 0) {
		LM_WARN("ccq async: connection to queued lost (%s)\n", why);
		close(g_qfd);
	}
	g_qfd = -1;
	g_in_len = 0;
	/* decisions in flight fall back now (expire() sees g_qfd < 0); their
	 * frames go; reports are kept and sent again from their start; waits
	 * are registered again by rewait_all() (so their old frames go too) */
	{
		struct outframe **pp = &g_out_head;
		g_out_tail = &g_out_head;
		while (*pp) {
			struct outframe *f = *pp;
			if (f->kind != CCQ_ASYNC_REPORT) {
				*pp = f->next;
				free(f);
				g_out_count--;
				continue;
			}
			f->off = 0;
			g_out_tail = &f->next;
			pp = &f->next;
		}
	}
}

static int q_buffer_kind(const uint8_t *p, size_t n, int kind)
{
	struct outframe *f;
	if (g_out_count >= OUT_MAX_FRAMES) {
		if (g_out_dropped++ % 1000 == 0)
			LM_ERR("ccq async: %u frames wait for queued; dropping (%lu so far)\n",
				g_out_count, g_out_dropped);
		return -1;
	}
	if (!(f = malloc(sizeof(*f) + n)))
		return -1;
	f->next = NULL;
	f->kind = kind;
	f->len = n;
	f->off = 0;
	memcpy(f->data, p, n);
	*g_out_tail = f;
	g_out_tail = &f->next;
	g_out_count++;
	return 0;
}

static int q_buffer(const uint8_t *p, size_t n)
{
	return q_buffer_kind(p, n, CCQ_ASYNC_WAIT);
}

int ccq_async_send_now(ccq_enc *enc)
{
	const uint8_t *b;
	size_t l;
	int rc = -1;
	if (g_qfd >= 0 && ccq_enc_finish(enc, 0, &b, &l) == 0)
		rc = q_buffer(b, l);
	ccq_enc_free(enc);
	return rc;
}

/* Re-register waits after a reconnection (queued forgets them). */
static void rewait_all(void)
{
	for (struct pending *p = g_pending; p; p = p->next) {
		if (p->h.kind == CCQ_ASYNC_WAIT) {
			ccq_enc e;
			const uint8_t *b;
			size_t l;
			ccq_enc_init(&e);
			ccq_enc_request(&e, ccq_async_next_id(), "call.wait", 1);
			ccq_pack_kv_str(&e.pk, "call_id", p->h.call_id);
			if (ccq_enc_finish(&e, 0, &b, &l) == 0)
				q_buffer(b, l);
			ccq_enc_free(&e);
		}
	}
}

static void q_connect(void)
{
	char err[256];
	ccq_client c;
	long long now = mono_ms();

	if (g_qfd >= 0 || now < g_next_connect)
		return;
	ccq_client_init(&c);
	if (ccq_client_connect(&c, ccq_link_addr(), cfg_get(ccq, ccq_cfg, timeout), err,
			sizeof(err)) < 0) {
		g_next_connect = now + (cfg_get(ccq, ccq_cfg, reconnect_interval) ?: 100);
		if (!g_down_logged)
			LM_ERR("ccq async: queued unreachable (%s); decisions fall back until it is back\n",
				err);
		g_down_logged = 1;
		return;
	}
	g_qfd = c.fd; /* take the socket, the client struct is not used further */
	c.fd = -1;
	ccq_client_free(&c);
	if (g_down_logged)
		LM_NOTICE("ccq async: connected to queued again\n");
	g_down_logged = 0;
	rewait_all();
	ccq_cb_on_connect();
}

/*
 * A resume handed from the async process to a resume process: the
 * transaction, the route and the decoded result, which the resume process
 * makes its own ccq_async_result. Only the targets in use are sent.
 */
#define RESUME_MAGIC 0x63637172u /* "ccqr" */
struct resume_msg {
	uint32_t magic;
	uint32_t tindex, tlabel;
	int32_t route;
	int64_t sent_us;          /* the worker's hand-over; 0: no latency to record */
	char call_id[256];
	struct ccq_result res;
};
#define RESUME_MIN_LEN offsetof(struct resume_msg, res.targets)

static size_t resume_len(const struct resume_msg *m)
{
	int n = m->res.ntargets;
	if (n < 0 || n > CCQ_MAX_TARGETS)
		n = 0;
	return RESUME_MIN_LEN + (size_t)n * sizeof(m->res.targets[0]);
}

/* Run the resumed route in this process (a resume process, or the async
 * process when there is no pool). */
static void resume_run(const struct resume_msg *m)
{
	if (m->sent_us)
		lat_record(mono_us() - m->sent_us);
	if (g_lat) {
		if (g_resume_slot >= 0)
			g_lat->resumed[g_resume_slot]++;
		else
			g_lat->resumed_in_async++;
	}
	ccq_async_result = m->res;
	ccq_async_result.active = 1;
	if (tmb.t_continue(m->tindex, m->tlabel, main_rt.rlist[m->route]) < 0)
		LM_NOTICE("ccq: transaction of call %s is gone (caller hung up?)\n", m->call_id);
	memset(&ccq_async_result, 0, sizeof(ccq_async_result));
}

static int chan_full(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS || err == EINTR;
}

/* Hand-overs the pool could not take yet (its socket buffer full), oldest
 * first; sent again when the socket is writable. */
struct backlog {
	struct backlog *next;
	size_t len;
	struct resume_msg m;     /* len bytes of it are sent */
};
#define BACKLOG_MAX 4096
static struct backlog *g_bl_head, **g_bl_tail = &g_bl_head;
static unsigned g_bl_count;

static void backlog_flush(void)
{
	while (g_bl_head) {
		struct backlog *b = g_bl_head;
		if (send(g_rchan[0], &b->m, b->len, MSG_DONTWAIT) < 0) {
			if (chan_full(errno))
				return;
			LM_ERR("ccq async: cannot hand a resume to the resume processes (%s): "
				"resuming here\n", strerror(errno));
			resume_run(&b->m);
		}
		g_bl_head = b->next;
		if (!g_bl_head)
			g_bl_tail = &g_bl_head;
		g_bl_count--;
		free(b);
	}
}

/*
 * Resume p's transaction with ccq_async_result (filled by the caller) in
 * a resume process; sent_us: the worker's hand-over time for the latency
 * (0: none). The async process goes back to queued's replies at once.
 */
static void resume(struct pending *p, int64_t sent_us)
{
	static struct resume_msg m;
	struct backlog *b;
	size_t len;

	memset(&m, 0, RESUME_MIN_LEN);
	m.magic = RESUME_MAGIC;
	m.tindex = p->h.tindex;
	m.tlabel = p->h.tlabel;
	m.route = p->h.route;
	m.sent_us = sent_us;
	memcpy(m.call_id, p->h.call_id, sizeof(m.call_id));
	m.res = ccq_async_result;
	if (m.res.ntargets < 0 || m.res.ntargets > CCQ_MAX_TARGETS)
		m.res.ntargets = 0;
	memset(&ccq_async_result, 0, sizeof(ccq_async_result));
	len = resume_len(&m);

	if (ccq_resume_procs == 0) {
		resume_run(&m);
		return;
	}
	if (!g_bl_head) {
		if (send(g_rchan[0], &m, len, MSG_DONTWAIT) == (ssize_t)len)
			return;
		if (!chan_full(errno)) {
			LM_ERR("ccq async: cannot hand a resume to the resume processes (%s): "
				"resuming call %s here\n", strerror(errno), m.call_id);
			resume_run(&m);
			return;
		}
	}
	/* the pool's socket is full: keep it, in order, for backlog_flush() */
	if (g_bl_count >= BACKLOG_MAX || !(b = malloc(sizeof(*b)))) {
		/* the pool is far behind: better late here than never */
		LM_WARN("ccq async: %u resumes wait for the resume processes; resuming call %s"
			" here\n", g_bl_count, m.call_id);
		resume_run(&m);
		return;
	}
	memcpy(&b->m, &m, sizeof(m));
	b->len = len;
	b->next = NULL;
	*g_bl_tail = b;
	g_bl_tail = &b->next;
	g_bl_count++;
	if (g_lat && g_bl_count > g_lat->backlog_max)
		g_lat->backlog_max = g_bl_count;
}

static void fill_result(const msgpack_object *r)
{
	const msgpack_object *t;
	uint64_t v;

	ccq_map_strcpy(r, "action", ccq_async_result.action, sizeof(ccq_async_result.action));
	ccq_map_strcpy(r, "reason", ccq_async_result.reason, sizeof(ccq_async_result.reason));
	ccq_map_strcpy(r, "inbox", ccq_async_result.inbox, sizeof(ccq_async_result.inbox));
	if (ccq_map_uint(r, "code", &v) == 1 && v >= 100 && v <= 699)
		ccq_async_result.code = (int)v;
	if (ccq_map_uint(r, "txn", &v) == 1)
		snprintf(ccq_async_result.txn, sizeof(ccq_async_result.txn), "%llu",
			(unsigned long long)v);
	if (ccq_map_uint(r, "ring_timeout", &v) == 1)
		ccq_async_result.ring_timeout = (unsigned)v;
	if (ccq_map_uint(r, "max_wait", &v) == 1)
		ccq_async_result.max_wait = (unsigned)v;
	if (ccq_map_uint(r, "record", &v) == 1)
		ccq_async_result.record = v ? 1 : 0;
	if (ccq_map_strcpy(r, "rec_meta", ccq_async_result.rec_meta,
			sizeof(ccq_async_result.rec_meta)) == 1) {
		/* it goes into an rtpengine flag unquoted: keep only what is safe */
		for (char *c = ccq_async_result.rec_meta; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
					|| *c == '_' || *c == ':' || *c == '|' || *c == '.' || *c == '-'))
				*c = '_';
	}
	t = ccq_map_get(r, "targets");
	if (t && t->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < t->via.array.size && i < CCQ_MAX_TARGETS; i++) {
			const msgpack_object *o = &t->via.array.ptr[i];
			if (o->type != MSGPACK_OBJECT_STR || o->via.str.size == 0
					|| o->via.str.size >= sizeof(ccq_async_result.targets[0]))
				continue;
			memcpy(ccq_async_result.targets[ccq_async_result.ntargets], o->via.str.ptr,
				o->via.str.size);
			ccq_async_result.targets[ccq_async_result.ntargets][o->via.str.size] = '\0';
			ccq_async_result.ntargets++;
		}
	}
}

static void fallback(struct pending *p, const char *why, int64_t sent_us)
{
	memset(&ccq_async_result, 0, sizeof(ccq_async_result));
	snprintf(ccq_async_result.action, sizeof(ccq_async_result.action), "fallback");
	snprintf(ccq_async_result.error, sizeof(ccq_async_result.error), "%s", why);
	ccq_link_count_fallback();
	resume(p, sent_us);
}

static void unlink_pending(struct pending *p)
{
	for (struct pending **pp = &g_pending; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			return;
		}
}

/*
 * An error reply to a decision. queued sheds load with db_unavailable
 * "overloaded: ..." (queued(8), shed_after): then hundreds of calls a
 * second may be refused, each already counted in fallbacks and logged by
 * the routing script if it wants: one warning per 10 s, with how many
 * came since the last one, rather than an error line per call.
 */
static void log_refused(const struct pending *p, const ccq_msg *m, const char *why)
{
	static long long last_ms;
	static unsigned long held;
	long long now;

	if (m->code != CCQ_E_DB_UNAVAILABLE || m->errmsg_len < 10
			|| memcmp(m->errmsg, "overloaded", 10) != 0) {
		LM_ERR("decision for call %s failed: %s\n", p->h.call_id, why);
		return;
	}
	now = mono_ms();
	if (last_ms && now - last_ms < 10000) {
		held++;
		return;
	}
	if (held)
		LM_WARN("decision for call %s refused (%s); %lu more refused as overloaded in the "
			"last %lld s; logged at most every 10 s\n", p->h.call_id, why, held,
			(now - last_ms) / 1000);
	else
		LM_WARN("decision for call %s refused (%s); further refusals as overloaded are "
			"logged at most every 10 s, with their count\n", p->h.call_id, why);
	last_ms = now;
	held = 0;
}

static void on_message(ccq_msg *m)
{
	struct pending *p;
	char call_id[256] = "";

	if (m->kind == CCQ_KIND_REPLY) {
		for (p = g_pending; p; p = p->next)
			if (p->h.kind == CCQ_ASYNC_CALL && p->h.id == m->id)
				break;
		if (!p) {
			if (m->code)
				LM_WARN("queued refused a report: %s: %.*s\n", ccq_err_name(m->code),
					(int)m->errmsg_len, m->errmsg);
			return;
		}
		unlink_pending(p);
		memset(&ccq_async_result, 0, sizeof(ccq_async_result));
		if (m->code) {
			char why[200];
			snprintf(why, sizeof(why), "queued: %s: %.*s", ccq_err_name(m->code),
				(int)(m->errmsg_len > 150 ? 150 : m->errmsg_len), m->errmsg);
			log_refused(p, m, why);
			fallback(p, why, p->h.sent_us);
		} else {
			fill_result(m->body);
			resume(p, p->h.sent_us);
		}
		free(p);
		return;
	}
	if (m->kind != CCQ_KIND_EVENT)
		return;
	if (m->name_len == 13 && memcmp(m->name, "callback.dial", 13) == 0) {
		ccq_cb_dial(m->body);
		return;
	}
	/* call.dispatch / call.missed about a waiting call */
	if (ccq_map_strcpy(m->body, "call_id", call_id, sizeof(call_id)) != 1)
		return;
	for (p = g_pending; p; p = p->next)
		if (p->h.kind == CCQ_ASYNC_WAIT && strcmp(p->h.call_id, call_id) == 0)
			break;
	if (!p)
		return;
	unlink_pending(p);
	memset(&ccq_async_result, 0, sizeof(ccq_async_result));
	fill_result(m->body);
	resume(p, 0);
	free(p);
}

static void q_read(void)
{
	ssize_t r;
	if (g_in_cap - g_in_len < 16384) {
		size_t cap = g_in_cap ? g_in_cap * 2 : 65536;
		uint8_t *b;
		if (cap > CCQ_FRAME_DEFAULT_MAX * 2 + 65536)
			cap = CCQ_FRAME_DEFAULT_MAX * 2 + 65536;
		if (cap > g_in_cap) {
			if (!(b = realloc(g_in, cap))) {
				q_close("out of memory");
				return;
			}
			g_in = b;
			g_in_cap = cap;
		}
	}
	r = recv(g_qfd, g_in + g_in_len, g_in_cap - g_in_len, MSG_DONTWAIT);
	if (r == 0) {
		q_close("closed by queued");
		return;
	}
	if (r < 0) {
		if (errno != EAGAIN && errno != EINTR)
			q_close(strerror(errno));
		return;
	}
	g_in_len += (size_t)r;
	for (;;) {
		uint32_t n;
		int st = ccq_frame_peek(g_in, g_in_len, CCQ_FRAME_DEFAULT_MAX * 2, &n);
		ccq_msg m;
		char err[160];
		if (st == CCQ_FRAME_NEED_MORE)
			break;
		if (st != CCQ_FRAME_READY) {
			q_close("bad frame from queued");
			return;
		}
		if (ccq_msg_decode(&m, g_in + CCQ_FRAME_HDR, n, err, sizeof(err)) == CCQ_OK)
			on_message(&m);
		else
			LM_WARN("undecodable message from queued: %s\n", err);
		ccq_msg_free(&m);
		if (g_qfd < 0)
			return;
		g_in_len -= CCQ_FRAME_HDR + n;
		memmove(g_in, g_in + CCQ_FRAME_HDR + n, g_in_len);
	}
}

static void q_write(void)
{
	while (g_out_head && g_qfd >= 0) {
		struct outframe *f = g_out_head;
		ssize_t w = send(g_qfd, f->data + f->off, f->len - f->off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno != EAGAIN && errno != EINTR)
				q_close(strerror(errno));
			return;
		}
		f->off += (size_t)w;
		if (f->off < f->len)
			return;
		g_out_head = f->next;
		if (!g_out_head)
			g_out_tail = &g_out_head;
		g_out_count--;
		free(f);
	}
}

static void chan_read(void)
{
	static uint8_t buf[CHAN_MAX];
	for (int i = 0; i < 256; i++) {
		ssize_t n = recv(g_chan[1], buf, sizeof(buf), MSG_DONTWAIT);
		struct chan_hdr *h = (struct chan_hdr *)buf;
		struct pending *p;

		if (n < 0)
			return;
		if ((size_t)n < sizeof(*h) || h->magic != CHAN_MAGIC) {
			LM_ERR("ccq async: malformed message on the internal channel\n");
			continue;
		}
		if (h->kind == CCQ_ASYNC_CB) {
			ccq_cb_on_chan(buf + sizeof(*h), (size_t)n - sizeof(*h));
			continue;
		}
		if (h->kind != CCQ_ASYNC_REPORT) {
			if (!(p = calloc(1, sizeof(*p)))) {
				LM_ERR("ccq async: out of memory\n");
				continue;
			}
			p->h = *h;
			p->h.call_id[sizeof(p->h.call_id) - 1] = '\0';
			p->deadline = mono_ms() + h->timeout_ms;
			p->next = g_pending;
			g_pending = p;
		}
		if (g_qfd < 0 && h->kind != CCQ_ASYNC_REPORT) {
			/* a decision we cannot get falls back at once (expire()); a wait
			 * is registered when the connection is back (rewait_all()) */
			continue;
		}
		q_buffer_kind(buf + sizeof(*h), (size_t)n - sizeof(*h), (int)h->kind);
	}
}

static void expire(void)
{
	long long now = mono_ms();
	struct pending *p, *next;

	for (p = g_pending; p; p = next) {
		next = p->next;
		if (p->h.kind == CCQ_ASYNC_CALL && g_qfd < 0)
			p->deadline = 0;
		if (p->deadline > now)
			continue;
		unlink_pending(p);
		if (p->h.kind == CCQ_ASYNC_WAIT) {
			memset(&ccq_async_result, 0, sizeof(ccq_async_result));
			snprintf(ccq_async_result.action, sizeof(ccq_async_result.action), "missed");
			ccq_async_result.code = 480;
			snprintf(ccq_async_result.reason, sizeof(ccq_async_result.reason),
				"Temporarily Unavailable");
			snprintf(ccq_async_result.error, sizeof(ccq_async_result.error),
				"no answer from queued before the wait deadline");
			resume(p, 0);
		} else {
			fallback(p, g_qfd < 0 ? "queued unreachable" : "queued did not answer in time", 0);
		}
		free(p);
	}
}

static void async_loop(void)
{
	for (;;) {
		struct pollfd pfd[3];
		int n = 1, qi = -1, timeout = 50;

		cfg_update();
		q_connect();
		pfd[0].fd = g_chan[1];
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		if (g_qfd >= 0) {
			qi = n++;
			pfd[qi].fd = g_qfd;
			pfd[qi].events = POLLIN | (g_out_head ? POLLOUT : 0);
			pfd[qi].revents = 0;
		}
		if (g_bl_head) {
			/* resumes wait for room in the pool's socket */
			pfd[n].fd = g_rchan[0];
			pfd[n].events = POLLOUT;
			pfd[n].revents = 0;
			n++;
		}
		if (poll(pfd, n, timeout) < 0 && errno != EINTR) {
			LM_ERR("ccq async: poll: %s\n", strerror(errno));
			sleep(1);
			continue;
		}
		if (g_bl_head)
			backlog_flush();
		if (pfd[0].revents & POLLIN)
			chan_read();
		if (qi >= 0 && g_qfd >= 0 && (pfd[qi].revents & (POLLIN | POLLHUP | POLLERR)))
			q_read();
		if (g_qfd >= 0 && g_out_head)
			q_write();
		expire();
		ccq_cb_tick();
	}
}

/*
 * A resume process: takes one hand-over at a time from the pool's socket
 * and runs its route. Several of them run resumed routes side by side, so
 * that no single process carries every call's resumed route.
 */
static void resume_loop(void)
{
	static struct resume_msg m;
	for (;;) {
		ssize_t n = recv(g_rchan[1], &m, sizeof(m), 0);
		if (n < 0) {
			if (errno != EINTR && errno != EAGAIN) {
				LM_ERR("ccq resume: recv: %s\n", strerror(errno));
				sleep(1);
			}
			continue;
		}
		if ((size_t)n < RESUME_MIN_LEN || m.magic != RESUME_MAGIC
				|| (size_t)n != resume_len(&m)) {
			LM_ERR("ccq resume: malformed hand-over (%zd bytes)\n", n);
			continue;
		}
		m.call_id[sizeof(m.call_id) - 1] = '\0';
		memset((char *)&m + n, 0, sizeof(m) - (size_t)n); /* targets not sent */
		cfg_update();
		resume_run(&m);
	}
}

/*
 * Fork one of the module's processes (slot: a resume process's number, -1
 * for the async process). The other modules set it up as they do an RPC
 * process (tm, rtpengine, usrloc, auth): resumed routes relay, authenticate
 * and touch media there. g_chan[0] stays open in it: a resumed route may
 * suspend again (ring failed, wait in the queue) and hand over a new
 * request like a SIP worker. Returns 0 in the parent, -1 on failure.
 */
static int fork_ours(const char *name, int slot, void (*loop)(void))
{
	int pid = fork_process(PROC_NOCHLDINIT, (char *)name, 1);
	if (pid != 0)
		return pid < 0 ? -1 : 0;
	if (slot >= 0)
		g_resume_slot = slot;
	else
		g_async_pid = getpid();
	if (init_child(PROC_RPC) < 0) {
		LM_ERR("child init for the %s process failed\n", name);
		return -1;
	}
	if (cfg_child_init())
		return -1;
	loop();
	exit(0);
}

int ccq_async_fork(void)
{
	for (int i = 0; i < ccq_resume_procs; i++) {
		char name[32];
		snprintf(name, sizeof(name), "ccq resume %d", i + 1);
		if (fork_ours(name, i, resume_loop) < 0)
			return -1;
	}
	return fork_ours("ccq async", -1, async_loop);
}
