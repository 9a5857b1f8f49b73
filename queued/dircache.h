/*
 * A small cache of directory facts the call decisions read on every call
 * (which trunk a source address is, which inbox a DID reaches, with its
 * organisation's settings), shared by the MySQL workers.
 *
 * Why it is correct: every operation that changes the directory bumps a
 * generation once its transaction is over (ops.c, OP_DIRECTORY). A reader
 * takes the generation *before* it reads MySQL and stores what it read only
 * if the generation is still the same; an entry is used only while its
 * generation is the current one. So an entry read before a change
 * committed is never used after the change's bump. Entries also expire
 * after DIRCACHE_TTL_MS, so that a change made with SQL behind queued's back
 * is seen within that time. Not-found answers are cached too (a device's
 * INVITE is "not a trunk" four times per outbound call).
 */
#ifndef QUEUED_DIRCACHE_H
#define QUEUED_DIRCACHE_H

#include <stddef.h>
#include <stdint.h>

#define DIRCACHE_TTL_MS 5000
#define DIRCACHE_MAX 8192      /* entries per table; a full table starts over */

enum dircache_table { DC_TRUNK, DC_DID, DC_NTABLES };

/* The current generation (read it before the MySQL read you will store). */
uint64_t dircache_gen(void);
/* The directory changed: every entry is stale. */
void dircache_bump(void);

/* Copy the value of key into val (size bytes). Returns 1 (hit), 0 (miss). */
int dircache_get(enum dircache_table t, const char *key, void *val, size_t size);
/* Store val for key if gen is still the current generation. */
void dircache_put(enum dircache_table t, const char *key, const void *val, size_t size,
		uint64_t gen);
/* Entries held (for tests and stats). */
size_t dircache_count(enum dircache_table t);
/* Drop everything (tests; shutdown). */
void dircache_clear(void);

/* Tests move the clock. */
void dircache_set_clock(uint64_t (*now_ms)(void));

#endif
