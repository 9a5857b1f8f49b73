/*
 * Which events a subscriber ("watch") may receive: the access rules of
 * acl.h applied to events, computed when it subscribes.
 */
#ifndef QUEUED_WATCH_H
#define QUEUED_WATCH_H

#include <stddef.h>
#include <stdint.h>

struct watch_filter {
	int everything;        /* the operator */
	uint32_t org_id;       /* only this organisation */
	int all_inboxes;       /* every inbox of org_id */
	uint32_t only_inbox;   /* narrowed by the subscriber (0 = no) */
	size_t n;              /* else these inboxes */
	uint32_t inboxes[];
};

/* inbox_id 0: an organisation-wide event (not tied to an inbox). */
int watch_filter_match(const struct watch_filter *wf, uint32_t org_id, uint32_t inbox_id);

#endif
