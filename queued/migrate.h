/* Forward-only schema migrations from sql_dir (NNN_name.sql). */
#ifndef QUEUED_MIGRATE_H
#define QUEUED_MIGRATE_H

#include <mysql.h>
#include <stddef.h>

/* The schema version this binary is written for. */
#define CCQ_SCHEMA_VERSION 9

/*
 * Bring the database to CCQ_SCHEMA_VERSION with the files in sql_dir.
 * Refuses (returns -1) if the database is newer than this binary, or if a
 * needed file is missing. Holds a MySQL named lock so that two queued never
 * migrate at once. *version gets the resulting version.
 */
int migrate(MYSQL *m, const char *sql_dir, int *version, char *err, size_t errlen);

#endif
