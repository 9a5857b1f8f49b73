/*
 * ccq wire codec: length-prefixed msgpack frames shared by the Kamailio
 * module, queued and the tools. The format is described in doc/protocol.md.
 *
 * Decoding is bounded: ccq_wire_validate() walks a payload before msgpack-c
 * sees it, so msgpack-c never reserves memory for counts the frame cannot
 * hold.
 */
#ifndef CCQ_WIRE_H
#define CCQ_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <msgpack.h>

#define CCQ_PROTO_VERSION 1

#define CCQ_FRAME_HDR 4
/* No configuration can raise the frame cap above this. */
#define CCQ_FRAME_HARD_MAX (16u * 1024u * 1024u)
#define CCQ_FRAME_DEFAULT_MAX (1024u * 1024u)

#define CCQ_WIRE_MAX_DEPTH 32
#define CCQ_WIRE_MAX_OBJECTS 262144u

enum ccq_kind {
	CCQ_KIND_REQUEST = 0,
	CCQ_KIND_REPLY = 1,
	CCQ_KIND_EVENT = 2,
};

enum ccq_err {
	CCQ_OK = 0,
	CCQ_E_BAD_FRAME = 1,
	CCQ_E_FRAME_TOO_LARGE = 2,
	CCQ_E_BAD_VERSION = 3,
	CCQ_E_BAD_REQUEST = 4,
	CCQ_E_UNKNOWN_OP = 5,
	CCQ_E_NOT_FOUND = 6,
	CCQ_E_DB_UNAVAILABLE = 7,
	CCQ_E_INTERNAL = 8,
	CCQ_E_SHUTTING_DOWN = 9,
	CCQ_E_DENIED = 10,
	CCQ_E_CONFLICT = 11,
	CCQ_E_MAX_ = 12
};

/* Symbolic name of an error code ("bad_frame"); "unknown" if out of range. */
const char *ccq_err_name(int code);

/* ---- framing ---------------------------------------------------------- */

enum ccq_frame_status {
	CCQ_FRAME_NEED_MORE = 0,  /* header or payload incomplete */
	CCQ_FRAME_READY = 1,      /* *payload_len bytes follow the header */
	CCQ_FRAME_TOO_LARGE = -1, /* declared length above max */
	CCQ_FRAME_EMPTY = -2,     /* declared length 0 */
};

/*
 * Look at the start of a receive buffer. On READY and TOO_LARGE,
 * *payload_len holds the declared payload length. max is the effective cap
 * (clamped to CCQ_FRAME_HARD_MAX).
 */
int ccq_frame_peek(const uint8_t *buf, size_t len, uint32_t max,
		uint32_t *payload_len);

/* Write the 4-byte big-endian length header. */
void ccq_frame_put_len(uint8_t *hdr, uint32_t len);

/* ---- bounded validation ---------------------------------------------- */

/*
 * Check that p[0..len) holds exactly one well-formed msgpack value whose
 * declared sizes fit in the bytes present, no deeper than
 * CCQ_WIRE_MAX_DEPTH and with at most CCQ_WIRE_MAX_OBJECTS objects.
 * Returns 0, or -1 with a reason in err.
 */
int ccq_wire_validate(const uint8_t *p, size_t len, char *err, size_t errlen);

/* ---- messages --------------------------------------------------------- */

typedef struct ccq_msg {
	int kind;              /* enum ccq_kind */
	uint64_t id;           /* request/reply id, event sequence */
	const char *name;      /* request op or event name (not NUL-terminated) */
	size_t name_len;
	int code;              /* reply: 0 success, else enum ccq_err */
	const char *errmsg;    /* reply error message (not NUL-terminated) */
	size_t errmsg_len;
	const msgpack_object *body; /* request args, reply result, event data */
	msgpack_unpacked up_;  /* owns the decoded objects */
} ccq_msg;

/*
 * Decode one payload (without the length header). Strings in the result
 * point into payload, which must outlive the message. Returns CCQ_OK or
 * CCQ_E_BAD_FRAME / CCQ_E_BAD_VERSION / CCQ_E_BAD_REQUEST with a reason in
 * err; m->id is set whenever the id could be read, so that an error reply
 * can name the request. Always call ccq_msg_free() afterwards.
 */
int ccq_msg_decode(ccq_msg *m, const uint8_t *payload, size_t len,
		char *err, size_t errlen);
void ccq_msg_free(ccq_msg *m);

/* Map lookups on a decoded map (str keys). */
const msgpack_object *ccq_map_get(const msgpack_object *map, const char *key);
/* 1 found, 0 absent or nil, -1 wrong type */
int ccq_map_str(const msgpack_object *map, const char *key,
		const char **s, size_t *len);
int ccq_map_uint(const msgpack_object *map, const char *key, uint64_t *v);
int ccq_map_int(const msgpack_object *map, const char *key, int64_t *v);
int ccq_map_bool(const msgpack_object *map, const char *key, int *v);
/* Copy a str value into buf (NUL-terminated); -1 if too long or wrong type. */
int ccq_map_strcpy(const msgpack_object *map, const char *key,
		char *buf, size_t size);
/* Compare a msgpack str object with a C string. */
int ccq_str_eq(const char *s, size_t len, const char *cstr);

/* ---- encoding --------------------------------------------------------- */

typedef struct ccq_enc {
	msgpack_sbuffer sb;
	msgpack_packer pk;
} ccq_enc;

/* Start a message; the frame header is reserved and filled by finish(). */
void ccq_enc_init(ccq_enc *e);
void ccq_enc_free(ccq_enc *e);

/* [1,0,id,op,{...}]: the caller then packs nargs key/value pairs. */
void ccq_enc_request(ccq_enc *e, uint64_t id, const char *op, uint32_t nargs);
/* [1,1,id,0,result]: the caller then packs exactly one result value. */
void ccq_enc_reply_ok(ccq_enc *e, uint64_t id);
/* [1,1,id,code,message]: complete. */
void ccq_enc_reply_err(ccq_enc *e, uint64_t id, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* [1,2,seq,name,data]: the caller then packs the data map. */
void ccq_enc_event(ccq_enc *e, uint64_t seq, const char *name);

/* Fill the header; returns 0, or -1 if the payload exceeds max. */
int ccq_enc_finish(ccq_enc *e, uint32_t max, const uint8_t **buf, size_t *len);

/* Packing helpers. */
void ccq_pack_str(msgpack_packer *pk, const char *s);
void ccq_pack_strn(msgpack_packer *pk, const char *s, size_t n);
void ccq_pack_kv_str(msgpack_packer *pk, const char *k, const char *v); /* NULL v -> nil */
void ccq_pack_kv_strn(msgpack_packer *pk, const char *k, const char *v, size_t n);
void ccq_pack_kv_uint(msgpack_packer *pk, const char *k, uint64_t v);
void ccq_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v);
void ccq_pack_kv_bool(msgpack_packer *pk, const char *k, int v);
void ccq_pack_kv_nil(msgpack_packer *pk, const char *k);

#endif
