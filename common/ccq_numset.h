/*
 * ccq compact number set: a read-only set of E.164 numbers (DNC registry,
 * company blacklist and whitelist, personal whitelists) in one flat,
 * position-independent buffer ("image").
 *
 * The image holds offsets only, never pointers: it can be built in one
 * process, copied into Kamailio shared memory (or a file, or anywhere) and
 * read by any number of processes without locks. Its exact size is known
 * before it is written (ccq_numset_builder_size()), so the caller makes one
 * allocation. At 10 million numbers an image costs about 4.1 bytes per number
 * and a lookup a few hundred nanoseconds at worst; the format and the numbers
 * are in doc/compliance.md and tests/bench/README.md.
 *
 * Entries are numbers of 1 to 15 digits (the gate stores normalised E.164
 * digits, no '+'), and optionally prefixes ("6531*": every number that starts
 * with 6531, the number 6531 itself included).
 *
 * An image uses the host's byte order: it is for memory and for a cache on
 * the same machine, not an exchange format (the magic check refuses an image
 * of the other byte order).
 */
#ifndef CCQ_NUMSET_H
#define CCQ_NUMSET_H

#include <stddef.h>
#include <stdint.h>

#define CCQ_NUMSET_VERSION 1
#define CCQ_NUMSET_MAX_DIGITS 15
/* An image holds at most this many numbers (plus as many prefixes). */
#define CCQ_NUMSET_MAX_ENTRIES 0x7fffffffu
/* Images are written to, and must be read from, 8-byte aligned memory. */
#define CCQ_NUMSET_ALIGN 8

/* Error codes, returned negated. */
enum ccq_numset_err {
	CCQ_NUMSET_OK = 0,
	CCQ_NUMSET_E_INVALID = 1,   /* not 1..15 digits (optionally followed by '*') */
	CCQ_NUMSET_E_NOMEM = 2,
	CCQ_NUMSET_E_FULL = 3,      /* more than CCQ_NUMSET_MAX_ENTRIES */
	CCQ_NUMSET_E_SMALL = 4,     /* destination buffer too small */
	CCQ_NUMSET_E_ALIGN = 5,     /* buffer not 8-byte aligned */
	CCQ_NUMSET_E_TRUNCATED = 6, /* image longer than the buffer holding it */
	CCQ_NUMSET_E_MAGIC = 7,     /* not an image, or other byte order */
	CCQ_NUMSET_E_VERSION = 8,
	CCQ_NUMSET_E_LAYOUT = 9,    /* header fields inconsistent */
	CCQ_NUMSET_E_CHECKSUM = 10,
	CCQ_NUMSET_E_ORDER = 11,    /* index or entries out of order */
	CCQ_NUMSET_E_MAX_
};

const char *ccq_numset_strerror(int err);

/* ---- building (ordinary heap memory, one thread) ------------------------ */

typedef struct ccq_numset_builder ccq_numset_builder;

ccq_numset_builder *ccq_numset_builder_new(void);

/* Optional: make room for n more entries at once (avoids regrowth). */
int ccq_numset_builder_reserve(ccq_numset_builder *b, size_t n);

/*
 * Add a number ("6591234567") or a prefix ("6531*"). The string must be
 * digits only (1 to 15 of them), NUL-terminated; normalise it first with
 * ccq_e164_normalize(). Duplicates are fine and stored once.
 * Returns 0, or -CCQ_NUMSET_E_INVALID / _NOMEM / _FULL.
 * Memory while building: 8 bytes per added entry (with up to 2x growth
 * slack), and 8 more per entry during ccq_numset_builder_size() (sort).
 */
int ccq_numset_builder_add(ccq_numset_builder *b, const char *digits);

/* Same, for len bytes that need not be NUL-terminated. */
int ccq_numset_builder_add_n(ccq_numset_builder *b, const char *digits, size_t len);

/*
 * Exact size in bytes of the image of everything added so far (sorts and
 * removes duplicates; 0 only if out of memory).
 */
size_t ccq_numset_builder_size(ccq_numset_builder *b);

/* Distinct numbers and prefixes added so far (sorts like _size()). */
size_t ccq_numset_builder_count(ccq_numset_builder *b);

/*
 * Write the image into dst (8-byte aligned, dstlen >= _size()). The builder
 * stays usable (more adds, another finish). Returns 0 or -CCQ_NUMSET_E_*.
 */
int ccq_numset_builder_finish(ccq_numset_builder *b, void *dst, size_t dstlen);

void ccq_numset_builder_free(ccq_numset_builder *b);

/*
 * Size of an image of n numbers and p prefixes (what _size() returns after
 * duplicates are removed). For planning shared memory.
 */
size_t ccq_numset_image_size(size_t n, size_t p);

/* ---- reading (any process, no locks, no allocation) --------------------- */

/*
 * Full validation of an image found in a buffer of len bytes: alignment,
 * magic, version, layout, bounds, checksum, ordering of the index and of
 * every entry. O(size); run it once when an image is loaded or received, not
 * per lookup. Returns 0 or -CCQ_NUMSET_E_*.
 */
int ccq_numset_check(const void *image, size_t len);

/*
 * 1 if the E.164 digits (1..15 digits, NUL-terminated) are in the set, as a
 * number or by a prefix; 0 if not, if image is NULL (an absent list is an
 * empty list), or if digits is not 1..15 digits.
 */
int ccq_numset_contains(const void *image, const char *digits);

/*
 * Checksum that the header (bytes 56..63) must hold for the first len bytes
 * of an image, computed as if those 8 bytes were 0. For tools and tests.
 */
uint64_t ccq_numset_checksum(const void *image, size_t len);

/*
 * A number prepared once for lookups in several sets (the gate checks one
 * destination against four lists): parsing and mixing are done here.
 */
struct ccq_numset_query {
	uint64_t x;                               /* mixed key */
	uint64_t pv[CCQ_NUMSET_MAX_DIGITS + 1];   /* value of the first l digits */
	unsigned len;                             /* digits; 0 = invalid */
};

/* 0, or -CCQ_NUMSET_E_INVALID (then the query matches nothing). */
int ccq_numset_query_init(struct ccq_numset_query *q, const char *digits);

/* Same answer as ccq_numset_contains() for the query's digits. */
int ccq_numset_contains_query(const void *image, const struct ccq_numset_query *q);

/*
 * Start loading the memory a later ccq_numset_contains_query() of q will
 * touch, so that the cache miss overlaps other work (the gate prefetches the
 * DNC registry before it looks at the other lists). Never faults.
 */
void ccq_numset_prefetch(const void *image, const struct ccq_numset_query *q);

/* Numbers (not prefixes) in the set; 0 for NULL. For an overlay: the numbers
 * of base + adds - removes, counted when the overlay was written. */
size_t ccq_numset_count(const void *image);

/* Prefix entries in the set; 0 for NULL. */
size_t ccq_numset_prefix_count(const void *image);

/* Total bytes of the image; 0 for NULL. For an overlay: its own bytes (header
 * and delta images), not the base's. */
size_t ccq_numset_bytes(const void *image);

/* ---- overlay: a base image plus a small delta ------------------------------ */

/*
 * An overlay answers like the base image with some entries' presence given
 * explicitly: entries in `adds` are in the set, entries in `removes` are not
 * (whatever the base says), every other entry as in the base. The compliance
 * loader keeps the 10 M-number DNC registry as a base image in its own shared
 * memory block and the few numbers changed since it was built as an overlay,
 * so that a one-number change needs no rebuild of the base.
 *
 * Every reader function of this header takes an overlay wherever it takes an
 * image (contains, contains_query, prefetch, count, prefix_count, bytes,
 * check). Unlike an image, an overlay holds a POINTER to its base: it is
 * valid only in the address space (Kamailio's shared memory is mapped at the
 * same address in every process) and as long as the base lives. The adds and
 * removes images follow the 64-byte overlay header in the same buffer.
 * An entry must not be in both adds and removes (the writer refuses it).
 */

/* Bytes of an overlay of these two builders (either may be NULL); 0 if OOM. */
size_t ccq_numset_overlay_size(ccq_numset_builder *adds, ccq_numset_builder *removes);

/*
 * Write an overlay of base (an image, or NULL for an empty base) into dst
 * (8-byte aligned, dstlen >= _overlay_size()). Returns 0 or -CCQ_NUMSET_E_*
 * (-CCQ_NUMSET_E_INVALID if an entry is in both builders).
 */
int ccq_numset_overlay_write(void *dst, size_t dstlen, const void *base,
		ccq_numset_builder *adds, ccq_numset_builder *removes);

/* 1 if image is an overlay (not a plain image). */
int ccq_numset_is_overlay(const void *image);

/* The base of an overlay (NULL for a plain image or an empty base). */
const void *ccq_numset_overlay_base(const void *image);

/* Entries (numbers and prefixes) the overlay adds / removes; 0 for an image. */
size_t ccq_numset_overlay_adds(const void *image);
size_t ccq_numset_overlay_removes(const void *image);

#endif /* CCQ_NUMSET_H */
