/*
 * ccq compact number set; see ccq_numset.h and doc/compliance.md.
 *
 * Encoding. A number of L digits (1 <= L <= 15) with value v maps to the key
 *     key = OFF[L] + v,   OFF[L] = 10 + 100 + ... + 10^(L-1)
 * which is a bijection onto [0, 1111111111111110) < 2^50. Keys go through
 * an invertible 50-bit mixer (xorshift / odd multiply, each step a bijection
 * modulo 2^50), so x = mix(key) is as uniform as a hash but still identifies
 * the number exactly. The top B bits of x pick a bucket, the low R = 50 - B
 * bits are the remainder that is stored, in W = ceil(R / 8) bytes.
 *
 * Image (all offsets from the start, every section 8-byte aligned):
 *     header                       64 bytes (struct ns_hdr)
 *     index   uint32[2^B + 1]      start of each bucket in the slot array
 *     slots   count * W bytes      remainders, ascending within a bucket,
 *                                  then 8 bytes of padding (word-sized reads)
 *     prefix  uint64[prefix_count] keys of prefix entries, ascending
 * B is chosen for the smallest image whose average bucket holds at most 64
 * numbers. From about 0.9M numbers on that is B >= 18, so R <= 32: a number
 * costs 4 bytes plus its share of the 1 MiB+ index (4.1 bytes at 10M).
 *
 * Lookup: the index gives the bucket [lo, hi); remainders are uniform inside
 * it, so the first probe is interpolated and usually lands in the right cache
 * line; a short walk and a bisection finish. One cache miss into the slots,
 * one into the index (which stays in L2/L3 far more often).
 */
#include "ccq_numset.h"

#include <stdlib.h>
#include <string.h>

#define KEY_BITS 50
#define KEY_MASK ((UINT64_C(1) << KEY_BITS) - 1)
#define HDR_BYTES 64
#define MAX_BUCKET_BITS 30
#define MAX_LOAD 64
#define SLOT_PAD 8

static const uint8_t ns_magic[8] = { 'C', 'C', 'Q', 'N', 'S', 'E', 'T', 0 };
/* Written in host order: reads back as this only on a same-endian host. */
#define ENDIAN_MARK 0x01020304u

struct ns_hdr {
	uint8_t magic[8];
	uint32_t version;
	uint32_t endian;       /* ENDIAN_MARK */
	uint64_t total_bytes;
	uint32_t count;        /* numbers */
	uint32_t prefix_count;
	uint8_t bucket_bits;   /* B */
	uint8_t slot_bytes;    /* W */
	uint16_t prefix_lens;  /* bit L set: some prefix has L digits */
	uint32_t reserved;     /* 0 */
	uint64_t data_off;
	uint64_t prefix_off;
	uint64_t checksum;     /* of the image with this field 0 */
};

_Static_assert(sizeof(struct ns_hdr) == HDR_BYTES, "numset header is 64 bytes");
_Static_assert(offsetof(struct ns_hdr, checksum) == 56, "checksum at 56 (documented)");
_Static_assert(offsetof(struct ns_hdr, bucket_bits) == 32, "bucket_bits at 32 (documented)");

static const uint8_t ovl_magic[8] = { 'C', 'C', 'Q', 'N', 'S', 'O', 'V', 'L' };

struct ns_ovl {
	uint8_t magic[8];
	uint32_t version;
	uint32_t endian;       /* ENDIAN_MARK */
	uint64_t total_bytes;  /* header + the two delta images */
	const void *base;      /* an image, or NULL */
	uint64_t adds_off;     /* from the overlay's start; 0 = none */
	uint64_t removes_off;
	uint64_t count;        /* numbers of base + adds - removes */
	uint32_t prefix_count; /* prefixes of base + adds - removes */
	uint16_t prefix_lens;  /* of base and adds */
	uint16_t reserved;
};

_Static_assert(sizeof(struct ns_ovl) == HDR_BYTES, "overlay header is 64 bytes");

static inline const struct ns_ovl *ovl_of(const void *image)
{
	const struct ns_ovl *o = image;

	if (!o || memcmp(o->magic, ovl_magic, sizeof(ovl_magic)) != 0)
		return NULL;
	return o;
}

/* OFF[L] for L = 0..16; OFF[16] is the size of the key space. */
static const uint64_t key_off[17] = {
	0, 0, UINT64_C(10), UINT64_C(110), UINT64_C(1110), UINT64_C(11110),
	UINT64_C(111110), UINT64_C(1111110), UINT64_C(11111110),
	UINT64_C(111111110), UINT64_C(1111111110), UINT64_C(11111111110),
	UINT64_C(111111111110), UINT64_C(1111111111110),
	UINT64_C(11111111111110), UINT64_C(111111111111110),
	UINT64_C(1111111111111110),
};

#define KEY_SPACE key_off[16]

static const char *const err_text[CCQ_NUMSET_E_MAX_] = {
	[CCQ_NUMSET_OK] = "ok",
	[CCQ_NUMSET_E_INVALID] = "not a number of 1 to 15 digits (or a prefix 'digits*')",
	[CCQ_NUMSET_E_NOMEM] = "out of memory",
	[CCQ_NUMSET_E_FULL] = "too many entries for one set",
	[CCQ_NUMSET_E_SMALL] = "buffer smaller than the image",
	[CCQ_NUMSET_E_ALIGN] = "buffer not 8-byte aligned",
	[CCQ_NUMSET_E_TRUNCATED] = "image longer than its buffer (truncated)",
	[CCQ_NUMSET_E_MAGIC] = "not a number-set image (bad magic or byte order)",
	[CCQ_NUMSET_E_VERSION] = "unsupported number-set image version",
	[CCQ_NUMSET_E_LAYOUT] = "inconsistent number-set header",
	[CCQ_NUMSET_E_CHECKSUM] = "number-set checksum mismatch (corrupt image)",
	[CCQ_NUMSET_E_ORDER] = "number-set index or entries out of order (corrupt image)",
};

const char *ccq_numset_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err >= CCQ_NUMSET_E_MAX_)
		return "unknown error";
	return err_text[err];
}

/* ---- key mixing ----------------------------------------------------------- */

#define MIX_C1 (UINT64_C(0xff51afd7ed558ccd) & KEY_MASK)
#define MIX_C2 (UINT64_C(0xc4ceb9fe1a85ec53) & KEY_MASK)

static inline uint64_t mix50(uint64_t x)
{
	x ^= x >> 25;
	x = (x * MIX_C1) & KEY_MASK;
	x ^= x >> 24;
	x = (x * MIX_C2) & KEY_MASK;
	x ^= x >> 25;
	return x;
}

/*
 * Parse 1..15 digits; returns the length (0 if invalid). *key gets the
 * key, pv[l] (if not NULL) the value of the first l digits.
 */
static inline unsigned parse_digits(const char *d, size_t maxlen, uint64_t *key,
		uint64_t *pv)
{
	uint64_t v = 0;
	unsigned n = 0;

	while (n < maxlen && d[n] >= '0' && d[n] <= '9') {
		if (n == CCQ_NUMSET_MAX_DIGITS)
			return 0;
		v = v * 10 + (uint64_t)(d[n] - '0');
		n++;
		if (pv)
			pv[n] = v;
	}
	if (n == 0)
		return 0;
	*key = key_off[n] + v;
	return n;
}

static unsigned key_len(uint64_t key)
{
	unsigned l = 1;

	while (l < 15 && key >= key_off[l + 1])
		l++;
	return l;
}

/* ---- little helpers ----------------------------------------------------- */

static inline size_t align8(size_t n)
{
	return (n + 7) & ~(size_t)7;
}

static inline unsigned slot_bytes(unsigned bucket_bits)
{
	return (KEY_BITS - bucket_bits + 7) / 8;
}

static size_t layout_size(size_t n, size_t p, unsigned bits)
{
	return HDR_BYTES + align8(((size_t)1 << bits) * 4 + 4)
		+ align8(n * slot_bytes(bits)) + SLOT_PAD + p * 8;
}

static unsigned choose_bits(size_t n)
{
	unsigned b = 0, best, bmax;
	size_t best_size;

	while (b < MAX_BUCKET_BITS && ((size_t)MAX_LOAD << b) < n)
		b++;
	bmax = b < 18 ? 18 : b; /* from B = 18 on, W = 4: larger B only costs */
	best = b;
	best_size = layout_size(n, 0, b);
	for (b = b + 1; b <= bmax && b <= MAX_BUCKET_BITS; b++) {
		size_t s = layout_size(n, 0, b);

		if (s <= best_size) {
			best = b;
			best_size = s;
		}
	}
	return best;
}

size_t ccq_numset_image_size(size_t n, size_t p)
{
	return layout_size(n, p, choose_bits(n));
}

/* Little-endian slot access; a slot of W < 8 bytes is read as 8 and masked. */
static inline uint64_t load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline uint32_t load32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap32(v);
#endif
	return v;
}

static inline void store_slot(uint8_t *p, uint64_t v, unsigned w)
{
	unsigned i;

	for (i = 0; i < w; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t image_checksum(const uint8_t *img, size_t len)
{
	uint64_t h = UINT64_C(0x9e3779b97f4a7c15) ^ len;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		uint64_t w;

		if (i == offsetof(struct ns_hdr, checksum))
			w = 0;
		else
			memcpy(&w, img + i, 8);
		h ^= w * UINT64_C(0x87c37b91114253d5);
		h = (h << 31) | (h >> 33);
		h = h * UINT64_C(0x4cf5ad432745937f) + UINT64_C(0x52dce729);
	}
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	return h;
}

uint64_t ccq_numset_checksum(const void *image, size_t len)
{
	return image ? image_checksum(image, len) : 0;
}

/* ---- builder ------------------------------------------------------------ */

struct ccq_numset_builder {
	uint64_t *x;     /* mixed keys of numbers */
	size_t nx, capx;
	uint64_t *p;     /* plain keys of prefixes */
	size_t np, capp;
	int sorted;      /* x and p sorted and unique */
};

ccq_numset_builder *ccq_numset_builder_new(void)
{
	return calloc(1, sizeof(ccq_numset_builder));
}

void ccq_numset_builder_free(ccq_numset_builder *b)
{
	if (!b)
		return;
	free(b->x);
	free(b->p);
	free(b);
}

static int grow(uint64_t **arr, size_t *cap, size_t need)
{
	size_t nc;
	uint64_t *na;

	if (need <= *cap)
		return 0;
	if (need > CCQ_NUMSET_MAX_ENTRIES)
		return -CCQ_NUMSET_E_FULL;
	nc = *cap ? *cap : 1024;
	while (nc < need)
		nc *= 2;
	if (nc > CCQ_NUMSET_MAX_ENTRIES)
		nc = CCQ_NUMSET_MAX_ENTRIES;
	na = realloc(*arr, nc * sizeof(uint64_t));
	if (!na)
		return -CCQ_NUMSET_E_NOMEM;
	*arr = na;
	*cap = nc;
	return 0;
}

int ccq_numset_builder_reserve(ccq_numset_builder *b, size_t n)
{
	if (n > CCQ_NUMSET_MAX_ENTRIES || b->nx + n > CCQ_NUMSET_MAX_ENTRIES)
		return -CCQ_NUMSET_E_FULL;
	return grow(&b->x, &b->capx, b->nx + n);
}

int ccq_numset_builder_add_n(ccq_numset_builder *b, const char *digits, size_t len)
{
	uint64_t key;
	unsigned n;
	int rc;

	if (!b || !digits)
		return -CCQ_NUMSET_E_INVALID;
	n = parse_digits(digits, len, &key, NULL);
	if (n == 0)
		return -CCQ_NUMSET_E_INVALID;
	if (n == len) {
		if ((rc = grow(&b->x, &b->capx, b->nx + 1)) < 0)
			return rc;
		b->x[b->nx++] = mix50(key);
	} else if (n + 1 == len && digits[n] == '*') {
		if ((rc = grow(&b->p, &b->capp, b->np + 1)) < 0)
			return rc;
		b->p[b->np++] = key;
	} else {
		return -CCQ_NUMSET_E_INVALID;
	}
	b->sorted = 0;
	return 0;
}

int ccq_numset_builder_add(ccq_numset_builder *b, const char *digits)
{
	if (!digits)
		return -CCQ_NUMSET_E_INVALID;
	return ccq_numset_builder_add_n(b, digits, strlen(digits));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* LSD radix sort of 50-bit values, 4 passes of 13 bits; falls back to qsort. */
#define RADIX_BITS 13
#define RADIX_SIZE (1u << RADIX_BITS)

static int sort_keys(uint64_t *a, size_t n)
{
	uint64_t *tmp, *src = a, *dst;
	size_t *count;
	unsigned pass;

	if (n < 65536) {
		if (n > 1)
			qsort(a, n, sizeof(*a), cmp_u64);
		return 0;
	}
	tmp = malloc(n * sizeof(*a));
	count = malloc(RADIX_SIZE * sizeof(*count));
	if (!tmp || !count) {
		free(tmp);
		free(count);
		return -CCQ_NUMSET_E_NOMEM;
	}
	dst = tmp;
	for (pass = 0; pass < 4; pass++) {
		unsigned shift = pass * RADIX_BITS;
		size_t i, sum = 0;
		uint64_t *t;

		memset(count, 0, RADIX_SIZE * sizeof(*count));
		for (i = 0; i < n; i++)
			count[(src[i] >> shift) & (RADIX_SIZE - 1)]++;
		for (i = 0; i < RADIX_SIZE; i++) {
			size_t c = count[i];

			count[i] = sum;
			sum += c;
		}
		for (i = 0; i < n; i++)
			dst[count[(src[i] >> shift) & (RADIX_SIZE - 1)]++] = src[i];
		t = src;
		src = dst;
		dst = t;
	}
	/* an even number of passes leaves the result in a */
	free(tmp);
	free(count);
	return 0;
}

static size_t uniq(uint64_t *a, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++)
		if (o == 0 || a[o - 1] != a[i])
			a[o++] = a[i];
	return o;
}

static int prepare(ccq_numset_builder *b)
{
	int rc;

	if (b->sorted)
		return 0;
	if ((rc = sort_keys(b->x, b->nx)) < 0)
		return rc;
	b->nx = uniq(b->x, b->nx);
	if (b->np > 1)
		qsort(b->p, b->np, sizeof(*b->p), cmp_u64);
	b->np = uniq(b->p, b->np);
	b->sorted = 1;
	return 0;
}

size_t ccq_numset_builder_size(ccq_numset_builder *b)
{
	if (!b || prepare(b) < 0)
		return 0;
	return ccq_numset_image_size(b->nx, b->np);
}

size_t ccq_numset_builder_count(ccq_numset_builder *b)
{
	if (!b || prepare(b) < 0)
		return 0;
	return b->nx + b->np;
}

int ccq_numset_builder_finish(ccq_numset_builder *b, void *dst, size_t dstlen)
{
	struct ns_hdr h;
	uint8_t *img = dst, *slots;
	uint32_t *index;
	unsigned bits, w, r;
	size_t total, i, nb, bucket;
	uint64_t rmask;
	int rc;

	if (!b || !dst)
		return -CCQ_NUMSET_E_INVALID;
	if ((uintptr_t)dst % CCQ_NUMSET_ALIGN)
		return -CCQ_NUMSET_E_ALIGN;
	if ((rc = prepare(b)) < 0)
		return rc;
	bits = choose_bits(b->nx);
	w = slot_bytes(bits);
	r = KEY_BITS - bits;
	rmask = (UINT64_C(1) << r) - 1;
	nb = (size_t)1 << bits;
	total = layout_size(b->nx, b->np, bits);
	if (dstlen < total)
		return -CCQ_NUMSET_E_SMALL;

	memset(&h, 0, sizeof(h));
	memcpy(h.magic, ns_magic, sizeof(h.magic));
	h.version = CCQ_NUMSET_VERSION;
	h.endian = ENDIAN_MARK;
	h.total_bytes = total;
	h.count = (uint32_t)b->nx;
	h.prefix_count = (uint32_t)b->np;
	h.bucket_bits = (uint8_t)bits;
	h.slot_bytes = (uint8_t)w;
	h.data_off = HDR_BYTES + align8(nb * 4 + 4);
	h.prefix_off = h.data_off + align8(b->nx * w) + SLOT_PAD;
	for (i = 0; i < b->np; i++)
		h.prefix_lens |= (uint16_t)(1u << key_len(b->p[i]));

	memset(img, 0, total);
	index = (uint32_t *)(img + HDR_BYTES);
	slots = img + h.data_off;
	bucket = 0;
	for (i = 0; i < b->nx; i++) {
		size_t bk = (size_t)(b->x[i] >> r);

		while (bucket <= bk)
			index[bucket++] = (uint32_t)i;
		store_slot(slots + i * w, b->x[i] & rmask, w);
	}
	while (bucket <= nb)
		index[bucket++] = (uint32_t)b->nx;
	if (b->np)
		memcpy(img + h.prefix_off, b->p, b->np * sizeof(uint64_t));

	memcpy(img, &h, sizeof(h));
	h.checksum = image_checksum(img, total);
	memcpy(img + offsetof(struct ns_hdr, checksum), &h.checksum, sizeof(h.checksum));
	return 0;
}

/* ---- reader ------------------------------------------------------------- */

static inline const struct ns_hdr *hdr_of(const void *image)
{
	const struct ns_hdr *h = image;

	if (!h || memcmp(h->magic, ns_magic, sizeof(ns_magic)) != 0)
		return NULL;
	return h;
}

size_t ccq_numset_count(const void *image)
{
	const struct ns_hdr *h = hdr_of(image);
	const struct ns_ovl *o;

	if (!h && (o = ovl_of(image)))
		return (size_t)o->count;
	return h ? h->count : 0;
}

size_t ccq_numset_prefix_count(const void *image)
{
	const struct ns_hdr *h = hdr_of(image);
	const struct ns_ovl *o;

	if (!h && (o = ovl_of(image)))
		return o->prefix_count;
	return h ? h->prefix_count : 0;
}

size_t ccq_numset_bytes(const void *image)
{
	const struct ns_hdr *h = hdr_of(image);
	const struct ns_ovl *o;

	if (!h && (o = ovl_of(image)))
		return (size_t)o->total_bytes;
	return h ? (size_t)h->total_bytes : 0;
}

/* Slot i of a bucket array of W-byte slots, W known at compile time. */
static inline __attribute__((always_inline)) uint64_t slot_at(const uint8_t *slots,
		uint32_t i, unsigned w)
{
	if (w == 4)
		return load32(slots + (size_t)i * 4);
	return load64(slots + (size_t)i * w) & ((UINT64_C(1) << (8 * w)) - 1);
}

/*
 * Find rem among the ascending slots [lo, hi). Remainders are uniform inside
 * a bucket, so the first probe is interpolated (it usually lands within a few
 * slots, in the same cache line); then a short linear walk, then bisection.
 */
static inline __attribute__((always_inline)) int search_bucket(const uint8_t *slots,
		unsigned w, uint32_t lo, uint32_t hi, uint64_t rem, unsigned r)
{
	uint32_t n = hi - lo, pos, k;
	uint64_t v;
	unsigned shift = r > 24 ? r - 24 : 0;

	if (n == 0)
		return 0;
	pos = lo + (uint32_t)(((rem >> shift) * n) >> (r - shift));
	v = slot_at(slots, pos, w);
	if (v == rem)
		return 1;
	if (v < rem) {
		for (k = 0, pos++; k < 4 && pos < hi; k++, pos++) {
			v = slot_at(slots, pos, w);
			if (v >= rem)
				return v == rem;
		}
		lo = pos;
	} else {
		for (k = 0; k < 4 && pos > lo; k++) {
			v = slot_at(slots, --pos, w);
			if (v <= rem)
				return v == rem;
		}
		hi = pos;
	}
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		v = slot_at(slots, mid, w);
		if (v == rem)
			return 1;
		if (v < rem)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

static int exact_lookup(const struct ns_hdr *h, uint64_t x)
{
	const uint8_t *img = (const uint8_t *)h;
	const uint8_t *slots = img + h->data_off;
	unsigned r = KEY_BITS - h->bucket_bits;
	uint64_t rem = x & ((UINT64_C(1) << r) - 1);
	size_t bk = (size_t)(x >> r);
	uint32_t lo = load32(img + HDR_BYTES + bk * 4);
	uint32_t hi = load32(img + HDR_BYTES + bk * 4 + 4);

	switch (h->slot_bytes) {
	case 4:
		return search_bucket(slots, 4, lo, hi, rem, r);
	case 5:
		return search_bucket(slots, 5, lo, hi, rem, r);
	case 6:
		return search_bucket(slots, 6, lo, hi, rem, r);
	default:
		return search_bucket(slots, 7, lo, hi, rem, r);
	}
}

/* 1 if the image holds the prefix entry whose (plain) key is key. */
static int has_prefix_key(const struct ns_hdr *h, uint64_t key)
{
	const uint64_t *p = (const uint64_t *)((const uint8_t *)h + h->prefix_off);
	size_t lo = 0, hi = h->prefix_count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p[mid] == key)
			return 1;
		if (p[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

static int prefix_lookup(const struct ns_hdr *h, const uint64_t *pv, unsigned n)
{
	unsigned l;

	for (l = 1; l <= n; l++)
		if ((h->prefix_lens & (1u << l)) && has_prefix_key(h, key_off[l] + pv[l]))
			return 1;
	return 0;
}

/* ---- overlay ------------------------------------------------------------ */

static inline const struct ns_hdr *ovl_sub(const struct ns_ovl *o, uint64_t off)
{
	return off ? (const struct ns_hdr *)((const uint8_t *)o + off) : NULL;
}

static inline int has_exact(const struct ns_hdr *h, uint64_t x)
{
	return h && h->count && exact_lookup(h, x);
}

static inline int has_prefix(const struct ns_hdr *h, uint64_t key)
{
	return h && h->prefix_count && has_prefix_key(h, key);
}

static int ovl_contains(const struct ns_ovl *o, const struct ccq_numset_query *q)
{
	const struct ns_hdr *b = hdr_of(o->base), *a = ovl_sub(o, o->adds_off);
	const struct ns_hdr *r = ovl_sub(o, o->removes_off);
	unsigned l;

	if (has_exact(a, q->x) || (has_exact(b, q->x) && !has_exact(r, q->x)))
		return 1;
	for (l = 1; l <= q->len; l++) {
		uint64_t key;

		if (!(o->prefix_lens & (1u << l)))
			continue;
		key = key_off[l] + q->pv[l];
		if (has_prefix(a, key) || (has_prefix(b, key) && !has_prefix(r, key)))
			return 1;
	}
	return 0;
}

static size_t builder_image_size(ccq_numset_builder *b)
{
	return b && ccq_numset_builder_count(b) ? align8(ccq_numset_builder_size(b)) : 0;
}

size_t ccq_numset_overlay_size(ccq_numset_builder *adds, ccq_numset_builder *removes)
{
	return HDR_BYTES + builder_image_size(adds) + builder_image_size(removes);
}

/* 1 if the sorted arrays a[na] and b[nb] share a value. */
static int sorted_overlap(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
	size_t i = 0, j = 0;

	while (i < na && j < nb) {
		if (a[i] == b[j])
			return 1;
		if (a[i] < b[j])
			i++;
		else
			j++;
	}
	return 0;
}

int ccq_numset_overlay_write(void *dst, size_t dstlen, const void *base,
		ccq_numset_builder *adds, ccq_numset_builder *removes)
{
	struct ns_ovl o;
	const struct ns_hdr *bh = hdr_of(base);
	uint8_t *out = dst;
	size_t asz, rsz, i;
	int64_t count, pcount;
	int rc;

	if (!dst || (base && !bh))
		return -CCQ_NUMSET_E_INVALID;
	if ((uintptr_t)dst % CCQ_NUMSET_ALIGN)
		return -CCQ_NUMSET_E_ALIGN;
	if ((adds && (rc = prepare(adds)) < 0) || (removes && (rc = prepare(removes)) < 0))
		return rc;
	if (adds && removes && (sorted_overlap(adds->x, adds->nx, removes->x, removes->nx)
			|| sorted_overlap(adds->p, adds->np, removes->p, removes->np)))
		return -CCQ_NUMSET_E_INVALID;
	asz = builder_image_size(adds);
	rsz = builder_image_size(removes);
	if (dstlen < HDR_BYTES + asz + rsz)
		return -CCQ_NUMSET_E_SMALL;
	memset(&o, 0, sizeof(o));
	memcpy(o.magic, ovl_magic, sizeof(o.magic));
	o.version = CCQ_NUMSET_VERSION;
	o.endian = ENDIAN_MARK;
	o.total_bytes = HDR_BYTES + asz + rsz;
	o.base = bh;
	count = bh ? bh->count : 0;
	pcount = bh ? bh->prefix_count : 0;
	o.prefix_lens = bh ? bh->prefix_lens : 0;
	if (asz) {
		o.adds_off = HDR_BYTES;
		if ((rc = ccq_numset_builder_finish(adds, out + o.adds_off, asz)) < 0)
			return rc;
		o.prefix_lens |= ((const struct ns_hdr *)(out + o.adds_off))->prefix_lens;
		for (i = 0; i < adds->nx; i++)
			count += !has_exact(bh, adds->x[i]);
		for (i = 0; i < adds->np; i++)
			pcount += !has_prefix(bh, adds->p[i]);
	}
	if (rsz) {
		o.removes_off = HDR_BYTES + asz;
		if ((rc = ccq_numset_builder_finish(removes, out + o.removes_off, rsz)) < 0)
			return rc;
		for (i = 0; i < removes->nx; i++)
			count -= has_exact(bh, removes->x[i]);
		for (i = 0; i < removes->np; i++)
			pcount -= has_prefix(bh, removes->p[i]);
	}
	o.count = (uint64_t)count;
	o.prefix_count = (uint32_t)pcount;
	memcpy(out, &o, sizeof(o));
	return 0;
}

int ccq_numset_is_overlay(const void *image)
{
	return ovl_of(image) != NULL;
}

const void *ccq_numset_overlay_base(const void *image)
{
	const struct ns_ovl *o = ovl_of(image);

	return o ? o->base : NULL;
}

size_t ccq_numset_overlay_adds(const void *image)
{
	const struct ns_ovl *o = ovl_of(image);
	const struct ns_hdr *a = o ? ovl_sub(o, o->adds_off) : NULL;

	return a ? (size_t)a->count + a->prefix_count : 0;
}

size_t ccq_numset_overlay_removes(const void *image)
{
	const struct ns_ovl *o = ovl_of(image);
	const struct ns_hdr *r = o ? ovl_sub(o, o->removes_off) : NULL;

	return r ? (size_t)r->count + r->prefix_count : 0;
}

int ccq_numset_query_init(struct ccq_numset_query *q, const char *digits)
{
	uint64_t key;
	unsigned n;

	memset(q, 0, sizeof(*q));
	if (!digits)
		return -CCQ_NUMSET_E_INVALID;
	n = parse_digits(digits, CCQ_NUMSET_MAX_DIGITS + 1, &key, q->pv);
	if (n == 0 || digits[n] != '\0')
		return -CCQ_NUMSET_E_INVALID;
	q->x = mix50(key);
	q->len = n;
	return 0;
}

int ccq_numset_contains_query(const void *image, const struct ccq_numset_query *q)
{
	const struct ns_hdr *h = hdr_of(image);
	const struct ns_ovl *o;

	if (!q || q->len == 0)
		return 0;
	if (!h)
		return (o = ovl_of(image)) ? ovl_contains(o, q) : 0;
	if (h->count && exact_lookup(h, q->x))
		return 1;
	return h->prefix_count ? prefix_lookup(h, q->pv, q->len) : 0;
}

void ccq_numset_prefetch(const void *image, const struct ccq_numset_query *q)
{
	const struct ns_hdr *h = hdr_of(image);
	const uint8_t *img = image;
	unsigned r;
	size_t bk;
	uint32_t lo, hi;
	uint64_t rem;
	const struct ns_ovl *o;

	if (!h && (o = ovl_of(image))) {
		h = hdr_of(o->base);
		img = o->base;
	}
	if (!h || !q || q->len == 0 || h->count == 0)
		return;
	r = KEY_BITS - h->bucket_bits;
	bk = (size_t)(q->x >> r);
	rem = q->x & ((UINT64_C(1) << r) - 1);
	lo = load32(img + HDR_BYTES + bk * 4);
	hi = load32(img + HDR_BYTES + bk * 4 + 4);
	if (hi > lo) {
		unsigned shift = r > 24 ? r - 24 : 0;
		uint32_t pos = lo + (uint32_t)(((rem >> shift) * (hi - lo)) >> (r - shift));

		__builtin_prefetch(img + h->data_off + (size_t)pos * h->slot_bytes);
	}
}

int ccq_numset_contains(const void *image, const char *digits)
{
	const struct ns_hdr *h = hdr_of(image);
	uint64_t key;
	unsigned n;

	if (!digits)
		return 0;
	if (!h) {
		struct ccq_numset_query q;

		return ovl_of(image) && ccq_numset_query_init(&q, digits) == 0
			&& ccq_numset_contains_query(image, &q);
	}
	if (h->prefix_count) {
		struct ccq_numset_query q;

		return ccq_numset_query_init(&q, digits) == 0
			&& ccq_numset_contains_query(image, &q);
	}
	n = parse_digits(digits, CCQ_NUMSET_MAX_DIGITS + 1, &key, NULL);
	if (n == 0 || digits[n] != '\0')
		return 0;
	return h->count && exact_lookup(h, mix50(key));
}

static int check_overlay(const void *image, size_t len);

int ccq_numset_check(const void *image, size_t len)
{
	const uint8_t *img = image;
	struct ns_hdr h;
	const uint32_t *index;
	const uint8_t *slots;
	const uint64_t *pfx;
	size_t nb, i, data_off, prefix_off, total;
	unsigned w, r;
	uint64_t m;
	uint16_t lens = 0;

	if (!image)
		return -CCQ_NUMSET_E_INVALID;
	if ((uintptr_t)image % CCQ_NUMSET_ALIGN)
		return -CCQ_NUMSET_E_ALIGN;
	if (len < HDR_BYTES)
		return -CCQ_NUMSET_E_TRUNCATED;
	if (ovl_of(image))
		return check_overlay(image, len);
	memcpy(&h, img, sizeof(h));
	if (memcmp(h.magic, ns_magic, sizeof(ns_magic)) != 0 || h.endian != ENDIAN_MARK)
		return -CCQ_NUMSET_E_MAGIC;
	if (h.version != CCQ_NUMSET_VERSION)
		return -CCQ_NUMSET_E_VERSION;
	if (h.total_bytes > len)
		return -CCQ_NUMSET_E_TRUNCATED;
	if (h.bucket_bits > MAX_BUCKET_BITS || h.reserved != 0
			|| h.count > CCQ_NUMSET_MAX_ENTRIES
			|| h.prefix_count > CCQ_NUMSET_MAX_ENTRIES
			|| h.slot_bytes != slot_bytes(h.bucket_bits)
			|| (h.prefix_lens & 1u))
		return -CCQ_NUMSET_E_LAYOUT;
	w = h.slot_bytes;
	r = KEY_BITS - h.bucket_bits;
	nb = (size_t)1 << h.bucket_bits;
	data_off = HDR_BYTES + align8(nb * 4 + 4);
	prefix_off = data_off + align8((size_t)h.count * w) + SLOT_PAD;
	total = prefix_off + (size_t)h.prefix_count * 8;
	if (h.data_off != data_off || h.prefix_off != prefix_off || h.total_bytes != total)
		return -CCQ_NUMSET_E_LAYOUT;
	if (image_checksum(img, total) != h.checksum)
		return -CCQ_NUMSET_E_CHECKSUM;

	index = (const uint32_t *)(img + HDR_BYTES);
	slots = img + data_off;
	if (index[0] != 0 || index[nb] != h.count)
		return -CCQ_NUMSET_E_ORDER;
	m = (UINT64_C(1) << (8 * w)) - 1;
	for (i = 0; i < nb; i++) {
		uint32_t j;

		if (index[i + 1] < index[i])
			return -CCQ_NUMSET_E_ORDER;
		for (j = index[i]; j < index[i + 1]; j++) {
			uint64_t v = load64(slots + (size_t)j * w) & m;

			if (v >> r)
				return -CCQ_NUMSET_E_ORDER;
			if (j > index[i] && v <= (load64(slots + (size_t)(j - 1) * w) & m))
				return -CCQ_NUMSET_E_ORDER;
		}
	}
	pfx = (const uint64_t *)(img + prefix_off);
	for (i = 0; i < h.prefix_count; i++) {
		if (pfx[i] >= KEY_SPACE || (i > 0 && pfx[i] <= pfx[i - 1]))
			return -CCQ_NUMSET_E_ORDER;
		lens |= (uint16_t)(1u << key_len(pfx[i]));
	}
	if (lens != h.prefix_lens)
		return -CCQ_NUMSET_E_LAYOUT;
	return 0;
}

/* An overlay: its header and its two delta images (not the base). */
static int check_overlay(const void *image, size_t len)
{
	const struct ns_ovl *o = image;
	uint64_t offs[2] = { o->adds_off, o->removes_off }, next = HDR_BYTES;
	int rc, i;

	if (o->endian != ENDIAN_MARK)
		return -CCQ_NUMSET_E_MAGIC;
	if (o->version != CCQ_NUMSET_VERSION)
		return -CCQ_NUMSET_E_VERSION;
	if (o->total_bytes > len)
		return -CCQ_NUMSET_E_TRUNCATED;
	if (o->reserved != 0 || (o->prefix_lens & 1u) || o->total_bytes < HDR_BYTES)
		return -CCQ_NUMSET_E_LAYOUT;
	for (i = 0; i < 2; i++) {
		const struct ns_hdr *h;

		if (!offs[i])
			continue;
		if (offs[i] != next || offs[i] + HDR_BYTES > o->total_bytes)
			return -CCQ_NUMSET_E_LAYOUT;
		h = (const struct ns_hdr *)((const uint8_t *)image + offs[i]);
		if (hdr_of(h) == NULL)
			return -CCQ_NUMSET_E_LAYOUT;
		if (h->total_bytes > o->total_bytes - offs[i])
			return -CCQ_NUMSET_E_TRUNCATED;
		if ((rc = ccq_numset_check(h, (size_t)h->total_bytes)) < 0)
			return rc;
		next = offs[i] + align8((size_t)h->total_bytes);
	}
	if (next != o->total_bytes)
		return -CCQ_NUMSET_E_LAYOUT;
	if (o->base && hdr_of(o->base) == NULL)
		return -CCQ_NUMSET_E_LAYOUT;
	return 0;
}
