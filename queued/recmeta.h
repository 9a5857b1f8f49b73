/*
 * rtpengine's recording metadata files (pcap method), parsed without any
 * I/O: the indexer (recidx.c) reads the file, this reads the text. Kept
 * apart so that a fuzz target can exercise it alone.
 */
#ifndef QUEUED_RECMETA_H
#define QUEUED_RECMETA_H

#include <limits.h>
#include <stddef.h>

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

#endif
