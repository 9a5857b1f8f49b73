/* Run-time tunables of the ccq module (Kamailio cfg framework, group "ccq"). */
#ifndef CCQ_CFG_H
#define CCQ_CFG_H

#include "core/cfg/cfg.h"

struct cfg_group_ccq {
	int timeout;            /* ms to wait for one queued reply */
	int retries;            /* extra attempts after a failed one */
	int reconnect_interval; /* ms between connection attempts per process */
	int decision_timeout;   /* ms a suspended call waits for queued's decision */
};

extern struct cfg_group_ccq default_ccq_cfg;
extern void *ccq_cfg;
extern cfg_def_t ccq_cfg_def[];

#endif
