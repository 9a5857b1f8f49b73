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

/* What a metadata file says. Absent values are "" or 0. */
struct recmeta {
	char pcap_path[PATH_MAX];   /* the first line */
	double started_ms;          /* Unix ms of the first SDP ("Timestamp started ms") */
	double ended_ms;            /* "Timestamp terminated ms(first monologue)" */
	long long start_local;      /* "call start time" / "call end time" (rtpengine's */
	long long end_local;        /* local time, seconds), as Unix seconds; 0 = none */
	/* The first offer and the first answer after it, as rtpengine wrote them
	 * (the SDPs it sent, with its own media address): address:port of the
	 * first audio stream, and its first codec ("PCMU/8000"). */
	char offer_addr[64], answer_addr[64];
	char offer_codec[40], answer_codec[40];
	char meta[256];             /* the metadata string of the offer, last line */
};

/*
 * Parse a metadata file's text. Returns 0, or -1 with err set when the text
 * is not an rtpengine metadata file (no pcap path on the first line).
 */
int recmeta_parse(const char *text, size_t len, struct recmeta *out, char *err, size_t errlen);

/*
 * The Call-ID in a metadata file's name ("rtpengine-meta-<Call-ID,
 * URL-encoded>-<16 hex>.txt"). Returns 0, or -1 for another name.
 */
int recmeta_call_id(const char *name, char *out, size_t size);

/* The value of key ("ccq_txn") in a "k:v|k:v" metadata string; "" if none. */
void recmeta_field(const char *meta, const char *key, char *out, size_t size);

/*
 * SHA-256 (hex) and size of a file, read in blocks. Returns 0, or an errno
 * value (ENOENT: the file is not there) with err set.
 */
int rec_hash_file(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen);

#endif
