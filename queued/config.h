/* queued.conf: "key = value" lines, '#' comments. See cfg/queued.conf. */
#ifndef QUEUED_CONFIG_H
#define QUEUED_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <limits.h>

struct queued_config {
	char listen_unix[108];     /* unix socket path ("" = none) */
	unsigned listen_unix_mode; /* octal permissions of the socket */
	char listen_tcp[256];      /* host:port ("" = none) */
	char mysql_host[256];
	unsigned mysql_port;
	char mysql_socket[108];
	char mysql_user[80];
	char mysql_password[256];
	char mysql_database[65];
	unsigned mysql_connect_timeout; /* seconds */
	unsigned mysql_read_timeout;
	unsigned mysql_write_timeout;
	unsigned mysql_workers;         /* worker threads, one connection each */
	unsigned decision_workers;      /* of them, kept for call decisions (db.c take) */
	unsigned shed_after;            /* ms a runnable job may wait before new calls
	                                 * are refused at once (0: never) */
	unsigned report_batch;          /* reports of different calls run in one
	                                 * transaction (db.h struct db_group); 1: each alone */
	unsigned report_linger;         /* ms a report may wait for others to share
	                                 * its transaction while they come that fast */
	char sql_dir[PATH_MAX];
	int log_syslog;
	int log_level;              /* syslog level */
	uint32_t max_frame;         /* bytes, <= CCQ_FRAME_HARD_MAX */
	unsigned max_clients;
	unsigned shutdown_timeout;  /* seconds */
	char pid_file[PATH_MAX];
	char operators[256];        /* unix users acting as the local operator */
	/* callbacks (doc/callbacks.md) */
	char callback_secret[256];  /* HMAC key of callback tokens; "" = callbacks off */
	char callback_secret_file[PATH_MAX]; /* or read it from this file */
	unsigned callback_ring_timeout;  /* seconds the agent's device rings */
	unsigned callback_attempts;      /* attempts of one request */
	unsigned callback_retry_delay;   /* seconds between attempts */
	unsigned callback_expiry;        /* seconds a request lives */
	unsigned schedule_grace;         /* seconds a due schedule may be late */
	unsigned max_call_duration;      /* seconds after which an answered call with no
	                                  * end reported is ended by the janitor (0 never) */
	/* recording (doc/recording.md) */
	char recording_dir[PATH_MAX];    /* rtpengine's --recording-dir; "" = no indexing */
};

/* Shortest callback secret accepted (bytes). */
#define CONFIG_SECRET_MIN 16

/* Defaults for every key (sql_dir from the build). */
void config_defaults(struct queued_config *c, const char *default_sql_dir);

/*
 * Parse the file at path into *c (which holds defaults on entry). On error
 * returns -1 and err names the file, the line and the key; *c may then be
 * partially written, so parse into a scratch copy.
 */
int config_load(const char *path, struct queued_config *c, char *err, size_t errlen);

/* Parse from a string (for tests); name is used in messages. */
int config_parse(const char *text, const char *name, struct queued_config *c,
		char *err, size_t errlen);

#endif
