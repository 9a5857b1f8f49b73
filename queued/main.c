/*
 * queued: the ccq queue daemon. See queued(8).
 *
 * Start-up: parse and check the config, connect to MySQL (retrying with
 * backoff), apply migrations, listen, run the loop. SIGHUP re-reads the
 * config and swaps it only if it is valid; SIGTERM/SIGINT stop accepting,
 * drain in-flight work and exit, or exit anyway at the shutdown deadline.
 */
#include "ccq_config.h"
#include "config.h"
#include "log.h"
#include "db.h"
#include "migrate.h"
#include "server.h"
#include "ops.h"
#include "calls.h"
#include "callbacks.h"
#include "recidx.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <ev.h>

#ifndef CCQ_SQL_DIR
#define CCQ_SQL_DIR "/usr/share/ccq/sql"
#endif
#ifndef CCQ_SYSCONF
#define CCQ_SYSCONF "/etc/ccq"
#endif

static const char *g_conf_path = CCQ_SYSCONF "/queued.conf";
static struct queued_config g_cfg;
static volatile sig_atomic_t g_early_stop;
static ev_timer g_drain_timer, g_deadline_timer;
static int g_stopping;
static int g_abandon;  /* stop without waiting for the MySQL worker */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: queued [-c FILE] [-t] [-h] [-V]\n"
		"\n"
		"The ccq queue daemon: transactions, queues and journeys in MySQL,\n"
		"served over length-framed msgpack on a unix socket and/or TCP.\n"
		"It stays in the foreground; run it under systemd or the lab script.\n"
		"\n"
		"  -c FILE  configuration file (default %s)\n"
		"  -t       check the configuration and exit (0 if valid)\n"
		"  -V       print the version and exit\n"
		"  -h       this help\n"
		"\n"
		"Signals: SIGHUP reloads the configuration (an invalid one is refused and\n"
		"the running one kept); SIGTERM and SIGINT shut down cleanly.\n"
		"See queued(8) and cfg/queued.conf for every setting.\n",
		CCQ_SYSCONF "/queued.conf");
}

static void early_signal(int sig)
{
	(void)sig;
	g_early_stop = 1;
}

/* Sleep in small steps so that SIGTERM during start-up is honoured. */
static int sleep_unless_stopped(unsigned ms)
{
	while (ms > 0 && !g_early_stop) {
		struct timespec ts = { 0, 100 * 1000000L };
		nanosleep(&ts, NULL);
		ms = ms > 100 ? ms - 100 : 0;
	}
	return g_early_stop ? -1 : 0;
}

static MYSQL *connect_with_backoff(void)
{
	unsigned delay = 1000;
	for (;;) {
		char err[600];
		MYSQL *m = db_connect(&g_cfg, err, sizeof(err));
		if (m)
			return m;
		LOG_W("%s; retrying in %u s", err, delay / 1000);
		if (sleep_unless_stopped(delay) < 0)
			return NULL;
		if (delay < 30000)
			delay *= 2;
		if (delay > 30000)
			delay = 30000;
	}
}

static void write_pid_file(void)
{
	FILE *f;
	if (!g_cfg.pid_file[0])
		return;
	f = fopen(g_cfg.pid_file, "w");
	if (!f) {
		LOG_W("cannot write pid file %s: %s", g_cfg.pid_file, strerror(errno));
		return;
	}
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct queued_config nc;
	char err[600];
	(void)loop; (void)w; (void)revents;

	config_defaults(&nc, CCQ_SQL_DIR);
	if (config_load(g_conf_path, &nc, err, sizeof(err)) < 0) {
		LOG_E("reload refused, keeping the running configuration: %s", err);
		return;
	}
	if (strcmp(nc.listen_unix, g_cfg.listen_unix) || strcmp(nc.listen_tcp, g_cfg.listen_tcp))
		LOG_W("reload: listen addresses changed; they take effect at the next restart");
	if (strcmp(nc.pid_file, g_cfg.pid_file))
		LOG_W("reload: pid_file changed; it takes effect at the next restart");
	strcpy(nc.listen_unix, g_cfg.listen_unix);
	strcpy(nc.listen_tcp, g_cfg.listen_tcp);
	strcpy(nc.pid_file, g_cfg.pid_file);
	g_cfg = nc;
	log_setup(g_cfg.log_syslog, g_cfg.log_level);
	server_reconfigure(&g_cfg);
	db_set_config(&g_cfg);
	callbacks_reconfigure(&g_cfg);
	recidx_reconfigure(&g_cfg);
	calls_reconfigure(&g_cfg);
	ops_reconfigure(&g_cfg);
	LOG_N("configuration reloaded from %s (log level %s, max_frame %u)", g_conf_path,
		log_level_name(g_cfg.log_level), g_cfg.max_frame);
}

static void on_drain_check(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	/* an answered decision whose writes wait to be retried is in-flight
	 * work too (see req_answer_now) */
	if (db_pending() == 0 && server_drained() && ops_rewrites_pending() == 0) {
		LOG_N("all in-flight work finished");
		ev_break(loop, EVBREAK_ALL);
	}
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	LOG_W("shutdown deadline of %u s reached with %u database jobs pending; exiting anyway",
		g_cfg.shutdown_timeout, db_pending());
	g_abandon = 1;
	ev_break(loop, EVBREAK_ALL);
}

static void on_term(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	if (g_stopping) {
		LOG_N("second stop signal: exiting now");
		g_abandon = db_pending() > 0;
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	g_stopping = 1;
	LOG_N("received %s: no new connections or requests; finishing in-flight work "
		"(deadline %u s)", strsignal(w->signum), g_cfg.shutdown_timeout);
	server_stop_listening();
	server_begin_shutdown();
	ev_timer_init(&g_drain_timer, on_drain_check, 0., 0.05);
	ev_timer_start(loop, &g_drain_timer);
	ev_timer_init(&g_deadline_timer, on_deadline, g_cfg.shutdown_timeout, 0.);
	ev_timer_start(loop, &g_deadline_timer);
}

int main(int argc, char **argv)
{
	int check_only = 0, opt, schema = 0;
	char err[600];
	struct ev_loop *loop;
	ev_signal s_hup, s_term, s_int;
	MYSQL *m;
	struct sigaction sa;

	while ((opt = getopt(argc, argv, "c:thV")) != -1) {
		switch (opt) {
		case 'c': g_conf_path = optarg; break;
		case 't': check_only = 1; break;
		case 'V': printf("queued %s (protocol %d, schema %d)\n", PACKAGE_VERSION,
				CCQ_PROTO_VERSION, CCQ_SCHEMA_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "queued: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	config_defaults(&g_cfg, CCQ_SQL_DIR);
	if (config_load(g_conf_path, &g_cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "queued: %s\n", err);
		return 1;
	}
	if (check_only) {
		printf("queued: configuration %s is valid\n", g_conf_path);
		return 0;
	}
	log_setup(g_cfg.log_syslog, g_cfg.log_level);
	LOG_N("queued %s starting (config %s)", PACKAGE_VERSION, g_conf_path);

	signal(SIGPIPE, SIG_IGN);
	/* a reload before the loop runs would kill the process: ignore it until
	 * the loop's own handler is installed */
	signal(SIGHUP, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = early_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	if (!(m = connect_with_backoff())) {
		LOG_N("stopped before MySQL became reachable");
		return 1;
	}
	if (migrate(m, g_cfg.sql_dir, &schema, err, sizeof(err)) < 0) {
		LOG_E("%s", err);
		mysql_close(m);
		return 1;
	}
	LOG_N("database schema at version %d", schema);
	ops_set_schema(schema);

	loop = ev_default_loop(EVFLAG_AUTO);
	if (server_listen(loop, &g_cfg, err, sizeof(err)) < 0) {
		LOG_E("%s", err);
		mysql_close(m);
		return 1;
	}
	if (db_start(loop, &g_cfg, m) < 0) {
		server_stop_listening();
		return 1;
	}
	calls_init(loop);
	calls_reconfigure(&g_cfg);
	ops_reconfigure(&g_cfg);
	callbacks_init(loop, &g_cfg);
	recidx_init(loop, &g_cfg);
	write_pid_file();

	ev_signal_init(&s_hup, on_hup, SIGHUP);
	ev_signal_init(&s_term, on_term, SIGTERM);
	ev_signal_init(&s_int, on_term, SIGINT);
	ev_signal_start(loop, &s_hup);
	ev_signal_start(loop, &s_term);
	ev_signal_start(loop, &s_int);
	if (g_early_stop)
		ev_feed_signal(SIGTERM);
	LOG_N("ready");

	ev_run(loop, 0);

	server_stop_listening();
	if (g_abandon) {
		/* the worker may be stuck in MySQL: do not join it; nothing unacknowledged
		 * is lost, since replies are only sent after the commit */
		if (g_cfg.pid_file[0])
			unlink(g_cfg.pid_file);
		LOG_N("stopped (abandoned %u database jobs)", db_pending());
		_exit(1);
	}
	calls_stop();
	callbacks_stop();
	recidx_stop();
	db_stop();
	server_close_all();
	if (g_cfg.pid_file[0])
		unlink(g_cfg.pid_file);
	LOG_N("stopped");
	return 0;
}
