/* Run-time tunables; change with kamcmd cfg.set_now_int ccq <name> <value>. */
#include "ccq_cfg.h"

struct cfg_group_ccq default_ccq_cfg = {
	500,  /* timeout */
	1,    /* retries */
	1000, /* reconnect_interval */
	2000, /* decision_timeout */
};

void *ccq_cfg = &default_ccq_cfg;

cfg_def_t ccq_cfg_def[] = {
	{"timeout", CFG_VAR_INT | CFG_ATOMIC, 10, 60000, 0, 0,
		"Milliseconds to wait for queued's reply to one request"},
	{"retries", CFG_VAR_INT | CFG_ATOMIC, 0, 5, 0, 0,
		"Extra attempts (on a fresh connection) after a failed request"},
	{"reconnect_interval", CFG_VAR_INT | CFG_ATOMIC, 0, 600000, 0, 0,
		"Milliseconds a process waits after a failed connection before trying"
		" again; calls in between use the fallback at once"},
	{"decision_timeout", CFG_VAR_INT | CFG_ATOMIC, 100, 60000, 0, 0,
		"Milliseconds a suspended call waits for queued's decision before the"
		" route resumes with $ccq(action) = fallback"},
	{0, 0, 0, 0, 0, 0}
};
