/*
 * queued.conf parser. Every key is known and typed; an unknown key, a bad
 * value or a missing required key is an error that names it, so that
 * `queued -t` and SIGHUP catch mistakes before they take effect.
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HARD_MAX_FRAME (16u * 1024u * 1024u)

void config_defaults(struct queued_config *c, const char *default_sql_dir)
{
	memset(c, 0, sizeof(*c));
	c->listen_unix_mode = 0660;
	c->mysql_port = 3306;
	c->mysql_connect_timeout = 5;
	c->mysql_read_timeout = 10;
	c->mysql_write_timeout = 10;
	c->mysql_workers = 3;
	c->decision_workers = 2;
	c->shed_after = 250;
	c->report_batch = 16;
	c->report_linger = 10;
	snprintf(c->sql_dir, sizeof(c->sql_dir), "%s", default_sql_dir ? default_sql_dir : "");
	c->log_level = LOG_INFO;
	c->max_frame = 1024u * 1024u;
	c->max_clients = 1024;
	c->shutdown_timeout = 10;
	c->callback_ring_timeout = 30;
	c->callback_attempts = 3;
	c->callback_retry_delay = 300;
	c->callback_expiry = 86400;
	c->schedule_grace = 3600;
	c->max_call_duration = 14400;
}

enum kind { K_STR, K_UINT, K_OCTAL, K_LOG, K_LOGLEVEL, K_SIZE };

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	size_t size;          /* K_STR: buffer size */
	unsigned long min, max;
};

#define S(f) K_STR, offsetof(struct queued_config, f), sizeof(((struct queued_config *)0)->f), 0, 0
#define U(f, lo, hi) K_UINT, offsetof(struct queued_config, f), 0, lo, hi

static const struct key keys[] = {
	{ "listen_unix", S(listen_unix) },
	{ "listen_unix_mode", K_OCTAL, offsetof(struct queued_config, listen_unix_mode), 0, 0, 0777 },
	{ "listen_tcp", S(listen_tcp) },
	{ "mysql_host", S(mysql_host) },
	{ "mysql_port", U(mysql_port, 1, 65535) },
	{ "mysql_socket", S(mysql_socket) },
	{ "mysql_user", S(mysql_user) },
	{ "mysql_password", S(mysql_password) },
	{ "mysql_database", S(mysql_database) },
	{ "mysql_connect_timeout", U(mysql_connect_timeout, 1, 300) },
	{ "mysql_read_timeout", U(mysql_read_timeout, 1, 3600) },
	{ "mysql_write_timeout", U(mysql_write_timeout, 1, 3600) },
	{ "mysql_workers", U(mysql_workers, 1, 32) },
	{ "decision_workers", U(decision_workers, 0, 31) },
	{ "shed_after", U(shed_after, 0, 60000) },
	{ "report_batch", U(report_batch, 1, 64) },
	{ "report_linger", U(report_linger, 0, 1000) },
	{ "sql_dir", S(sql_dir) },
	{ "log", K_LOG, offsetof(struct queued_config, log_syslog), 0, 0, 0 },
	{ "log_level", K_LOGLEVEL, offsetof(struct queued_config, log_level), 0, 0, 0 },
	{ "max_frame", K_SIZE, offsetof(struct queued_config, max_frame), 0, 1024, HARD_MAX_FRAME },
	{ "max_clients", U(max_clients, 1, 100000) },
	{ "shutdown_timeout", U(shutdown_timeout, 1, 3600) },
	{ "pid_file", S(pid_file) },
	{ "operators", S(operators) },
	{ "callback_secret", S(callback_secret) },
	{ "callback_secret_file", S(callback_secret_file) },
	{ "callback_ring_timeout", U(callback_ring_timeout, 5, 300) },
	{ "callback_attempts", U(callback_attempts, 1, 20) },
	{ "callback_retry_delay", U(callback_retry_delay, 1, 86400) },
	{ "callback_expiry", U(callback_expiry, 60, 2592000) },
	{ "schedule_grace", U(schedule_grace, 0, 604800) },
	{ "max_call_duration", U(max_call_duration, 0, 604800) },
	{ "recording_dir", S(recording_dir) },
};

#define ERR(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)

static char *trim(char *s)
{
	char *e;
	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

/* "1048576", "64k", "1m" */
static int parse_size(const char *v, unsigned long *out)
{
	char *end;
	unsigned long n;
	errno = 0;
	if (!isdigit((unsigned char)*v))
		return -1;
	n = strtoul(v, &end, 10);
	if (errno)
		return -1;
	if (*end == 'k' || *end == 'K') {
		n *= 1024;
		end++;
	} else if (*end == 'm' || *end == 'M') {
		n *= 1024 * 1024;
		end++;
	}
	if (*end)
		return -1;
	*out = n;
	return 0;
}

static int set_key(struct queued_config *c, const struct key *k, const char *v,
		const char *where, char *err, size_t errlen)
{
	char *base = (char *)c + k->off;
	char *end;
	unsigned long n;

	switch (k->kind) {
	case K_STR:
		if (strlen(v) >= k->size)
			ERR("%s: value of '%s' is longer than %zu characters", where, k->name,
				k->size - 1);
		strcpy(base, v);
		return 0;
	case K_UINT:
		errno = 0;
		n = strtoul(v, &end, 10);
		if (!*v || *end || errno || !isdigit((unsigned char)*v) || n < k->min || n > k->max)
			ERR("%s: '%s' must be a whole number from %lu to %lu, not '%s'", where,
				k->name, k->min, k->max, v);
		*(unsigned *)base = (unsigned)n;
		return 0;
	case K_OCTAL:
		errno = 0;
		n = strtoul(v, &end, 8);
		if (!*v || *end || errno || n > k->max)
			ERR("%s: '%s' must be octal permissions like 0660, not '%s'", where, k->name, v);
		*(unsigned *)base = (unsigned)n;
		return 0;
	case K_SIZE:
		if (parse_size(v, &n) < 0 || n < k->min || n > k->max)
			ERR("%s: '%s' must be a size from %lu to %lu bytes (k and m suffixes allowed), not '%s'",
				where, k->name, k->min, k->max, v);
		*(uint32_t *)base = (uint32_t)n;
		return 0;
	case K_LOG:
		if (strcasecmp(v, "stderr") == 0)
			*(int *)base = 0;
		else if (strcasecmp(v, "syslog") == 0)
			*(int *)base = 1;
		else
			ERR("%s: 'log' must be 'stderr' or 'syslog', not '%s'", where, v);
		return 0;
	case K_LOGLEVEL: {
		int l = log_level_parse(v);
		if (l < 0)
			ERR("%s: 'log_level' must be one of error, warning, notice, info, debug, not '%s'",
				where, v);
		*(int *)base = l;
		return 0;
	}
	}
	return -1;
}

/* callback_secret_file: the secret is the file's content without the
 * white space around it (a trailing newline is usual). */
static int read_secret_file(struct queued_config *c, const char *name, char *err, size_t errlen)
{
	char buf[sizeof(c->callback_secret) + 64], *s;
	FILE *f = fopen(c->callback_secret_file, "r");
	size_t n;

	if (!f)
		ERR("%s: cannot open callback_secret_file %s: %s", name, c->callback_secret_file,
			strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	if (ferror(f)) {
		fclose(f);
		ERR("%s: cannot read callback_secret_file %s", name, c->callback_secret_file);
	}
	fclose(f);
	buf[n] = '\0';
	if (memchr(buf, '\0', n))
		ERR("%s: callback_secret_file %s contains a NUL byte", name, c->callback_secret_file);
	s = trim(buf);
	if (!*s)
		ERR("%s: callback_secret_file %s is empty", name, c->callback_secret_file);
	if (strlen(s) >= sizeof(c->callback_secret))
		ERR("%s: the secret in callback_secret_file %s is longer than %zu characters", name,
			c->callback_secret_file, sizeof(c->callback_secret) - 1);
	strcpy(c->callback_secret, s);
	memset(buf, 0, sizeof(buf));
	return 0;
}

int config_parse(const char *text, const char *name, struct queued_config *c,
		char *err, size_t errlen)
{
	unsigned lineno = 0;
	unsigned char seen[sizeof(keys) / sizeof(keys[0])] = { 0 };
	const char *p = text;

	while (*p) {
		char line[4096], where[512];
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		char *s, *eq, *key, *val;
		const struct key *k = NULL;
		size_t i;

		lineno++;
		snprintf(where, sizeof(where), "%s:%u", name, lineno);
		if (n >= sizeof(line))
			ERR("%s: line longer than %zu characters", where, sizeof(line) - 1);
		memcpy(line, p, n);
		line[n] = '\0';
		p = nl ? nl + 1 : p + n;

		s = trim(line);
		if (!*s || *s == '#')
			continue;
		eq = strchr(s, '=');
		if (!eq)
			ERR("%s: expected 'key = value', got '%s'", where, s);
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		/* a value may be quoted to keep leading/trailing spaces or a '#' */
		if (val[0] == '"') {
			size_t vl = strlen(val);
			if (vl < 2 || val[vl - 1] != '"')
				ERR("%s: unterminated quoted value for '%s'", where, key);
			val[vl - 1] = '\0';
			val++;
		} else {
			char *hash = strstr(val, " #");
			if (hash) {
				*hash = '\0';
				val = trim(val);
			}
		}
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			if (strcmp(keys[i].name, key) == 0) {
				k = &keys[i];
				break;
			}
		}
		if (!k)
			ERR("%s: unknown key '%s'", where, key);
		if (seen[i])
			ERR("%s: '%s' is set twice", where, key);
		seen[i] = 1;
		if (set_key(c, k, val, where, err, errlen) < 0)
			return -1;
	}

	if (c->listen_unix[0] && c->listen_unix[0] != '/')
		ERR("%s: 'listen_unix' must be an absolute path, not '%s'", name, c->listen_unix);
	if (c->listen_tcp[0]) {
		const char *colon = strrchr(c->listen_tcp, ':');
		char *end;
		unsigned long port = colon ? strtoul(colon + 1, &end, 10) : 0;
		if (!colon || colon == c->listen_tcp || !colon[1] || *end || port == 0 || port > 65535)
			ERR("%s: 'listen_tcp' must be host:port (e.g. 127.0.0.1:7070), not '%s'", name,
				c->listen_tcp);
	}
	if (!c->listen_unix[0] && !c->listen_tcp[0])
		ERR("%s: neither 'listen_unix' nor 'listen_tcp' is set: queued needs at least one", name);
	if (!c->mysql_user[0])
		ERR("%s: required key 'mysql_user' is missing", name);
	if (!c->mysql_database[0])
		ERR("%s: required key 'mysql_database' is missing", name);
	if (!c->mysql_socket[0] && !c->mysql_host[0])
		ERR("%s: set 'mysql_socket' or 'mysql_host'", name);
	if (!c->sql_dir[0])
		ERR("%s: required key 'sql_dir' is missing", name);
	if (c->recording_dir[0] && c->recording_dir[0] != '/')
		ERR("%s: 'recording_dir' must be an absolute path (rtpengine's --recording-dir), "
			"not '%s'", name, c->recording_dir);
	for (size_t l = strlen(c->recording_dir); l > 1 && c->recording_dir[l - 1] == '/'; l--)
		c->recording_dir[l - 1] = '\0';
	if (c->callback_secret[0] && c->callback_secret_file[0])
		ERR("%s: set 'callback_secret' or 'callback_secret_file', not both", name);
	if (c->callback_secret_file[0] && read_secret_file(c, name, err, errlen) < 0)
		return -1;
	/* a short key makes the tokens guessable */
	if (c->callback_secret[0] && strlen(c->callback_secret) < CONFIG_SECRET_MIN)
		ERR("%s: the callback secret%s%s is shorter than %d characters: use e.g. 32 random "
			"bytes as hex (openssl rand -hex 32)", name,
			c->callback_secret_file[0] ? " in " : "", c->callback_secret_file,
			CONFIG_SECRET_MIN);
	return 0;
}

int config_load(const char *path, struct queued_config *c, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *text;
	long sz;
	int rc;

	if (!f)
		ERR("cannot open config file %s: %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) < 0 || (sz = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
		fclose(f);
		ERR("cannot read config file %s: %s", path, strerror(errno));
	}
	if (sz > 1024 * 1024) {
		fclose(f);
		ERR("config file %s is larger than 1 MiB", path);
	}
	text = malloc((size_t)sz + 1);
	if (!text) {
		fclose(f);
		ERR("out of memory reading %s", path);
	}
	if (fread(text, 1, (size_t)sz, f) != (size_t)sz) {
		free(text);
		fclose(f);
		ERR("cannot read config file %s", path);
	}
	fclose(f);
	text[sz] = '\0';
	if (memchr(text, '\0', (size_t)sz)) {
		free(text);
		ERR("config file %s contains a NUL byte", path);
	}
	rc = config_parse(text, path, c, err, errlen);
	free(text);
	return rc;
}
