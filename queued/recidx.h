/*
 * The recording indexer (doc/recording.md).
 *
 * Loop side: a timer submits the internal operation recording.index every
 * 2 seconds while recording_dir is set (and again soon while files are
 * left); it pauses 10 seconds after a failure (MySQL away).
 *
 * Worker side (the operation itself is in ops_recording.c): the helpers
 * below read what rtpengine (--recording-method=pcap) writes:
 * DIR/pcaps/<Call-ID, URL-encoded>-<16 hex>.pcap and, once the call is
 * deleted, DIR/metadata/rtpengine-meta-<same>.txt.
 */
#ifndef QUEUED_RECIDX_H
#define QUEUED_RECIDX_H

#include <stddef.h>
#include <stdint.h>
#include <limits.h>
#include <ev.h>
#include "config.h"

/* ---- loop side ------------------------------------------------------------- */

void recidx_init(struct ev_loop *loop, const struct queued_config *cfg);
/* SIGHUP: a new recording_dir applies to the next run. */
void recidx_reconfigure(const struct queued_config *cfg);
void recidx_stop(void);
/* From the operation's after(): it succeeded; more: files are left. */
void recidx_ran(int more);

/* ---- worker side: reading rtpengine's files ------------------------------------ */

#include "recmeta.h"

/*
 * SHA-256 (hex) and size of a file, read in blocks. Returns 0, or an errno
 * value (ENOENT: the file is not there) with err set.
 */
int rec_hash_file(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen);

#endif
