/*
 * Who is asking, and what they may see.
 *
 * A connection is either a local operator (unix socket, uid 0 or queued's
 * own uid: the system administrator, may act in any organisation and may
 * act as any user with "as"), a local user mapped by user.unix_user, or a
 * remote client that authenticated with an API token ("auth"). Every
 * request then acts as one user (or as the operator).
 *
 * Inbox visibility: owners and admins with the contact-center add-on see
 * every inbox of their organisation; everyone else only the inboxes they
 * are a member of; nobody sees another organisation.
 */
#ifndef QUEUED_ACL_H
#define QUEUED_ACL_H

#include <stdint.h>
#include <sys/types.h>
#include <mysql.h>

enum role { ROLE_MEMBER = 0, ROLE_ADMIN = 1, ROLE_OWNER = 2 };

/* What the connection established (loop side). */
struct actor {
	int operator;          /* local operator */
	uint32_t user_id;      /* authenticated user (token or unix_user); 0 = none */
	int is_unix;
	uid_t uid;
};

/* The resolved acting identity (worker side). */
struct who {
	int operator;          /* acting as the operator (no user) */
	uint32_t user_id;
	uint32_t org_id;
	int role;
	int addon;
	char ext[33];
	char name[101];
	char org_name[101];
};

/* Sees every inbox of its organisation (or of every organisation). */
int acl_all_inboxes(const struct who *w);
/* May change the directory of org_id (users, devices, inboxes, trunks: operator only). */
int acl_can_manage_org(const struct who *w, uint32_t org_id);
/*
 * SQL condition restricting an inbox id column to what w may see, e.g.
 * " AND t.inbox_id IN (...)". Writes "" for the operator.
 */
void acl_inbox_cond(char *buf, size_t size, const struct who *w, const char *col);
const char *role_name(int role);
int role_parse(const char *s);

#endif
