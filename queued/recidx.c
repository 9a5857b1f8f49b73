/* The recording indexer: the loop's timer and the file readers; see recidx.h. */
#define _GNU_SOURCE /* strptime */
#include "recidx.h"
#include "ops.h"
#include "server.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <openssl/evp.h>

extern const struct op_def recidx_index_op; /* ops_recording.c */

/* ---- loop side ------------------------------------------------------------- */

static struct ev_loop *g_loop;
static ev_timer g_tick, g_soon;
static char g_dir[PATH_MAX];      /* loop only: the worker gets it in the request */
static int g_running;             /* a run is on the worker */
static int g_ok, g_more;          /* what the running run reported (after()) */
static ev_tstamp g_pause_until;   /* after a failed run (MySQL away) */

static void index_done(void)
{
	g_running = 0;
	if (!g_ok) {
		/* the failure is logged by the framework: not every 2 s */
		g_pause_until = ev_now(g_loop) + 10.;
		return;
	}
	if (g_more && !ev_is_active(&g_soon)) {
		/* a backlog: go on soon, letting other jobs in between */
		ev_timer_set(&g_soon, 0.2, 0.);
		ev_timer_start(g_loop, &g_soon);
	}
}

static void run_index(void)
{
	ccq_enc e;

	if (!g_dir[0] || g_running || server_shutting_down() || ev_now(g_loop) < g_pause_until)
		return;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 0, "recording.index", 1);
	ccq_pack_kv_str(&e.pk, "dir", g_dir);
	g_running = 1;
	g_ok = g_more = 0;
	if (ops_submit_internal(&recidx_index_op, &e, index_done) < 0)
		g_running = 0;
	ccq_enc_free(&e);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	run_index();
}

void recidx_ran(int more)
{
	g_ok = 1;
	g_more = more;
}

void recidx_reconfigure(const struct queued_config *cfg)
{
	if (strcmp(g_dir, cfg->recording_dir) == 0)
		return;
	snprintf(g_dir, sizeof(g_dir), "%s", cfg->recording_dir);
	if (g_dir[0])
		LOG_N("recordings: indexing %s/metadata every 2 s", g_dir);
	else
		LOG_N("recordings: not indexed (no recording_dir)");
}

void recidx_init(struct ev_loop *loop, const struct queued_config *cfg)
{
	g_loop = loop;
	recidx_reconfigure(cfg);
	ev_timer_init(&g_tick, on_tick, 2.0, 2.0);
	ev_timer_start(loop, &g_tick);
	ev_timer_init(&g_soon, on_tick, 0.2, 0.);
}

void recidx_stop(void)
{
	ev_timer_stop(g_loop, &g_tick);
	ev_timer_stop(g_loop, &g_soon);
}

int rec_hash_file(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen)
{
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx;
	struct stat st;
	ssize_t n;
	int fd, e = 0;

	*size = 0;
	hex[0] = '\0';
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return e;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode)) {
		e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		snprintf(err, errlen, "%s: not a regular file", path);
		close(fd);
		return e;
	}
	if (!(ctx = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(ctx);
		close(fd);
		snprintf(err, errlen, "%s: SHA-256 is not available", path);
		return ENOMEM;
	}
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			e = errno;
			snprintf(err, errlen, "%s: read: %s", path, strerror(e));
			break;
		}
		*size += (uint64_t)n;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	}
	close(fd);
	if (!e && !EVP_DigestFinal_ex(ctx, md, &mdlen)) {
		e = EIO;
		snprintf(err, errlen, "%s: SHA-256 failed", path);
	}
	EVP_MD_CTX_free(ctx);
	if (e)
		return e;
	for (unsigned i = 0; i < mdlen && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}
