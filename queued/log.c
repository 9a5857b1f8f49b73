#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/time.h>

static int g_syslog;
static int g_level = LOG_INFO;

static const struct { const char *name; int level; } levels[] = {
	{ "error", LOG_ERR }, { "warning", LOG_WARNING }, { "notice", LOG_NOTICE },
	{ "info", LOG_INFO }, { "debug", LOG_DEBUG },
};

int log_level_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcasecmp(name, levels[i].name) == 0)
			return levels[i].level;
	return -1;
}

const char *log_level_name(int level)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (levels[i].level == level)
			return levels[i].name;
	return "?";
}

void log_setup(int use_syslog, int level)
{
	if (use_syslog && !g_syslog)
		openlog("queued", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	else if (!use_syslog && g_syslog)
		closelog();
	g_syslog = use_syslog;
	g_level = level;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;

	if (level > g_level)
		return;
	va_start(ap, fmt);
	if (g_syslog) {
		vsyslog(level, fmt, ap);
	} else {
		struct timeval tv;
		struct tm tm;
		char ts[32];
		gettimeofday(&tv, NULL);
		localtime_r(&tv.tv_sec, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(stderr, "%s.%03ld queued %s: ", ts, (long)(tv.tv_usec / 1000),
			log_level_name(level));
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	va_end(ap);
}
