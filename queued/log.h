/* queued logging: stderr or syslog, with a run-time level. */
#ifndef QUEUED_LOG_H
#define QUEUED_LOG_H

#include <syslog.h>

/* Levels are syslog's: LOG_ERR .. LOG_DEBUG. */
void log_setup(int use_syslog, int level);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "debug" -> LOG_DEBUG; -1 if unknown */
int log_level_parse(const char *name);
const char *log_level_name(int level);

#define LOG_E(...) log_msg(LOG_ERR, __VA_ARGS__)
#define LOG_W(...) log_msg(LOG_WARNING, __VA_ARGS__)
#define LOG_N(...) log_msg(LOG_NOTICE, __VA_ARGS__)
#define LOG_I(...) log_msg(LOG_INFO, __VA_ARGS__)
#define LOG_D(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
