/*
 * ccq wire codec; see ccq_wire.h and doc/protocol.md.
 */
#include "ccq_wire.h"

#include <stdio.h>
#include <string.h>

static const char *const err_names[CCQ_E_MAX_] = {
	[CCQ_OK] = "ok",
	[CCQ_E_BAD_FRAME] = "bad_frame",
	[CCQ_E_FRAME_TOO_LARGE] = "frame_too_large",
	[CCQ_E_BAD_VERSION] = "bad_version",
	[CCQ_E_BAD_REQUEST] = "bad_request",
	[CCQ_E_UNKNOWN_OP] = "unknown_op",
	[CCQ_E_NOT_FOUND] = "not_found",
	[CCQ_E_DB_UNAVAILABLE] = "db_unavailable",
	[CCQ_E_INTERNAL] = "internal",
	[CCQ_E_SHUTTING_DOWN] = "shutting_down",
	[CCQ_E_DENIED] = "denied",
	[CCQ_E_CONFLICT] = "conflict",
};

const char *ccq_err_name(int code)
{
	if (code < 0 || code >= CCQ_E_MAX_)
		return "unknown";
	return err_names[code];
}

/* ---- framing ---------------------------------------------------------- */

int ccq_frame_peek(const uint8_t *buf, size_t len, uint32_t max,
		uint32_t *payload_len)
{
	uint32_t n;

	if (len < CCQ_FRAME_HDR)
		return CCQ_FRAME_NEED_MORE;
	if (max == 0 || max > CCQ_FRAME_HARD_MAX)
		max = CCQ_FRAME_HARD_MAX;
	n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16)
		| ((uint32_t)buf[2] << 8) | (uint32_t)buf[3];
	*payload_len = n;
	if (n == 0)
		return CCQ_FRAME_EMPTY;
	if (n > max)
		return CCQ_FRAME_TOO_LARGE;
	if (len - CCQ_FRAME_HDR < n)
		return CCQ_FRAME_NEED_MORE;
	return CCQ_FRAME_READY;
}

void ccq_frame_put_len(uint8_t *hdr, uint32_t len)
{
	hdr[0] = (uint8_t)(len >> 24);
	hdr[1] = (uint8_t)(len >> 16);
	hdr[2] = (uint8_t)(len >> 8);
	hdr[3] = (uint8_t)len;
}

/* ---- bounded validation ---------------------------------------------- */

static uint64_t be_read(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

#define FAIL(...) do { \
		if (err && errlen) snprintf(err, errlen, __VA_ARGS__); \
		return -1; \
	} while (0)

int ccq_wire_validate(const uint8_t *p, size_t len, char *err, size_t errlen)
{
	/* stack[d] = items still expected in the container open at depth d */
	uint64_t stack[CCQ_WIRE_MAX_DEPTH];
	int depth = 0;
	size_t pos = 0;
	uint32_t objects = 0;

	for (;;) {
		uint8_t c;
		size_t avail;
		uint64_t skip = 0;     /* payload bytes after the header */
		uint64_t children = 0; /* items of a container */
		int hdr = 1;           /* header bytes incl. the type byte */
		int container = 0;

		if (pos >= len)
			FAIL("truncated at byte %zu", pos);
		if (++objects > CCQ_WIRE_MAX_OBJECTS)
			FAIL("more than %u objects", CCQ_WIRE_MAX_OBJECTS);
		c = p[pos];
		avail = len - pos;

		if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
			/* fixint, nil, bool */
		} else if (c >= 0x80 && c <= 0x8f) {
			children = 2u * (c & 0x0f);
			container = 1;
		} else if (c >= 0x90 && c <= 0x9f) {
			children = c & 0x0f;
			container = 1;
		} else if (c >= 0xa0 && c <= 0xbf) {
			skip = c & 0x1f;
		} else {
			switch (c) {
			case 0xc4: case 0xd9: hdr = 2; break;  /* bin8, str8 */
			case 0xc5: case 0xda: hdr = 3; break;  /* bin16, str16 */
			case 0xc6: case 0xdb: hdr = 5; break;  /* bin32, str32 */
			case 0xc7: hdr = 3; break;             /* ext8: len, type */
			case 0xc8: hdr = 4; break;             /* ext16 */
			case 0xc9: hdr = 6; break;             /* ext32 */
			case 0xca: skip = 4; break;
			case 0xcb: skip = 8; break;
			case 0xcc: case 0xd0: skip = 1; break;
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xce: case 0xd2: skip = 4; break;
			case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break;            /* fixext1: type + 1 */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: hdr = 3; container = 1; break;
			case 0xdd: hdr = 5; container = 1; break;
			case 0xde: hdr = 3; container = 2; break;
			case 0xdf: hdr = 5; container = 2; break;
			default:
				FAIL("invalid type byte 0x%02x at byte %zu", c, pos);
			}
			if ((size_t)hdr > avail)
				FAIL("truncated header at byte %zu", pos);
			switch (c) {
			case 0xc4: case 0xd9: case 0xc5: case 0xda:
			case 0xc6: case 0xdb:
				skip = be_read(p + pos + 1, hdr - 1);
				break;
			case 0xc7: case 0xc8: case 0xc9:
				skip = be_read(p + pos + 1, hdr - 2);
				break;
			case 0xdc: case 0xdd:
				children = be_read(p + pos + 1, hdr - 1);
				break;
			case 0xde: case 0xdf:
				children = 2 * be_read(p + pos + 1, hdr - 1);
				break;
			}
		}

		if ((size_t)hdr > avail)
			FAIL("truncated header at byte %zu", pos);
		avail -= hdr;
		if (skip > avail)
			FAIL("value at byte %zu declares %llu bytes, %zu left", pos,
				(unsigned long long)skip, avail);
		/* Every item needs at least one byte: a claim beyond the bytes
		 * left is a lie, refused before anything is allocated. */
		if (children > avail)
			FAIL("container at byte %zu declares %llu items, %zu bytes left",
				pos, (unsigned long long)children, avail);
		pos += (size_t)hdr + (size_t)skip;

		/* Checked for empty containers too: msgpack-c refuses any
		 * container, even [] or {}, opened 32 levels deep. */
		if (container && depth >= CCQ_WIRE_MAX_DEPTH)
			FAIL("nesting deeper than %d", CCQ_WIRE_MAX_DEPTH);
		if (container && children > 0) {
			stack[depth++] = children;
			continue;
		}
		/* a value is complete: close every container it completes */
		while (depth > 0) {
			if (--stack[depth - 1] > 0)
				break;
			depth--;
		}
		if (depth == 0)
			break;
	}
	if (pos != len)
		FAIL("%zu trailing bytes after the value", len - pos);
	return 0;
}

/* ---- messages --------------------------------------------------------- */

static int obj_uint(const msgpack_object *o, uint64_t *v)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		*v = o->via.u64;
		return 1;
	}
	return 0;
}

int ccq_msg_decode(ccq_msg *m, const uint8_t *payload, size_t len,
		char *err, size_t errlen)
{
	size_t off = 0;
	const msgpack_object *a;
	uint64_t v;
	msgpack_unpack_return r;

	memset(m, 0, sizeof(*m));
	msgpack_unpacked_init(&m->up_);
	if (ccq_wire_validate(payload, len, err, errlen) < 0)
		return CCQ_E_BAD_FRAME;
	r = msgpack_unpack_next(&m->up_, (const char *)payload, len, &off);
	if (r != MSGPACK_UNPACK_SUCCESS || off != len)
	{
		if (err && errlen)
			snprintf(err, errlen, "msgpack decoder refused the payload");
		return CCQ_E_BAD_FRAME;
	}

	if (m->up_.data.type != MSGPACK_OBJECT_ARRAY || m->up_.data.via.array.size < 2) {
		if (err && errlen)
			snprintf(err, errlen, "message is not an array [version, kind, ...]");
		return CCQ_E_BAD_REQUEST;
	}
	a = m->up_.data.via.array.ptr;
	if (m->up_.data.via.array.size >= 3)
		obj_uint(&a[2], &m->id);
	if (!obj_uint(&a[0], &v) || v != CCQ_PROTO_VERSION) {
		if (err && errlen)
			snprintf(err, errlen, "unsupported protocol version (this side speaks %d)",
				CCQ_PROTO_VERSION);
		return CCQ_E_BAD_VERSION;
	}
	if (m->up_.data.via.array.size != 5 || !obj_uint(&a[1], &v) || v > CCQ_KIND_EVENT
			|| !obj_uint(&a[2], &m->id)) {
		if (err && errlen)
			snprintf(err, errlen, "message must be [version, kind, id, ..., ...]");
		return CCQ_E_BAD_REQUEST;
	}
	m->kind = (int)v;
	switch (m->kind) {
	case CCQ_KIND_REQUEST:
	case CCQ_KIND_EVENT:
		if (a[3].type != MSGPACK_OBJECT_STR || a[3].via.str.size == 0) {
			if (err && errlen)
				snprintf(err, errlen, "operation name must be a non-empty string");
			return CCQ_E_BAD_REQUEST;
		}
		if (a[4].type != MSGPACK_OBJECT_MAP) {
			if (err && errlen)
				snprintf(err, errlen, "arguments must be a map");
			return CCQ_E_BAD_REQUEST;
		}
		for (uint32_t i = 0; i < a[4].via.map.size; i++) {
			if (a[4].via.map.ptr[i].key.type != MSGPACK_OBJECT_STR) {
				if (err && errlen)
					snprintf(err, errlen, "argument keys must be strings");
				return CCQ_E_BAD_REQUEST;
			}
		}
		m->name = a[3].via.str.ptr;
		m->name_len = a[3].via.str.size;
		m->body = &a[4];
		break;
	case CCQ_KIND_REPLY:
		if (!obj_uint(&a[3], &v) || v >= CCQ_E_MAX_) {
			if (err && errlen)
				snprintf(err, errlen, "reply code must be a known error code");
			return CCQ_E_BAD_REQUEST;
		}
		m->code = (int)v;
		if (m->code != 0) {
			if (a[4].type != MSGPACK_OBJECT_STR) {
				if (err && errlen)
					snprintf(err, errlen, "error reply message must be a string");
				return CCQ_E_BAD_REQUEST;
			}
			/* msgpack-c may leave ptr NULL for an empty str */
			m->errmsg = a[4].via.str.size ? a[4].via.str.ptr : "";
			m->errmsg_len = a[4].via.str.size;
		}
		m->body = &a[4];
		break;
	}
	return CCQ_OK;
}

void ccq_msg_free(ccq_msg *m)
{
	msgpack_unpacked_destroy(&m->up_);
	m->body = NULL;
}

int ccq_str_eq(const char *s, size_t len, const char *cstr)
{
	size_t n = strlen(cstr);
	return n == len && (n == 0 || memcmp(s, cstr, n) == 0);
}

const msgpack_object *ccq_map_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR
				&& ccq_str_eq(kv->key.via.str.ptr, kv->key.via.str.size, key))
			return &kv->val;
	}
	return NULL;
}

int ccq_map_str(const msgpack_object *map, const char *key,
		const char **s, size_t *len)
{
	const msgpack_object *o = ccq_map_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type != MSGPACK_OBJECT_STR)
		return -1;
	/* msgpack-c may leave ptr NULL (or stale) for an empty str */
	*s = o->via.str.size ? o->via.str.ptr : "";
	*len = o->via.str.size;
	return 1;
}

int ccq_map_uint(const msgpack_object *map, const char *key, uint64_t *v)
{
	const msgpack_object *o = ccq_map_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	return obj_uint(o, v) ? 1 : -1;
}

int ccq_map_int(const msgpack_object *map, const char *key, int64_t *v)
{
	const msgpack_object *o = ccq_map_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*v = o->via.i64;
		return 1;
	}
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
		*v = (int64_t)o->via.u64;
		return 1;
	}
	return -1;
}

int ccq_map_bool(const msgpack_object *map, const char *key, int *v)
{
	const msgpack_object *o = ccq_map_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return 0;
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return -1;
	*v = o->via.boolean;
	return 1;
}

int ccq_map_strcpy(const msgpack_object *map, const char *key,
		char *buf, size_t size)
{
	const char *s;
	size_t n;
	int r = ccq_map_str(map, key, &s, &n);
	if (r <= 0) {
		if (size)
			buf[0] = '\0';
		return r;
	}
	if (n >= size || memchr(s, '\0', n))
		return -1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return 1;
}

/* ---- encoding --------------------------------------------------------- */

void ccq_enc_init(ccq_enc *e)
{
	static const char zero[CCQ_FRAME_HDR];
	msgpack_sbuffer_init(&e->sb);
	msgpack_packer_init(&e->pk, &e->sb, msgpack_sbuffer_write);
	msgpack_sbuffer_write(&e->sb, zero, sizeof(zero));
}

void ccq_enc_free(ccq_enc *e)
{
	msgpack_sbuffer_destroy(&e->sb);
	memset(e, 0, sizeof(*e));
}

static void enc_head(ccq_enc *e, int kind, uint64_t id)
{
	msgpack_pack_array(&e->pk, 5);
	msgpack_pack_uint32(&e->pk, CCQ_PROTO_VERSION);
	msgpack_pack_uint32(&e->pk, (uint32_t)kind);
	msgpack_pack_uint64(&e->pk, id);
}

void ccq_enc_request(ccq_enc *e, uint64_t id, const char *op, uint32_t nargs)
{
	enc_head(e, CCQ_KIND_REQUEST, id);
	ccq_pack_str(&e->pk, op);
	msgpack_pack_map(&e->pk, nargs);
}

void ccq_enc_reply_ok(ccq_enc *e, uint64_t id)
{
	enc_head(e, CCQ_KIND_REPLY, id);
	msgpack_pack_uint32(&e->pk, 0);
}

void ccq_enc_reply_err(ccq_enc *e, uint64_t id, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	enc_head(e, CCQ_KIND_REPLY, id);
	msgpack_pack_uint32(&e->pk, (uint32_t)(code > 0 ? code : CCQ_E_INTERNAL));
	ccq_pack_str(&e->pk, msg);
}

void ccq_enc_event(ccq_enc *e, uint64_t seq, const char *name)
{
	enc_head(e, CCQ_KIND_EVENT, seq);
	ccq_pack_str(&e->pk, name);
}

int ccq_enc_finish(ccq_enc *e, uint32_t max, const uint8_t **buf, size_t *len)
{
	size_t payload = e->sb.size - CCQ_FRAME_HDR;

	if (max == 0 || max > CCQ_FRAME_HARD_MAX)
		max = CCQ_FRAME_HARD_MAX;
	if (payload > max)
		return -1;
	ccq_frame_put_len((uint8_t *)e->sb.data, (uint32_t)payload);
	*buf = (const uint8_t *)e->sb.data;
	*len = e->sb.size;
	return 0;
}

void ccq_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

void ccq_pack_str(msgpack_packer *pk, const char *s)
{
	ccq_pack_strn(pk, s, strlen(s));
}

void ccq_pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
	ccq_pack_str(pk, k);
	if (v)
		ccq_pack_str(pk, v);
	else
		msgpack_pack_nil(pk);
}

void ccq_pack_kv_strn(msgpack_packer *pk, const char *k, const char *v, size_t n)
{
	ccq_pack_str(pk, k);
	ccq_pack_strn(pk, v, n);
}

void ccq_pack_kv_uint(msgpack_packer *pk, const char *k, uint64_t v)
{
	ccq_pack_str(pk, k);
	msgpack_pack_uint64(pk, v);
}

void ccq_pack_kv_int(msgpack_packer *pk, const char *k, int64_t v)
{
	ccq_pack_str(pk, k);
	msgpack_pack_int64(pk, v);
}

void ccq_pack_kv_bool(msgpack_packer *pk, const char *k, int v)
{
	ccq_pack_str(pk, k);
	if (v)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

void ccq_pack_kv_nil(msgpack_packer *pk, const char *k)
{
	ccq_pack_str(pk, k);
	msgpack_pack_nil(pk);
}
