/*
 * ccqctl: provisioning, operations and agent actions against queued.
 * See ccqctl(1).
 *
 * Most commands are rows of the table below: words, the protocol
 * operation, positional arguments and options, and the columns of the
 * table printed for people. --json prints queued's reply as JSON.
 */
#include "ccq_config.h"
#include "ccq_client.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCK "/run/ccq/queued.sock"

static int g_json;
static int g_timeout_ms = 5000;
static const char *g_as;
static const char *g_org;
static ccq_client g_cl;
static const char *g_addr;

/* ---- the command table -------------------------------------------------- */

struct optspec {
	const char *opt;   /* "--ring-timeout" */
	const char *key;   /* "ring_timeout" */
	char type;         /* 's' string, 'u' unsigned, 'b' true/false, 'l' comma list, 'f' flag (true) */
};

struct cmdspec {
	const char *words;
	const char *op;
	const char *pos[4];          /* required positional arguments (keys) */
	char postype[4];             /* their types ('s' or 'u'); default 's' */
	struct optspec opts[12];
	const char *cols[10];        /* table columns of "items", NULL: key/value output */
	const char *help;
};

static const struct cmdspec cmds[] = {
	{ "org create", "org.create", { "name", "country" }, "", { { 0 } }, { 0 },
		"NAME COUNTRY            create an organisation (COUNTRY: ISO code of its numbers, e.g. SG)" },
	{ "org list", "org.list", { 0 }, "", { { 0 } }, { "id", "name", "country", "created_at" },
		"                        organisations" },
	{ "user create", "user.create", { "ext", "name" }, "", {
		{ "--role", "role", 's' }, { "--addon", "cc_addon", 'f' },
		{ "--caller-id", "caller_id", 's' }, { "--max-calls", "max_calls", 'u' },
		{ "--wrapup", "wrapup_seconds", 'u' }, { "--unix-user", "unix_user", 's' } },
		{ 0 }, "EXT NAME [--role owner|admin|member] [--addon] [--caller-id N]\n"
		"                        [--max-calls N] [--wrapup S] [--unix-user U]   add a user (extension)" },
	{ "user update", "user.update", { "ext" }, "", {
		{ "--name", "name", 's' }, { "--role", "role", 's' }, { "--addon", "cc_addon", 'b' },
		{ "--caller-id", "caller_id", 's' }, { "--max-calls", "max_calls", 'u' },
		{ "--wrapup", "wrapup_seconds", 'u' }, { "--unix-user", "unix_user", 's' } },
		{ 0 }, "EXT [--name N] [--role R] [--addon true|false] [...]   change a user" },
	{ "user list", "user.list", { 0 }, "", { { 0 } },
		{ "ext", "name", "role", "cc_addon", "caller_id", "max_calls", "devices" },
		"                        users of the organisation" },
	{ "device add", "device.create", { "ext", "kind", "username", "password" }, "", {
		{ "--domain", "domain", 's' }, { "--label", "label", 's' },
		{ "--disabled", "enabled", 'F' } },
		{ 0 }, "EXT KIND USER PASSWORD --domain D [--label L] [--disabled]\n"
		"                        add a device (KIND: desk_phone, mobile_app, desktop_app, web_phone)" },
	{ "device enable", "device.update", { "id" }, "u", { { "", "enabled", 'T' } }, { 0 },
		"ID                      enable a device" },
	{ "device disable", "device.update", { "id" }, "u", { { "", "enabled", 'F' } }, { 0 },
		"ID                      disable a device" },
	{ "device list", "device.list", { 0 }, "", { { "--ext", "ext", 's' } },
		{ "id", "ext", "kind", "label", "username", "domain", "enabled", "registered" },
		"[--ext EXT]             devices" },
	{ "inbox create", "inbox.create", { "name" }, "", {
		{ "--ring-timeout", "ring_timeout", 'u' }, { "--max-wait", "max_wait", 'u' },
		{ "--missed-flow", "missed_flow", 's' } }, { 0 },
		"NAME [--ring-timeout S] [--max-wait S] [--missed-flow notify|callback]   add an inbox" },
	{ "inbox update", "inbox.update", { "inbox" }, "", {
		{ "--ring-timeout", "ring_timeout", 'u' }, { "--max-wait", "max_wait", 'u' },
		{ "--missed-flow", "missed_flow", 's' } }, { 0 },
		"INBOX [--ring-timeout S] [--max-wait S] [--missed-flow F]   change an inbox" },
	{ "inbox did add", "inbox.did.add", { "inbox", "did" }, "", { { 0 } }, { 0 },
		"INBOX NUMBER            route a DID to an inbox" },
	{ "inbox did remove", "inbox.did.remove", { "inbox", "did" }, "", { { 0 } }, { 0 },
		"INBOX NUMBER            take a DID off an inbox" },
	{ "inbox member add", "inbox.member.add", { "inbox", "ext" }, "", { { 0 } }, { 0 },
		"INBOX EXT               assign a user to an inbox" },
	{ "inbox member remove", "inbox.member.remove", { "inbox", "ext" }, "", { { 0 } }, { 0 },
		"INBOX EXT               unassign a user" },
	{ "inbox state", "inbox.state", { "inbox" }, "", { { 0 } }, { 0 },
		"INBOX                   waiting callers and agents' states" },
	{ "inbox list", "inbox.list", { 0 }, "", { { 0 } },
		{ "id", "name", "dids", "members", "ring_timeout", "max_wait", "missed_flow", "waiting" },
		"                        inboxes you can see" },
	{ "customer create", "customer.create", { "name" }, "", {
		{ "--number", "numbers", 'l' }, { "--verified", "verified", 'f' } }, { 0 },
		"NAME [--number N[,N...]] [--verified]   add a customer" },
	{ "customer number add", "customer.number.add", { "customer", "number" }, "u", {
		{ "--verified", "verified", 'f' } }, { 0 },
		"ID NUMBER [--verified]  add a number to a customer's contact" },
	{ "customer number verify", "customer.number.verify", { "customer", "number" }, "u",
		{ { 0 } }, { 0 }, "ID NUMBER               mark a customer's number verified" },
	{ "customer list", "customer.list", { 0 }, "", { { 0 } }, { "id", "name", "numbers" },
		"                        customers" },
	{ "customer show", "customer.get", { "id" }, "u", { { 0 } }, { 0 },
		"ID                      a customer and their numbers" },
	{ "trunk add", "trunk.create", { "name", "address" }, "", { { "--port", "port", 'u' } },
		{ 0 }, "NAME ADDRESS [--port P]   a carrier trunk, recognised by source address" },
	{ "trunk list", "trunk.list", { 0 }, "", { { 0 } }, { "id", "name", "address", "port" },
		"                        carrier trunks" },
	{ "token create", "token.create", { "ext" }, "", { { "--label", "label", 's' } }, { 0 },
		"EXT [--label L]         an API token for a user (shown once)" },
	{ "chat create", "chat.create", { "inbox" }, "", { { "--customer", "customer", 'u' } },
		{ 0 }, "INBOX [--customer ID]   a chat transaction from another channel" },
	{ "chat assign", "chat.assign", { "id", "ext" }, "us", { { 0 } }, { 0 },
		"TXN EXT                 assign a chat to an agent" },
	{ "chat end", "chat.end", { "id" }, "u", { { 0 } }, { 0 },
		"TXN                     end a chat" },
	{ "txn link", "txn.link", { "a", "b" }, "uu", { { "--kind", "kind", 's' } }, { 0 },
		"TXN TXN [--kind K]      link two transactions (Related Transactions)" },
	{ "customer journey", "customer.journey", { "customer" }, "u", { { 0 } },
		{ "id", "created_at", "kind", "inbox", "status", "agent_ext", "agent_name", "result" },
		"ID                      every call and chat of a customer, oldest first" },
	{ "policy set", "policy.set", { 0 }, "", { { "--countries", "country_whitelist", 's' },
		{ "--pin-policy", "pin_policy", 's' } }, { 0 },
		"[--countries CC,CC] [--pin-policy none|international|all]   outbound policy" },
	{ "policy show", "policy.get", { 0 }, "", { { 0 } }, { 0 },
		"                        the organisation's outbound policy" },
	{ "stats", "server.stats", { 0 }, "", { { "--reset", "reset", 'f' } },
		{ "op", "count", "errors", "wait_p99_ms", "run_p50_ms", "run_p99_ms", "total_p50_ms",
		  "total_p99_ms", "total_max_ms" },
		"[--reset]               per operation: count, MySQL worker wait and run, arrival to answer" },
	{ "whoami", "whoami", { 0 }, "", { { 0 } }, { 0 },
		"                        who this connection acts as" },
	{ "txn list", "txn.list", { 0 }, "", {
		{ "--limit", "limit", 'u' }, { "--before", "before", 'u' },
		{ "--inbox", "inbox", 'u' }, { "--customer", "customer", 'u' } },
		{ "id", "created_at", "inbox", "type", "status", "number", "customer", "agent_ext" },
		"[--limit N] [--before ID] [--inbox ID] [--customer ID]   transactions" },
};

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
		"  -a, --as EXT@ORG    act as this user (local operator only)\n"
		"  -o, --org NAME      the organisation (default: the acting user's)\n"
		"  -t, --token TOKEN   authenticate with an API token (default: $CCQ_TOKEN;\n"
		"                      not needed on the unix socket as the local operator)\n"
		"  -h, --help          this help\n"
		"  -V, --version       print the version\n"
		"\n"
		"Commands:\n"
		"  ping                    queued's version, protocol and schema version\n"
		"  stats [--reset]         per operation: count, wait for a MySQL worker, run time\n"
		"  txn show ID             one transaction and its journey (timeline)\n"
		"  me                      the acting agent's current call (use --as EXT@ORG)\n"
		"  watch [--inbox ID] [--count N] [--for S]\n"
		"                          live notifications (incoming, answered, missed, ended)\n"
		"  list add|remove LIST NUMBER...   compliance lists; LIST: dnc, blacklist,\n"
		"                          whitelist, personal (with --ext EXT)\n"
		"  list import LIST FILE [--country CC]\n"
		"                          one number per line ('-' for stdin); reports rejected lines\n"
		"  list show LIST [--after N] [--limit N] | list count LIST\n"
		"  pin set EXT [--clear]   a user's outbound PIN, read from standard input\n"
		"  callback request --txn ID [--device D] [--number N] [--add-number] [--verified]\n"
		"                   [--pin-stdin] [--as EXT@ORG]\n"
		"                          ask the system to call you back with a TXN's customer\n"
		"  callback request --customer --ext K|--inbox I --number N [--name NAME]\n"
		"                          a customer's callback request (operator, admins)\n"
		"  callback list [--scheduled|--final|--all] [--ext K] [--txn ID]\n"
		"                          callbacks: open and scheduled by default\n"
		"  callback schedule --inbox I [--txn ID] [--device D] [--number N] --at TIME\n"
		"                          a scheduled call (TIME: 'YYYY-MM-DD HH:MM[:SS]' UTC)\n"
		"  callback cancel ID | callback move ID --at TIME | callback note ID TEXT\n"
		"  recording set --org on|off | --inbox NAME on|off|inherit | --user EXT on|off|inherit\n"
		"                          call recording policy (the most specific setting wins)\n"
		"  recording show          the organisation's recording policy\n",
		DEFAULT_SOCK);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %s %s\n", cmds[i].words, cmds[i].help);
	fprintf(f,
		"\nExit status: 0 success, 1 queued answered with an error, 2 usage error,\n"
		"3 queued could not be reached.\n");
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

/* A value as text ("-" for absent/nil); microseconds cut to milliseconds. */
static const char *text_of(const msgpack_object *o, char *buf, size_t size)
{
	if (!o || o->type == MSGPACK_OBJECT_NIL)
		return "-";
	switch (o->type) {
	case MSGPACK_OBJECT_STR: {
		size_t n = o->via.str.size < size - 1 ? o->via.str.size : size - 1;
		memcpy(buf, o->via.str.ptr, n);
		buf[n] = '\0';
		/* "YYYY-MM-DD HH:MM:SS.ffffff" -> milliseconds */
		if (n == 26 && buf[4] == '-' && buf[10] == ' ' && buf[19] == '.')
			buf[23] = '\0';
		return buf;
	}
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		snprintf(buf, size, "%llu", (unsigned long long)o->via.u64);
		return buf;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		snprintf(buf, size, "%lld", (long long)o->via.i64);
		return buf;
	case MSGPACK_OBJECT_BOOLEAN:
		return o->via.boolean ? "yes" : "no";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		snprintf(buf, size, "%.3f", o->via.f64);
		return buf;
	default:
		return "?";
	}
}

static const char *field(const msgpack_object *map, const char *key, char *buf, size_t size)
{
	return text_of(ccq_map_get(map, key), buf, size);
}

static void print_table(const msgpack_object *items, const char *const *cols)
{
	size_t ncol = 0, width[10] = { 0 };
	char buf[600];

	while (ncol < 10 && cols[ncol])
		ncol++;
	for (size_t c = 0; c < ncol; c++)
		width[c] = strlen(cols[c]);
	for (uint32_t i = 0; i < items->via.array.size; i++)
		for (size_t c = 0; c < ncol; c++) {
			size_t l = strlen(field(&items->via.array.ptr[i], cols[c], buf, sizeof(buf)));
			if (l > width[c])
				width[c] = l > 40 ? 40 : l;
		}
	for (size_t c = 0; c < ncol; c++) {
		char h[64];
		size_t k;
		for (k = 0; cols[c][k] && k < sizeof(h) - 1; k++)
			h[k] = cols[c][k] == '_' ? ' ' : (char)(cols[c][k] >= 'a' && cols[c][k] <= 'z'
				? cols[c][k] - 32 : cols[c][k]);
		h[k] = '\0';
		printf("%-*s%s", (int)width[c], h, c + 1 < ncol ? "  " : "\n");
	}
	for (uint32_t i = 0; i < items->via.array.size; i++)
		for (size_t c = 0; c < ncol; c++)
			printf("%-*s%s", (int)width[c],
				field(&items->via.array.ptr[i], cols[c], buf, sizeof(buf)),
				c + 1 < ncol ? "  " : "\n");
	if (items->via.array.size == 0)
		printf("(none)\n");
}

static void print_kv(const msgpack_object *o, int indent)
{
	char buf[1200];
	if (o->type != MSGPACK_OBJECT_MAP) {
		printf("%*s%s\n", indent, "", text_of(o, buf, sizeof(buf)));
		return;
	}
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[i];
		char k[64];
		text_of(&kv->key, k, sizeof(k));
		if (kv->val.type == MSGPACK_OBJECT_ARRAY) {
			printf("%*s%s:\n", indent, "", k);
			for (uint32_t j = 0; j < kv->val.via.array.size; j++) {
				print_kv(&kv->val.via.array.ptr[j], indent + 2);
				if (kv->val.via.array.ptr[j].type == MSGPACK_OBJECT_MAP
						&& j + 1 < kv->val.via.array.size)
					printf("\n");
			}
		} else {
			printf("%*s%-16s %s\n", indent, "", k, text_of(&kv->val, buf, sizeof(buf)));
		}
	}
}

/* ---- talking to queued ------------------------------------------------- */

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
		ccq_msg_free(reply);
		return 1;
	}
	return 0;
}

/* Count and pack the global arguments (as, org) into a request map. */
static unsigned global_args(void)
{
	return (g_as ? 1 : 0) + (g_org ? 1 : 0);
}

static void pack_global_args(msgpack_packer *pk)
{
	if (g_as)
		ccq_pack_kv_str(pk, "as", g_as);
	if (g_org)
		ccq_pack_kv_str(pk, "org", g_org);
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

static void pack_list(msgpack_packer *pk, const char *key, const char *csv)
{
	size_t n = 1;
	for (const char *p = csv; *p; p++)
		n += *p == ',';
	ccq_pack_str(pk, key);
	msgpack_pack_array(pk, n);
	for (const char *p = csv;;) {
		const char *c = strchr(p, ',');
		size_t l = c ? (size_t)(c - p) : strlen(p);
		ccq_pack_strn(pk, p, l);
		if (!c)
			break;
		p = c + 1;
	}
}

static int run_spec(const struct cmdspec *cs, int argc, char **argv)
{
	const char *vals[12] = { 0 };
	int npos = 0, nargs, rc;
	unsigned count = 0;
	uint64_t id;
	ccq_enc e;
	ccq_msg r;
	const msgpack_object *items;

	while (npos < 4 && cs->pos[npos])
		npos++;
	if (argc < npos) {
		fprintf(stderr, "ccqctl: usage: ccqctl %s %s\n", cs->words, cs->help);
		return 2;
	}
	for (int i = npos; i < argc; i++) {
		int k, found = 0;
		for (k = 0; k < 12 && cs->opts[k].key; k++) {
			if (cs->opts[k].opt[0] && strcmp(argv[i], cs->opts[k].opt) == 0) {
				found = 1;
				if (cs->opts[k].type == 'f' || cs->opts[k].type == 'F')
					vals[k] = "true";
				else if (i + 1 < argc)
					vals[k] = argv[++i];
				else {
					fprintf(stderr, "ccqctl: %s needs a value\n", argv[i]);
					return 2;
				}
				break;
			}
		}
		if (!found) {
			fprintf(stderr, "ccqctl: %s: unknown argument '%s'\nusage: ccqctl %s %s\n",
				cs->words, argv[i], cs->words, cs->help);
			return 2;
		}
	}
	for (int k = 0; k < 12 && cs->opts[k].key; k++)
		if (vals[k] || cs->opts[k].type == 'T' || cs->opts[k].type == 'F')
			count++;
	nargs = npos;
	id = ccq_client_id(&g_cl);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, cs->op, (uint32_t)nargs + count + global_args());
	pack_global_args(&e.pk);
	for (int i = 0; i < npos; i++) {
		if (cs->postype[i] == 'u') {
			uint64_t v;
			if (parse_u64(argv[i], &v) < 0) {
				fprintf(stderr, "ccqctl: %s must be a number, not '%s'\n", cs->pos[i], argv[i]);
				ccq_enc_free(&e);
				return 2;
			}
			ccq_pack_kv_uint(&e.pk, cs->pos[i], v);
		} else {
			ccq_pack_kv_str(&e.pk, cs->pos[i], argv[i]);
		}
	}
	for (int k = 0; k < 12 && cs->opts[k].key; k++) {
		const struct optspec *o = &cs->opts[k];
		uint64_t v;
		switch (o->type) {
		case 'T': ccq_pack_kv_bool(&e.pk, o->key, 1); continue;
		case 'F':
			if (!o->opt[0] || vals[k])
				ccq_pack_kv_bool(&e.pk, o->key, 0);
			else
				ccq_pack_kv_bool(&e.pk, o->key, 1);
			continue;
		}
		if (!vals[k])
			continue;
		switch (o->type) {
		case 's': ccq_pack_kv_str(&e.pk, o->key, vals[k]); break;
		case 'f': ccq_pack_kv_bool(&e.pk, o->key, 1); break;
		case 'l': pack_list(&e.pk, o->key, vals[k]); break;
		case 'b':
			if (strcmp(vals[k], "true") && strcmp(vals[k], "false")) {
				fprintf(stderr, "ccqctl: %s takes true or false\n", o->opt);
				ccq_enc_free(&e);
				return 2;
			}
			ccq_pack_kv_bool(&e.pk, o->key, strcmp(vals[k], "true") == 0);
			break;
		case 'u':
			if (parse_u64(vals[k], &v) < 0) {
				fprintf(stderr, "ccqctl: %s takes a number, not '%s'\n", o->opt, vals[k]);
				ccq_enc_free(&e);
				return 2;
			}
			ccq_pack_kv_uint(&e.pk, o->key, v);
			break;
		}
	}
	if ((rc = call(&e, id, &r)) != 0)
		return rc;
	items = ccq_map_get(r.body, "items");
	if (g_json) {
		/* JSON of a table is its rows; server.stats also has totals beside
		 * its rows (workers, pending, lock_retries, shed): the whole answer */
		json_obj(items && cs->cols[0] && strcmp(cs->op, "server.stats") != 0 ? items : r.body);
		putchar('\n');
	} else if (items && items->type == MSGPACK_OBJECT_ARRAY && cs->cols[0]) {
		print_table(items, cs->cols);
	} else {
		print_kv(r.body, 0);
	}
	ccq_msg_free(&r);
	return 0;
}

/* ---- special commands --------------------------------------------------- */

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
		char b4[32];
		printf("queued %s at %s (protocol %s, schema %s, %s MySQL workers)\n",
			field(r.body, "version", b1, sizeof(b1)), g_addr,
			field(r.body, "proto", b2, sizeof(b2)), field(r.body, "schema", b3, sizeof(b3)),
			field(r.body, "db_workers", b4, sizeof(b4)));
	}
	ccq_msg_free(&r);
	return 0;
}

static int cmd_txn_show(int argc, char **argv)
{
	uint64_t txn, id;
	ccq_enc e;
	ccq_msg r;
	const msgpack_object *ev, *rel;
	int rc;
	char b[600], b2[600];
	static const char *const keys[] = { "id", "type", "direction", "status", "inbox",
		"caller_id", "number", "customer", "agent_name", "answered_at", "talking_seconds",
		"result", "failure_reason", "call_id", "created_at", "ended_at", NULL };
	static const char *const labels[] = { "TXN", "Type", "Direction", "Status", "Inbox",
		"Caller ID", "Number", "Customer", "Agent", "Answered", "Talking Duration",
		"Result", "Failure reason", "SIP Call-ID", "Created", "Ended", NULL };

	if (argc != 1 || parse_u64(argv[0], &txn) < 0 || txn == 0) {
		fprintf(stderr, "ccqctl: usage: txn show ID (a positive transaction number)\n");
		return 2;
	}
	id = ccq_client_id(&g_cl);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "txn.get", 1 + global_args());
	pack_global_args(&e.pk);
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
		const char *v = field(r.body, keys[i], b, sizeof(b));
		if (strcmp(keys[i], "agent_name") == 0 && strcmp(v, "-") != 0) {
			printf("%-17s %s - %s\n", labels[i], field(r.body, "agent_ext", b2, sizeof(b2)), v);
			continue;
		}
		if (strcmp(keys[i], "talking_seconds") == 0 && strcmp(v, "-") != 0) {
			unsigned long s = strtoul(v, NULL, 10);
			printf("%-17s %lu:%02lu:%02lu\n", labels[i], s / 3600, s / 60 % 60, s % 60);
			continue;
		}
		printf("%-17s %s\n", labels[i], v);
	}
	ev = ccq_map_get(r.body, "events");
	printf("\nJourney (UTC):\n");
	if (ev && ev->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < ev->via.array.size; i++) {
			const msgpack_object *x = &ev->via.array.ptr[i];
			printf("  %s  %s\n", field(x, "at", b, sizeof(b)), field(x, "text", b2, sizeof(b2)));
		}
	}
	rel = ccq_map_get(r.body, "related");
	if (rel && rel->type == MSGPACK_OBJECT_ARRAY && rel->via.array.size > 0) {
		printf("\nRelated transactions:\n");
		for (uint32_t i = 0; i < rel->via.array.size; i++) {
			const msgpack_object *x = &rel->via.array.ptr[i];
			printf("  TXN %s (%s)\n", field(x, "id", b, sizeof(b)), field(x, "kind", b2, sizeof(b2)));
		}
	}
	ccq_msg_free(&r);
	return 0;
}

static int cmd_me(int argc, char **argv)
{
	ccq_enc e;
	ccq_msg r;
	uint64_t id = ccq_client_id(&g_cl);
	const msgpack_object *calls;
	char a[200], b[200], c[200], d[200], f[200], g[200], h[200];
	int rc;

	(void)argv;
	if (argc != 0) {
		fprintf(stderr, "ccqctl: usage: ccqctl --as EXT@ORG me\n");
		return 2;
	}
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "me", global_args());
	pack_global_args(&e.pk);
	if ((rc = call(&e, id, &r)) != 0)
		return rc;
	if (g_json) {
		json_obj(r.body);
		putchar('\n');
		ccq_msg_free(&r);
		return 0;
	}
	printf("%s - %s (%s)\n", field(r.body, "ext", a, sizeof(a)), field(r.body, "name", b, sizeof(b)),
		field(r.body, "org", c, sizeof(c)));
	calls = ccq_map_get(r.body, "calls");
	if (!calls || calls->type != MSGPACK_OBJECT_ARRAY || calls->via.array.size == 0) {
		printf("No current call.\n");
	} else {
		for (uint32_t i = 0; i < calls->via.array.size; i++) {
			const msgpack_object *t = &calls->via.array.ptr[i];
			const char *cust = field(t, "customer", d, sizeof(d));
			printf("Current call: TXN %s (%s)\n", field(t, "txn", a, sizeof(a)),
				field(t, "status", b, sizeof(b)));
			printf("  Caller    %s%s%s%s\n", field(t, "number", c, sizeof(c)),
				strcmp(cust, "-") ? " (" : "", strcmp(cust, "-") ? cust : "",
				strcmp(cust, "-") ? ")" : "");
			printf("  Inbox     %s\n", field(t, "inbox", f, sizeof(f)));
			printf("  Device    %s\n", field(t, "device", g, sizeof(g)));
			printf("  Since     %s UTC\n", field(t, "since", h, sizeof(h)));
		}
	}
	ccq_msg_free(&r);
	return 0;
}

/*
 * watch: subscribe to the notifications this user may see and print them
 * as they come. --count N stops after N events, --for S after S seconds.
 */
static int cmd_watch(int argc, char **argv)
{
	uint64_t count = 0, secs = 0, inbox = 0, seen = 0, id;
	ccq_enc e;
	ccq_msg r;
	int rc;
	long long until;
	struct timespec ts;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--count") == 0 && i + 1 < argc && parse_u64(argv[i + 1], &count) == 0)
			i++;
		else if (strcmp(argv[i], "--for") == 0 && i + 1 < argc && parse_u64(argv[i + 1], &secs) == 0)
			i++;
		else if (strcmp(argv[i], "--inbox") == 0 && i + 1 < argc
				&& parse_u64(argv[i + 1], &inbox) == 0)
			i++;
		else {
			fprintf(stderr, "ccqctl: usage: watch [--inbox ID] [--count N] [--for SECONDS]\n");
			return 2;
		}
	}
	id = ccq_client_id(&g_cl);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "watch", global_args() + (inbox ? 1 : 0));
	pack_global_args(&e.pk);
	if (inbox)
		ccq_pack_kv_uint(&e.pk, "inbox", inbox);
	if ((rc = call(&e, id, &r)) != 0)
		return rc;
	ccq_msg_free(&r);
	if (!g_json) {
		printf("watching; Ctrl-C to stop\n");
		fflush(stdout);
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	until = secs ? (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + (long long)secs * 1000 : 0;
	for (;;) {
		char err[300], a[100], b[700];
		int left = 1000;
		if (until) {
			clock_gettime(CLOCK_MONOTONIC, &ts);
			left = (int)(until - ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
			if (left <= 0)
				return 0;
		}
		rc = ccq_client_next(&g_cl, left, &r, err, sizeof(err));
		if (rc < 0) {
			fprintf(stderr, "ccqctl: %s\n", err);
			return 3;
		}
		if (rc == 0)
			continue;
		if (r.kind == CCQ_KIND_EVENT) {
			if (g_json) {
				printf("{\"event\":");
				json_str(r.name, r.name_len);
				printf(",\"data\":");
				json_obj(r.body);
				printf("}\n");
			} else {
				time_t now = time(NULL);
				struct tm tm;
				localtime_r(&now, &tm);
				strftime(a, sizeof(a), "%H:%M:%S", &tm);
				printf("%s  %s\n", a, field(r.body, "text", b, sizeof(b)));
			}
			fflush(stdout);
			seen++;
		}
		ccq_msg_free(&r);
		if (count && seen >= count)
			return 0;
	}
}

/* ---- compliance lists ------------------------------------------------------ */

static const char *g_list_country;

static int list_call(const char *op, const char *list, const char *ext, char **nums, size_t n,
		ccq_msg *r)
{
	ccq_enc e;
	uint64_t id = ccq_client_id(&g_cl);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, op, 2 + (ext ? 1 : 0) + (g_list_country ? 1 : 0) + global_args());
	pack_global_args(&e.pk);
	if (g_list_country)
		ccq_pack_kv_str(&e.pk, "country", g_list_country);
	ccq_pack_kv_str(&e.pk, "list", list);
	if (ext)
		ccq_pack_kv_str(&e.pk, "ext", ext);
	ccq_pack_str(&e.pk, "numbers");
	msgpack_pack_array(&e.pk, n);
	for (size_t i = 0; i < n; i++)
		ccq_pack_str(&e.pk, nums[i]);
	return call(&e, id, r);
}

/*
 * list import LIST FILE: one number per line (blank lines, '#' comments and
 * Windows line endings are fine), sent in batches of 5000; prints how many
 * were added and every rejected line with its number and the reason.
 */
static int list_import(const char *list, const char *ext, const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	char *line = NULL, *batch[5000];
	unsigned long lineno[5000];
	size_t cap = 0, n = 0;
	ssize_t len;
	unsigned long ln = 0, added = 0, rejected = 0, valid = 0;
	int rc = 0;

	if (!f) {
		fprintf(stderr, "ccqctl: cannot open %s: %s\n", path, strerror(errno));
		return 2;
	}
	for (;;) {
		int flush;
		len = getline(&line, &cap, f);
		if (len >= 0) {
			ln++;
			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
				line[--len] = '\0';
			{
				char *p = line;
				while (*p == ' ' || *p == '\t')
					p++;
				if (*p && *p != '#') {
					if (len > 64) {
						printf("line %lu: rejected: longer than 64 characters\n", ln);
						rejected++;
					} else {
						batch[n] = strdup(p);
						lineno[n] = ln;
						if (!batch[n]) {
							rc = 1;
							break;
						}
						n++;
					}
				}
			}
		}
		flush = n == sizeof(batch) / sizeof(batch[0]) || (len < 0 && n > 0);
		if (flush) {
			ccq_msg r;
			const msgpack_object *errs;
			uint64_t v;
			if ((rc = list_call("list.add", list, ext, batch, n, &r)) != 0)
				break;
			if (ccq_map_uint(r.body, "added", &v) == 1)
				added += v;
			if (ccq_map_uint(r.body, "valid", &v) == 1)
				valid += v;
			if (ccq_map_uint(r.body, "rejected", &v) == 1)
				rejected += v;
			errs = ccq_map_get(r.body, "errors");
			if (errs && errs->type == MSGPACK_OBJECT_ARRAY)
				for (uint32_t i = 0; i < errs->via.array.size; i++) {
					uint64_t idx = 0;
					char why[200];
					ccq_map_uint(&errs->via.array.ptr[i], "index", &idx);
					ccq_map_strcpy(&errs->via.array.ptr[i], "why", why, sizeof(why));
					if (idx < n)
						printf("line %lu: rejected: %s: %s\n", lineno[idx], batch[idx], why);
				}
			ccq_msg_free(&r);
			for (size_t i = 0; i < n; i++)
				free(batch[i]);
			n = 0;
		}
		if (len < 0)
			break;
	}
	for (size_t i = 0; i < n; i++)
		free(batch[i]);
	free(line);
	if (f != stdin)
		fclose(f);
	printf("%lu lines read, %lu valid numbers, %lu newly added, %lu rejected\n", ln, valid,
		added, rejected);
	return rc;
}

static int cmd_list(int argc, char **argv)
{
	const char *ext = NULL;
	ccq_msg r;
	int rc, nargs = argc;
	char buf[64];

	/* --ext EXT (personal whitelists) and --country CC (national numbers in
	 * the DNC registry), anywhere after the list name */
	for (int i = 0; i < nargs;) {
		if ((strcmp(argv[i], "--ext") == 0 || strcmp(argv[i], "--country") == 0) && i + 1 < nargs) {
			if (argv[i][2] == 'e')
				ext = argv[i + 1];
			else
				g_list_country = argv[i + 1];
			for (int k = i; k + 2 < nargs; k++)
				argv[k] = argv[k + 2];
			nargs -= 2;
			continue;
		}
		i++;
	}
	argc = nargs;
	if (argc >= 3 && (strcmp(argv[0], "add") == 0 || strcmp(argv[0], "remove") == 0)) {
		uint64_t v;
		if ((rc = list_call(argv[0][0] == 'a' ? "list.add" : "list.remove", argv[1], ext,
				argv + 2, (size_t)(argc - 2), &r)) != 0)
			return rc;
		if (g_json) {
			json_obj(r.body);
			putchar('\n');
		} else {
			const msgpack_object *errs = ccq_map_get(r.body, "errors");
			if (ccq_map_uint(r.body, argv[0][0] == 'a' ? "added" : "removed", &v) == 1)
				printf("%s %llu\n", argv[0][0] == 'a' ? "added" : "removed", (unsigned long long)v);
			if (errs && errs->type == MSGPACK_OBJECT_ARRAY)
				for (uint32_t i = 0; i < errs->via.array.size; i++) {
					uint64_t idx = 0;
					char why[200];
					ccq_map_uint(&errs->via.array.ptr[i], "index", &idx);
					ccq_map_strcpy(&errs->via.array.ptr[i], "why", why, sizeof(why));
					if (idx + 2 < (uint64_t)argc)
						printf("rejected: %s: %s\n", argv[idx + 2], why);
				}
		}
		ccq_msg_free(&r);
		return 0;
	}
	if (argc == 3 && strcmp(argv[0], "import") == 0)
		return list_import(argv[1], ext, argv[2]);
	if (argc >= 2 && (strcmp(argv[0], "show") == 0 || strcmp(argv[0], "count") == 0)) {
		ccq_enc e;
		uint64_t id = ccq_client_id(&g_cl), limit = 100;
		const char *after = NULL;
		const msgpack_object *nums;
		for (int i = 2; i + 1 < argc; i += 2) {
			if (strcmp(argv[i], "--limit") == 0 && parse_u64(argv[i + 1], &limit) == 0)
				continue;
			if (strcmp(argv[i], "--after") == 0) {
				after = argv[i + 1];
				continue;
			}
			fprintf(stderr, "ccqctl: list show LIST [--after NUMBER] [--limit N] [--ext EXT]\n");
			return 2;
		}
		ccq_enc_init(&e);
		if (argv[0][0] == 'c') {
			ccq_enc_request(&e, id, "list.count", 1 + (ext ? 1 : 0) + global_args());
		} else {
			ccq_enc_request(&e, id, "list.list", 2 + (after ? 1 : 0) + (ext ? 1 : 0)
				+ global_args());
			ccq_pack_kv_uint(&e.pk, "limit", limit);
			if (after)
				ccq_pack_kv_str(&e.pk, "after", after[0] == '+' ? after + 1 : after);
		}
		pack_global_args(&e.pk);
		ccq_pack_kv_str(&e.pk, "list", argv[1]);
		if (ext)
			ccq_pack_kv_str(&e.pk, "ext", ext);
		if ((rc = call(&e, id, &r)) != 0)
			return rc;
		if (g_json) {
			json_obj(r.body);
			putchar('\n');
		} else if (argv[0][0] == 'c') {
			printf("%s\n", field(r.body, "count", buf, sizeof(buf)));
		} else if ((nums = ccq_map_get(r.body, "numbers")) && nums->type == MSGPACK_OBJECT_ARRAY) {
			for (uint32_t i = 0; i < nums->via.array.size; i++)
				printf("%s\n", text_of(&nums->via.array.ptr[i], buf, sizeof(buf)));
		}
		ccq_msg_free(&r);
		return 0;
	}
	fprintf(stderr, "ccqctl: usage: list add|remove LIST NUMBER... | list import LIST FILE | "
		"list show|count LIST   (LIST: dnc, blacklist, whitelist, personal --ext EXT)\n");
	return 2;
}

/*
 * A PIN from standard input: never from the command line, where other users
 * could see it in the process list. 0, or 2 (usage error, said).
 */
static int read_pin(const char *whose, const char *hint, char *pin, size_t size)
{
	size_t l;
	if (isatty(0))
		fprintf(stderr, "PIN for %s: ", whose);
	if (!fgets(pin, (int)size, stdin)) {
		fprintf(stderr, "ccqctl: no PIN on standard input\n");
		return 2;
	}
	l = strlen(pin);
	while (l > 0 && (pin[l - 1] == '\n' || pin[l - 1] == '\r'))
		pin[--l] = '\0';
	if (!l) {
		fprintf(stderr, "ccqctl: empty PIN%s%s%s\n", hint ? " (" : "", hint ? hint : "",
			hint ? ")" : "");
		return 2;
	}
	return 0;
}

/* pin set EXT: the PIN is read from standard input. */
static int cmd_pin(int argc, char **argv)
{
	char pin[64] = "";
	ccq_enc e;
	ccq_msg r;
	uint64_t id;
	int rc, clear = argc == 3 && strcmp(argv[2], "--clear") == 0;

	if (argc < 2 || strcmp(argv[0], "set") != 0 || (argc == 3 && !clear) || argc > 3) {
		fprintf(stderr, "ccqctl: usage: pin set EXT [--clear]   (the PIN is read from stdin)\n");
		return 2;
	}
	if (!clear && (rc = read_pin(argv[1], "use --clear to remove one", pin, sizeof(pin))) != 0)
		return rc;
	id = ccq_client_id(&g_cl);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "pin.set", 2 + global_args());
	pack_global_args(&e.pk);
	ccq_pack_kv_str(&e.pk, "ext", argv[1]);
	ccq_pack_kv_str(&e.pk, "pin", pin);
	memset(pin, 0, sizeof(pin));
	rc = call(&e, id, &r);
	if (rc == 0) {
		printf(clear ? "PIN cleared\n" : "PIN set\n");
		ccq_msg_free(&r);
	}
	return rc;
}

/* ---- callbacks -------------------------------------------------------------- */

/* The arguments of one request, collected before packing (the map's size first). */
struct kvs {
	int n;
	struct { const char *k; char t; const char *v; } a[16];
};

static void kv_add(struct kvs *kv, const char *k, char t, const char *v)
{
	if (kv->n < 16) {
		kv->a[kv->n].k = k;
		kv->a[kv->n].t = t;
		kv->a[kv->n].v = v;
		kv->n++;
	}
}

/* Send op with kv (types: 's' string, 'u' number, 'b' true); 0, or an exit status. */
static int kv_call(const char *op, const struct kvs *kv, ccq_msg *r)
{
	uint64_t id = ccq_client_id(&g_cl), v;
	ccq_enc e;

	ccq_enc_init(&e);
	ccq_enc_request(&e, id, op, (uint32_t)kv->n + global_args());
	pack_global_args(&e.pk);
	for (int i = 0; i < kv->n; i++) {
		if (kv->a[i].t == 'b') {
			ccq_pack_kv_bool(&e.pk, kv->a[i].k, 1);
		} else if (kv->a[i].t == 'u') {
			if (parse_u64(kv->a[i].v, &v) < 0) {
				fprintf(stderr, "ccqctl: %s must be a number, not '%s'\n", kv->a[i].k,
					kv->a[i].v);
				ccq_enc_free(&e);
				return 2;
			}
			ccq_pack_kv_uint(&e.pk, kv->a[i].k, v);
		} else {
			ccq_pack_kv_str(&e.pk, kv->a[i].k, kv->a[i].v);
		}
	}
	return call(&e, id, r);
}

static const char *const cb_usage =
	"ccqctl: usage:\n"
	"  callback request --txn ID [--device D] [--number N] [--add-number] [--verified]\n"
	"                   [--pin-stdin] [--as EXT@ORG]\n"
	"  callback request --customer --ext K|--inbox I --number N [--name NAME] [--org O]\n"
	"  callback list [--scheduled|--final|--all] [--ext K] [--txn ID] [--limit N]\n"
	"  callback cancel ID\n"
	"  callback schedule --inbox I [--txn ID] [--device D] [--number N] --at 'YYYY-MM-DD HH:MM'\n"
	"                   [--add-number] [--verified] [--pin-stdin]\n"
	"  callback move ID --at 'YYYY-MM-DD HH:MM'\n"
	"  callback note ID TEXT\n";

/* What queued made of a request or a schedule, for people. */
static void print_made(const msgpack_object *b)
{
	char cb[32], txn[32], st[32], pos[16], num[40], ext[40], due[40];
	int dup = 0, tip = 0;

	field(b, "cb", cb, sizeof(cb));
	field(b, "txn", txn, sizeof(txn));
	field(b, "status", st, sizeof(st));
	field(b, "position", pos, sizeof(pos));
	field(b, "number", num, sizeof(num));
	field(b, "ext", ext, sizeof(ext));
	field(b, "due_at", due, sizeof(due));
	ccq_map_bool(b, "duplicate", &dup);
	ccq_map_bool(b, "suggest_verify", &tip);
	if (dup)
		printf("duplicate: callback %s for %s is already open (%s for extension %s, TXN %s)\n",
			cb, num, st, ext, txn);
	else if (strcmp(st, "overflow") == 0)
		printf("overflow: the queue of extension %s is full; sent to the missed-call flow "
			"(TXN %s)\n", ext, txn);
	else if (strcmp(st, "scheduled") == 0)
		printf("callback %s scheduled for extension %s at %s UTC, TXN %s\n", cb, ext, due, txn);
	else
		printf("callback %s %s for extension %s (position %s), TXN %s\n", cb, st, ext, pos, txn);
	if (tip && !dup && strcmp(st, "overflow") != 0)
		printf("tip: %s is not verified; --add-number --verified marks it\n", num);
}

static int cmd_callback(int argc, char **argv)
{
	static const struct { const char *opt, *key; char t; } opts[] = {
		{ "--txn", "txn", 'u' }, { "--device", "device", 's' }, { "--number", "number", 's' },
		{ "--add-number", "add_number", 'b' }, { "--verified", "verified", 'b' },
		{ "--ext", "ext", 's' }, { "--inbox", "inbox", 's' }, { "--name", "name", 's' },
		{ "--at", "at", 's' }, { "--limit", "limit", 'u' },
	};
	static const char *const cols[] = { "id", "status", "ext", "number", "customer", "txn",
		"origin_txn", "requested_at", "attempts", "reason", NULL };
	static const char *const sched_cols[] = { "id", "status", "ext", "number", "customer", "txn",
		"origin_txn", "due_at", "inbox", "device", NULL };
	const char *sub = argc > 0 ? argv[0] : "", *op = NULL, *status = NULL;
	char pin[64] = "";
	int pin_stdin = 0, customer = 0, rc, npos = 0;
	const char *pos[2] = { 0 };
	struct kvs kv = { 0 };
	ccq_msg r;

	for (int i = 1; i < argc; i++) {
		size_t k;
		if (strcmp(argv[i], "--pin-stdin") == 0) {
			pin_stdin = 1;
			continue;
		}
		if (strcmp(argv[i], "--customer") == 0) {
			customer = 1;
			continue;
		}
		if (strcmp(argv[i], "--scheduled") == 0 || strcmp(argv[i], "--final") == 0
				|| strcmp(argv[i], "--all") == 0 || strcmp(argv[i], "--open") == 0) {
			status = argv[i] + 2;
			continue;
		}
		if ((strcmp(argv[i], "--as") == 0 || strcmp(argv[i], "--org") == 0) && i + 1 < argc) {
			/* as the global -a / -o, also after the command */
			if (argv[i][2] == 'a')
				g_as = argv[++i];
			else
				g_org = argv[++i];
			continue;
		}
		for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++)
			if (strcmp(argv[i], opts[k].opt) == 0)
				break;
		if (k < sizeof(opts) / sizeof(opts[0])) {
			if (opts[k].t == 'b') {
				kv_add(&kv, opts[k].key, 'b', NULL);
				continue;
			}
			if (i + 1 >= argc) {
				fprintf(stderr, "ccqctl: %s needs a value\n", argv[i]);
				return 2;
			}
			kv_add(&kv, opts[k].key, opts[k].t, argv[++i]);
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1] == '-') {
			fprintf(stderr, "ccqctl: callback %s: unknown option '%s'\n%s", sub, argv[i], cb_usage);
			return 2;
		}
		if (npos == 2) {
			fprintf(stderr, "ccqctl: callback %s: unexpected argument '%s'\n%s", sub, argv[i],
				cb_usage);
			return 2;
		}
		pos[npos++] = argv[i];
	}
	if (strcmp(sub, "request") == 0 && npos == 0) {
		op = "callback.request";
		if (customer)
			kv_add(&kv, "source", 's', "customer");
	} else if (strcmp(sub, "schedule") == 0 && npos == 0) {
		op = "callback.schedule";
	} else if (strcmp(sub, "list") == 0 && npos == 0) {
		op = "callback.list";
		if (status)
			kv_add(&kv, "status", 's', status);
	} else if ((strcmp(sub, "cancel") == 0 || strcmp(sub, "move") == 0) && npos == 1) {
		op = sub[0] == 'c' ? "callback.cancel" : "callback.move";
		kv_add(&kv, "cb", 'u', pos[0]);
	} else if (strcmp(sub, "note") == 0 && npos == 2) {
		op = "callback.note";
		kv_add(&kv, "cb", 'u', pos[0]);
		kv_add(&kv, "text", 's', pos[1]);
	}
	if (!op) {
		fputs(cb_usage, stderr);
		return 2;
	}
	if (pin_stdin) {
		if ((rc = read_pin(g_as ? g_as : "the callback", NULL, pin, sizeof(pin))) != 0)
			return rc;
		kv_add(&kv, "pin", 's', pin);
	}
	rc = kv_call(op, &kv, &r);
	memset(pin, 0, sizeof(pin));
	if (rc != 0)
		return rc;
	if (strcmp(op, "callback.list") == 0) {
		const msgpack_object *items = ccq_map_get(r.body, "callbacks");
		if (g_json) {
			json_obj(items ? items : r.body);
			putchar('\n');
		} else if (items && items->type == MSGPACK_OBJECT_ARRAY) {
			print_table(items, status && strcmp(status, "scheduled") == 0 ? sched_cols : cols);
		}
	} else if (g_json) {
		json_obj(r.body);
		putchar('\n');
	} else if (strcmp(op, "callback.request") == 0 || strcmp(op, "callback.schedule") == 0) {
		print_made(r.body);
	} else {
		char cb[32], txn[32], due[40];
		field(r.body, "cb", cb, sizeof(cb));
		field(r.body, "txn", txn, sizeof(txn));
		field(r.body, "due_at", due, sizeof(due));
		if (op[9] == 'c')
			printf("callback %s cancelled (TXN %s)\n", cb, txn);
		else if (op[9] == 'm')
			printf("callback %s moved to %s UTC\n", cb, due);
		else
			printf("note added to callback %s (TXN %s)\n", cb, txn);
	}
	ccq_msg_free(&r);
	return 0;
}

/* ---- recording policy ---------------------------------------------------------- */

static const char *const rec_usage =
	"ccqctl: usage:\n"
	"  recording set --org on|off\n"
	"  recording set --inbox NAME on|off|inherit\n"
	"  recording set --user EXT on|off|inherit\n"
	"  recording show\n"
	"(the organisation: -o ORG; the local operator must give it)\n";

/* The scope of "recording set" (org, inbox, user), or NULL: a usage error. */
static const char *rec_set_scope(int argc, char **argv)
{
	const char *value = argv[argc - 1];
	if (strcmp(value, "on") && strcmp(value, "off") && strcmp(value, "inherit"))
		return NULL;
	if (argc == 3 && strcmp(argv[1], "--org") == 0)
		return strcmp(value, "inherit") ? "org" : NULL;
	if (argc == 4 && strcmp(argv[1], "--inbox") == 0)
		return "inbox";
	if (argc == 4 && strcmp(argv[1], "--user") == 0)
		return "user";
	return NULL;
}

static int rec_args_ok(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "show") == 0)
		return 1;
	return argc >= 4 && strcmp(argv[1], "set") == 0 && rec_set_scope(argc - 1, argv + 1);
}

static int cmd_recording(int argc, char **argv)
{
	static const char *const inbox_cols[] = { "name", "setting", "effective", "rule", NULL };
	static const char *const user_cols[] = { "ext", "name", "setting", "effective", "rule",
		"inbox", NULL };
	struct kvs kv = { 0 };
	ccq_msg r;
	char buf[64];
	int rc;

	if (strcmp(argv[0], "show") == 0) {
		const msgpack_object *in, *us;
		if ((rc = kv_call("recording.show", &kv, &r)) != 0)
			return rc;
		in = ccq_map_get(r.body, "inboxes");
		us = ccq_map_get(r.body, "users");
		if (g_json) {
			json_obj(r.body);
			putchar('\n');
		} else {
			printf("Organisation: recording %s\n\n", field(r.body, "org", buf, sizeof(buf)));
			if (in && in->type == MSGPACK_OBJECT_ARRAY)
				print_table(in, inbox_cols);
			putchar('\n');
			if (us && us->type == MSGPACK_OBJECT_ARRAY)
				print_table(us, user_cols);
		}
		ccq_msg_free(&r);
		return 0;
	}
	kv_add(&kv, "scope", 's', rec_set_scope(argc, argv));
	if (argc == 4)
		kv_add(&kv, "name", 's', argv[2]);
	kv_add(&kv, "value", 's', argv[argc - 1]);
	if ((rc = kv_call("recording.set", &kv, &r)) != 0)
		return rc;
	if (g_json) {
		json_obj(r.body);
		putchar('\n');
	} else if (argc == 4) {
		printf("recording of %s %s: %s\n", argv[1] + 2, argv[2], argv[3]);
	} else {
		printf("recording of the organisation: %s\n", argv[2]);
	}
	ccq_msg_free(&r);
	return 0;
}

static int authenticate(const char *token)
{
	ccq_enc e;
	ccq_msg r;
	uint64_t id = ccq_client_id(&g_cl);
	int rc;

	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "auth", 1);
	ccq_pack_kv_str(&e.pk, "token", token);
	if ((rc = call(&e, id, &r)) != 0)
		return rc;
	ccq_msg_free(&r);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "as", required_argument, NULL, 'a' },
		{ "org", required_argument, NULL, 'o' },
		{ "token", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	char err[512];
	const char *token = getenv("CCQ_TOKEN");
	int opt, rc = -1;

	g_addr = getenv("CCQ_QUEUED_SOCK");
	if (!g_addr || !*g_addr)
		g_addr = DEFAULT_SOCK;
	/* '+': options stop at the command, so "txn list --limit 5" works */
	while ((opt = getopt_long(argc, argv, "+s:jT:a:o:t:hV", lopts, NULL)) != -1) {
		switch (opt) {
		case 's': g_addr = optarg; break;
		case 'j': g_json = 1; break;
		case 'T': {
			uint64_t v;
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 600000) {
				fprintf(stderr, "ccqctl: --timeout takes milliseconds from 1 to 600000\n");
				return 2;
			}
			g_timeout_ms = (int)v;
			break;
		}
		case 'a': g_as = optarg; break;
		case 'o': g_org = optarg; break;
		case 't': token = optarg; break;
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
	{
		/* find the command before connecting: a typo is a usage error (2),
		 * whether or not queued is up */
		const struct cmdspec *best = NULL;
		int best_words = 0, special = 0;

		if (strcmp(argv[0], "ping") == 0 && argc == 1)
			special = 1;
		else if (argc >= 2 && strcmp(argv[0], "txn") == 0 && strcmp(argv[1], "show") == 0)
			special = 2;
		else if (strcmp(argv[0], "me") == 0)
			special = 3;
		else if (strcmp(argv[0], "watch") == 0)
			special = 4;
		else if (strcmp(argv[0], "list") == 0)
			special = 5;
		else if (strcmp(argv[0], "pin") == 0)
			special = 6;
		else if (strcmp(argv[0], "callback") == 0) {
			static const char *const subs[] = { "request", "list", "cancel", "schedule", "move",
				"note", NULL };
			int k = 0;
			while (argc > 1 && subs[k] && strcmp(argv[1], subs[k]) != 0)
				k++;
			if (argc < 2 || !subs[k]) {
				fputs(cb_usage, stderr);
				return 2;
			}
			special = 7;
		} else if (strcmp(argv[0], "recording") == 0) {
			if (!rec_args_ok(argc, argv)) {
				fputs(rec_usage, stderr);
				return 2;
			}
			special = 8;
		}
		for (size_t i = 0; !special && i < sizeof(cmds) / sizeof(cmds[0]); i++) {
			char w[64], *save = NULL, *tok;
			int n = 0, ok = 1;
			snprintf(w, sizeof(w), "%s", cmds[i].words);
			for (tok = strtok_r(w, " ", &save); tok; tok = strtok_r(NULL, " ", &save), n++)
				if (n >= argc || strcmp(tok, argv[n]) != 0) {
					ok = 0;
					break;
				}
			if (ok && n > best_words) {
				best = &cmds[i];
				best_words = n;
			}
		}
		if (!special && !best) {
			fprintf(stderr, "ccqctl: unknown command '%s%s%s' (see ccqctl --help)\n", argv[0],
				argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
			return 2;
		}
		signal(SIGPIPE, SIG_IGN);
		ccq_client_init(&g_cl);
		if (ccq_client_connect(&g_cl, g_addr, g_timeout_ms, err, sizeof(err)) < 0) {
			fprintf(stderr, "ccqctl: cannot reach queued: %s\n", err);
			return 3;
		}
		if (token && *token && (rc = authenticate(token)) != 0) {
			ccq_client_free(&g_cl);
			return rc;
		}
		switch (special) {
		case 1: rc = cmd_ping(); break;
		case 2: rc = cmd_txn_show(argc - 2, argv + 2); break;
		case 3: rc = cmd_me(argc - 1, argv + 1); break;
		case 4: rc = cmd_watch(argc - 1, argv + 1); break;
		case 5: rc = cmd_list(argc - 1, argv + 1); break;
		case 6: rc = cmd_pin(argc - 1, argv + 1); break;
		case 7: rc = cmd_callback(argc - 1, argv + 1); break;
		case 8: rc = cmd_recording(argc - 1, argv + 1); break;
		default: rc = run_spec(best, argc - best_words, argv + best_words);
		}
	}
	ccq_client_free(&g_cl);
	return rc;
}
