/* Access rules; see acl.h. */
#include "acl.h"

#include <stdio.h>
#include <string.h>

int acl_all_inboxes(const struct who *w)
{
	return w->operator || ((w->role == ROLE_OWNER || w->role == ROLE_ADMIN) && w->addon);
}

int acl_can_manage_org(const struct who *w, uint32_t org_id)
{
	if (w->operator)
		return 1;
	return w->org_id == org_id && (w->role == ROLE_OWNER || w->role == ROLE_ADMIN);
}

void acl_inbox_cond(char *buf, size_t size, const struct who *w, const char *col)
{
	if (w->operator)
		snprintf(buf, size, "%s", "");
	else if (acl_all_inboxes(w))
		snprintf(buf, size, " AND %s IN (SELECT id FROM inbox WHERE org_id = %u)", col,
			w->org_id);
	else
		snprintf(buf, size, " AND %s IN (SELECT inbox_id FROM inbox_member WHERE user_id = %u)",
			col, w->user_id);
}

const char *role_name(int role)
{
	switch (role) {
	case ROLE_OWNER: return "owner";
	case ROLE_ADMIN: return "admin";
	default: return "member";
	}
}

int role_parse(const char *s)
{
	if (strcmp(s, "owner") == 0)
		return ROLE_OWNER;
	if (strcmp(s, "admin") == 0)
		return ROLE_ADMIN;
	if (strcmp(s, "member") == 0)
		return ROLE_MEMBER;
	return -1;
}
