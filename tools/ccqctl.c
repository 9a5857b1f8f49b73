/*
 * ccqctl: provisioning, operations and agent actions against queued.
 * See ccqctl(1).
 */
#include "ccq_config.h"
#include "ccq_client.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#define DEFAULT_SOCK "/run/ccq/queued.sock"

static int g_json;
static int g_timeout_ms = 5000;

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: ccqctl [options] COMMAND [ARGS]\n"
		"\n"
		"Talks to queued, the ccq queue daemon.\n"
		"\n"
		"Options:\n"
		"  -s, --socket ADDR   queued's address: a unix socket path, unix:/path or\n"
		"                      host:port (default: $CCQ_QUEUED_SOCK, else %s)\n"
		"  -j, --json          print machine-readable JSON instead of tables\n"
		"  -T, --timeout MS    how long to wait for queued (default 5000)\n"
		"  -h, --help          this help\n"
		"  -V, --version       print the version\n"
		"\n"
		"Commands:\n"
		"  ping                      queued's version, protocol and schema version\n"
		"  txn list [--limit N] [--before ID]\n"
		"                            transactions, newest first\n"
		"  txn show ID               one transaction and its journey (timeline)\n"
		"\n"
		"Exit status: 0 success, 1 queued answered with an error, 2 usage error,\n"
		"3 queued could not be reached.\n",
		DEFAULT_SOCK);
}

/* ---- output ----------------------------------------------------------- */

static void json_str(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		switch (ch) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		default:
			if (ch < 0x20)
				printf("\\u%04x", ch);
			else
				putchar(ch);
		}
	}
	putchar('"');
}

static void json_obj(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL: fputs("null", stdout); break;
	case MSGPACK_OBJECT_BOOLEAN: fputs(o->via.boolean ? "true" : "false", stdout); break;
	case MSGPACK_OBJECT_POSITIVE_INTEGER: printf("%llu", (unsigned long long)o->via.u64); break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: printf("%lld", (long long)o->via.i64); break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: printf("%.17g", o->via.f64); break;
	case MSGPACK_OBJECT_STR: json_str(o->via.str.ptr, o->via.str.size); break;
	case MSGPACK_OBJECT_BIN: json_str(o->via.bin.ptr, o->via.bin.size); break;
	case MSGPACK_OBJECT_ARRAY:
		putchar('[');
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (i)
				putchar(',');
			json_obj(&o->via.array.ptr[i]);
		}
		putchar(']');
		break;
	case MSGPACK_OBJECT_MAP:
		putchar('{');
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			if (i)
				putchar(',');
			if (kv->key.type == MSGPACK_OBJECT_STR)
				json_str(kv->key.via.str.ptr, kv->key.via.str.size);
			else
				fputs("\"?\"", stdout);
			putchar(':');
			json_obj(&kv->val);
		}
		putchar('}');
		break;
	default: fputs("null", stdout);
	}
}

/* Field of a row map as text ("-" for absent/nil). */
static const char *field(const msgpack_object *map, const char *key, char *buf, size_t size)
{
	const msgpack_object *o = ccq_map_get(map, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return "-";
	if (o->type == MSGPACK_OBJECT_STR) {
		size_t n = o->via.str.size < size - 1 ? o->via.str.size : size - 1;
		memcpy(buf, o->via.str.ptr, n);
		buf[n] = '\0';
		return buf;
	}
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		snprintf(buf, size, "%llu", (unsigned long long)o->via.u64);
		return buf;
	}
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		snprintf(buf, size, "%lld", (long long)o->via.i64);
		return buf;
	}
	if (o->type == MSGPACK_OBJECT_BOOLEAN)
		return o->via.boolean ? "yes" : "no";
	return "?";
}

/* "2026-11-24 02:55:01.123456" -> "2026-11-24 02:55:01.123" */
static const char *ts3(char *s)
{
	if (strlen(s) > 23)
		s[23] = '\0';
	return s;
}

/* ---- commands --------------------------------------------------------- */

static ccq_client g_cl;
static const char *g_addr;

static int call(ccq_enc *e, uint64_t id, ccq_msg *reply)
{
	char err[512];
	if (ccq_client_call(&g_cl, e, id, g_timeout_ms, reply, err, sizeof(err)) < 0) {
		fprintf(stderr, "ccqctl: %s\n", err);
		ccq_enc_free(e);
		return 3;
	}
	ccq_enc_free(e);
	if (reply->code != 0) {
		if (g_json) {
			printf("{\"error\":\"%s\",\"message\":", ccq_err_name(reply->code));
			json_str(reply->errmsg, reply->errmsg_len);
			puts("}");
		}
		fprintf(stderr, "ccqctl: %s: %.*s\n", ccq_err_name(reply->code),
			(int)reply->errmsg_len, reply->errmsg);
		return 1;
	}
	return 0;
}

static int cmd_ping(void)
{
	ccq_enc e;
	ccq_msg r;
	uint64_t id = ccq_client_id(&g_cl);
	char b1[64], b2[64], b3[64];
	int rc;

	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "ping", 0);
	if ((rc = call(&e, id, &r)) != 0)
		return rc;
	if (g_json) {
		json_obj(r.body);
		putchar('\n');
	} else {
		printf("queued %s at %s (protocol %s, schema %s)\n",
			field(r.body, "version", b1, sizeof(b1)), g_addr,
			field(r.body, "proto", b2, sizeof(b2)), field(r.body, "schema", b3, sizeof(b3)));
	}
	ccq_msg_free(&r);
	return 0;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		return -1;
	*v = strtoull(s, &end, 10);
	return (errno || *end) ? -1 : 0;
}

static int cmd_txn_list(int argc, char **argv)
{
	uint64_t limit = 50, before = 0, id;
	ccq_enc e;
	ccq_msg r;
	const msgpack_object *items;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) {
			if (parse_u64(argv[++i], &limit) < 0 || limit == 0 || limit > 1000) {
				fprintf(stderr, "ccqctl: --limit must be from 1 to 1000\n");
				return 2;
			}
		} else if (strcmp(argv[i], "--before") == 0 && i + 1 < argc) {
			if (parse_u64(argv[++i], &before) < 0) {
				fprintf(stderr, "ccqctl: --before takes a transaction id\n");
				return 2;
			}
		} else {
			fprintf(stderr, "ccqctl: txn list: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	id = ccq_client_id(&g_cl);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "txn.list", before ? 2 : 1);
	ccq_pack_kv_uint(&e.pk, "limit", limit);
	if (before)
		ccq_pack_kv_uint(&e.pk, "before", before);
	if ((rc = call(&e, id, &r)) != 0)
		return rc;
	items = ccq_map_get(r.body, "items");
	if (g_json) {
		if (items)
			json_obj(items);
		else
			fputs("[]", stdout);
		putchar('\n');
	} else if (items && items->type == MSGPACK_OBJECT_ARRAY) {
		printf("%-8s %-23s %-9s %-8s %-10s %-24s %s\n", "TXN", "CREATED (UTC)", "DIRECTION",
			"TYPE", "STATUS", "FROM", "TO");
		for (uint32_t i = 0; i < items->via.array.size; i++) {
			const msgpack_object *t = &items->via.array.ptr[i];
			char a[32], b[64], c[32], d[32], f[32], g[600], h[600];
			printf("%-8s %-23s %-9s %-8s %-10s %-24s %s\n", field(t, "id", a, sizeof(a)),
				ts3((char *)field(t, "created_at", b, sizeof(b))),
				field(t, "direction", c, sizeof(c)), field(t, "type", d, sizeof(d)),
				field(t, "status", f, sizeof(f)), field(t, "from", g, sizeof(g)),
				field(t, "to", h, sizeof(h)));
		}
		if (items->via.array.size == 0)
			printf("(no transactions)\n");
	}
	ccq_msg_free(&r);
	return 0;
}

static int cmd_txn_show(int argc, char **argv)
{
	uint64_t txn, id;
	ccq_enc e;
	ccq_msg r;
	const msgpack_object *ev;
	int rc;
	static const char *const keys[] = { "id", "kind", "direction", "type", "status",
		"call_id", "from", "to", "source", "created_at", "answered_at", "ended_at",
		"result", "failure_reason", NULL };

	if (argc != 1 || parse_u64(argv[0], &txn) < 0 || txn == 0) {
		fprintf(stderr, "ccqctl: usage: txn show ID (a positive transaction number)\n");
		return 2;
	}
	id = ccq_client_id(&g_cl);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "txn.get", 1);
	ccq_pack_kv_uint(&e.pk, "id", txn);
	if ((rc = call(&e, id, &r)) != 0)
		return rc;
	if (g_json) {
		json_obj(r.body);
		putchar('\n');
		ccq_msg_free(&r);
		return 0;
	}
	for (int i = 0; keys[i]; i++) {
		char b[600];
		printf("%-15s %s\n", keys[i], field(r.body, keys[i], b, sizeof(b)));
	}
	ev = ccq_map_get(r.body, "events");
	printf("\nJourney (UTC):\n");
	if (ev && ev->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < ev->via.array.size; i++) {
			const msgpack_object *x = &ev->via.array.ptr[i];
			char a[64], t[1100];
			printf("  %s  %s\n", ts3((char *)field(x, "at", a, sizeof(a))),
				field(x, "text", t, sizeof(t)));
		}
	}
	ccq_msg_free(&r);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	char err[512];
	int opt, rc;

	g_addr = getenv("CCQ_QUEUED_SOCK");
	if (!g_addr || !*g_addr)
		g_addr = DEFAULT_SOCK;
	/* '+': options stop at the command, so "txn list --limit 5" works */
	while ((opt = getopt_long(argc, argv, "+s:jT:hV", lopts, NULL)) != -1) {
		switch (opt) {
		case 's': g_addr = optarg; break;
		case 'j': g_json = 1; break;
		case 'T': g_timeout_ms = atoi(optarg); if (g_timeout_ms <= 0) g_timeout_ms = 5000; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("ccqctl %s\n", PACKAGE_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	ccq_client_init(&g_cl);
	if (ccq_client_connect(&g_cl, g_addr, g_timeout_ms, err, sizeof(err)) < 0) {
		fprintf(stderr, "ccqctl: cannot reach queued: %s\n", err);
		return 3;
	}
	if (strcmp(argv[0], "ping") == 0 && argc == 1)
		rc = cmd_ping();
	else if (strcmp(argv[0], "txn") == 0 && argc >= 2 && strcmp(argv[1], "list") == 0)
		rc = cmd_txn_list(argc - 2, argv + 2);
	else if (strcmp(argv[0], "txn") == 0 && argc >= 2 && strcmp(argv[1], "show") == 0)
		rc = cmd_txn_show(argc - 2, argv + 2);
	else {
		fprintf(stderr, "ccqctl: unknown command '%s'%s\n", argv[0],
			argc > 1 ? " (see ccqctl --help)" : "");
		rc = 2;
	}
	ccq_client_free(&g_cl);
	return rc;
}
