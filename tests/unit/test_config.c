/* Unit tests for queued's configuration parser (queued/config.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"
#include "log.h"

#define MINIMAL "listen_unix = /tmp/q.sock\nmysql_socket = /tmp/m.sock\n" \
	"mysql_user = ccq\nmysql_database = ccq\n"

static int parse(const char *text, struct queued_config *c, char *err, size_t n)
{
	config_defaults(c, "/usr/share/ccq/sql");
	return config_parse(text, "test.conf", c, err, n);
}

static void test_minimal_and_defaults(void **state)
{
	struct queued_config c;
	char err[512] = "";
	(void)state;
	assert_int_equal(parse(MINIMAL, &c, err, sizeof(err)), 0);
	assert_string_equal(c.listen_unix, "/tmp/q.sock");
	assert_string_equal(c.mysql_user, "ccq");
	assert_int_equal(c.mysql_connect_timeout, 5);
	assert_int_equal(c.max_frame, 1024 * 1024);
	assert_int_equal(c.log_level, LOG_INFO);
	assert_int_equal(c.log_syslog, 0);
	assert_int_equal(c.listen_unix_mode, 0660);
	assert_string_equal(c.sql_dir, "/usr/share/ccq/sql");
	/* callbacks are off until a secret is set */
	assert_string_equal(c.callback_secret, "");
	assert_int_equal(c.callback_ring_timeout, 30);
	assert_int_equal(c.callback_attempts, 3);
	assert_int_equal(c.callback_retry_delay, 300);
	assert_int_equal(c.callback_expiry, 86400);
	assert_int_equal(c.schedule_grace, 3600);
	assert_int_equal(c.max_call_duration, 14400);
	assert_int_equal(c.mysql_workers, 3);
	assert_int_equal(c.decision_workers, 2);
	assert_int_equal(c.shed_after, 250);
	assert_int_equal(c.report_batch, 16);
	assert_int_equal(c.report_linger, 10);
	/* recordings are not indexed until recording_dir is set */
	assert_string_equal(c.recording_dir, "");
}

static void test_all_keys(void **state)
{
	struct queued_config c;
	char err[512] = "";
	const char *text =
		"# comment\n"
		"   \n"
		"listen_unix = /run/ccq/queued.sock\n"
		"listen_unix_mode = 0600\n"
		"listen_tcp = 127.0.0.1:7070   # trailing comment\n"
		"mysql_host = db.example\n"
		"mysql_port = 3307\n"
		"mysql_user = ccq\n"
		"mysql_password = \"p#ss word \"\n"
		"mysql_database = ccq\n"
		"mysql_connect_timeout = 2\n"
		"mysql_read_timeout = 3\n"
		"mysql_write_timeout = 4\n"
		"mysql_workers = 5\n"
		"decision_workers = 1\n"
		"shed_after = 0\n"
		"report_batch = 1\n"
		"report_linger = 0\n"
		"sql_dir = /opt/ccq/sql\n"
		"log = syslog\n"
		"log_level = debug\n"
		"max_frame = 64k\n"
		"max_clients = 10\n"
		"shutdown_timeout = 7\n"
		"pid_file = /run/ccq/queued.pid\n"
		"callback_secret = \"0123456789abcdef 0123456789abcdef\"\n"
		"callback_ring_timeout = 20\n"
		"callback_attempts = 5\n"
		"callback_retry_delay = 60\n"
		"callback_expiry = 3600\n"
		"schedule_grace = 0\n"
		"max_call_duration = 600\n"
		"recording_dir = /var/spool/rtpengine\n";
	(void)state;
	assert_int_equal(parse(text, &c, err, sizeof(err)), 0);
	assert_int_equal(c.listen_unix_mode, 0600);
	assert_string_equal(c.listen_tcp, "127.0.0.1:7070");
	assert_string_equal(c.mysql_password, "p#ss word ");
	assert_int_equal(c.mysql_port, 3307);
	assert_int_equal(c.mysql_read_timeout, 3);
	assert_int_equal(c.mysql_workers, 5);
	assert_int_equal(c.decision_workers, 1);
	assert_int_equal(c.shed_after, 0);
	assert_int_equal(c.report_batch, 1);
	assert_int_equal(c.report_linger, 0);
	assert_int_equal(c.log_syslog, 1);
	assert_int_equal(c.log_level, LOG_DEBUG);
	assert_int_equal(c.max_frame, 65536);
	assert_int_equal(c.max_clients, 10);
	assert_int_equal(c.shutdown_timeout, 7);
	assert_string_equal(c.sql_dir, "/opt/ccq/sql");
	assert_string_equal(c.callback_secret, "0123456789abcdef 0123456789abcdef");
	assert_int_equal(c.callback_ring_timeout, 20);
	assert_int_equal(c.callback_attempts, 5);
	assert_int_equal(c.callback_retry_delay, 60);
	assert_int_equal(c.callback_expiry, 3600);
	assert_int_equal(c.schedule_grace, 0);
	assert_int_equal(c.max_call_duration, 600);
	assert_string_equal(c.recording_dir, "/var/spool/rtpengine");
}

struct bad_case {
	const char *text;
	const char *expect; /* substring of the error */
};

static void test_bad_values(void **state)
{
	static const struct bad_case cases[] = {
		{ MINIMAL "log_level = loud\n", "'log_level'" },
		{ MINIMAL "log = file\n", "'log'" },
		{ MINIMAL "mysql_port = 0\n", "'mysql_port'" },
		{ MINIMAL "decision_workers = 32\n", "'decision_workers'" },
		{ MINIMAL "report_batch = 0\n", "'report_batch'" },
		{ MINIMAL "report_batch = 65\n", "'report_batch'" },
		{ MINIMAL "report_linger = 1001\n", "'report_linger'" },
		{ MINIMAL "mysql_port = 70000\n", "'mysql_port'" },
		{ MINIMAL "mysql_port = 12ab\n", "'mysql_port'" },
		{ MINIMAL "mysql_port = -1\n", "'mysql_port'" },
		{ MINIMAL "max_frame = 100\n", "'max_frame'" },
		{ MINIMAL "max_frame = 17m\n", "'max_frame'" },
		{ MINIMAL "shutdown_timeout =\n", "'shutdown_timeout'" },
		{ MINIMAL "listen_unix_mode = 999\n", "'listen_unix_mode'" },
		{ MINIMAL "frobnicate = 1\n", "unknown key 'frobnicate'" },
		{ MINIMAL "mysql_user = other\n", "'mysql_user' is set twice" },
		{ MINIMAL "just some words\n", "expected 'key = value'" },
		{ MINIMAL "mysql_password = \"open\n", "unterminated" },
		{ "mysql_socket = /s\nmysql_user = u\nmysql_database = d\n", "listen_unix" },
		{ "listen_unix = /q\nmysql_socket = /s\nmysql_database = d\n", "'mysql_user' is missing" },
		{ "listen_unix = /q\nmysql_socket = /s\nmysql_user = u\n", "'mysql_database' is missing" },
		{ "listen_unix = /q\nmysql_user = u\nmysql_database = d\n", "mysql_socket" },
		{ MINIMAL "callback_ring_timeout = 4\n", "'callback_ring_timeout'" },
		{ MINIMAL "callback_ring_timeout = 301\n", "'callback_ring_timeout'" },
		{ MINIMAL "callback_attempts = 0\n", "'callback_attempts'" },
		{ MINIMAL "callback_attempts = 21\n", "'callback_attempts'" },
		{ MINIMAL "callback_retry_delay = 0\n", "'callback_retry_delay'" },
		{ MINIMAL "callback_expiry = 59\n", "'callback_expiry'" },
		{ MINIMAL "schedule_grace = -5\n", "'schedule_grace'" },
		{ MINIMAL "callback_secret = short\n", "shorter than 16" },
		{ MINIMAL "callback_secret = 0123456789abcdef\n"
			"callback_secret_file = " TEST_DATA_DIR "/callback.secret\n", "not both" },
		{ MINIMAL "callback_secret_file = " TEST_DATA_DIR "/does-not-exist.secret\n",
			"cannot open callback_secret_file" },
		{ MINIMAL "callback_secret_file = " TEST_DATA_DIR "/callback-empty.secret\n", "is empty" },
		{ MINIMAL "callback_secret_file = " TEST_DATA_DIR "/callback-short.secret\n",
			"callback-short.secret is shorter than 16" },
		{ MINIMAL "recording_dir = spool/rtpengine\n", "'recording_dir' must be an absolute path" },
		{ MINIMAL "recording_dir = /a\nrecording_dir = /b\n", "'recording_dir' is set twice" },
	};
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct queued_config c;
		char err[512] = "";
		int rc = parse(cases[i].text, &c, err, sizeof(err));
		if (rc != -1 || !strstr(err, cases[i].expect))
			fail_msg("case %zu: rc=%d err='%s', expected '%s'", i, rc, err, cases[i].expect);
	}
}

static void test_error_names_line(void **state)
{
	struct queued_config c;
	char err[512] = "";
	(void)state;
	assert_int_equal(parse("listen_unix = /q\n\n# x\nmysql_port = abc\n", &c, err,
		sizeof(err)), -1);
	assert_non_null(strstr(err, "test.conf:4"));
}

static void test_too_long_value(void **state)
{
	struct queued_config c;
	char err[512] = "", text[1024];
	char longpath[300];
	(void)state;
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[sizeof(longpath) - 1] = '\0';
	snprintf(text, sizeof(text), MINIMAL "pid_file = /x\nmysql_host = %s\n", longpath);
	assert_int_equal(parse(text, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "'mysql_host' is longer"));
}

static void test_load_files(void **state)
{
	struct queued_config c;
	char err[512] = "";
	(void)state;
	config_defaults(&c, "/x");
	assert_int_equal(config_load(TEST_DATA_DIR "/does-not-exist.conf", &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open config file"));
	config_defaults(&c, "/x");
	assert_int_equal(config_load(TEST_DATA_DIR "/good.conf", &c, err, sizeof(err)), 0);
	assert_string_equal(c.mysql_database, "ccq");
}

static void test_callback_secret_file(void **state)
{
	struct queued_config c;
	char err[512] = "";
	(void)state;
	/* the file's content without the white space around it */
	assert_int_equal(parse(MINIMAL "callback_secret_file = " TEST_DATA_DIR "/callback.secret\n",
		&c, err, sizeof(err)), 0);
	assert_string_equal(c.callback_secret, "0123456789abcdef0123456789abcdef");
	assert_string_equal(c.callback_secret_file, TEST_DATA_DIR "/callback.secret");
}

static void test_recording_dir(void **state)
{
	struct queued_config c;
	char err[512] = "";
	(void)state;
	/* trailing slashes go: queued adds /metadata, /indexed and /pcaps */
	assert_int_equal(parse(MINIMAL "recording_dir = /var/spool/rtpengine//\n", &c, err,
		sizeof(err)), 0);
	assert_string_equal(c.recording_dir, "/var/spool/rtpengine");
	assert_int_equal(parse(MINIMAL "recording_dir = /\n", &c, err, sizeof(err)), 0);
	assert_string_equal(c.recording_dir, "/");
	/* empty: no indexing */
	assert_int_equal(parse(MINIMAL "recording_dir =\n", &c, err, sizeof(err)), 0);
	assert_string_equal(c.recording_dir, "");
	/* from a file too */
	config_defaults(&c, "/x");
	assert_int_equal(config_load(TEST_DATA_DIR "/recording.conf", &c, err, sizeof(err)), 0);
	assert_string_equal(c.recording_dir, "/var/spool/rtpengine");
}

static void test_log_levels(void **state)
{
	(void)state;
	assert_int_equal(log_level_parse("ERROR"), LOG_ERR);
	assert_int_equal(log_level_parse("warning"), LOG_WARNING);
	assert_int_equal(log_level_parse("bogus"), -1);
	assert_string_equal(log_level_name(LOG_NOTICE), "notice");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal_and_defaults),
		cmocka_unit_test(test_all_keys),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_error_names_line),
		cmocka_unit_test(test_too_long_value),
		cmocka_unit_test(test_load_files),
		cmocka_unit_test(test_callback_secret_file),
		cmocka_unit_test(test_recording_dir),
		cmocka_unit_test(test_log_levels),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
