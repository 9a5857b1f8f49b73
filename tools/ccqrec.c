/*
 * ccqrec: call recordings — list them, fetch one as a WAV file, verify the
 * stored hashes, purge old ones, or decode a pcap file directly.
 * See ccqrec(1) and doc/recording.md.
 *
 * It talks to queued like ccqctl (the same connection, authentication and
 * acting-as options) and reads the recordings' files itself: it runs on the
 * host that holds rtpengine's recording directory.
 */
#include "ccq_config.h"
#include "ccq_client.h"
#include "ccq_pcap.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#define DEFAULT_SOCK "/run/ccq/queued.sock"
#define META_MAX (1024 * 1024)   /* the metadata (SDPs) read for codec names */
#define FORGET_BATCH 500
#define VERIFY_ALL_LIMIT 1000
#define WHY_MAX 4800             /* why a segment is left out: a path and a reason */

static int g_json;
static int g_timeout_ms = 5000;
static const char *g_as;
static const char *g_org;
static const char *g_addr;
static const char *g_token;
static ccq_client g_cl;

static const char *const usage_text =
	"Usage: ccqrec [options] COMMAND [ARGS]\n"
	"\n"
	"Call recordings of ccq: find them, fetch them as WAV, check and purge them.\n"
	"\n"
	"Options (before the command):\n"
	"  -s, --socket ADDR   queued's address: a unix socket path, unix:/path or\n"
	"                      host:port (default: $CCQ_QUEUED_SOCK, else %s)\n"
	"      --tcp HOST:PORT queued over TCP (needs a token)\n"
	"  -t, --token TOKEN   authenticate with an API token (default: $CCQ_TOKEN;\n"
	"                      not needed on the unix socket as the local operator)\n"
	"  -a, --as EXT@ORG    act as this user (local operator only)\n"
	"  -o, --org NAME      the organisation (default: the acting user's)\n"
	"  -j, --json          print machine-readable JSON instead of tables\n"
	"  -T, --timeout MS    how long to wait for queued (default 5000)\n"
	"  -h, --help          this help\n"
	"  -V, --version       print the version\n"
	"\n"
	"Commands:\n"
	"  list [--txn ID] [--customer NUMBER|ID] [--customer-id ID] [--inbox NAME]\n"
	"       [--agent EXT] [--from DATE] [--to DATE] [--status S] [--limit N]\n"
	"                      recordings you may see (DATE: 'YYYY-MM-DD[ HH:MM[:SS]]' UTC)\n"
	"  fetch TXN [-o FILE] [--stereo] [--id REC]\n"
	"                      a TXN's recording as WAV (8 kHz, 16-bit): both parties\n"
	"                      mixed, or --stereo with the caller/customer left and the\n"
	"                      agent right (default FILE: txn-TXN.wav; '-': standard output);\n"
	"                      the whole call: its recordings (one per segment when it was\n"
	"                      paused) joined in time order, silence for the gaps; one not\n"
	"                      usable is left out with a warning (exit status 1);\n"
	"                      --id REC: that recording alone\n"
	"  verify TXN | verify --all [list filters]\n"
	"                      recompute the files' SHA-256 and compare with the index;\n"
	"                      prints ok, TAMPERED or MISSING and reports it to queued\n"
	"  purge --older-than DAYS [--dry-run]\n"
	"                      delete recordings older than DAYS: files and index rows\n"
	"  decode PCAP [-o FILE] [--stereo] [--caller IP:PORT] [--agent IP:PORT]\n"
	"         [--sdp FILE]\n"
	"                      decode a pcap file directly, without queued (--sdp: an SDP\n"
	"                      or rtpengine metadata file naming the codecs)\n"
	"\n"
	"Exit status: 0 success, 1 failure (an error from queued, a recording that is\n"
	"not ok, a file that could not be read, written or deleted), 2 usage error,\n"
	"3 queued could not be reached.\n";

static void usage(FILE *f)
{
	fprintf(f, usage_text, DEFAULT_SOCK);
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s < '0' || *s > '9')
		return -1;
	*v = strtoull(s, &end, 10);
	return (errno || *end) ? -1 : 0;
}

/* ---- JSON and text output ----------------------------------------------------- */

static void jstr(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void jcstr(const char *s)
{
	if (s)
		jstr(stdout, s, strlen(s));
	else
		fputs("null", stdout);
}

/* A msgpack value as JSON. */
static void jval(const msgpack_object *o)
{
	uint32_t i;
	switch (o->type) {
	case MSGPACK_OBJECT_BOOLEAN:
		fputs(o->via.boolean ? "true" : "false", stdout);
		return;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		printf("%llu", (unsigned long long)o->via.u64);
		return;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		printf("%lld", (long long)o->via.i64);
		return;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		printf("%.17g", o->via.f64);
		return;
	case MSGPACK_OBJECT_STR:
		jstr(stdout, o->via.str.ptr, o->via.str.size);
		return;
	case MSGPACK_OBJECT_ARRAY:
		fputc('[', stdout);
		for (i = 0; i < o->via.array.size; i++) {
			fputs(i ? "," : "", stdout);
			jval(o->via.array.ptr + i);
		}
		fputc(']', stdout);
		return;
	case MSGPACK_OBJECT_MAP:
		fputc('{', stdout);
		for (i = 0; i < o->via.map.size; i++) {
			const msgpack_object *k = &o->via.map.ptr[i].key;
			fputs(i ? "," : "", stdout);
			if (k->type == MSGPACK_OBJECT_STR)
				jstr(stdout, k->via.str.ptr, k->via.str.size);
			else
				fputs("\"\"", stdout);
			fputc(':', stdout);
			jval(&o->via.map.ptr[i].val);
		}
		fputc('}', stdout);
		return;
	default:
		fputs("null", stdout);
	}
}

/* A string field (NUL-terminated in buf), or NULL if absent, nil or not a string. */
static const char *sfield(const msgpack_object *m, const char *key, char *buf, size_t size)
{
	const char *s;
	size_t n;
	if (ccq_map_str(m, key, &s, &n) != 1)
		return NULL;
	if (n >= size)
		n = size - 1;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return buf;
}

static uint64_t ufield(const msgpack_object *m, const char *key)
{
	uint64_t v = 0;
	if (ccq_map_uint(m, key, &v) != 1)
		v = 0;
	return v;
}

/* A cell of the list table: text, or "-". Times lose their microseconds. */
static void cell(const msgpack_object *m, const char *key, char *buf, size_t size)
{
	const msgpack_object *o = ccq_map_get(m, key);
	if (!o || o->type == MSGPACK_OBJECT_NIL) {
		snprintf(buf, size, "-");
	} else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		snprintf(buf, size, "%llu", (unsigned long long)o->via.u64);
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		snprintf(buf, size, "%lld", (long long)o->via.i64);
	} else if (o->type == MSGPACK_OBJECT_STR) {
		size_t n = o->via.str.size < size - 1 ? o->via.str.size : size - 1;
		memcpy(buf, o->via.str.ptr, n);
		buf[n] = '\0';
		if (n == 26 && buf[10] == ' ' && buf[19] == '.')
			buf[n = 19] = '\0'; /* YYYY-MM-DD HH:MM:SS */
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)buf[i] < 0x20)
				buf[i] = ' ';
	} else if (o->type == MSGPACK_OBJECT_FLOAT64 || o->type == MSGPACK_OBJECT_FLOAT32) {
		snprintf(buf, size, "%.1f", o->via.f64);
	} else if (o->type == MSGPACK_OBJECT_BOOLEAN) {
		snprintf(buf, size, "%s", o->via.boolean ? "yes" : "no");
	} else {
		snprintf(buf, size, "?");
	}
}

static const char *human_size(uint64_t b, char *buf, size_t size)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)b;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%llu B", (unsigned long long)b);
	else
		snprintf(buf, size, "%.1f %s", v, unit[u]);
	return buf;
}

/* ---- requests ------------------------------------------------------------------- */

struct arg {
	const char *key;
	char type;             /* 's' string, 'u' number, 'b' bool, 'U' list of numbers */
	const char *s;
	uint64_t u;
	const uint64_t *list;
	size_t nlist;
};

struct args {
	int n;
	struct arg a[12];
};

static void add_s(struct args *a, const char *key, const char *v)
{
	if (a->n < 12)
		a->a[a->n++] = (struct arg){ .key = key, .type = 's', .s = v };
}

static void add_u(struct args *a, const char *key, uint64_t v)
{
	if (a->n < 12)
		a->a[a->n++] = (struct arg){ .key = key, .type = 'u', .u = v };
}

static void add_b(struct args *a, const char *key, int v)
{
	if (a->n < 12)
		a->a[a->n++] = (struct arg){ .key = key, .type = 'b', .u = (uint64_t)v };
}

/*
 * Send op with args (and --as/--org). Returns 0 with *r to free, 3 if queued
 * could not be reached (said), or 1 for an error reply: *code is set and r
 * still holds the message (the caller says it and frees r).
 */
static int request(const char *op, const struct args *a, ccq_msg *r, int *code)
{
	ccq_enc e;
	uint64_t id = ccq_client_id(&g_cl);
	char err[512];
	int n = (a ? a->n : 0) + (g_as ? 1 : 0) + (g_org ? 1 : 0);

	*code = 0;
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, op, (uint32_t)n);
	if (g_as)
		ccq_pack_kv_str(&e.pk, "as", g_as);
	if (g_org)
		ccq_pack_kv_str(&e.pk, "org", g_org);
	for (int i = 0; a && i < a->n; i++) {
		const struct arg *x = &a->a[i];
		switch (x->type) {
		case 's': ccq_pack_kv_str(&e.pk, x->key, x->s); break;
		case 'u': ccq_pack_kv_uint(&e.pk, x->key, x->u); break;
		case 'b': ccq_pack_kv_bool(&e.pk, x->key, (int)x->u); break;
		case 'U':
			ccq_pack_str(&e.pk, x->key);
			msgpack_pack_array(&e.pk, (uint32_t)x->nlist);
			for (size_t k = 0; k < x->nlist; k++)
				msgpack_pack_uint64(&e.pk, x->list[k]);
			break;
		}
	}
	if (ccq_client_call(&g_cl, &e, id, g_timeout_ms, r, err, sizeof(err)) < 0) {
		ccq_enc_free(&e);
		fprintf(stderr, "ccqrec: %s\n", err);
		return 3;
	}
	ccq_enc_free(&e);
	if (r->code != 0) {
		*code = r->code;
		return 1;
	}
	return 0;
}

/* Say an error reply (what was asked: ctx) and free it; returns 1. */
static int say_error(ccq_msg *r, const char *ctx)
{
	if (g_json) {
		printf("{\"error\":\"%s\",\"message\":", ccq_err_name(r->code));
		jstr(stdout, r->errmsg, r->errmsg_len);
		puts("}");
	}
	if (r->code == CCQ_E_UNKNOWN_OP)
		fprintf(stderr, "ccqrec: %s: this queued does not support recordings (%.*s)\n",
			ctx, (int)r->errmsg_len, r->errmsg);
	else
		fprintf(stderr, "ccqrec: %s: %s: %.*s\n", ctx, ccq_err_name(r->code),
			(int)r->errmsg_len, r->errmsg);
	ccq_msg_free(r);
	return 1;
}

/*
 * Connect (and authenticate) once a command's arguments are known to be
 * right: a usage error is said whether or not queued is up. 0, or an exit
 * status (said).
 */
static int connect_queued(void)
{
	const char *token = g_token;
	char err[512];
	if (ccq_client_connect(&g_cl, g_addr, g_timeout_ms, err, sizeof(err)) < 0) {
		fprintf(stderr, "ccqrec: cannot reach queued: %s\n", err);
		return 3;
	}
	if (token && *token) {
		struct args a = { 0 };
		ccq_msg r;
		int code, rc;
		add_s(&a, "token", token);
		{
			/* auth takes no as/org */
			const char *as = g_as, *org = g_org;
			g_as = g_org = NULL;
			rc = request("auth", &a, &r, &code);
			g_as = as;
			g_org = org;
		}
		if (rc == 1)
			return say_error(&r, "auth");
		if (rc)
			return rc;
		ccq_msg_free(&r);
	}
	return 0;
}

/* ---- files ---------------------------------------------------------------------- */

struct mapped {
	uint8_t *p;
	size_t len;
	int fd;
};

/* Map a whole file read-only; -1 with errno set. */
static int map_file(const char *path, struct mapped *m)
{
	struct stat st;
	m->p = NULL;
	m->len = 0;
	m->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (m->fd < 0)
		return -1;
	if (fstat(m->fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		int e = S_ISREG(st.st_mode) ? errno : EINVAL;
		close(m->fd);
		errno = e;
		return -1;
	}
	m->len = (size_t)st.st_size;
	if (m->len) {
		void *p = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, m->fd, 0);
		if (p == MAP_FAILED) {
			int e = errno;
			close(m->fd);
			errno = e;
			return -1;
		}
		m->p = p;
	}
	return 0;
}

static void unmap_file(struct mapped *m)
{
	if (m->p)
		munmap(m->p, m->len);
	if (m->fd >= 0)
		close(m->fd);
	m->p = NULL;
	m->fd = -1;
}

/* SHA-256 of a file, streamed, as 64 hex digits. 0, or -1 with errno set. */
static int sha256_file(const char *path, char hex[65])
{
	unsigned char md[EVP_MAX_MD_SIZE], *buf;
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx;
	ssize_t n;
	int fd, rc = -1, e = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	buf = malloc(1 << 16);
	ctx = EVP_MD_CTX_new();
	if (!buf || !ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		e = ENOMEM;
		goto out;
	}
	while ((n = read(fd, buf, 1 << 16)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			e = errno;
			goto out;
		}
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32) {
		e = EIO;
		goto out;
	}
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	rc = 0;
out:
	EVP_MD_CTX_free(ctx);
	free(buf);
	close(fd);
	if (rc)
		errno = e;
	return rc;
}

/* The text of a small file (metadata, SDP), NUL-terminated; NULL if unreadable. */
static char *read_small(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b;
	if (!f)
		return NULL;
	b = malloc(META_MAX + 1);
	if (!b) {
		fclose(f);
		return NULL;
	}
	*len = fread(b, 1, META_MAX, f);
	b[*len] = '\0';
	fclose(f);
	return b;
}

/* ---- decoding to a WAV file --------------------------------------------------- */

struct decode_req {
	const char *pcap;
	const char *out;        /* file, or "-" */
	int stereo;
	const char *caller, *agent;
	const char *sdp_path;   /* metadata/SDP for codec names; may be NULL */
	uint64_t txn, rec;      /* for messages and JSON (0: decode command) */
	const char *want_sha;   /* the index's hash, to warn on a mismatch */
};

static void json_summary(const struct decode_req *d, const ccq_pcap *p, unsigned ch)
{
	printf("{");
	if (d->txn)
		printf("\"txn\":%llu,\"recording\":%llu,", (unsigned long long)d->txn,
			(unsigned long long)d->rec);
	printf("\"pcap\":");
	jcstr(d->pcap);
	printf(",\"file\":");
	jcstr(d->out);
	printf(",\"channels\":%u,\"rate\":%u,\"frames\":%llu,\"seconds\":%.3f,\"linktype\":%u,"
		"\"streams\":[", ch, CCQ_PCAP_RATE, (unsigned long long)p->frames,
		(double)p->frames / CCQ_PCAP_RATE, p->linktype);
	for (unsigned i = 0; i < p->nstreams; i++) {
		const struct ccq_pcap_stream *s = &p->streams[i];
		printf("%s{\"src\":", i ? "," : "");
		jcstr(s->src);
		printf(",\"dst\":");
		jcstr(s->dst);
		printf(",\"ssrc\":%u,\"party\":\"%s\",\"pt\":%u,\"packets\":%u,\"lost\":%u,"
			"\"duplicates\":%u,\"start_s\":%.3f,\"end_s\":%.3f}", s->ssrc,
			s->party == CCQ_PARTY_CALLER ? "caller" : "agent", s->pt, s->packets, s->lost,
			s->duplicates, (double)s->start / CCQ_PCAP_RATE, (double)s->end / CCQ_PCAP_RATE);
	}
	printf("],\"notes\":[");
	for (const char *n = p->notes, *e; *n; n = e + 1) {
		e = strchr(n, '\n');
		if (!e)
			break;
		printf("%s", n == p->notes ? "" : ",");
		jstr(stdout, n, (size_t)(e - n));
	}
	printf("]}\n");
}

/* Both parties' streams, for people. */
static void human_summary(FILE *f, const struct decode_req *d, const ccq_pcap *p, unsigned ch)
{
	if (d->txn)
		fprintf(f, "TXN %llu, recording %llu: ", (unsigned long long)d->txn,
			(unsigned long long)d->rec);
	fprintf(f, "wrote %s: %s, 8 kHz, %.1f s\n", strcmp(d->out, "-") ? d->out
		: "standard output", ch == 2 ? "stereo (caller left, agent right)" : "mono (mixed)",
		(double)p->frames / CCQ_PCAP_RATE);
	for (unsigned i = 0; i < p->nstreams; i++) {
		const struct ccq_pcap_stream *s = &p->streams[i];
		fprintf(f, "  %-6s %s -> %s  SSRC 0x%08x  %s  %u packets, %u lost, from %.2f s to "
			"%.2f s\n", s->party == CCQ_PARTY_CALLER ? "caller" : "agent", s->src, s->dst,
			s->ssrc, s->pt == 8 ? "PCMA" : "PCMU", s->packets, s->lost,
			(double)s->start / CCQ_PCAP_RATE, (double)s->end / CCQ_PCAP_RATE);
	}
}

/* Where the WAV goes: a file written beside the target and renamed into
 * place when complete, or standard output. */
struct wav_out {
	const char *path;       /* the target, or "-" */
	FILE *f;
	int to_stdout;
	char tmp[4096];
};

/* 0, or 1 (said). */
static int out_open(struct wav_out *o, const char *path)
{
	int fd;
	o->path = path;
	o->f = NULL;
	o->to_stdout = strcmp(path, "-") == 0;
	if (o->to_stdout) {
		o->f = stdout;
		return 0;
	}
	if (snprintf(o->tmp, sizeof(o->tmp), "%s.XXXXXX", path) >= (int)sizeof(o->tmp)) {
		fprintf(stderr, "ccqrec: output path too long\n");
		return 1;
	}
	fd = mkstemp(o->tmp);
	if (fd < 0 || !(o->f = fdopen(fd, "wb"))) {
		fprintf(stderr, "ccqrec: cannot write %s: %s\n", path, strerror(errno));
		if (fd >= 0) {
			close(fd);
			unlink(o->tmp);
		}
		return 1;
	}
	return 0;
}

static const char *out_name(const struct wav_out *o)
{
	return o->to_stdout ? "standard output" : o->path;
}

/* Give up: the temporary file goes. */
static void out_abort(struct wav_out *o)
{
	if (!o->to_stdout && o->f) {
		fclose(o->f);
		unlink(o->tmp);
	}
	o->f = NULL;
}

/* Flush, and move the file into place. 0, or 1 (said). */
static int out_finish(struct wav_out *o)
{
	if (fflush(o->f) != 0 || ferror(o->f)) {
		fprintf(stderr, "ccqrec: cannot write %s: %s\n", out_name(o), strerror(errno));
		out_abort(o);
		return 1;
	}
	if (!o->to_stdout) {
		int rc = fclose(o->f);
		o->f = NULL;
		if (rc != 0 || rename(o->tmp, o->path) < 0) {
			fprintf(stderr, "ccqrec: cannot write %s: %s\n", o->path, strerror(errno));
			unlink(o->tmp);
			return 1;
		}
	}
	return 0;
}

static int refuse_terminal(const char *out)
{
	if (strcmp(out, "-") == 0 && isatty(1)) {
		fprintf(stderr, "ccqrec: not writing WAV audio to a terminal: give -o FILE (or "
			"redirect standard output)\n");
		return 1;
	}
	return 0;
}

/* Decode d->pcap to d->out. 0, or 1 (said). */
static int decode_to_wav(const struct decode_req *d)
{
	struct mapped m;
	struct ccq_pcap_opts o = { 0 };
	struct wav_out w;
	ccq_pcap p;
	char err[512];
	char *meta = NULL;
	size_t metalen = 0;
	unsigned ch = d->stereo ? 2 : 1;
	int rc = 1;

	if (refuse_terminal(d->out))
		return 1;
	if (map_file(d->pcap, &m) < 0) {
		if (errno == ENOENT)
			fprintf(stderr, "ccqrec: the recording's file is missing: %s\n", d->pcap);
		else
			fprintf(stderr, "ccqrec: cannot read %s: %s\n", d->pcap, strerror(errno));
		return 1;
	}
	if (d->want_sha) {
		char hex[65];
		if (sha256_file(d->pcap, hex) == 0 && strcasecmp(hex, d->want_sha) != 0)
			fprintf(stderr, "ccqrec: warning: %s does not match the SHA-256 stored when it "
				"was indexed: it has changed since (see ccqrec verify)\n", d->pcap);
	}
	if (d->sdp_path) {
		meta = read_small(d->sdp_path, &metalen);
		if (!meta && !d->txn) {
			fprintf(stderr, "ccqrec: cannot read %s: %s\n", d->sdp_path, strerror(errno));
			unmap_file(&m);
			return 1;
		}
	}
	o.caller = d->caller;
	o.agent = d->agent;
	o.rtpmap = meta;
	o.rtpmap_len = metalen;
	if (ccq_pcap_open(&p, m.p, m.len, &o, err, sizeof(err)) < 0) {
		fprintf(stderr, "ccqrec: %s: %s\n", d->pcap, err);
		goto out;
	}
	for (const char *n = p.notes, *e; *n && (e = strchr(n, '\n')); n = e + 1)
		fprintf(stderr, "ccqrec: note: %.*s\n", (int)(e - n), n);
	if (out_open(&w, d->out))
		goto out;
	if (ccq_pcap_write_wav(&p, ch, w.f, err, sizeof(err)) < 0 || ferror(w.f)) {
		fprintf(stderr, "ccqrec: cannot write %s: %s\n", out_name(&w),
			ferror(w.f) ? strerror(errno) : err);
		out_abort(&w);
		goto out;
	}
	if (out_finish(&w))
		goto out;
	if (g_json && !w.to_stdout)
		json_summary(d, &p, ch);
	else
		human_summary(w.to_stdout ? stderr : stdout, d, &p, ch);
	rc = 0;
out:
	ccq_pcap_free(&p);
	free(meta);
	unmap_file(&m);
	return rc;
}

/* ---- a whole call: its segments joined ------------------------------------------ */

/*
 * A TXN has a recording per segment when the operator paused it (rtpengine
 * 10.5 has no pause: the module stops recording and starts it again, and
 * each start is a new pcap and metadata file). `fetch TXN` joins the 'ok'
 * ones on one timeline, in time order, with silence for the gaps.
 */
struct segment {
	uint64_t id;
	char pcap[4096], meta[4096], caller[96], agent[96], sha[80];
	int has_meta, has_caller, has_agent, has_sha;
	int64_t start_ns;     /* capture time of its first sample */
	uint64_t frames;      /* its length */
	uint64_t at;          /* where it starts in the joined WAV */
	uint64_t gap;         /* silence before it (after the previous segment) */
	unsigned nstreams;
};

struct joined {
	uint64_t txn;
	unsigned ch;
	struct segment *seg;
	size_t nseg;
	int bad;              /* a recording was left out: exit 1 at the end */
	char **left_out;      /* why, one line per recording left out (JSON) */
	uint64_t *left_id;
	size_t nleft;
};

/* Say (on stderr) and keep for the summary that recording id is left out. */
static void leave_out(struct joined *j, uint64_t id, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void leave_out(struct joined *j, uint64_t id, const char *fmt, ...)
{
	char why[WHY_MAX];
	va_list ap;
	char **n;
	uint64_t *ni;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ccqrec: warning: TXN %llu: recording %llu left out of the WAV: %s\n",
		(unsigned long long)j->txn, (unsigned long long)id, why);
	j->bad = 1;
	n = realloc(j->left_out, (j->nleft + 1) * sizeof(*n));
	if (n)
		j->left_out = n;
	ni = realloc(j->left_id, (j->nleft + 1) * sizeof(*ni));
	if (ni)
		j->left_id = ni;
	if (n && ni && (n[j->nleft] = strdup(why)) != NULL) {
		ni[j->nleft] = id;
		j->nleft++;
	}
}

/*
 * Open segment s's pcap (mapped into m) for decoding. 0, or -1 with the
 * reason in why. check_sha: compare the file with the index's hash.
 */
static int seg_open(const struct segment *s, struct mapped *m, ccq_pcap *p, char **meta,
		int check_sha, char *why, size_t whylen)
{
	struct ccq_pcap_opts o = { 0 };
	size_t metalen = 0;
	char err[512], hex[65];

	*meta = NULL;
	memset(p, 0, sizeof(*p));
	if (map_file(s->pcap, m) < 0) {
		if (errno == ENOENT)
			snprintf(why, whylen, "its file is missing: %s", s->pcap);
		else
			snprintf(why, whylen, "cannot read %s: %s", s->pcap, strerror(errno));
		return -1;
	}
	if (check_sha && s->has_sha) {
		if (sha256_file(s->pcap, hex) < 0) {
			snprintf(why, whylen, "cannot read %s: %s", s->pcap, strerror(errno));
			unmap_file(m);
			return -1;
		}
		if (strcasecmp(hex, s->sha) != 0) {
			snprintf(why, whylen, "%s does not match the SHA-256 stored when it was "
				"indexed: it has changed since (tampered? see ccqrec verify; fetch it "
				"anyway with --id %llu)", s->pcap, (unsigned long long)s->id);
			unmap_file(m);
			return -1;
		}
	}
	if (s->has_meta)
		*meta = read_small(s->meta, &metalen);
	o.caller = s->has_caller ? s->caller : NULL;
	o.agent = s->has_agent ? s->agent : NULL;
	o.rtpmap = *meta;
	o.rtpmap_len = metalen;
	if (ccq_pcap_open(p, m->p, m->len, &o, err, sizeof(err)) < 0) {
		snprintf(why, whylen, "%s: %s", s->pcap, err);
		ccq_pcap_free(p);
		free(*meta);
		*meta = NULL;
		unmap_file(m);
		return -1;
	}
	return 0;
}

static void seg_close(struct mapped *m, ccq_pcap *p, char *meta)
{
	ccq_pcap_free(p);
	free(meta);
	unmap_file(m);
}

static int seg_cmp(const void *a, const void *b)
{
	const struct segment *x = a, *y = b;
	if (x->start_ns != y->start_ns)
		return x->start_ns < y->start_ns ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

struct wav_sink {
	FILE *f;
	uint64_t frames;      /* written so far (of this segment) */
};

static int wav_put(void *ctx, const int16_t *frames, size_t n, unsigned channels)
{
	struct wav_sink *w = ctx;
	uint8_t b[4096];
	size_t k = n * channels, at = 0;
	while (at < k) {
		size_t c = k - at < sizeof(b) / 2 ? k - at : sizeof(b) / 2;
		for (size_t i = 0; i < c; i++) {
			uint16_t v = (uint16_t)frames[at + i];
			b[2 * i] = (uint8_t)v;
			b[2 * i + 1] = (uint8_t)(v >> 8);
		}
		if (fwrite(b, 2, c, w->f) != c)
			return -1;
		at += c;
	}
	w->frames += n;
	return 0;
}

/* n frames of silence. 0, or -1. */
static int wav_silence(FILE *f, uint64_t n, unsigned ch)
{
	static const uint8_t zero[4096];
	uint64_t bytes = n * ch * 2;
	while (bytes) {
		size_t c = bytes < sizeof(zero) ? (size_t)bytes : sizeof(zero);
		if (fwrite(zero, 1, c, f) != c)
			return -1;
		bytes -= c;
	}
	return 0;
}

static void joined_summary(const struct joined *j, const struct wav_out *w, uint64_t total)
{
	if (g_json && !w->to_stdout) {
		printf("{\"txn\":%llu,\"file\":", (unsigned long long)j->txn);
		jcstr(w->path);
		printf(",\"channels\":%u,\"rate\":%u,\"frames\":%llu,\"seconds\":%.3f,"
			"\"segments\":[", j->ch, CCQ_PCAP_RATE, (unsigned long long)total,
			(double)total / CCQ_PCAP_RATE);
		for (size_t i = 0; i < j->nseg; i++) {
			const struct segment *s = &j->seg[i];
			printf("%s{\"recording\":%llu,\"pcap\":", i ? "," : "", (unsigned long long)s->id);
			jcstr(s->pcap);
			printf(",\"start_s\":%.3f,\"seconds\":%.3f,\"gap_before_s\":%.3f,\"streams\":%u}",
				(double)s->at / CCQ_PCAP_RATE, (double)s->frames / CCQ_PCAP_RATE,
				(double)s->gap / CCQ_PCAP_RATE, s->nstreams);
		}
		printf("],\"left_out\":[");
		for (size_t i = 0; i < j->nleft; i++) {
			printf("%s{\"recording\":%llu,\"why\":", i ? "," : "",
				(unsigned long long)j->left_id[i]);
			jcstr(j->left_out[i]);
			printf("}");
		}
		printf("]}\n");
		return;
	}
	FILE *f = w->to_stdout ? stderr : stdout;
	fprintf(f, "TXN %llu: wrote %s: %s, 8 kHz, %.1f s", (unsigned long long)j->txn,
		out_name(w), j->ch == 2 ? "stereo (caller left, agent right)" : "mono (mixed)",
		(double)total / CCQ_PCAP_RATE);
	if (j->nseg > 1)
		fprintf(f, ": %zu recordings joined, silence between them", j->nseg);
	fputc('\n', f);
	for (size_t i = 0; i < j->nseg; i++) {
		const struct segment *s = &j->seg[i];
		fprintf(f, "  recording %llu  from %.2f s to %.2f s", (unsigned long long)s->id,
			(double)s->at / CCQ_PCAP_RATE, (double)(s->at + s->frames) / CCQ_PCAP_RATE);
		if (i)
			fprintf(f, " (after %.2f s of silence)", (double)s->gap / CCQ_PCAP_RATE);
		fprintf(f, "  %s\n", s->pcap);
	}
	if (j->nleft)
		fprintf(f, "  %zu recording%s left out (see the warnings)\n", j->nleft,
			j->nleft == 1 ? "" : "s");
}

/*
 * Every 'ok' recording of the TXN (recs) to one WAV at out. Two passes, so
 * memory stays one segment's: the first opens each pcap for its times and
 * length (the WAV header needs the total, also on standard output), the
 * second decodes each into the file in turn. 0, or 1 (said).
 */
static int fetch_joined(uint64_t txn, const msgpack_object *recs, const char *out, int stereo)
{
	struct joined j = { .txn = txn, .ch = stereo ? 2 : 1 };
	const uint64_t max_frames = (uint64_t)CCQ_PCAP_DEFAULT_MAX_SECONDS * CCQ_PCAP_RATE;
	struct wav_out w = { 0 };
	uint64_t total = 0;
	uint8_t hdr[44];
	char why[WHY_MAX], st[32], detail[512];
	size_t keep = 0;
	int rc = 1;

	if (refuse_terminal(out))
		return 1;
	j.seg = calloc(recs->via.array.size ? recs->via.array.size : 1, sizeof(*j.seg));
	if (!j.seg) {
		fprintf(stderr, "ccqrec: out of memory\n");
		return 1;
	}
	for (uint32_t i = 0; i < recs->via.array.size; i++) {
		const msgpack_object *x = &recs->via.array.ptr[i];
		struct segment *s = &j.seg[j.nseg];
		s->id = ufield(x, "id");
		if (!sfield(x, "status", st, sizeof(st)) || strcmp(st, "ok") != 0) {
			if (!sfield(x, "detail", detail, sizeof(detail))
					&& !sfield(x, "pcap_path", detail, sizeof(detail)))
				snprintf(detail, sizeof(detail), "no file");
			leave_out(&j, s->id, "it is %s (%s); fetch it anyway with --id %llu",
				sfield(x, "status", st, sizeof(st)) ? st : "of no status", detail,
				(unsigned long long)s->id);
			continue;
		}
		if (!sfield(x, "pcap_path", s->pcap, sizeof(s->pcap)) || !s->pcap[0]) {
			leave_out(&j, s->id, "it has no file");
			continue;
		}
		s->has_meta = sfield(x, "meta_path", s->meta, sizeof(s->meta)) != NULL;
		s->has_caller = sfield(x, "caller_addr", s->caller, sizeof(s->caller)) != NULL;
		s->has_agent = sfield(x, "agent_addr", s->agent, sizeof(s->agent)) != NULL;
		s->has_sha = sfield(x, "sha256", s->sha, sizeof(s->sha)) && s->sha[0];
		s->has_caller = s->has_caller && s->caller[0];
		s->has_agent = s->has_agent && s->agent[0];
		j.nseg++;
	}
	/* The metadata of a segment started after a pause has no SDPs, so its
	 * row names no parties: the call's parties are the same (rtpengine
	 * keeps the media ports), so it borrows them from the nearest segment
	 * before it that names both (else after it), for the same mapping. */
	for (size_t i = 0; i < j.nseg; i++) {
		struct segment *s = &j.seg[i];
		const struct segment *from = NULL;
		if (s->has_caller || s->has_agent)
			continue;
		for (size_t k = i; k-- > 0 && !from;)
			if (j.seg[k].has_caller && j.seg[k].has_agent)
				from = &j.seg[k];
		for (size_t k = i + 1; k < j.nseg && !from; k++)
			if (j.seg[k].has_caller && j.seg[k].has_agent)
				from = &j.seg[k];
		if (!from)
			continue;
		memcpy(s->caller, from->caller, sizeof(s->caller));
		memcpy(s->agent, from->agent, sizeof(s->agent));
		s->has_caller = s->has_agent = 1;
		fprintf(stderr, "ccqrec: note: recording %llu names no parties: those of recording "
			"%llu are used (caller %s, agent %s)\n", (unsigned long long)s->id,
			(unsigned long long)from->id, s->caller, s->agent);
	}

	/* pass 1: each segment's place in time and length */
	for (size_t i = 0; i < j.nseg; i++) {
		struct segment *s = &j.seg[i];
		struct mapped m;
		ccq_pcap p;
		char *meta;
		if (seg_open(s, &m, &p, &meta, 1, why, sizeof(why)) < 0) {
			leave_out(&j, s->id, "%s", why);
			continue;
		}
		for (const char *n = p.notes, *e; *n && (e = strchr(n, '\n')); n = e + 1)
			fprintf(stderr, "ccqrec: note: recording %llu: %.*s\n",
				(unsigned long long)s->id, (int)(e - n), n);
		/* The segments are placed by the pcap's own capture times (the
		 * first packet's, and the timeline's length after it), not by the
		 * index's started_at/ended_at: those are rtpengine's metadata times
		 * (whole seconds, and the call's, not the audio's); the capture
		 * times are the audio's. */
		s->start_ns = ccq_pcap_start_ns(&p);
		s->frames = p.frames;
		s->nstreams = p.nstreams;
		seg_close(&m, &p, meta);
		j.seg[keep++] = *s;
	}
	j.nseg = keep;
	if (j.nseg == 0) {
		fprintf(stderr, "ccqrec: TXN %llu: no usable recording (see above)\n",
			(unsigned long long)txn);
		goto out;
	}
	qsort(j.seg, j.nseg, sizeof(*j.seg), seg_cmp);
	for (size_t i = 0; i < j.nseg; i++) {
		struct segment *s = &j.seg[i];
		if (i) {
			const struct segment *q = &j.seg[i - 1];
			int64_t end_ns = q->start_ns + (int64_t)q->frames * 125000;
			if (s->start_ns > end_ns) {
				uint64_t g = (uint64_t)(s->start_ns - end_ns) / 125000;
				s->gap = g > max_frames ? max_frames + 1 : g;
			} else if (s->start_ns < end_ns) {
				fprintf(stderr, "ccqrec: note: recording %llu starts %.2f s before recording "
					"%llu ends: placed after it\n", (unsigned long long)s->id,
					(double)(end_ns - s->start_ns) / 1e9, (unsigned long long)q->id);
			}
		}
		s->at = total + s->gap;
		total = s->at + s->frames;
		if (total > max_frames) {
			fprintf(stderr, "ccqrec: TXN %llu: the recordings joined would last %llu h %02llu "
				"min or more (recording %llu starts %.0f s after the first), longer than the "
				"limit of %u h: refused; fetch them one by one with --id\n",
				(unsigned long long)txn, (unsigned long long)(total / CCQ_PCAP_RATE / 3600),
				(unsigned long long)(total / CCQ_PCAP_RATE % 3600 / 60),
				(unsigned long long)s->id,
				(double)(s->start_ns - j.seg[0].start_ns) / 1e9,
				CCQ_PCAP_DEFAULT_MAX_SECONDS / 3600);
			goto out;
		}
	}
	if (ccq_wav_header(hdr, total, j.ch) < 0) {
		fprintf(stderr, "ccqrec: TXN %llu: %llu samples do not fit in a WAV file\n",
			(unsigned long long)txn, (unsigned long long)total);
		goto out;
	}

	/* pass 2: the audio */
	if (out_open(&w, out))
		goto out;
	if (fwrite(hdr, 1, sizeof(hdr), w.f) != sizeof(hdr))
		goto write_failed;
	for (size_t i = 0; i < j.nseg; i++) {
		const struct segment *s = &j.seg[i];
		struct wav_sink ws = { w.f, 0 };
		struct mapped m;
		ccq_pcap p;
		char *meta, err[512];
		if (wav_silence(w.f, s->gap, j.ch) < 0)
			goto write_failed;
		if (seg_open(s, &m, &p, &meta, 0, why, sizeof(why)) < 0) {
			fprintf(stderr, "ccqrec: TXN %llu: recording %llu: %s (it changed while "
				"fetching)\n", (unsigned long long)txn, (unsigned long long)s->id, why);
			out_abort(&w);
			goto out;
		}
		if (p.frames != s->frames || ccq_pcap_start_ns(&p) != s->start_ns) {
			fprintf(stderr, "ccqrec: TXN %llu: recording %llu changed while fetching: %s\n",
				(unsigned long long)txn, (unsigned long long)s->id, s->pcap);
			seg_close(&m, &p, meta);
			out_abort(&w);
			goto out;
		}
		if (ccq_pcap_render(&p, j.ch, wav_put, &ws, err, sizeof(err)) != 0
				|| ws.frames != s->frames) {
			seg_close(&m, &p, meta);
			if (ferror(w.f))
				goto write_failed;
			fprintf(stderr, "ccqrec: TXN %llu: recording %llu: %s\n", (unsigned long long)txn,
				(unsigned long long)s->id, err);
			out_abort(&w);
			goto out;
		}
		seg_close(&m, &p, meta);
	}
	if (out_finish(&w))
		goto out;
	joined_summary(&j, &w, total);
	rc = j.bad ? 1 : 0;
	goto out;
write_failed:
	fprintf(stderr, "ccqrec: cannot write %s: %s\n", out_name(&w), strerror(errno));
	out_abort(&w);
out:
	for (size_t i = 0; i < j.nleft; i++)
		free(j.left_out[i]);
	free(j.left_out);
	free(j.left_id);
	free(j.seg);
	return rc;
}

/* ---- commands --------------------------------------------------------------------- */

/* Options of list (and verify --all). 0, or 2 (said). */
static int list_opt(int argc, char **argv, int *i, struct args *a)
{
	static const struct { const char *opt, *key; char t; } lo[] = {
		{ "--txn", "txn", 'u' }, { "--customer", "customer", 'c' },
		{ "--customer-id", "customer", 'u' }, { "--inbox", "inbox", 's' },
		{ "--agent", "agent", 's' }, { "--from", "from", 's' }, { "--to", "to", 's' },
		{ "--status", "status", 's' }, { "--limit", "limit", 'u' },
	};
	for (size_t k = 0; k < sizeof(lo) / sizeof(lo[0]); k++) {
		uint64_t v;
		if (strcmp(argv[*i], lo[k].opt) != 0)
			continue;
		if (*i + 1 >= argc) {
			fprintf(stderr, "ccqrec: %s needs a value\n", argv[*i]);
			return 2;
		}
		(*i)++;
		/* a customer: an id (up to 6 digits), else a phone number */
		if (lo[k].t == 'c' && strlen(argv[*i]) <= 6 && parse_u64(argv[*i], &v) == 0) {
			add_u(a, lo[k].key, v);
		} else if (lo[k].t == 'u') {
			if (parse_u64(argv[*i], &v) < 0) {
				fprintf(stderr, "ccqrec: %s takes a number, not '%s'\n", lo[k].opt, argv[*i]);
				return 2;
			}
			add_u(a, lo[k].key, v);
		} else {
			add_s(a, lo[k].key, argv[*i]);
		}
		return 0;
	}
	return 1;
}

/* --as/--org after the command, like ccqctl's; 1 if taken. */
static int global_opt(int argc, char **argv, int *i)
{
	if (*i + 1 < argc && strcmp(argv[*i], "--as") == 0) {
		g_as = argv[++*i];
		return 1;
	}
	if (*i + 1 < argc && strcmp(argv[*i], "--org") == 0) {
		g_org = argv[++*i];
		return 1;
	}
	return 0;
}

static const msgpack_object *recordings_of(const ccq_msg *r)
{
	const msgpack_object *a = ccq_map_get(r->body, "recordings");
	return a && a->type == MSGPACK_OBJECT_ARRAY ? a : NULL;
}

static void print_list(const msgpack_object *items)
{
	static const char *const cols[] = { "id", "txn", "started_at", "duration_s", "inbox",
		"agent", "number", "customer", "size", "status" };
	static const char *const heads[] = { "ID", "TXN", "STARTED (UTC)", "SECONDS", "INBOX",
		"AGENT", "NUMBER", "CUSTOMER", "SIZE", "STATUS" };
	enum { NC = sizeof(cols) / sizeof(cols[0]) };
	size_t w[NC];
	char b[256];

	for (size_t c = 0; c < NC; c++)
		w[c] = strlen(heads[c]);
	for (uint32_t i = 0; i < items->via.array.size; i++)
		for (size_t c = 0; c < NC; c++) {
			cell(&items->via.array.ptr[i], cols[c], b, sizeof(b));
			if (strlen(b) > w[c])
				w[c] = strlen(b) > 32 ? 32 : strlen(b);
		}
	for (size_t c = 0; c < NC; c++)
		printf("%-*s%s", c + 1 < NC ? (int)w[c] : 0, heads[c], c + 1 < NC ? "  " : "\n");
	for (uint32_t i = 0; i < items->via.array.size; i++)
		for (size_t c = 0; c < NC; c++) {
			cell(&items->via.array.ptr[i], cols[c], b, sizeof(b));
			printf("%-*.*s%s", c + 1 < NC ? (int)w[c] : 0, (int)w[c], b,
				c + 1 < NC ? "  " : "\n");
		}
	if (items->via.array.size == 0)
		printf("(no recordings)\n");
}

static int cmd_list(int argc, char **argv)
{
	struct args a = { 0 };
	ccq_msg r;
	int rc, code;
	const msgpack_object *items;

	for (int i = 0; i < argc; i++) {
		if (global_opt(argc, argv, &i))
			continue;
		if ((rc = list_opt(argc, argv, &i, &a)) == 0)
			continue;
		if (rc == 1)
			fprintf(stderr, "ccqrec: list: unknown argument '%s'\n", argv[i]);
		return 2;
	}
	if ((rc = connect_queued()) != 0)
		return rc;
	if ((rc = request("recording.list", &a, &r, &code)) == 1)
		return say_error(&r, "recording.list");
	if (rc)
		return rc;
	items = recordings_of(&r);
	if (g_json) {
		jval(items ? items : r.body);
		putchar('\n');
	} else if (items) {
		print_list(items);
	}
	ccq_msg_free(&r);
	return 0;
}

/* recording.get for txn; 0 with *r, or an exit status (said). */
static int get_txn(uint64_t txn, ccq_msg *r)
{
	struct args a = { 0 };
	int rc, code;
	char ctx[64];

	add_u(&a, "txn", txn);
	rc = request("recording.get", &a, r, &code);
	if (rc != 1)
		return rc;
	snprintf(ctx, sizeof(ctx), "TXN %llu", (unsigned long long)txn);
	if (code == CCQ_E_NOT_FOUND) {
		if (g_json) {
			printf("{\"error\":\"not_found\",\"message\":");
			jstr(stdout, r->errmsg, r->errmsg_len);
			puts("}");
		}
		fprintf(stderr, "ccqrec: %.*s (a TXN you may not see is answered the same way: you "
			"see the recordings of your inboxes' TXNs)\n", (int)r->errmsg_len, r->errmsg);
		ccq_msg_free(r);
		return 1;
	}
	return say_error(r, ctx);
}

static int cmd_fetch(int argc, char **argv)
{
	struct decode_req d = { 0 };
	const char *txn_s = NULL;
	uint64_t want_id = 0;
	char out[64], path[4096], meta[4096], caller[96], agent[96], sha[80];
	const msgpack_object *recs, *pick = NULL;
	ccq_msg r;
	int rc;

	for (int i = 0; i < argc; i++) {
		if (global_opt(argc, argv, &i))
			continue;
		if (strcmp(argv[i], "--stereo") == 0) {
			d.stereo = 1;
		} else if ((strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0)
				&& i + 1 < argc) {
			d.out = argv[++i];
		} else if (strcmp(argv[i], "--id") == 0 && i + 1 < argc) {
			if (parse_u64(argv[++i], &want_id) < 0) {
				fprintf(stderr, "ccqrec: --id takes a recording id, not '%s'\n", argv[i]);
				return 2;
			}
		} else if (argv[i][0] != '-' && !txn_s) {
			txn_s = argv[i];
		} else {
			fprintf(stderr, "ccqrec: fetch: unexpected argument '%s'\n"
				"usage: ccqrec fetch TXN [-o FILE] [--stereo] [--id REC]\n", argv[i]);
			return 2;
		}
	}
	if (!txn_s || parse_u64(txn_s, &d.txn) < 0 || d.txn == 0) {
		fprintf(stderr, "usage: ccqrec fetch TXN [-o FILE] [--stereo] [--id REC]   (TXN: a "
			"number)\n");
		return 2;
	}
	if ((rc = connect_queued()) != 0 || (rc = get_txn(d.txn, &r)) != 0)
		return rc;
	recs = recordings_of(&r);
	if (!recs || recs->via.array.size == 0) {
		fprintf(stderr, "ccqrec: TXN %llu has no recording (the call was not recorded, or "
			"its recording is not indexed yet)\n", (unsigned long long)d.txn);
		ccq_msg_free(&r);
		return 1;
	}
	if (!d.out) {
		snprintf(out, sizeof(out), "txn-%llu.wav", (unsigned long long)d.txn);
		d.out = out;
	}
	if (!want_id) {
		/* the whole call: every segment (a pause makes one each) joined */
		rc = fetch_joined(d.txn, recs, d.out, d.stereo);
		ccq_msg_free(&r);
		return rc;
	}
	for (uint32_t i = 0; i < recs->via.array.size && !pick; i++)
		if (ufield(&recs->via.array.ptr[i], "id") == want_id)
			pick = &recs->via.array.ptr[i];
	if (!pick) {
		fprintf(stderr, "ccqrec: TXN %llu has no recording %llu\n",
			(unsigned long long)d.txn, (unsigned long long)want_id);
		ccq_msg_free(&r);
		return 1;
	}
	d.rec = ufield(pick, "id");
	if (!sfield(pick, "pcap_path", path, sizeof(path))) {
		fprintf(stderr, "ccqrec: TXN %llu: recording %llu has no file\n",
			(unsigned long long)d.txn, (unsigned long long)d.rec);
		ccq_msg_free(&r);
		return 1;
	}
	d.pcap = path;
	d.sdp_path = sfield(pick, "meta_path", meta, sizeof(meta));
	d.caller = sfield(pick, "caller_addr", caller, sizeof(caller));
	d.agent = sfield(pick, "agent_addr", agent, sizeof(agent));
	d.want_sha = sfield(pick, "sha256", sha, sizeof(sha));
	ccq_msg_free(&r);
	return decode_to_wav(&d);
}

static int cmd_decode(int argc, char **argv)
{
	struct decode_req d = { 0 };
	char out[4096];

	for (int i = 0; i < argc; i++) {
		const char **val = NULL;
		if (strcmp(argv[i], "--stereo") == 0)
			d.stereo = 1;
		else if (strcmp(argv[i], "-o") == 0 || strcmp(argv[i], "--output") == 0)
			val = &d.out;
		else if (strcmp(argv[i], "--caller") == 0)
			val = &d.caller;
		else if (strcmp(argv[i], "--agent") == 0)
			val = &d.agent;
		else if (strcmp(argv[i], "--sdp") == 0 || strcmp(argv[i], "--meta") == 0)
			val = &d.sdp_path;
		else if (!d.pcap && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0))
			d.pcap = argv[i];
		else
			goto bad;
		if (val) {
			if (i + 1 >= argc)
				goto bad;
			*val = argv[++i];
		}
	}
	if (!d.pcap)
		goto bad;
	if (!d.out) {
		/* NAME.pcap -> NAME.wav in the current directory */
		char base[4096], *b, *dot;
		snprintf(base, sizeof(base), "%s", d.pcap);
		b = basename(base);
		dot = strrchr(b, '.');
		if (dot && strcmp(dot, ".pcap") == 0)
			*dot = '\0';
		snprintf(out, sizeof(out), "%s.wav", b);
		d.out = out;
	}
	return decode_to_wav(&d);
bad:
	fprintf(stderr, "usage: ccqrec decode PCAP [-o FILE] [--stereo] [--caller IP:PORT] "
		"[--agent IP:PORT] [--sdp FILE]\n");
	return 2;
}

/* ---- verify ------------------------------------------------------------------------- */

struct verify_state {
	int bad;            /* any result not ok */
	int mark_denied;    /* said once */
	int first_json;
};

/* Tell queued what verify found; failures other than "not allowed" count. */
static void mark(struct verify_state *vs, uint64_t id, const char *status,
		const char *detail, int *marked)
{
	struct args a = { 0 };
	ccq_msg r;
	int code, rc;

	*marked = 0;
	add_u(&a, "id", id);
	add_s(&a, "status", status);
	if (detail && *detail)
		add_s(&a, "detail", detail);
	rc = request("recording.mark", &a, &r, &code);
	if (rc == 0) {
		*marked = 1;
		ccq_msg_free(&r);
		return;
	}
	if (rc == 1 && (code == CCQ_E_DENIED || code == CCQ_E_NOT_FOUND)) {
		if (!vs->mark_denied)
			fprintf(stderr, "ccqrec: note: the results are not recorded in queued: "
				"%s (%.*s); only owners and admins with the add-on, and the operator, "
				"may mark recordings\n", ccq_err_name(code), (int)r.errmsg_len, r.errmsg);
		vs->mark_denied = 1;
		ccq_msg_free(&r);
		return;
	}
	if (rc == 1) {
		fprintf(stderr, "ccqrec: recording %llu: recording.mark: %s: %.*s\n",
			(unsigned long long)id, ccq_err_name(code), (int)r.errmsg_len, r.errmsg);
		ccq_msg_free(&r);
	}
	vs->bad = 1;
}

static void verify_one(struct verify_state *vs, uint64_t txn, const msgpack_object *rec)
{
	char path[4096], want[80], hex[65], why[160] = "", detail[256] = "", st[32];
	char txn_s[24] = "null";
	const char *result, *markas = NULL;
	uint64_t id = ufield(rec, "id");
	int marked = 0, neutral = 0;

	if (sfield(rec, "status", st, sizeof(st)) && strcmp(st, "purging") == 0) {
		result = "PURGING";
		neutral = 1;
		if (!sfield(rec, "pcap_path", path, sizeof(path)))
			snprintf(path, sizeof(path), "-");
		snprintf(why, sizeof(why), "being purged: not checked");
	} else if (!sfield(rec, "pcap_path", path, sizeof(path)) || !path[0]) {
		result = "MISSING";
		markas = "missing";
		snprintf(path, sizeof(path), "-");
		snprintf(why, sizeof(why), "no file in the index");
	} else if (sha256_file(path, hex) < 0) {
		if (errno == ENOENT) {
			result = "MISSING";
			markas = "missing";
			snprintf(detail, sizeof(detail), "ccqrec verify: the pcap file is missing");
		} else {
			result = "UNREADABLE";
			snprintf(why, sizeof(why), "%s", strerror(errno));
		}
	} else if (!sfield(rec, "sha256", want, sizeof(want)) || !want[0]) {
		result = "NO-HASH";
		snprintf(why, sizeof(why), "no SHA-256 in the index");
	} else if (strcasecmp(hex, want) != 0) {
		result = "TAMPERED";
		markas = "tampered";
		snprintf(detail, sizeof(detail), "ccqrec verify: the pcap file's SHA-256 is %s, not "
			"the one indexed", hex);
	} else {
		result = "ok";
		markas = "ok";
	}
	if (strcmp(result, "ok") != 0 && !neutral)
		vs->bad = 1;
	if (markas)
		mark(vs, id, markas, detail, &marked);
	if (txn)
		snprintf(txn_s, sizeof(txn_s), "%llu", (unsigned long long)txn);
	if (g_json) {
		printf("%s{\"id\":%llu,\"txn\":%s,\"path\":", vs->first_json ? "" : ",",
			(unsigned long long)id, txn_s);
		jcstr(path);
		printf(",\"result\":\"%s\",\"marked\":%s", result, marked ? "true" : "false");
		if (why[0]) {
			printf(",\"why\":");
			jcstr(why);
		}
		printf("}");
		vs->first_json = 0;
	} else {
		printf("%-10s recording %llu  TXN %s  %s%s%s%s\n", result, (unsigned long long)id,
			txn ? txn_s : "-", path, why[0] ? " (" : "", why, why[0] ? ")" : "");
	}
}

/* Verify the recordings of one TXN; 0, or an exit status for errors. */
static int verify_txn(struct verify_state *vs, uint64_t txn)
{
	ccq_msg r;
	const msgpack_object *recs;
	int rc = get_txn(txn, &r);
	if (rc)
		return rc;
	recs = recordings_of(&r);
	if (!recs || recs->via.array.size == 0) {
		fprintf(stderr, "ccqrec: TXN %llu has no recording\n", (unsigned long long)txn);
		vs->bad = 1;
	}
	for (uint32_t i = 0; recs && i < recs->via.array.size; i++)
		verify_one(vs, txn, &recs->via.array.ptr[i]);
	ccq_msg_free(&r);
	return 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmd_verify(int argc, char **argv)
{
	struct verify_state vs = { 0, 0, 1 };
	struct args a = { 0 };
	const char *txn_s = NULL;
	int all = 0, filters = 0, rc = 0, code;
	uint64_t txn = 0, *txns = NULL;
	size_t ntxn = 0;

	for (int i = 0; i < argc; i++) {
		int k;
		if (global_opt(argc, argv, &i))
			continue;
		if (strcmp(argv[i], "--all") == 0) {
			all = 1;
			continue;
		}
		if ((k = list_opt(argc, argv, &i, &a)) == 0) {
			filters = 1;
			continue;
		}
		if (k == 2)
			return 2;
		if (argv[i][0] != '-' && !txn_s) {
			txn_s = argv[i];
			continue;
		}
		fprintf(stderr, "ccqrec: verify: unexpected argument '%s'\n", argv[i]);
		return 2;
	}
	if (all == (txn_s != NULL) || (txn_s && (parse_u64(txn_s, &txn) < 0 || txn == 0))
			|| (filters && !all)) {
		fprintf(stderr, "usage: ccqrec verify TXN | ccqrec verify --all [--txn ID] "
			"[--customer C] [--inbox NAME] [--agent EXT] [--from DATE] [--to DATE] "
			"[--limit N]\n");
		return 2;
	}
	if ((rc = connect_queued()) != 0)
		return rc;
	if (g_json)
		printf("[");
	if (!all) {
		rc = verify_txn(&vs, txn);
	} else {
		ccq_msg r;
		const msgpack_object *items;
		int has_limit = 0;
		for (int i = 0; i < a.n; i++)
			has_limit |= strcmp(a.a[i].key, "limit") == 0;
		if (!has_limit)
			add_u(&a, "limit", VERIFY_ALL_LIMIT);
		rc = request("recording.list", &a, &r, &code);
		if (rc == 1) {
			if (g_json)
				printf("]\n");
			return say_error(&r, "recording.list");
		}
		if (rc == 0) {
			items = recordings_of(&r);
			if (items && items->via.array.size) {
				txns = calloc(items->via.array.size, sizeof(*txns));
				if (!txns) {
					fprintf(stderr, "ccqrec: out of memory\n");
					ccq_msg_free(&r);
					return 1;
				}
				/* rows that carry the file's path are checked as they are (also
				 * those without a TXN); the others through their TXN */
				for (uint32_t i = 0; i < items->via.array.size; i++) {
					const msgpack_object *x = &items->via.array.ptr[i];
					if (ccq_map_get(x, "pcap_path"))
						verify_one(&vs, ufield(x, "txn"), x);
					else if ((txns[ntxn] = ufield(x, "txn")) != 0)
						ntxn++;
				}
				if (!has_limit && items->via.array.size >= VERIFY_ALL_LIMIT)
					fprintf(stderr, "ccqrec: note: only the newest %u recordings are "
						"checked: narrow the range with --from/--to\n", VERIFY_ALL_LIMIT);
			}
			ccq_msg_free(&r);
			qsort(txns, ntxn, sizeof(*txns), u64_cmp);
			for (size_t i = 0; i < ntxn && rc == 0; i++)
				if (i == 0 || txns[i] != txns[i - 1])
					rc = verify_txn(&vs, txns[i]);
			if ((!items || !items->via.array.size) && !g_json)
				printf("(no recordings)\n");
			free(txns);
		}
	}
	if (g_json)
		printf("]\n");
	if (rc)
		return rc;
	return vs.bad ? 1 : 0;
}

/* ---- purge ---------------------------------------------------------------------------- */

/* Delete a file; a file already gone is fine. 0, or -1 with errno. */
static int remove_file(const char *path)
{
	if (!path || !*path)
		return 0;
	if (path[0] != '/') {
		errno = EINVAL; /* only absolute paths from the index */
		return -1;
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return -1;
	return 0;
}

static int forget(const uint64_t *ids, size_t n)
{
	for (size_t at = 0; at < n; at += FORGET_BATCH) {
		struct args a = { 0 };
		ccq_msg r;
		int code, rc;
		a.a[0] = (struct arg){ .key = "ids", .type = 'U', .list = ids + at,
			.nlist = n - at < FORGET_BATCH ? n - at : FORGET_BATCH };
		a.n = 1;
		rc = request("recording.forget", &a, &r, &code);
		if (rc == 1)
			return say_error(&r, "recording.forget");
		if (rc)
			return rc;
		ccq_msg_free(&r);
	}
	return 0;
}

struct purge_tally {
	uint64_t listed, total, gone, gone_size;
	uint64_t *failed;       /* ids whose files could not be deleted: said once */
	size_t nfailed;
	int first_json;
};

static int failed_before(const struct purge_tally *t, uint64_t id)
{
	for (size_t i = 0; i < t->nfailed; i++)
		if (t->failed[i] == id)
			return 1;
	return 0;
}

/* One row of a purge: delete its files (unless dry), print it. 1 if gone. */
static int purge_row(struct purge_tally *t, const msgpack_object *x, int dry)
{
	char pcap[4096], meta[4096], hs[32];
	const char *pp = sfield(x, "pcap_path", pcap, sizeof(pcap));
	const char *mp = sfield(x, "meta_path", meta, sizeof(meta));
	uint64_t id = ufield(x, "id"), size = ufield(x, "size");
	const char *bad = NULL;
	int e = 0;

	t->listed++;
	t->total += size;
	if (!dry) {
		if (remove_file(pp) < 0) {
			bad = pp;
			e = errno;
		} else if (remove_file(mp) < 0) {
			bad = mp;
			e = errno;
		}
		if (bad) {
			uint64_t *n = realloc(t->failed, (t->nfailed + 1) * sizeof(*n));
			if (n) {
				t->failed = n;
				t->failed[t->nfailed++] = id;
			}
			fprintf(stderr, "ccqrec: recording %llu: cannot delete %s: %s (its index row is "
				"kept)\n", (unsigned long long)id, bad,
				e == EINVAL ? "not an absolute path" : strerror(e));
		} else {
			t->gone++;
			t->gone_size += size;
		}
	}
	if (g_json) {
		printf("%s{\"id\":%llu,\"pcap_path\":", t->first_json ? "" : ",",
			(unsigned long long)id);
		t->first_json = 0;
		jcstr(pp);
		printf(",\"meta_path\":");
		jcstr(mp);
		printf(",\"size\":%llu,\"deleted\":%s", (unsigned long long)size,
			!dry && !bad ? "true" : "false");
		if (bad) {
			printf(",\"error\":");
			jcstr(e == EINVAL ? "not an absolute path" : strerror(e));
		}
		printf("}");
	} else if (dry) {
		printf("would delete recording %llu: %s%s%s (%s)\n", (unsigned long long)id,
			pp ? pp : "-", mp ? " and " : "", mp ? mp : "", human_size(size, hs, sizeof(hs)));
	} else if (!bad) {
		printf("deleted recording %llu: %s%s%s\n", (unsigned long long)id, pp ? pp : "-",
			mp ? " and " : "", mp ? mp : "");
	}
	return !bad && !dry;
}

static int cmd_purge(int argc, char **argv)
{
	struct purge_tally t = { .first_json = 1 };
	uint64_t days = 0;
	int dry = 0, have_days = 0, rc, code, more = 0;
	char hs[32];

	for (int i = 0; i < argc; i++) {
		if (global_opt(argc, argv, &i))
			continue;
		if (strcmp(argv[i], "--dry-run") == 0 || strcmp(argv[i], "-n") == 0) {
			dry = 1;
		} else if (strcmp(argv[i], "--older-than") == 0) {
			if (i + 1 >= argc || parse_u64(argv[i + 1], &days) < 0) {
				fprintf(stderr, "ccqrec: --older-than takes a number of days\n");
				return 2;
			}
			have_days = 1;
			i++;
		} else {
			fprintf(stderr, "ccqrec: purge: unexpected argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (!have_days || days > 36500) {
		fprintf(stderr, "usage: ccqrec purge --older-than DAYS [--dry-run]   (DAYS: 0 to "
			"36500)\n");
		return 2;
	}
	if ((rc = connect_queued()) != 0)
		return rc;
	if (g_json)
		printf("{\"dry_run\":%s,\"older_than_days\":%llu,\"recordings\":[", dry ? "true"
			: "false", (unsigned long long)days);
	/* queued hands out the rows in batches (marked 'purging'); each batch's
	 * files go, then its rows; rows whose files stay come back and are skipped */
	for (;;) {
		struct args a = { 0 };
		const msgpack_object *recs;
		uint64_t *gone = NULL;
		size_t ngone = 0;
		ccq_msg r;
		int any = 0;

		add_u(&a, "older_than_days", days);
		add_b(&a, "dry_run", dry);
		if ((rc = request("recording.purge", &a, &r, &code)) == 1) {
			if (g_json)
				printf("]}\n");
			rc = say_error(&r, "recording.purge");
			break;
		}
		if (rc)
			break;
		recs = recordings_of(&r);
		more = 0;
		ccq_map_bool(r.body, "more", &more);
		if (recs && recs->via.array.size
				&& !(gone = calloc(recs->via.array.size, sizeof(*gone)))) {
			fprintf(stderr, "ccqrec: out of memory\n");
			ccq_msg_free(&r);
			rc = 1;
			break;
		}
		for (uint32_t i = 0; recs && i < recs->via.array.size; i++) {
			const msgpack_object *x = &recs->via.array.ptr[i];
			if (failed_before(&t, ufield(x, "id")))
				continue;
			any = 1;
			if (purge_row(&t, x, dry))
				gone[ngone++] = ufield(x, "id");
		}
		ccq_msg_free(&r);
		rc = ngone ? forget(gone, ngone) : 0;
		free(gone);
		if (rc || dry || !more || !any || !ngone)
			break;
	}
	if (g_json && rc == 0)
		printf("],\"total_size\":%llu,\"purged\":%llu,\"kept\":%zu,\"more\":%s}\n",
			(unsigned long long)t.total, (unsigned long long)t.gone, t.nfailed,
			more ? "true" : "false");
	else if (rc == 0 && dry)
		printf("%llu recording%s older than %llu days, %s in all%s (dry run: nothing "
			"deleted)\n", (unsigned long long)t.listed, t.listed == 1 ? "" : "s",
			(unsigned long long)days, human_size(t.total, hs, sizeof(hs)),
			more ? ", and more not listed" : "");
	else if (rc == 0)
		printf("purged %llu recording%s (%s)%s", (unsigned long long)t.gone,
			t.gone == 1 ? "" : "s", human_size(t.gone_size, hs, sizeof(hs)),
			t.nfailed ? "" : "\n");
	if (rc == 0 && !dry && !g_json && t.nfailed)
		printf("; %zu kept: their files could not be deleted\n", t.nfailed);
	free(t.failed);
	if (rc)
		return rc;
	return t.nfailed ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "tcp", required_argument, NULL, 'P' },
		{ "json", no_argument, NULL, 'j' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "as", required_argument, NULL, 'a' },
		{ "org", required_argument, NULL, 'o' },
		{ "token", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	static const struct { const char *name; int (*fn)(int, char **); } cmds[] = {
		{ "list", cmd_list }, { "fetch", cmd_fetch }, { "verify", cmd_verify },
		{ "purge", cmd_purge }, { "decode", cmd_decode },
	};
	int opt, rc;
	size_t c;

	g_token = getenv("CCQ_TOKEN");
	g_addr = getenv("CCQ_QUEUED_SOCK");
	if (!g_addr || !*g_addr)
		g_addr = DEFAULT_SOCK;
	while ((opt = getopt_long(argc, argv, "+s:jT:a:o:t:hV", lopts, NULL)) != -1) {
		switch (opt) {
		case 's': g_addr = optarg; break;
		case 'P':
			if (optarg[0] == '/' || !strchr(optarg, ':')) {
				fprintf(stderr, "ccqrec: --tcp takes HOST:PORT\n");
				return 2;
			}
			g_addr = optarg;
			break;
		case 'j': g_json = 1; break;
		case 'T': {
			uint64_t v;
			if (parse_u64(optarg, &v) < 0 || v == 0 || v > 600000) {
				fprintf(stderr, "ccqrec: --timeout takes milliseconds from 1 to 600000\n");
				return 2;
			}
			g_timeout_ms = (int)v;
			break;
		}
		case 'a': g_as = optarg; break;
		case 'o': g_org = optarg; break;
		case 't': g_token = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("ccqrec %s\n", PACKAGE_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr);
		return 2;
	}
	for (c = 0; c < sizeof(cmds) / sizeof(cmds[0]); c++)
		if (strcmp(argv[0], cmds[c].name) == 0)
			break;
	if (c == sizeof(cmds) / sizeof(cmds[0])) {
		fprintf(stderr, "ccqrec: unknown command '%s' (see ccqrec --help)\n", argv[0]);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	ccq_client_init(&g_cl);
	rc = cmds[c].fn(argc - 1, argv + 1);
	ccq_client_free(&g_cl);
	return rc;
}
