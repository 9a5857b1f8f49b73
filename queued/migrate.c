/*
 * Schema migrations: sql/NNN_name.sql applied in order, each recorded in
 * schema_version. See migrate.h.
 */
#include "migrate.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR(...) do { snprintf(err, errlen, __VA_ARGS__); goto out; } while (0)

/* Run a (possibly multi-statement) text, draining every result. */
static int run_script(MYSQL *m, const char *sql, size_t len)
{
	int st;
	if (mysql_real_query(m, sql, (unsigned long)len) != 0)
		return -1;
	do {
		MYSQL_RES *r = mysql_store_result(m);
		if (r)
			mysql_free_result(r);
		else if (mysql_field_count(m) != 0)
			return -1;
		st = mysql_next_result(m);
		if (st > 0)
			return -1;
	} while (st == 0);
	return 0;
}

static int query_int(MYSQL *m, const char *sql, long *out)
{
	MYSQL_RES *r;
	MYSQL_ROW row;
	if (mysql_query(m, sql) != 0 || !(r = mysql_store_result(m)))
		return -1;
	row = mysql_fetch_row(r);
	*out = (row && row[0]) ? strtol(row[0], NULL, 10) : 0;
	mysql_free_result(r);
	return 0;
}

/* Find NNN_*.sql for version v in dir; path in buf. */
static int find_file(const char *dir, int v, char *buf, size_t size)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char prefix[16];
	int found = 0;

	if (!d)
		return -1;
	snprintf(prefix, sizeof(prefix), "%03d_", v);
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		if (strncmp(e->d_name, prefix, 4) == 0 && n > 4
				&& strcmp(e->d_name + n - 4, ".sql") == 0) {
			if (found++) {
				closedir(d);
				return -2;
			}
			snprintf(buf, size, "%s/%s", dir, e->d_name);
		}
	}
	closedir(d);
	return found ? 0 : -1;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *b = NULL;
	long sz;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0
			&& (b = malloc((size_t)sz + 1))) {
		if (fread(b, 1, (size_t)sz, f) != (size_t)sz) {
			free(b);
			b = NULL;
		} else {
			b[sz] = '\0';
			*len = (size_t)sz;
		}
	}
	fclose(f);
	return b;
}

int migrate(MYSQL *m, const char *sql_dir, int *version, char *err, size_t errlen)
{
	long cur = 0, got = 0;
	int rc = -1, locked = 0;

	if (query_int(m, "SELECT GET_LOCK('ccq_migrate', 60)", &got) < 0 || got != 1)
		ERR("cannot take the migration lock: %s", mysql_error(m));
	locked = 1;
	if (mysql_query(m, "CREATE TABLE IF NOT EXISTS schema_version ("
			" version INT NOT NULL PRIMARY KEY,"
			" name VARCHAR(200) NOT NULL,"
			" applied_at DATETIME(3) NOT NULL"
			") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4") != 0)
		ERR("cannot create schema_version: %s", mysql_error(m));
	if (query_int(m, "SELECT COALESCE(MAX(version), 0) FROM schema_version", &cur) < 0)
		ERR("cannot read schema_version: %s", mysql_error(m));
	if (cur > CCQ_SCHEMA_VERSION)
		ERR("the database schema is version %ld, newer than this queued knows (%d): "
			"run a queued at least as new as the one that migrated it", cur,
			CCQ_SCHEMA_VERSION);
	for (int v = (int)cur + 1; v <= CCQ_SCHEMA_VERSION; v++) {
		char path[4096], q[1024];
		const char *base;
		char esc[512];
		size_t len = 0;
		char *sql;
		int f = find_file(sql_dir, v, path, sizeof(path));

		if (f == -2)
			ERR("more than one migration numbered %03d in %s", v, sql_dir);
		if (f < 0)
			ERR("migration %03d_*.sql not found in %s (sql_dir): the database is at "
				"version %d and this queued needs %d", v, sql_dir, v - 1,
				CCQ_SCHEMA_VERSION);
		sql = slurp(path, &len);
		if (!sql)
			ERR("cannot read %s: %s", path, strerror(errno));
		LOG_N("applying migration %s", path);
		if (run_script(m, sql, len) < 0) {
			free(sql);
			ERR("migration %s failed: %s (the database stays at version %d)", path,
				mysql_error(m), v - 1);
		}
		free(sql);
		base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
		mysql_real_escape_string(m, esc, base, (unsigned long)strnlen(base, 200));
		snprintf(q, sizeof(q), "INSERT INTO schema_version (version, name, applied_at) "
			"VALUES (%d, '%s', UTC_TIMESTAMP(3))", v, esc);
		if (mysql_query(m, q) != 0)
			ERR("cannot record migration %d: %s", v, mysql_error(m));
		cur = v;
	}
	*version = (int)cur;
	rc = 0;
out:
	if (locked) {
		long dummy;
		query_int(m, "SELECT RELEASE_LOCK('ccq_migrate')", &dummy);
	}
	return rc;
}
