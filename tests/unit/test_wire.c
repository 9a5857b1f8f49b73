/*
 * Unit tests for the ccq wire codec (common/ccq_wire.[ch]).
 *
 * Golden frames live in tests/unit/golden/NAME.bin (written by
 * tests/unit/golden/make_golden.py, an independent hand-written msgpack
 * encoder). They are found through $CCQ_TEST_GOLDEN_DIR, else GOLDEN_DIR
 * (set by Makefile.am to the absolute source path).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <cmocka.h>

#include "ccq_wire.h"

#ifndef GOLDEN_DIR
#define GOLDEN_DIR "tests/unit/golden"
#endif

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ------------------------------------------------------------ */

static uint8_t *read_golden(const char *name, size_t *len)
{
	const char *dir = getenv("CCQ_TEST_GOLDEN_DIR");
	char path[4096];
	FILE *f;
	uint8_t *buf;
	long n;

	if (!dir || !*dir)
		dir = GOLDEN_DIR;
	snprintf(path, sizeof(path), "%s/%s.bin", dir, name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open golden file %s (set CCQ_TEST_GOLDEN_DIR)", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n > 0);
	rewind(f);
	buf = malloc((size_t)n);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Heap copy of exactly n bytes, so that valgrind/ASan see any overread. */
static uint8_t *dup_bytes(const void *p, size_t n)
{
	uint8_t *c = malloc(n ? n : 1);
	assert_non_null(c);
	if (n)
		memcpy(c, p, n);
	return c;
}

/* Finish an encoder with the hard cap and check the frame header. */
static void finish(ccq_enc *e, const uint8_t **buf, size_t *len)
{
	assert_int_equal(ccq_enc_finish(e, 0, buf, len), 0);
	assert_true(*len > CCQ_FRAME_HDR);
	assert_int_equal(((uint32_t)(*buf)[0] << 24 | (uint32_t)(*buf)[1] << 16
			| (uint32_t)(*buf)[2] << 8 | (*buf)[3]), *len - CCQ_FRAME_HDR);
}

/* peek a complete frame, then decode its payload */
static int decode_frame(const uint8_t *buf, size_t len, ccq_msg *m)
{
	uint32_t plen = 0;
	char err[256] = "";
	int rc;

	assert_int_equal(ccq_frame_peek(buf, len, 0, &plen), CCQ_FRAME_READY);
	assert_int_equal(plen, len - CCQ_FRAME_HDR);
	rc = ccq_msg_decode(m, buf + CCQ_FRAME_HDR, plen, err, sizeof(err));
	if (rc != CCQ_OK)
		print_message("decode: %s\n", err);
	return rc;
}

/* decode a bare payload from a heap copy; returns rc, err filled */
static int decode_payload(const uint8_t *p, size_t n, ccq_msg *m,
		char *err, size_t errlen)
{
	return ccq_msg_decode(m, p, n, err, errlen);
}

/* Payload must be refused by validate and by decode (bad_frame). */
static void expect_bad_frame(const uint8_t *p, size_t n)
{
	uint8_t *c = dup_bytes(p, n);
	char err[256] = "";
	ccq_msg m;

	assert_int_equal(ccq_wire_validate(c, n, err, sizeof(err)), -1);
	assert_true(err[0] != '\0');
	err[0] = '\0';
	assert_int_equal(ccq_msg_decode(&m, c, n, err, sizeof(err)), CCQ_E_BAD_FRAME);
	assert_true(err[0] != '\0');
	assert_null(m.body);
	ccq_msg_free(&m);
	free(c);
}

/* Payload passes validation but decode returns want (with id want_id). */
static void expect_decode(const uint8_t *p, size_t n, int want, uint64_t want_id)
{
	uint8_t *c = dup_bytes(p, n);
	char err[256] = "";
	ccq_msg m;
	int rc;

	assert_int_equal(ccq_wire_validate(c, n, err, sizeof(err)), 0);
	rc = decode_payload(c, n, &m, err, sizeof(err));
	if (rc != want)
		print_error("payload decoded to %d (%s), expected %d\n", rc, err, want);
	assert_int_equal(rc, want);
	if (want != CCQ_OK)
		assert_true(err[0] != '\0');
	assert_int_equal(m.id, want_id);
	ccq_msg_free(&m);
	free(c);
}

/* ---- the golden set ----------------------------------------------------- */

static void build_req_ping(ccq_enc *e)
{
	ccq_enc_request(e, 42, "ping", 0);
}

static void build_req_txn_create(ccq_enc *e)
{
	ccq_enc_request(e, 300, "txn.create", 6);
	ccq_pack_kv_str(&e->pk, "call_id", "a84b4c76e66710@pc33.atlanta.example.com");
	ccq_pack_kv_str(&e->pk, "from", "sip:alice@atlanta.example.com");
	ccq_pack_kv_str(&e->pk, "to", "sip:1000@cc.example.com");
	ccq_pack_kv_str(&e->pk, "direction", "inbound");
	ccq_pack_kv_str(&e->pk, "type", "direct");
	ccq_pack_kv_str(&e->pk, "source", "192.0.2.10:5060");
}

static void build_reply_ok_ping(ccq_enc *e)
{
	ccq_enc_reply_ok(e, 42);
	msgpack_pack_map(&e->pk, 3);
	ccq_pack_kv_str(&e->pk, "version", "0.1.0");
	ccq_pack_kv_uint(&e->pk, "proto", 1);
	ccq_pack_kv_uint(&e->pk, "schema", 3);
}

static void build_reply_ok_txn(ccq_enc *e)
{
	ccq_enc_reply_ok(e, 300);
	msgpack_pack_map(&e->pk, 2);
	ccq_pack_kv_uint(&e->pk, "id", 4294967296ull);
	ccq_pack_kv_bool(&e->pk, "created", 0);
}

static void build_reply_err(ccq_enc *e)
{
	ccq_enc_reply_err(e, 42, CCQ_E_UNKNOWN_OP, "unknown operation '%s'", "foo");
}

static void build_event(ccq_enc *e)
{
	ccq_enc_event(e, 70000, "txn.created");
	msgpack_pack_map(&e->pk, 5);
	ccq_pack_kv_uint(&e->pk, "id", 77);
	ccq_pack_kv_strn(&e->pk, "call_id", "abcdef", 3);
	ccq_pack_kv_int(&e->pk, "delta", -200);
	ccq_pack_kv_str(&e->pk, "agent", NULL);
	ccq_pack_kv_bool(&e->pk, "ok", 1);
}

static const struct golden {
	const char *name;
	void (*build)(ccq_enc *e);
} goldens[] = {
	{ "req_ping", build_req_ping },
	{ "req_txn_create", build_req_txn_create },
	{ "reply_ok_ping", build_reply_ok_ping },
	{ "reply_ok_txn", build_reply_ok_txn },
	{ "reply_err", build_reply_err },
	{ "event", build_event },
};

static const uint8_t ping_frame[] = {
	0x00, 0x00, 0x00, 0x0a,       /* length 10 */
	0x95,                         /* fixarray 5 */
	0x01,                         /* version 1 */
	0x00,                         /* kind request */
	0x2a,                         /* id 42 */
	0xa4, 'p', 'i', 'n', 'g',     /* fixstr 4 */
	0x80,                         /* fixmap 0 */
};

static const uint8_t err_frame[] = {
	0x00, 0x00, 0x00, 0x1d,       /* length 29 */
	0x95, 0x01, 0x01, 0x2a,       /* [1, 1, 42, */
	0x05,                         /*  unknown_op, */
	0xb7,                         /*  fixstr 23 */
	'u', 'n', 'k', 'n', 'o', 'w', 'n', ' ', 'o', 'p', 'e', 'r', 'a', 't',
	'i', 'o', 'n', ' ', '\'', 'f', 'o', 'o', '\'',
};

static void test_golden_ping_hardcoded(void **state)
{
	ccq_enc e;
	const uint8_t *buf;
	size_t len, flen;
	uint8_t *file;

	(void)state;
	ccq_enc_init(&e);
	build_req_ping(&e);
	finish(&e, &buf, &len);
	assert_int_equal(len, sizeof(ping_frame));
	assert_memory_equal(buf, ping_frame, sizeof(ping_frame));
	ccq_enc_free(&e);

	/* the golden file itself must still hold the hand-checked bytes */
	file = read_golden("req_ping", &flen);
	assert_int_equal(flen, sizeof(ping_frame));
	assert_memory_equal(file, ping_frame, sizeof(ping_frame));
	free(file);
}

static void test_golden_err_hardcoded(void **state)
{
	ccq_enc e;
	const uint8_t *buf;
	size_t len, flen;
	uint8_t *file;

	(void)state;
	ccq_enc_init(&e);
	build_reply_err(&e);
	finish(&e, &buf, &len);
	assert_int_equal(len, sizeof(err_frame));
	assert_memory_equal(buf, err_frame, sizeof(err_frame));
	ccq_enc_free(&e);

	file = read_golden("reply_err", &flen);
	assert_int_equal(flen, sizeof(err_frame));
	assert_memory_equal(file, err_frame, sizeof(err_frame));
	free(file);
}

static void test_golden_encode(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(goldens); i++) {
		ccq_enc e;
		const uint8_t *buf;
		size_t len, flen;
		uint8_t *file = read_golden(goldens[i].name, &flen);

		ccq_enc_init(&e);
		goldens[i].build(&e);
		finish(&e, &buf, &len);
		if (len != flen)
			print_error("%s: encoded %zu bytes, golden %zu\n",
				goldens[i].name, len, flen);
		assert_int_equal(len, flen);
		assert_memory_equal(buf, file, len);
		ccq_enc_free(&e);
		free(file);
	}
}

/* The golden files decode to what they were meant to say. */
static void test_golden_decode(void **state)
{
	ccq_msg m;
	uint8_t *f;
	size_t n, sl;
	const char *s;
	uint64_t u;
	int64_t i64;
	int b;
	char buf[64];

	(void)state;
	f = read_golden("req_ping", &n);
	assert_int_equal(decode_frame(f, n, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_REQUEST);
	assert_int_equal(m.id, 42);
	assert_true(ccq_str_eq(m.name, m.name_len, "ping"));
	assert_int_equal(m.body->type, MSGPACK_OBJECT_MAP);
	assert_int_equal(m.body->via.map.size, 0);
	/* strings point into the payload */
	assert_ptr_equal(m.name, (const char *)f + CCQ_FRAME_HDR + 5);
	ccq_msg_free(&m);
	free(f);

	f = read_golden("req_txn_create", &n);
	assert_int_equal(decode_frame(f, n, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_REQUEST);
	assert_int_equal(m.id, 300);
	assert_true(ccq_str_eq(m.name, m.name_len, "txn.create"));
	assert_int_equal(m.body->via.map.size, 6);
	assert_int_equal(ccq_map_strcpy(m.body, "call_id", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "a84b4c76e66710@pc33.atlanta.example.com");
	assert_int_equal(ccq_map_strcpy(m.body, "from", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "sip:alice@atlanta.example.com");
	assert_int_equal(ccq_map_strcpy(m.body, "to", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "sip:1000@cc.example.com");
	assert_int_equal(ccq_map_str(m.body, "direction", &s, &sl), 1);
	assert_true(ccq_str_eq(s, sl, "inbound"));
	assert_int_equal(ccq_map_str(m.body, "type", &s, &sl), 1);
	assert_true(ccq_str_eq(s, sl, "direct"));
	assert_int_equal(ccq_map_strcpy(m.body, "source", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "192.0.2.10:5060");
	assert_int_equal(ccq_map_str(m.body, "missing", &s, &sl), 0);
	ccq_msg_free(&m);
	free(f);

	f = read_golden("reply_ok_ping", &n);
	assert_int_equal(decode_frame(f, n, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_REPLY);
	assert_int_equal(m.id, 42);
	assert_int_equal(m.code, 0);
	assert_null(m.errmsg);
	assert_int_equal(ccq_map_strcpy(m.body, "version", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "0.1.0");
	assert_int_equal(ccq_map_uint(m.body, "proto", &u), 1);
	assert_int_equal(u, 1);
	assert_int_equal(ccq_map_uint(m.body, "schema", &u), 1);
	assert_int_equal(u, 3);
	ccq_msg_free(&m);
	free(f);

	f = read_golden("reply_ok_txn", &n);
	assert_int_equal(decode_frame(f, n, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_REPLY);
	assert_int_equal(m.id, 300);
	assert_int_equal(m.code, 0);
	assert_int_equal(ccq_map_uint(m.body, "id", &u), 1);
	assert_int_equal(u, 4294967296ull);
	b = 7;
	assert_int_equal(ccq_map_bool(m.body, "created", &b), 1);
	assert_int_equal(b, 0);
	ccq_msg_free(&m);
	free(f);

	f = read_golden("reply_err", &n);
	assert_int_equal(decode_frame(f, n, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_REPLY);
	assert_int_equal(m.id, 42);
	assert_int_equal(m.code, CCQ_E_UNKNOWN_OP);
	assert_true(ccq_str_eq(m.errmsg, m.errmsg_len, "unknown operation 'foo'"));
	assert_ptr_equal(m.errmsg, (const char *)f + CCQ_FRAME_HDR + 6);
	ccq_msg_free(&m);
	free(f);

	f = read_golden("event", &n);
	assert_int_equal(decode_frame(f, n, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_EVENT);
	assert_int_equal(m.id, 70000);
	assert_true(ccq_str_eq(m.name, m.name_len, "txn.created"));
	assert_int_equal(ccq_map_uint(m.body, "id", &u), 1);
	assert_int_equal(u, 77);
	assert_int_equal(ccq_map_strcpy(m.body, "call_id", buf, sizeof(buf)), 1);
	assert_string_equal(buf, "abc");
	assert_int_equal(ccq_map_int(m.body, "delta", &i64), 1);
	assert_int_equal(i64, -200);
	assert_non_null(ccq_map_get(m.body, "agent"));
	assert_int_equal(ccq_map_get(m.body, "agent")->type, MSGPACK_OBJECT_NIL);
	assert_int_equal(ccq_map_str(m.body, "agent", &s, &sl), 0);
	assert_int_equal(ccq_map_bool(m.body, "ok", &b), 1);
	assert_int_equal(b, 1);
	ccq_msg_free(&m);
	free(f);
}

/* ---- round trips -------------------------------------------------------- */

static const uint64_t test_ids[] = {
	0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295ull, 4294967296ull,
	(uint64_t)INT64_MAX, (uint64_t)INT64_MAX + 1, UINT64_MAX - 1, UINT64_MAX,
};

static void test_rt_ids(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(test_ids); i++) {
		uint64_t id = test_ids[i], u = 0;
		ccq_enc e;
		ccq_msg m;
		const uint8_t *buf;
		size_t len;

		/* request */
		ccq_enc_init(&e);
		ccq_enc_request(&e, id, "txn.get", 1);
		ccq_pack_kv_uint(&e.pk, "id", id);
		finish(&e, &buf, &len);
		assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
		assert_int_equal(m.kind, CCQ_KIND_REQUEST);
		assert_int_equal(m.id, id);
		assert_true(ccq_str_eq(m.name, m.name_len, "txn.get"));
		assert_int_equal(ccq_map_uint(m.body, "id", &u), 1);
		assert_int_equal(u, id);
		ccq_msg_free(&m);
		ccq_enc_free(&e);

		/* ok reply with a scalar result */
		ccq_enc_init(&e);
		ccq_enc_reply_ok(&e, id);
		msgpack_pack_uint64(&e.pk, id);
		finish(&e, &buf, &len);
		assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
		assert_int_equal(m.kind, CCQ_KIND_REPLY);
		assert_int_equal(m.id, id);
		assert_int_equal(m.code, 0);
		assert_int_equal(m.body->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
		assert_int_equal(m.body->via.u64, id);
		ccq_msg_free(&m);
		ccq_enc_free(&e);

		/* error reply */
		ccq_enc_init(&e);
		ccq_enc_reply_err(&e, id, CCQ_E_NOT_FOUND, "no TXN %llu",
			(unsigned long long)id);
		finish(&e, &buf, &len);
		assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
		assert_int_equal(m.id, id);
		assert_int_equal(m.code, CCQ_E_NOT_FOUND);
		ccq_msg_free(&m);
		ccq_enc_free(&e);

		/* event sequence */
		ccq_enc_init(&e);
		ccq_enc_event(&e, id, "tick");
		msgpack_pack_map(&e.pk, 0);
		finish(&e, &buf, &len);
		assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
		assert_int_equal(m.kind, CCQ_KIND_EVENT);
		assert_int_equal(m.id, id);
		ccq_msg_free(&m);
		ccq_enc_free(&e);
	}
}

static void test_rt_reply_ok_map(void **state)
{
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len, sl;
	const char *s;
	uint64_t u;
	int64_t i64;
	int b;
	const msgpack_object *inner;

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, 9);
	msgpack_pack_map(&e.pk, 9);
	ccq_pack_kv_str(&e.pk, "s", "hello");
	ccq_pack_kv_uint(&e.pk, "u", UINT64_MAX);
	ccq_pack_kv_int(&e.pk, "neg", INT64_MIN);
	ccq_pack_kv_int(&e.pk, "pos", 5);
	ccq_pack_kv_bool(&e.pk, "t", 1);
	ccq_pack_kv_bool(&e.pk, "f", 0);
	ccq_pack_kv_nil(&e.pk, "nil");
	ccq_pack_str(&e.pk, "inner");
	msgpack_pack_map(&e.pk, 1);
	ccq_pack_kv_uint(&e.pk, "x", 1);
	ccq_pack_str(&e.pk, "items");
	msgpack_pack_array(&e.pk, 2);
	msgpack_pack_uint64(&e.pk, 1);
	msgpack_pack_uint64(&e.pk, 2);
	finish(&e, &buf, &len);

	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_REPLY);
	assert_int_equal(m.code, 0);
	assert_int_equal(m.body->type, MSGPACK_OBJECT_MAP);
	assert_int_equal(m.body->via.map.size, 9);

	assert_int_equal(ccq_map_str(m.body, "s", &s, &sl), 1);
	assert_true(ccq_str_eq(s, sl, "hello"));
	assert_int_equal(ccq_map_uint(m.body, "u", &u), 1);
	assert_int_equal(u, UINT64_MAX);
	assert_int_equal(ccq_map_int(m.body, "neg", &i64), 1);
	assert_true(i64 == INT64_MIN);
	assert_int_equal(ccq_map_int(m.body, "pos", &i64), 1);
	assert_int_equal(i64, 5);
	assert_int_equal(ccq_map_bool(m.body, "t", &b), 1);
	assert_int_equal(b, 1);
	assert_int_equal(ccq_map_bool(m.body, "f", &b), 1);
	assert_int_equal(b, 0);

	/* nil reads as absent for every accessor */
	assert_int_equal(ccq_map_str(m.body, "nil", &s, &sl), 0);
	assert_int_equal(ccq_map_uint(m.body, "nil", &u), 0);
	assert_int_equal(ccq_map_int(m.body, "nil", &i64), 0);
	assert_int_equal(ccq_map_bool(m.body, "nil", &b), 0);

	/* absent */
	assert_null(ccq_map_get(m.body, "nope"));
	assert_int_equal(ccq_map_uint(m.body, "nope", &u), 0);
	assert_int_equal(ccq_map_int(m.body, "nope", &i64), 0);
	assert_int_equal(ccq_map_bool(m.body, "nope", &b), 0);
	/* prefixes and extensions of a key do not match */
	assert_null(ccq_map_get(m.body, "in"));
	assert_null(ccq_map_get(m.body, "inner2"));
	assert_null(ccq_map_get(m.body, ""));

	/* wrong types */
	assert_int_equal(ccq_map_uint(m.body, "s", &u), -1);
	assert_int_equal(ccq_map_uint(m.body, "neg", &u), -1);
	assert_int_equal(ccq_map_int(m.body, "u", &i64), -1);  /* > INT64_MAX */
	assert_int_equal(ccq_map_int(m.body, "s", &i64), -1);
	assert_int_equal(ccq_map_bool(m.body, "u", &b), -1);
	assert_int_equal(ccq_map_str(m.body, "u", &s, &sl), -1);
	assert_int_equal(ccq_map_str(m.body, "inner", &s, &sl), -1);

	/* nested map and array */
	inner = ccq_map_get(m.body, "inner");
	assert_non_null(inner);
	assert_int_equal(ccq_map_uint(inner, "x", &u), 1);
	assert_int_equal(u, 1);
	inner = ccq_map_get(m.body, "items");
	assert_non_null(inner);
	assert_int_equal(inner->type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(inner->via.array.size, 2);
	/* lookups on a non-map / NULL map find nothing */
	assert_null(ccq_map_get(inner, "x"));
	assert_null(ccq_map_get(NULL, "x"));
	assert_int_equal(ccq_map_uint(inner, "x", &u), 0);

	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_rt_reply_ok_any_result(void **state)
{
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len;

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, 1);
	msgpack_pack_nil(&e.pk);
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.code, 0);
	assert_int_equal(m.body->type, MSGPACK_OBJECT_NIL);
	assert_null(ccq_map_get(m.body, "x"));
	ccq_msg_free(&m);
	ccq_enc_free(&e);

	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, 2);
	msgpack_pack_array(&e.pk, 0);
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.body->type, MSGPACK_OBJECT_ARRAY);
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_rt_reply_err(void **state)
{
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len;
	char big[2000];

	(void)state;
	for (int code = 1; code < CCQ_E_MAX_; code++) {
		ccq_enc_init(&e);
		ccq_enc_reply_err(&e, 5, code, "failed: %s", ccq_err_name(code));
		finish(&e, &buf, &len);
		assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
		assert_int_equal(m.kind, CCQ_KIND_REPLY);
		assert_int_equal(m.id, 5);
		assert_int_equal(m.code, code);
		assert_int_equal(m.errmsg_len, strlen("failed: ") + strlen(ccq_err_name(code)));
		assert_memory_equal(m.errmsg, "failed: ", 8);
		assert_memory_equal(m.errmsg + 8, ccq_err_name(code), m.errmsg_len - 8);
		assert_ptr_equal(m.body->via.str.ptr, m.errmsg);
		ccq_msg_free(&m);
		ccq_enc_free(&e);
	}

	/* a code <= 0 would read as success: the encoder sends internal */
	for (int code = -1; code <= 0; code++) {
		ccq_enc_init(&e);
		ccq_enc_reply_err(&e, 6, code, "oops");
		finish(&e, &buf, &len);
		assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
		assert_int_equal(m.code, CCQ_E_INTERNAL);
		assert_true(ccq_str_eq(m.errmsg, m.errmsg_len, "oops"));
		ccq_msg_free(&m);
		ccq_enc_free(&e);
	}

	/* empty message */
	ccq_enc_init(&e);
	ccq_enc_reply_err(&e, 7, CCQ_E_DENIED, "%s", "");
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.code, CCQ_E_DENIED);
	assert_int_equal(m.errmsg_len, 0);
	/* msgpack-c leaves ptr NULL for this "": the codec must not */
	assert_non_null(m.errmsg);
	ccq_msg_free(&m);
	ccq_enc_free(&e);

	/* long messages are cut at 511 bytes */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ccq_enc_init(&e);
	ccq_enc_reply_err(&e, 8, CCQ_E_INTERNAL, "%s", big);
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.errmsg_len, 511);
	assert_memory_equal(m.errmsg, big, 511);
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_rt_event(void **state)
{
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len;
	uint64_t u;
	char s[32];

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_event(&e, 12345, "queue.changed");
	msgpack_pack_map(&e.pk, 2);
	ccq_pack_kv_str(&e.pk, "queue", "sales");
	ccq_pack_kv_uint(&e.pk, "waiting", 3);
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.kind, CCQ_KIND_EVENT);
	assert_int_equal(m.id, 12345);
	assert_int_equal(m.code, 0);
	assert_true(ccq_str_eq(m.name, m.name_len, "queue.changed"));
	assert_int_equal(ccq_map_strcpy(m.body, "queue", s, sizeof(s)), 1);
	assert_string_equal(s, "sales");
	assert_int_equal(ccq_map_uint(m.body, "waiting", &u), 1);
	assert_int_equal(u, 3);
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_rt_empty_args(void **state)
{
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len, sl;
	const char *s;
	uint64_t u;
	char cbuf[8] = "junk";

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 1, "txn.list", 0);
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.body->type, MSGPACK_OBJECT_MAP);
	assert_int_equal(m.body->via.map.size, 0);
	assert_null(ccq_map_get(m.body, "limit"));
	assert_int_equal(ccq_map_uint(m.body, "limit", &u), 0);
	assert_int_equal(ccq_map_str(m.body, "before", &s, &sl), 0);
	assert_int_equal(ccq_map_strcpy(m.body, "x", cbuf, sizeof(cbuf)), 0);
	assert_string_equal(cbuf, "");
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_rt_1000_args(void **state)
{
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len;
	char key[16];
	uint64_t u;

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 77, "bulk", 1000);
	for (unsigned i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		ccq_pack_kv_uint(&e.pk, key, (uint64_t)i * 1000003u);
	}
	finish(&e, &buf, &len);
	/* 1000 entries: map16 header */
	assert_int_equal(buf[CCQ_FRAME_HDR + 9], 0xde);

	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.body->via.map.size, 1000);
	for (unsigned i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "k%u", i);
		assert_int_equal(ccq_map_uint(m.body, key, &u), 1);
		assert_int_equal(u, (uint64_t)i * 1000003u);
	}
	assert_int_equal(ccq_map_uint(m.body, "k1000", &u), 0);
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_rt_unicode(void **state)
{
	/* 2-, 3- and 4-byte UTF-8 sequences */
	static const char op[] = "op.\xc3\xa9t\xc3\xa9";                  /* op.été */
	static const char name[] = "Zo\xc3\xab \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac "
		"\xf0\x9f\x93\x9e";                                    /* Zoë — 日本 📞 */
	static const char key[] = "\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"; /* ключ */
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len, sl;
	const char *s;
	char out[64];

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 3, op, 2);
	ccq_pack_kv_str(&e.pk, "display", name);
	ccq_pack_kv_str(&e.pk, key, "\xe2\x9c\x93");
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(m.name_len, strlen(op));
	assert_true(ccq_str_eq(m.name, m.name_len, op));
	assert_int_equal(ccq_map_str(m.body, "display", &s, &sl), 1);
	assert_int_equal(sl, strlen(name));
	assert_memory_equal(s, name, sl);
	assert_int_equal(ccq_map_strcpy(m.body, "display", out, sizeof(out)), 1);
	assert_string_equal(out, name);
	/* exactly enough room / one byte short */
	assert_int_equal(ccq_map_strcpy(m.body, "display", out, strlen(name) + 1), 1);
	assert_int_equal(ccq_map_strcpy(m.body, "display", out, strlen(name)), -1);
	assert_int_equal(ccq_map_strcpy(m.body, key, out, sizeof(out)), 1);
	assert_string_equal(out, "\xe2\x9c\x93");
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_rt_embedded_nul(void **state)
{
	static const char v[] = { 'a', '\0', 'b' };
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len, sl;
	const char *s;
	char out[16];

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 4, "txn.create", 2);
	ccq_pack_kv_strn(&e.pk, "call_id", v, sizeof(v));
	ccq_pack_kv_strn(&e.pk, "tail", "x\0", 2);
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(ccq_map_str(m.body, "call_id", &s, &sl), 1);
	assert_int_equal(sl, 3);
	assert_memory_equal(s, v, 3);
	/* a C string cannot hold it: refused, not silently truncated */
	assert_int_equal(ccq_map_strcpy(m.body, "call_id", out, sizeof(out)), -1);
	assert_int_equal(ccq_map_strcpy(m.body, "tail", out, sizeof(out)), -1);
	assert_false(ccq_str_eq(s, sl, "a"));
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

/*
 * msgpack-c gives an empty str a NULL (or stale) pointer when no earlier
 * value set its trail pointer. The accessors must still hand out a valid
 * pointer ("") so callers can memcpy/bind it safely.
 */
static void test_empty_strings(void **state)
{
	/* [1,1,7,0,{"":""}] and [1,1,7,4,""]: only fix types before the "" */
	static const uint8_t ok_empty[] = { 0x95, 0x01, 0x01, 0x07, 0x00, 0x81, 0xa0, 0xa0 };
	static const uint8_t err_empty[] = { 0x95, 0x01, 0x01, 0x07, 0x04, 0xa0 };
	ccq_msg m;
	char err[128], out[4] = "zz";
	const char *s = NULL;
	size_t sl = 99;

	(void)state;
	assert_int_equal(ccq_msg_decode(&m, ok_empty, sizeof(ok_empty), err, sizeof(err)),
		CCQ_OK);
	assert_non_null(ccq_map_get(m.body, ""));
	assert_int_equal(ccq_map_str(m.body, "", &s, &sl), 1);
	assert_non_null(s);
	assert_int_equal(sl, 0);
	assert_true(ccq_str_eq(s, sl, ""));
	assert_int_equal(ccq_map_strcpy(m.body, "", out, sizeof(out)), 1);
	assert_string_equal(out, "");
	ccq_msg_free(&m);

	assert_int_equal(ccq_msg_decode(&m, err_empty, sizeof(err_empty), err, sizeof(err)),
		CCQ_OK);
	assert_int_equal(m.code, CCQ_E_BAD_REQUEST);
	assert_non_null(m.errmsg);
	assert_int_equal(m.errmsg_len, 0);
	ccq_msg_free(&m);

	/* ccq_str_eq with a NULL, empty string */
	assert_true(ccq_str_eq(NULL, 0, ""));
	assert_false(ccq_str_eq(NULL, 0, "a"));
}

static void test_strcpy_wrong_type(void **state)
{
	ccq_enc e;
	ccq_msg m;
	const uint8_t *buf;
	size_t len;
	char out[8] = "junk";

	(void)state;
	ccq_enc_init(&e);
	ccq_enc_request(&e, 4, "x", 2);
	ccq_pack_kv_uint(&e.pk, "n", 1);
	ccq_pack_kv_nil(&e.pk, "z");
	finish(&e, &buf, &len);
	assert_int_equal(decode_frame(buf, len, &m), CCQ_OK);
	assert_int_equal(ccq_map_strcpy(m.body, "n", out, sizeof(out)), -1);
	assert_string_equal(out, "");
	strcpy(out, "junk");
	assert_int_equal(ccq_map_strcpy(m.body, "z", out, sizeof(out)), 0);
	assert_string_equal(out, "");
	/* size 0: nothing written, nothing fits */
	assert_int_equal(ccq_map_strcpy(m.body, "z", out, 0), 0);
	ccq_msg_free(&m);
	ccq_enc_free(&e);
}

static void test_str_eq(void **state)
{
	(void)state;
	assert_true(ccq_str_eq("abc", 3, "abc"));
	assert_false(ccq_str_eq("abc", 2, "abc"));
	assert_false(ccq_str_eq("abcd", 4, "abc"));
	assert_true(ccq_str_eq("", 0, ""));
	assert_false(ccq_str_eq("a\0", 2, "a"));
}

static void test_enc_finish_max(void **state)
{
	ccq_enc e;
	const uint8_t *buf;
	size_t len;
	char *big;

	(void)state;
	ccq_enc_init(&e);
	build_req_ping(&e);               /* payload 10 bytes */
	assert_int_equal(ccq_enc_finish(&e, 9, &buf, &len), -1);
	assert_int_equal(ccq_enc_finish(&e, 10, &buf, &len), 0);
	assert_int_equal(len, 14);
	assert_memory_equal(buf, ping_frame, sizeof(ping_frame));
	ccq_enc_free(&e);

	/* payload just above the hard cap: refused even with max 0 / huge */
	big = malloc(CCQ_FRAME_HARD_MAX);
	assert_non_null(big);
	memset(big, 'a', CCQ_FRAME_HARD_MAX);
	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, 1);
	ccq_pack_strn(&e.pk, big, CCQ_FRAME_HARD_MAX - 16);
	/* [1,1,1,0,str32] = 5 + 5 + len */
	assert_int_equal(e.sb.size - CCQ_FRAME_HDR, CCQ_FRAME_HARD_MAX - 6);
	assert_int_equal(ccq_enc_finish(&e, 0, &buf, &len), 0);
	assert_int_equal(ccq_enc_finish(&e, UINT32_MAX, &buf, &len), 0);
	assert_int_equal(ccq_enc_finish(&e, CCQ_FRAME_DEFAULT_MAX, &buf, &len), -1);
	ccq_enc_free(&e);

	ccq_enc_init(&e);
	ccq_enc_reply_ok(&e, 1);
	ccq_pack_strn(&e.pk, big, CCQ_FRAME_HARD_MAX - 9);
	assert_int_equal(e.sb.size - CCQ_FRAME_HDR, CCQ_FRAME_HARD_MAX + 1);
	assert_int_equal(ccq_enc_finish(&e, 0, &buf, &len), -1);
	assert_int_equal(ccq_enc_finish(&e, UINT32_MAX, &buf, &len), -1);
	ccq_enc_free(&e);
	free(big);
}

/* ---- framing ------------------------------------------------------------ */

static void test_frame_need_more_header(void **state)
{
	static const uint8_t junk[4] = { 0xff, 0xff, 0xff, 0xff };
	uint32_t plen = 0xdeadbeef;

	(void)state;
	for (size_t n = 0; n < CCQ_FRAME_HDR; n++) {
		assert_int_equal(ccq_frame_peek(ping_frame, n, 0, &plen),
			CCQ_FRAME_NEED_MORE);
		/* even a header that will turn out too large needs 4 bytes first */
		assert_int_equal(ccq_frame_peek(junk, n, 0, &plen),
			CCQ_FRAME_NEED_MORE);
	}
	assert_int_equal(plen, 0xdeadbeef);
	assert_int_equal(ccq_frame_peek(NULL, 0, 0, &plen), CCQ_FRAME_NEED_MORE);
}

static void test_frame_need_more_payload(void **state)
{
	uint32_t plen;

	(void)state;
	for (size_t n = CCQ_FRAME_HDR; n < sizeof(ping_frame); n++) {
		plen = 0;
		assert_int_equal(ccq_frame_peek(ping_frame, n, 0, &plen),
			CCQ_FRAME_NEED_MORE);
		assert_int_equal(plen, 10);
	}
	plen = 0;
	assert_int_equal(ccq_frame_peek(ping_frame, sizeof(ping_frame), 0, &plen),
		CCQ_FRAME_READY);
	assert_int_equal(plen, 10);
}

static void test_frame_back_to_back(void **state)
{
	uint8_t buf[sizeof(ping_frame) + sizeof(err_frame) + 2];
	size_t off = 0, total;
	uint32_t plen;
	ccq_msg m;
	char err[128];

	(void)state;
	memcpy(buf, ping_frame, sizeof(ping_frame));
	memcpy(buf + sizeof(ping_frame), err_frame, sizeof(err_frame));
	total = sizeof(ping_frame) + sizeof(err_frame);
	buf[total] = 0;          /* start of a third header */
	buf[total + 1] = 0;
	total += 2;

	assert_int_equal(ccq_frame_peek(buf, total, 64, &plen), CCQ_FRAME_READY);
	assert_int_equal(plen, 10);
	assert_int_equal(ccq_msg_decode(&m, buf + CCQ_FRAME_HDR, plen, err, sizeof(err)),
		CCQ_OK);
	assert_int_equal(m.id, 42);
	ccq_msg_free(&m);
	off += CCQ_FRAME_HDR + plen;

	assert_int_equal(ccq_frame_peek(buf + off, total - off, 64, &plen), CCQ_FRAME_READY);
	assert_int_equal(plen, 29);
	assert_int_equal(ccq_msg_decode(&m, buf + off + CCQ_FRAME_HDR, plen, err,
		sizeof(err)), CCQ_OK);
	assert_int_equal(m.code, CCQ_E_UNKNOWN_OP);
	ccq_msg_free(&m);
	off += CCQ_FRAME_HDR + plen;

	assert_int_equal(ccq_frame_peek(buf + off, total - off, 64, &plen),
		CCQ_FRAME_NEED_MORE);
	assert_int_equal(off + 2, total);
}

static void test_frame_empty(void **state)
{
	static const uint8_t hdr[] = { 0, 0, 0, 0, 0x95 };
	uint32_t plen = 99;

	(void)state;
	assert_int_equal(ccq_frame_peek(hdr, 4, 0, &plen), CCQ_FRAME_EMPTY);
	assert_int_equal(plen, 0);
	assert_int_equal(ccq_frame_peek(hdr, sizeof(hdr), 1, &plen), CCQ_FRAME_EMPTY);
}

static void test_frame_too_large(void **state)
{
	uint8_t hdr[4];
	uint32_t plen;
	uint8_t *buf;

	(void)state;
	/* exactly max passes (once complete), max + 1 is refused at once */
	buf = calloc(1, CCQ_FRAME_HDR + 1000);
	assert_non_null(buf);
	ccq_frame_put_len(buf, 1000);
	assert_int_equal(ccq_frame_peek(buf, CCQ_FRAME_HDR + 999, 1000, &plen),
		CCQ_FRAME_NEED_MORE);
	assert_int_equal(ccq_frame_peek(buf, CCQ_FRAME_HDR + 1000, 1000, &plen),
		CCQ_FRAME_READY);
	assert_int_equal(plen, 1000);
	assert_int_equal(ccq_frame_peek(buf, CCQ_FRAME_HDR + 1000, 999, &plen),
		CCQ_FRAME_TOO_LARGE);
	assert_int_equal(plen, 1000);
	assert_int_equal(ccq_frame_peek(buf, CCQ_FRAME_HDR, 999, &plen),
		CCQ_FRAME_TOO_LARGE);
	free(buf);

	ccq_frame_put_len(hdr, CCQ_FRAME_DEFAULT_MAX);
	assert_int_equal(ccq_frame_peek(hdr, 4, CCQ_FRAME_DEFAULT_MAX, &plen),
		CCQ_FRAME_NEED_MORE);
	ccq_frame_put_len(hdr, CCQ_FRAME_DEFAULT_MAX + 1);
	assert_int_equal(ccq_frame_peek(hdr, 4, CCQ_FRAME_DEFAULT_MAX, &plen),
		CCQ_FRAME_TOO_LARGE);
	assert_int_equal(plen, CCQ_FRAME_DEFAULT_MAX + 1);
	/* max = 1 */
	ccq_frame_put_len(hdr, 1);
	assert_int_equal(ccq_frame_peek(hdr, 4, 1, &plen), CCQ_FRAME_NEED_MORE);
	ccq_frame_put_len(hdr, 2);
	assert_int_equal(ccq_frame_peek(hdr, 4, 1, &plen), CCQ_FRAME_TOO_LARGE);
}

static void test_frame_hard_cap(void **state)
{
	static const uint32_t maxes[] = {
		0, CCQ_FRAME_HARD_MAX, CCQ_FRAME_HARD_MAX + 1, UINT32_MAX,
	};
	uint8_t hdr[4];
	uint32_t plen;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(maxes); i++) {
		/* max 0 means the hard cap; anything larger is clamped to it */
		ccq_frame_put_len(hdr, CCQ_FRAME_HARD_MAX);
		assert_int_equal(ccq_frame_peek(hdr, 4, maxes[i], &plen),
			CCQ_FRAME_NEED_MORE);
		assert_int_equal(plen, CCQ_FRAME_HARD_MAX);
		ccq_frame_put_len(hdr, CCQ_FRAME_HARD_MAX + 1);
		assert_int_equal(ccq_frame_peek(hdr, 4, maxes[i], &plen),
			CCQ_FRAME_TOO_LARGE);
		assert_int_equal(plen, CCQ_FRAME_HARD_MAX + 1);
		ccq_frame_put_len(hdr, UINT32_MAX);
		assert_int_equal(ccq_frame_peek(hdr, 4, maxes[i], &plen),
			CCQ_FRAME_TOO_LARGE);
		assert_int_equal(plen, UINT32_MAX);
	}
}

static void test_frame_put_len(void **state)
{
	static const uint32_t vals[] = { 0, 1, 0xff, 0x100, 0x01020304, UINT32_MAX };
	uint8_t hdr[4];
	uint32_t plen;

	(void)state;
	ccq_frame_put_len(hdr, 0x01020304);
	assert_int_equal(hdr[0], 1);
	assert_int_equal(hdr[1], 2);
	assert_int_equal(hdr[2], 3);
	assert_int_equal(hdr[3], 4);
	for (size_t i = 1; i < ARRAY_LEN(vals); i++) {
		ccq_frame_put_len(hdr, vals[i]);
		(void)ccq_frame_peek(hdr, 4, UINT32_MAX, &plen);
		assert_int_equal(plen, vals[i]);
	}
}

/* ---- malformed payloads ------------------------------------------------- */

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks + mi.hblkhd;
}

static void test_lying_lengths(void **state)
{
	static const uint8_t arr32[] = { 0xdd, 0x00, 0xff, 0xff, 0xff };
	static const uint8_t arr32_full[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 1, 2, 3 };
	static const uint8_t arr16[] = { 0xdc, 0xff, 0xff, 0x01, 0x02 };
	static const uint8_t map32[] = { 0xdf, 0x80, 0x00, 0x00, 0x00 };
	static const uint8_t map32_some[] = { 0xdf, 0x80, 0x00, 0x00, 0x00, 0xa1, 'k', 0x01 };
	static const uint8_t map16[] = { 0xde, 0x00, 0x02, 0xa1, 'k', 0x01, 0xa1 };
	/* map with one entry needs two bytes: only one present */
	static const uint8_t map_half[] = { 0x81, 0x01 };
	static const uint8_t str32[] = { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a', 'b' };
	static const uint8_t str16[] = { 0xda, 0x00, 0x03, 'a', 'b' };
	static const uint8_t str8[] = { 0xd9, 0x05, 'a' };
	static const uint8_t fixstr[] = { 0xa5, 'a' };
	static const uint8_t bin32[] = { 0xc6, 0xff, 0xff, 0xff, 0xff, 0 };
	static const uint8_t ext32[] = { 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01, 0 };
	static const uint8_t ext8[] = { 0xc7, 0x02, 0x01, 0 };
	static const uint8_t fixext16[] = { 0xd8, 0x01, 0, 0, 0, 0 };
	static const uint8_t u64[] = { 0xcf, 0, 0, 0 };
	static const uint8_t f64[] = { 0xcb, 0, 0, 0, 0, 0, 0, 0 };
	static const uint8_t hdr_cut[] = { 0xdd, 0x00 };
	/* inner lie inside an honest outer container */
	static const uint8_t inner[] = { 0x92, 0x01, 0xdd, 0x7f, 0xff, 0xff, 0xff, 0x01 };
	const struct { const uint8_t *p; size_t n; } cases[] = {
		{ arr32, sizeof(arr32) }, { arr32_full, sizeof(arr32_full) },
		{ arr16, sizeof(arr16) }, { map32, sizeof(map32) },
		{ map32_some, sizeof(map32_some) }, { map16, sizeof(map16) },
		{ map_half, sizeof(map_half) }, { str32, sizeof(str32) },
		{ str16, sizeof(str16) }, { str8, sizeof(str8) },
		{ fixstr, sizeof(fixstr) }, { bin32, sizeof(bin32) },
		{ ext32, sizeof(ext32) }, { ext8, sizeof(ext8) },
		{ fixext16, sizeof(fixext16) }, { u64, sizeof(u64) }, { f64, sizeof(f64) },
		{ hdr_cut, sizeof(hdr_cut) }, { inner, sizeof(inner) },
	};
	size_t before, after;
	ccq_msg m;
	char err[128];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++)
		expect_bad_frame(cases[i].p, cases[i].n);

	/* the 16M-element array claim: refused without a big allocation
	 * (msgpack-c would reserve 16M * sizeof(msgpack_object) = 384 MiB) */
	before = heap_in_use();
	assert_int_equal(ccq_msg_decode(&m, arr32, sizeof(arr32), err, sizeof(err)),
		CCQ_E_BAD_FRAME);
	after = heap_in_use();
	assert_true(after < before + 1024 * 1024);
	ccq_msg_free(&m);

	before = heap_in_use();
	assert_int_equal(ccq_msg_decode(&m, map32, sizeof(map32), err, sizeof(err)),
		CCQ_E_BAD_FRAME);
	after = heap_in_use();
	assert_true(after < before + 1024 * 1024);
	ccq_msg_free(&m);
}

/* A payload with every msgpack type: validate must accept all of them. */
static const uint8_t all_types[] = {
	0x95, 0x01, 0x01, 0x09, 0x00,        /* [1,1,9,0, */
	0xdc, 0x00, 0x28,                    /* array16, 40 items */
	0xc0, 0xc2, 0xc3,                    /* nil false true */
	0x00, 0x7f, 0xe0, 0xff,              /* fixints */
	0xcc, 0xff,
	0xcd, 0xff, 0xff,
	0xce, 0xff, 0xff, 0xff, 0xff,
	0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xd0, 0x80,
	0xd1, 0x80, 0x00,
	0xd2, 0x80, 0x00, 0x00, 0x00,
	0xd3, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0xca, 0x3f, 0x80, 0x00, 0x00,                           /* 1.0f */
	0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18,   /* pi */
	0xa0,                                                   /* "" */
	0xd9, 0x01, 'x',
	0xda, 0x00, 0x01, 'y',
	0xdb, 0x00, 0x00, 0x00, 0x01, 'z',
	0xc4, 0x00,
	0xc4, 0x01, 0x00,
	0xc5, 0x00, 0x01, 0x01,
	0xc6, 0x00, 0x00, 0x00, 0x01, 0x02,
	0xd4, 0x01, 0xaa,
	0xd5, 0x01, 0xaa, 0xbb,
	0xd6, 0xff, 0x00, 0x00, 0x00, 0x01,                     /* timestamp32 */
	0xd7, 0x02, 1, 2, 3, 4, 5, 6, 7, 8,
	0xd8, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	0xc7, 0x00, 0x05,                                       /* ext8 empty */
	0xc7, 0x01, 0x05, 0xcc,
	0xc8, 0x00, 0x02, 0x06, 0xab, 0xcd,
	0xc9, 0x00, 0x00, 0x00, 0x01, 0x07, 0xef,
	0x90,
	0xdc, 0x00, 0x00,
	0xdd, 0x00, 0x00, 0x00, 0x01, 0xc0,
	0x80,
	0xde, 0x00, 0x01, 0x01, 0x02,                           /* {1: 2} */
	0xdf, 0x00, 0x00, 0x00, 0x01, 0xa1, 'k', 0x90,          /* {"k": []} */
};

static void test_all_types_valid(void **state)
{
	ccq_msg m;
	char err[128] = "";

	(void)state;
	assert_int_equal(ccq_wire_validate(all_types, sizeof(all_types), err,
		sizeof(err)), 0);
	assert_int_equal(ccq_msg_decode(&m, all_types, sizeof(all_types), err,
		sizeof(err)), CCQ_OK);
	assert_int_equal(m.body->type, MSGPACK_OBJECT_ARRAY);
	assert_int_equal(m.body->via.array.size, 40);
	assert_int_equal(m.body->via.array.ptr[9].type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_int_equal(m.body->via.array.ptr[9].via.u64, 0xffffffffu);
	assert_int_equal(m.body->via.array.ptr[14].type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
	assert_true(m.body->via.array.ptr[14].via.i64 == INT64_MIN);
	assert_int_equal(m.body->via.array.ptr[15].type, MSGPACK_OBJECT_FLOAT32);
	assert_int_equal(m.body->via.array.ptr[33].type, MSGPACK_OBJECT_EXT);
	assert_int_equal(m.body->via.array.ptr[33].via.ext.type, 7);
	assert_int_equal(m.body->via.array.ptr[39].type, MSGPACK_OBJECT_MAP);
	ccq_msg_free(&m);
}

/* Every proper prefix of a valid payload is refused, without crashing. */
static void check_prefixes(const uint8_t *p, size_t n)
{
	for (size_t k = 0; k < n; k++)
		expect_bad_frame(p, k);
}

static void test_truncated_everywhere(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(goldens); i++) {
		size_t n;
		uint8_t *f = read_golden(goldens[i].name, &n);
		check_prefixes(f + CCQ_FRAME_HDR, n - CCQ_FRAME_HDR);
		free(f);
	}
	check_prefixes(all_types, sizeof(all_types));
}

static void test_trailing_bytes(void **state)
{
	uint8_t buf[64];
	const uint8_t *ping = ping_frame + CCQ_FRAME_HDR;
	size_t n = sizeof(ping_frame) - CCQ_FRAME_HDR;

	(void)state;
	memcpy(buf, ping, n);
	buf[n] = 0xc0;
	expect_bad_frame(buf, n + 1);
	buf[n] = 0x00;
	expect_bad_frame(buf, n + 1);
	/* two whole messages in one payload */
	memcpy(buf + n, ping, n);
	expect_bad_frame(buf, 2 * n);
	/* two scalars */
	buf[0] = 0x01;
	buf[1] = 0x02;
	expect_bad_frame(buf, 2);
}

static void test_invalid_type_byte(void **state)
{
	static const uint8_t alone[] = { 0xc1 };
	static const uint8_t in_args[] = { 0x95, 0x01, 0x00, 0x01, 0xa1, 'x', 0x81, 0xa1, 'k', 0xc1 };
	static const uint8_t as_op[] = { 0x95, 0x01, 0x00, 0x01, 0xc1, 0x80 };

	(void)state;
	expect_bad_frame(alone, sizeof(alone));
	expect_bad_frame(in_args, sizeof(in_args));
	expect_bad_frame(as_op, sizeof(as_op));
	expect_bad_frame(NULL, 0);
}

/* n nested containers around leaf; returns the length */
static size_t nest(uint8_t *buf, int n, uint8_t open, const uint8_t *leaf, size_t leaflen)
{
	size_t pos = 0;
	for (int i = 0; i < n; i++) {
		buf[pos++] = open;
		if (open == 0x81)         /* map: key 0 */
			buf[pos++] = 0x00;
	}
	memcpy(buf + pos, leaf, leaflen);
	return pos + leaflen;
}

static void test_nesting(void **state)
{
	static const uint8_t one[] = { 0x01 };
	static const uint8_t empty_arr[] = { 0x90 };
	static const uint8_t empty_map[] = { 0x80 };
	static const uint8_t req_head[] = { 0x95, 0x01, 0x00, 0x07, 0xa4, 'd', 'e', 'e', 'p',
		0x81, 0xa1, 'a' };
	uint8_t buf[256];
	size_t n;

	(void)state;
	/* 32 levels pass validation and msgpack-c (not a message: bad_request) */
	n = nest(buf, CCQ_WIRE_MAX_DEPTH, 0x91, one, 1);
	expect_decode(buf, n, CCQ_E_BAD_REQUEST, 0);
	n = nest(buf, CCQ_WIRE_MAX_DEPTH, 0x81, one, 1);
	expect_decode(buf, n, CCQ_E_BAD_REQUEST, 0);
	/* 33 levels do not */
	n = nest(buf, CCQ_WIRE_MAX_DEPTH + 1, 0x91, one, 1);
	expect_bad_frame(buf, n);
	n = nest(buf, CCQ_WIRE_MAX_DEPTH + 1, 0x81, one, 1);
	expect_bad_frame(buf, n);
	n = nest(buf, 100, 0x91, one, 1);
	expect_bad_frame(buf, n);

	/* an empty container counts as a level too (msgpack-c refuses it at
	 * depth 33 even though it has no children) */
	n = nest(buf, CCQ_WIRE_MAX_DEPTH - 1, 0x91, empty_arr, 1);
	expect_decode(buf, n, CCQ_E_BAD_REQUEST, 0);
	n = nest(buf, CCQ_WIRE_MAX_DEPTH, 0x91, empty_arr, 1);
	expect_bad_frame(buf, n);
	n = nest(buf, CCQ_WIRE_MAX_DEPTH, 0x81, empty_map, 1);
	expect_bad_frame(buf, n);
	buf[0] = 0x90;
	expect_decode(buf, 1, CCQ_E_BAD_REQUEST, 0);

	/* a real request: message array (1) + args map (2) + 30 arrays = 32 */
	memcpy(buf, req_head, sizeof(req_head));
	n = sizeof(req_head) + nest(buf + sizeof(req_head), 30, 0x91, one, 1);
	expect_decode(buf, n, CCQ_OK, 7);
	n = sizeof(req_head) + nest(buf + sizeof(req_head), 31, 0x91, one, 1);
	expect_bad_frame(buf, n);
	n = sizeof(req_head) + nest(buf + sizeof(req_head), 30, 0x91, empty_arr, 1);
	expect_bad_frame(buf, n);
}

static void test_object_limit(void **state)
{
	size_t n = 5 + CCQ_WIRE_MAX_OBJECTS;
	uint8_t *buf = malloc(n);
	uint32_t cnt;

	(void)state;
	assert_non_null(buf);
	memset(buf, 0x01, n);
	buf[0] = 0xdd;
	/* the array itself + (MAX - 1) items = MAX objects */
	cnt = CCQ_WIRE_MAX_OBJECTS - 1;
	ccq_frame_put_len(buf + 1, cnt);
	expect_decode(buf, n - 1, CCQ_E_BAD_REQUEST, 1);
	/* one more */
	cnt = CCQ_WIRE_MAX_OBJECTS;
	ccq_frame_put_len(buf + 1, cnt);
	expect_bad_frame(buf, n);
	free(buf);
}

static void test_validate_err_buffer(void **state)
{
	static const uint8_t bad[] = { 0xdd, 0x00, 0xff, 0xff, 0xff };
	char err[4] = "zzz";
	char big[128];

	(void)state;
	/* no err buffer at all */
	assert_int_equal(ccq_wire_validate(bad, sizeof(bad), NULL, 0), -1);
	assert_int_equal(ccq_wire_validate(ping_frame + 4, 10, NULL, 0), 0);
	/* a tiny one is truncated, NUL-terminated */
	assert_int_equal(ccq_wire_validate(bad, sizeof(bad), err, sizeof(err)), -1);
	assert_int_equal(strlen(err), 3);
	/* errlen 0: untouched */
	strcpy(err, "zzz");
	assert_int_equal(ccq_wire_validate(bad, sizeof(bad), err, 0), -1);
	assert_string_equal(err, "zzz");
	assert_int_equal(ccq_wire_validate(bad, sizeof(bad), big, sizeof(big)), -1);
	assert_non_null(strstr(big, "declares"));
}

/* ---- message structure -------------------------------------------------- */

#define P(...) { __VA_ARGS__ }
#define PING_REST 0xa4, 'p', 'i', 'n', 'g', 0x80

static void test_bad_version(void **state)
{
	static const uint8_t v2[] = P(0x95, 0x02, 0x00, 0x2a, PING_REST);
	static const uint8_t v0[] = P(0x95, 0x00, 0x00, 0x2a, PING_REST);
	static const uint8_t vneg[] = P(0x95, 0xff, 0x00, 0x2a, PING_REST);
	static const uint8_t vstr[] = P(0x95, 0xa1, '1', 0x00, 0x2a, PING_REST);
	static const uint8_t vbig[] = P(0x95, 0xcd, 0x01, 0x01, 0x00, 0x2a, PING_REST);
	/* unknown versions may have another shape: still bad_version */
	static const uint8_t v2short[] = P(0x92, 0x02, 0x00);
	static const uint8_t v2long[] = P(0x97, 0x02, 0x00,
		0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0, 0xc0, 0xc0);
	static const uint8_t v2strid[] = P(0x93, 0x02, 0x00, 0xa1, 'x');
	ccq_msg m;
	char err[128];
	uint8_t *c;

	(void)state;
	expect_decode(v2, sizeof(v2), CCQ_E_BAD_VERSION, 42);
	expect_decode(v0, sizeof(v0), CCQ_E_BAD_VERSION, 42);
	expect_decode(vneg, sizeof(vneg), CCQ_E_BAD_VERSION, 42);
	expect_decode(vstr, sizeof(vstr), CCQ_E_BAD_VERSION, 42);
	expect_decode(vbig, sizeof(vbig), CCQ_E_BAD_VERSION, 42);
	expect_decode(v2short, sizeof(v2short), CCQ_E_BAD_VERSION, 0);
	expect_decode(v2long, sizeof(v2long), CCQ_E_BAD_VERSION, UINT64_MAX);
	expect_decode(v2strid, sizeof(v2strid), CCQ_E_BAD_VERSION, 0);

	c = dup_bytes(v2, sizeof(v2));
	assert_int_equal(ccq_msg_decode(&m, c, sizeof(v2), err, sizeof(err)),
		CCQ_E_BAD_VERSION);
	assert_non_null(strstr(err, "version"));
	ccq_msg_free(&m);
	free(c);
}

static void test_bad_shape(void **state)
{
	static const uint8_t not_array_map[] = P(0x80);
	static const uint8_t not_array_int[] = P(0x01);
	static const uint8_t not_array_str[] = P(0xa1, 'x');
	static const uint8_t empty_arr[] = P(0x90);
	static const uint8_t one[] = P(0x91, 0x01);
	static const uint8_t two[] = P(0x92, 0x01, 0x00);
	static const uint8_t four[] = P(0x94, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g');
	static const uint8_t six[] = P(0x96, 0x01, 0x00, 0x2a, PING_REST, 0xc0);
	static const uint8_t kind3[] = P(0x95, 0x01, 0x03, 0x2a, PING_REST);
	static const uint8_t kind_big[] = P(0x95, 0x01, 0xcc, 0x80, 0x2a, PING_REST);
	static const uint8_t kind_neg[] = P(0x95, 0x01, 0xff, 0x2a, PING_REST);
	static const uint8_t kind_str[] = P(0x95, 0x01, 0xa1, '0', 0x2a, PING_REST);
	static const uint8_t kind_nil[] = P(0x95, 0x01, 0xc0, 0x2a, PING_REST);
	static const uint8_t id_neg[] = P(0x95, 0x01, 0x00, 0xff, PING_REST);
	static const uint8_t id_str[] = P(0x95, 0x01, 0x00, 0xa1, '1', PING_REST);
	static const uint8_t id_float[] = P(0x95, 0x01, 0x00, 0xca, 0x3f, 0x80, 0, 0, PING_REST);
	static const uint8_t id_nil[] = P(0x95, 0x01, 0x00, 0xc0, PING_REST);

	(void)state;
	expect_decode(not_array_map, sizeof(not_array_map), CCQ_E_BAD_REQUEST, 0);
	expect_decode(not_array_int, sizeof(not_array_int), CCQ_E_BAD_REQUEST, 0);
	expect_decode(not_array_str, sizeof(not_array_str), CCQ_E_BAD_REQUEST, 0);
	expect_decode(empty_arr, sizeof(empty_arr), CCQ_E_BAD_REQUEST, 0);
	expect_decode(one, sizeof(one), CCQ_E_BAD_REQUEST, 0);
	expect_decode(two, sizeof(two), CCQ_E_BAD_REQUEST, 0);
	expect_decode(four, sizeof(four), CCQ_E_BAD_REQUEST, 42);
	expect_decode(six, sizeof(six), CCQ_E_BAD_REQUEST, 42);
	/* wrong kind: the id is known, so the error reply can name it */
	expect_decode(kind3, sizeof(kind3), CCQ_E_BAD_REQUEST, 42);
	expect_decode(kind_big, sizeof(kind_big), CCQ_E_BAD_REQUEST, 42);
	expect_decode(kind_neg, sizeof(kind_neg), CCQ_E_BAD_REQUEST, 42);
	expect_decode(kind_str, sizeof(kind_str), CCQ_E_BAD_REQUEST, 42);
	expect_decode(kind_nil, sizeof(kind_nil), CCQ_E_BAD_REQUEST, 42);
	/* the id must be a uint */
	expect_decode(id_neg, sizeof(id_neg), CCQ_E_BAD_REQUEST, 0);
	expect_decode(id_str, sizeof(id_str), CCQ_E_BAD_REQUEST, 0);
	expect_decode(id_float, sizeof(id_float), CCQ_E_BAD_REQUEST, 0);
	expect_decode(id_nil, sizeof(id_nil), CCQ_E_BAD_REQUEST, 0);
}

static void test_bad_request_fields(void **state)
{
	static const uint8_t op_int[] = P(0x95, 0x01, 0x00, 0x2a, 0x05, 0x80);
	static const uint8_t op_nil[] = P(0x95, 0x01, 0x00, 0x2a, 0xc0, 0x80);
	static const uint8_t op_empty[] = P(0x95, 0x01, 0x00, 0x2a, 0xa0, 0x80);
	static const uint8_t op_bin[] = P(0x95, 0x01, 0x00, 0x2a, 0xc4, 0x04, 'p', 'i', 'n', 'g', 0x80);
	static const uint8_t op_arr[] = P(0x95, 0x01, 0x00, 0x2a, 0x91, 0xa1, 'p', 0x80);
	static const uint8_t args_arr[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g', 0x90);
	static const uint8_t args_nil[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g', 0xc0);
	static const uint8_t args_str[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g', 0xa1, 'x');
	static const uint8_t key_int[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g',
		0x81, 0x01, 0x02);
	static const uint8_t key_nil[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g',
		0x81, 0xc0, 0x02);
	static const uint8_t key_bin[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g',
		0x81, 0xc4, 0x01, 'k', 0x02);
	static const uint8_t key_second[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g',
		0x82, 0xa1, 'a', 0x01, 0x92, 0x01, 0x02, 0x03);
	/* events follow the same rules */
	static const uint8_t ev_name_int[] = P(0x95, 0x01, 0x02, 0x2a, 0x05, 0x80);
	static const uint8_t ev_data_arr[] = P(0x95, 0x01, 0x02, 0x2a, 0xa1, 'e', 0x90);
	static const uint8_t ev_key_int[] = P(0x95, 0x01, 0x02, 0x2a, 0xa1, 'e', 0x81, 0x01, 0x02);
	/* a str key with a non-str value is fine */
	static const uint8_t ok_vals[] = P(0x95, 0x01, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g',
		0x82, 0xa1, 'a', 0x90, 0xa1, 'b', 0x81, 0x01, 0x02);

	(void)state;
	expect_decode(op_int, sizeof(op_int), CCQ_E_BAD_REQUEST, 42);
	expect_decode(op_nil, sizeof(op_nil), CCQ_E_BAD_REQUEST, 42);
	expect_decode(op_empty, sizeof(op_empty), CCQ_E_BAD_REQUEST, 42);
	expect_decode(op_bin, sizeof(op_bin), CCQ_E_BAD_REQUEST, 42);
	expect_decode(op_arr, sizeof(op_arr), CCQ_E_BAD_REQUEST, 42);
	expect_decode(args_arr, sizeof(args_arr), CCQ_E_BAD_REQUEST, 42);
	expect_decode(args_nil, sizeof(args_nil), CCQ_E_BAD_REQUEST, 42);
	expect_decode(args_str, sizeof(args_str), CCQ_E_BAD_REQUEST, 42);
	expect_decode(key_int, sizeof(key_int), CCQ_E_BAD_REQUEST, 42);
	expect_decode(key_nil, sizeof(key_nil), CCQ_E_BAD_REQUEST, 42);
	expect_decode(key_bin, sizeof(key_bin), CCQ_E_BAD_REQUEST, 42);
	expect_decode(key_second, sizeof(key_second), CCQ_E_BAD_REQUEST, 42);
	expect_decode(ev_name_int, sizeof(ev_name_int), CCQ_E_BAD_REQUEST, 42);
	expect_decode(ev_data_arr, sizeof(ev_data_arr), CCQ_E_BAD_REQUEST, 42);
	expect_decode(ev_key_int, sizeof(ev_key_int), CCQ_E_BAD_REQUEST, 42);
	expect_decode(ok_vals, sizeof(ok_vals), CCQ_OK, 42);
}

static void test_bad_reply_fields(void **state)
{
	static const uint8_t code12[] = P(0x95, 0x01, 0x01, 0x2a, 0x0c, 0xa1, 'x');
	static const uint8_t code255[] = P(0x95, 0x01, 0x01, 0x2a, 0xcc, 0xff, 0xa1, 'x');
	static const uint8_t code_huge[] = P(0x95, 0x01, 0x01, 0x2a,
		0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0x01, 0xa1, 'x');
	static const uint8_t code_neg[] = P(0x95, 0x01, 0x01, 0x2a, 0xff, 0xa1, 'x');
	static const uint8_t code_str[] = P(0x95, 0x01, 0x01, 0x2a, 0xa1, '4', 0xa1, 'x');
	static const uint8_t code_nil[] = P(0x95, 0x01, 0x01, 0x2a, 0xc0, 0xa1, 'x');
	static const uint8_t msg_nil[] = P(0x95, 0x01, 0x01, 0x2a, 0x04, 0xc0);
	static const uint8_t msg_map[] = P(0x95, 0x01, 0x01, 0x2a, 0x04, 0x80);
	static const uint8_t msg_bin[] = P(0x95, 0x01, 0x01, 0x2a, 0x04, 0xc4, 0x01, 'x');
	static const uint8_t code11[] = P(0x95, 0x01, 0x01, 0x2a, 0x0b, 0xa1, 'x');
	/* a success reply may carry any result, even a map with int keys */
	static const uint8_t ok_intkeys[] = P(0x95, 0x01, 0x01, 0x2a, 0x00, 0x81, 0x01, 0x02);
	static const uint8_t ok_str[] = P(0x95, 0x01, 0x01, 0x2a, 0x00, 0xa1, 'x');

	(void)state;
	expect_decode(code12, sizeof(code12), CCQ_E_BAD_REQUEST, 42);
	expect_decode(code255, sizeof(code255), CCQ_E_BAD_REQUEST, 42);
	expect_decode(code_huge, sizeof(code_huge), CCQ_E_BAD_REQUEST, 42);
	expect_decode(code_neg, sizeof(code_neg), CCQ_E_BAD_REQUEST, 42);
	expect_decode(code_str, sizeof(code_str), CCQ_E_BAD_REQUEST, 42);
	expect_decode(code_nil, sizeof(code_nil), CCQ_E_BAD_REQUEST, 42);
	expect_decode(msg_nil, sizeof(msg_nil), CCQ_E_BAD_REQUEST, 42);
	expect_decode(msg_map, sizeof(msg_map), CCQ_E_BAD_REQUEST, 42);
	expect_decode(msg_bin, sizeof(msg_bin), CCQ_E_BAD_REQUEST, 42);
	expect_decode(code11, sizeof(code11), CCQ_OK, 42);
	expect_decode(ok_intkeys, sizeof(ok_intkeys), CCQ_OK, 42);
	expect_decode(ok_str, sizeof(ok_str), CCQ_OK, 42);
}

/* ---- error names -------------------------------------------------------- */

static void test_err_names(void **state)
{
	static const char *const want[] = {
		"ok", "bad_frame", "frame_too_large", "bad_version", "bad_request",
		"unknown_op", "not_found", "db_unavailable", "internal",
		"shutting_down", "denied", "conflict",
	};

	(void)state;
	assert_int_equal(ARRAY_LEN(want), CCQ_E_MAX_);
	for (int i = 0; i < CCQ_E_MAX_; i++)
		assert_string_equal(ccq_err_name(i), want[i]);
	assert_string_equal(ccq_err_name(CCQ_E_BAD_FRAME), "bad_frame");
	assert_string_equal(ccq_err_name(CCQ_E_CONFLICT), "conflict");
	assert_string_equal(ccq_err_name(CCQ_E_MAX_), "unknown");
	assert_string_equal(ccq_err_name(-1), "unknown");
	assert_string_equal(ccq_err_name(1000), "unknown");
	assert_string_equal(ccq_err_name(INT_MAX), "unknown");
	assert_string_equal(ccq_err_name(INT_MIN), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_ping_hardcoded),
		cmocka_unit_test(test_golden_err_hardcoded),
		cmocka_unit_test(test_golden_encode),
		cmocka_unit_test(test_golden_decode),
		cmocka_unit_test(test_rt_ids),
		cmocka_unit_test(test_rt_reply_ok_map),
		cmocka_unit_test(test_rt_reply_ok_any_result),
		cmocka_unit_test(test_rt_reply_err),
		cmocka_unit_test(test_rt_event),
		cmocka_unit_test(test_rt_empty_args),
		cmocka_unit_test(test_rt_1000_args),
		cmocka_unit_test(test_rt_unicode),
		cmocka_unit_test(test_rt_embedded_nul),
		cmocka_unit_test(test_empty_strings),
		cmocka_unit_test(test_strcpy_wrong_type),
		cmocka_unit_test(test_str_eq),
		cmocka_unit_test(test_enc_finish_max),
		cmocka_unit_test(test_frame_need_more_header),
		cmocka_unit_test(test_frame_need_more_payload),
		cmocka_unit_test(test_frame_back_to_back),
		cmocka_unit_test(test_frame_empty),
		cmocka_unit_test(test_frame_too_large),
		cmocka_unit_test(test_frame_hard_cap),
		cmocka_unit_test(test_frame_put_len),
		cmocka_unit_test(test_lying_lengths),
		cmocka_unit_test(test_all_types_valid),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_trailing_bytes),
		cmocka_unit_test(test_invalid_type_byte),
		cmocka_unit_test(test_nesting),
		cmocka_unit_test(test_object_limit),
		cmocka_unit_test(test_validate_err_buffer),
		cmocka_unit_test(test_bad_version),
		cmocka_unit_test(test_bad_shape),
		cmocka_unit_test(test_bad_request_fields),
		cmocka_unit_test(test_bad_reply_fields),
		cmocka_unit_test(test_err_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
