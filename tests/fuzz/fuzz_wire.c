/*
 * libFuzzer target for the ccq wire codec (common/ccq_wire.[ch]).
 *
 * The input is a receive buffer as a server would see it: zero or more
 * length-prefixed frames, possibly with a partial one at the end. Every
 * complete frame is decoded, its body walked through the accessors, and a
 * reply echoing the id is encoded and decoded again, as queued would do.
 *
 * Besides "no crash, no leak, no UB", it checks invariants:
 *  - ccq_msg_decode returns bad_frame exactly when ccq_wire_validate refuses
 *    (anything the validator accepts, msgpack-c must accept too);
 *  - a re-encoded reply always decodes, with the same id, and its body
 *    re-packs to the same bytes.
 *
 * Build:  clang -g -O1 -fsanitize=fuzzer,address,undefined -Icommon \
 *           tests/fuzz/fuzz_wire.c common/ccq_wire.c -lmsgpackc -o fuzz_wire
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ccq_wire.h"

#define FUZZ_MAX_FRAME (64u * 1024u)

#define CHECK(cond) do { \
		if (!(cond)) { \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", \
				__FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

static volatile uint64_t sink;

/* Touch every byte of every object, so that ASan sees bad pointers. */
static void walk(const msgpack_object *o, int depth)
{
	CHECK(depth <= CCQ_WIRE_MAX_DEPTH);
	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		for (uint32_t i = 0; i < o->via.str.size; i++)
			sink += (uint8_t)o->via.str.ptr[i];
		break;
	case MSGPACK_OBJECT_BIN:
		for (uint32_t i = 0; i < o->via.bin.size; i++)
			sink += (uint8_t)o->via.bin.ptr[i];
		break;
	case MSGPACK_OBJECT_EXT:
		for (uint32_t i = 0; i < o->via.ext.size; i++)
			sink += (uint8_t)o->via.ext.ptr[i];
		break;
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++)
			walk(&o->via.array.ptr[i], depth + 1);
		break;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			walk(&o->via.map.ptr[i].key, depth + 1);
			walk(&o->via.map.ptr[i].val, depth + 1);
		}
		break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		sink += o->via.u64;
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		sink += o->via.boolean;
		break;
	default:               /* nil, floats */
		break;
	}
}

/* Every accessor on one key; the results must agree with the value type. */
static void probe_key(const msgpack_object *map, const char *key)
{
	const msgpack_object *o = ccq_map_get(map, key);
	const char *s = NULL;
	size_t sl = 0;
	uint64_t u = 0;
	int64_t i = 0;
	int b = 0;
	char buf[32];
	int r;

	r = ccq_map_str(map, key, &s, &sl);
	if (r == 1) {
		CHECK(o && o->type == MSGPACK_OBJECT_STR && s != NULL);
		CHECK(sl == o->via.str.size && (sl == 0 || s == o->via.str.ptr));
		if (sl)
			sink += (uint8_t)s[0] + (uint8_t)s[sl - 1];
	} else if (r == 0) {
		CHECK(!o || o->type == MSGPACK_OBJECT_NIL);
	}
	r = ccq_map_uint(map, key, &u);
	CHECK(r != 1 || (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER));
	r = ccq_map_int(map, key, &i);
	CHECK(r != 1 || (o && (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER
		|| o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)));
	r = ccq_map_bool(map, key, &b);
	CHECK(r != 1 || (o && o->type == MSGPACK_OBJECT_BOOLEAN));
	r = ccq_map_strcpy(map, key, buf, sizeof(buf));
	if (r == 1)
		CHECK(strlen(buf) < sizeof(buf) && o && strlen(buf) == o->via.str.size);
	r = ccq_map_strcpy(map, key, buf, 1);
	CHECK(r != 1 || buf[0] == '\0');
	sink += u + (uint64_t)i + (uint64_t)b;
}

static void probe_map(const msgpack_object *map)
{
	static const char *const keys[] = {
		"id", "call_id", "from", "to", "direction", "type", "source",
		"limit", "before", "created", "items", "",
	};
	char key[64];

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
		probe_key(map, keys[k]);
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return;
	/* every str key that fits a C string: lookup must find a value */
	for (uint32_t i = 0; i < map->via.map.size && i < 64; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		/* (an empty str may have a NULL ptr: never pass it to mem*()) */
		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof(key)
				|| (k->via.str.size
				&& memchr(k->via.str.ptr, '\0', k->via.str.size)))
			continue;
		if (k->via.str.size)
			memcpy(key, k->via.str.ptr, k->via.str.size);
		key[k->via.str.size] = '\0';
		CHECK(ccq_map_get(map, key) != NULL);
		probe_key(map, key);
	}
}

/* Pack an object into a fresh sbuffer (caller destroys). */
static void pack_obj(msgpack_sbuffer *sb, const msgpack_object *o)
{
	msgpack_packer pk;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_object(&pk, *o);
}

/* Encode the reply queued would send, decode it, compare. */
static void reply_roundtrip(const ccq_msg *m, int rc, const char *err)
{
	ccq_enc e;
	const uint8_t *out;
	size_t outlen;
	uint32_t plen;
	ccq_msg r;
	char rerr[256];
	int echo = 0;

	ccq_enc_init(&e);
	if (rc != CCQ_OK) {
		ccq_enc_reply_err(&e, m->id, rc, "%s: %s", ccq_err_name(rc), err);
	} else if (m->kind == CCQ_KIND_REPLY && m->code != 0) {
		ccq_enc_reply_err(&e, m->id, m->code, "%.*s",
			(int)m->errmsg_len, m->errmsg);
	} else {
		/* echo the body at the same depth it came in */
		ccq_enc_reply_ok(&e, m->id);
		msgpack_pack_object(&e.pk, *m->body);
		echo = 1;
	}
	CHECK(ccq_enc_finish(&e, 0, &out, &outlen) == 0);
	CHECK(ccq_frame_peek(out, outlen, 0, &plen) == CCQ_FRAME_READY);
	CHECK(plen + (size_t)CCQ_FRAME_HDR == outlen);
	/* every shorter view of the reply needs more bytes */
	for (size_t n = 0; n < CCQ_FRAME_HDR; n++)
		CHECK(ccq_frame_peek(out, n, 0, &plen) == CCQ_FRAME_NEED_MORE);
	CHECK(ccq_frame_peek(out, outlen - 1, 0, &plen) == CCQ_FRAME_NEED_MORE);

	CHECK(ccq_msg_decode(&r, out + CCQ_FRAME_HDR, outlen - CCQ_FRAME_HDR,
		rerr, sizeof(rerr)) == CCQ_OK);
	CHECK(r.kind == CCQ_KIND_REPLY);
	CHECK(r.id == m->id);
	if (!echo) {
		CHECK(r.code > 0 && r.code < CCQ_E_MAX_);
		CHECK(r.errmsg != NULL);
	} else {
		msgpack_sbuffer a, b;
		CHECK(r.code == 0);
		pack_obj(&a, m->body);
		pack_obj(&b, r.body);
		CHECK(a.size == b.size && memcmp(a.data, b.data, a.size) == 0);
		msgpack_sbuffer_destroy(&a);
		msgpack_sbuffer_destroy(&b);
	}
	ccq_msg_free(&r);
	ccq_enc_free(&e);
}

static void handle_payload(const uint8_t *data, uint32_t len)
{
	/* exact-size heap copy: any read past the payload is caught by ASan */
	uint8_t *p = malloc(len);
	char err[256] = "";
	char verr[256] = "";
	ccq_msg m;
	int valid, rc;

	if (!p)
		return;
	memcpy(p, data, len);
	valid = ccq_wire_validate(p, len, verr, sizeof(verr)) == 0;
	rc = ccq_msg_decode(&m, p, len, err, sizeof(err));
	/* the validator and msgpack-c agree on what is well-formed */
	CHECK(valid == (rc != CCQ_E_BAD_FRAME));
	CHECK(rc == CCQ_OK || err[0] != '\0');
	if (rc == CCQ_OK) {
		CHECK(m.kind >= CCQ_KIND_REQUEST && m.kind <= CCQ_KIND_EVENT);
		CHECK(m.body != NULL);
		walk(m.body, 0);
		if (m.kind != CCQ_KIND_REPLY) {
			CHECK(m.name && m.name_len > 0);
			CHECK(m.name >= (const char *)p
				&& m.name + m.name_len <= (const char *)p + len);
			CHECK(m.body->type == MSGPACK_OBJECT_MAP);
			(void)ccq_str_eq(m.name, m.name_len, "ping");
		}
		if (m.kind == CCQ_KIND_REPLY && m.code != 0)
			CHECK(m.errmsg && m.errmsg + m.errmsg_len <= (const char *)p + len);
		probe_map(m.body);
	}
	if (rc != CCQ_E_BAD_FRAME)
		reply_roundtrip(&m, rc, err);
	ccq_msg_free(&m);
	free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;

	/* the validator alone on the raw input, too */
	(void)ccq_wire_validate(data, size, NULL, 0);
	if (size) {
		char tiny[8];
		(void)ccq_wire_validate(data, size, tiny, sizeof(tiny));
	}

	while (off < size) {
		uint32_t plen = 0;
		int st = ccq_frame_peek(data + off, size - off, FUZZ_MAX_FRAME, &plen);

		if (st == CCQ_FRAME_NEED_MORE) {
			CHECK(size - off < CCQ_FRAME_HDR
				|| size - off - CCQ_FRAME_HDR < plen);
			break;
		}
		if (st == CCQ_FRAME_TOO_LARGE || st == CCQ_FRAME_EMPTY) {
			/* queued answers with an id-0 error and closes */
			ccq_enc e;
			const uint8_t *out;
			size_t outlen;

			CHECK(st == CCQ_FRAME_EMPTY ? plen == 0 : plen > FUZZ_MAX_FRAME);
			ccq_enc_init(&e);
			ccq_enc_reply_err(&e, 0, st == CCQ_FRAME_EMPTY
				? CCQ_E_BAD_FRAME : CCQ_E_FRAME_TOO_LARGE,
				"frame of %u bytes", plen);
			CHECK(ccq_enc_finish(&e, 0, &out, &outlen) == 0);
			ccq_enc_free(&e);
			break;
		}
		CHECK(st == CCQ_FRAME_READY);
		CHECK(plen > 0 && plen <= FUZZ_MAX_FRAME);
		CHECK(plen <= size - off - CCQ_FRAME_HDR);
		handle_payload(data + off + CCQ_FRAME_HDR, plen);
		off += CCQ_FRAME_HDR + (size_t)plen;
	}
	return 0;
}
