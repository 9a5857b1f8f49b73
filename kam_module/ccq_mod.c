/*
 * ccq Kamailio module: exports (parameters, script functions, KEMI,
 * pseudo-variables, RPC) and the glue to the logic in ccq_link.c.
 * The manual is doc/ccq.md.
 */
#include <stdio.h>
#include <string.h>

#include "core/sr_module.h"
#include "core/dprint.h"
#include "core/mod_fix.h"
#include "core/pvar.h"
#include "core/rpc.h"
#include "core/rpc_lookup.h"
#include "core/kemi.h"
#include "core/ip_addr.h"
#include "core/pt.h"
#include "core/cfg/cfg_struct.h"
#include "core/parser/parse_from.h"
#include "core/parser/msg_parser.h"

#include "ccq_cfg.h"
#include "ccq_link.h"

MODULE_VERSION

static char *queued_addr = "unix:/run/ccq/queued.sock";
static int p_timeout = -1, p_retries = -1, p_reconnect = -1;

static int mod_init(void);
static int child_init(int rank);
static void mod_destroy(void);
static int w_ccq_classify(struct sip_msg *msg, char *p1, char *p2);
static int pv_get_ccq(struct sip_msg *msg, pv_param_t *param, pv_value_t *res);
static int pv_parse_ccq_name(pv_spec_p sp, str *in);

static cmd_export_t cmds[] = {
	{"ccq_classify", (cmd_function)w_ccq_classify, 0, 0, 0, REQUEST_ROUTE},
	{0, 0, 0, 0, 0, 0}
};

static param_export_t params[] = {
	{"queued_addr", PARAM_STRING, &queued_addr},
	{"timeout", PARAM_INT, &p_timeout},
	{"retries", PARAM_INT, &p_retries},
	{"reconnect_interval", PARAM_INT, &p_reconnect},
	{0, 0, 0}
};

static pv_export_t mod_pvs[] = {
	{{"ccq", sizeof("ccq") - 1}, PVT_OTHER, pv_get_ccq, 0, pv_parse_ccq_name, 0, 0, 0},
	{{0, 0}, 0, 0, 0, 0, 0, 0, 0}
};

static rpc_export_t ccq_rpc[];

struct module_exports exports = {
	"ccq",           /* module name */
	DEFAULT_DLFLAGS, /* dlopen flags */
	cmds,            /* exported functions */
	params,          /* exported parameters */
	0,               /* RPC methods (registered in mod_init) */
	mod_pvs,         /* pseudo-variables */
	0,               /* response handler */
	mod_init,        /* module init */
	child_init,      /* per-child init */
	mod_destroy      /* destroy */
};

/* ---- per-message classification result ------------------------------- */

enum ccq_pv_key { CCQ_PV_TYPE = 1, CCQ_PV_TXN, CCQ_PV_DIRECTION, CCQ_PV_LINK };

static struct {
	unsigned int msg_id;
	int msg_pid;
	int valid;
	char type[16];
	char direction[16];
	char txn[24];
} g_cls;

static int cls_current(struct sip_msg *msg)
{
	return g_cls.valid && g_cls.msg_id == msg->id && g_cls.msg_pid == msg->pid;
}

/* ---- classification --------------------------------------------------- */

static int str_arg(str *s, char *buf, size_t size)
{
	size_t n = (size_t)s->len < size - 1 ? (size_t)s->len : size - 1;
	memcpy(buf, s->s, n);
	buf[n] = '\0';
	return (size_t)s->len < size ? 0 : -1;
}

/*
 * Classify an initial INVITE and open its transaction in queued.
 * Returns 1 (TXN opened: $ccq(txn) set), 2 (classified, but queued was
 * unreachable or refused: the call proceeds without a TXN, the documented
 * fallback), -1 (not an initial INVITE or unparsable).
 */
static int ki_ccq_classify(struct sip_msg *msg)
{
	char callid[256], from[512], to[512], src[80];
	ccq_enc e;
	ccq_msg r;
	uint64_t id;
	str *ruri;
	struct to_body *fb;

	if (msg->first_line.type != SIP_REQUEST
			|| msg->first_line.u.request.method_value != METHOD_INVITE) {
		LM_WARN("ccq_classify() is for INVITE requests only\n");
		return -1;
	}
	if (parse_headers(msg, HDR_CALLID_F | HDR_FROM_F | HDR_TO_F, 0) < 0 || !msg->callid
			|| !msg->from || parse_from_header(msg) < 0) {
		LM_WARN("INVITE from %s with a broken Call-ID or From header\n",
			ip_addr2a(&msg->rcv.src_ip));
		return -1;
	}
	if (get_to(msg) && get_to(msg)->tag_value.len > 0) {
		LM_DBG("in-dialog INVITE: nothing to classify\n");
		return -1;
	}
	fb = get_from(msg);
	ruri = GET_RURI(msg);
	if (str_arg(&msg->callid->body, callid, sizeof(callid)) < 0) {
		LM_WARN("Call-ID longer than %zu bytes: refusing to classify\n", sizeof(callid) - 1);
		return -1;
	}
	str_arg(&fb->uri, from, sizeof(from));
	str_arg(ruri, to, sizeof(to));
	snprintf(src, sizeof(src), "%s:%d", ip_addr2a(&msg->rcv.src_ip), (int)msg->rcv.src_port);

	memset(&g_cls, 0, sizeof(g_cls));
	g_cls.msg_id = msg->id;
	g_cls.msg_pid = msg->pid;
	g_cls.valid = 1;
	/* Callback tokens are verified here once the callback feature lands;
	 * until then every call is a direct inbound call. */
	strcpy(g_cls.type, "direct");
	strcpy(g_cls.direction, "inbound");

	id = ccq_link_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "txn.create", 6);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	ccq_pack_kv_str(&e.pk, "from", from);
	ccq_pack_kv_str(&e.pk, "to", to);
	ccq_pack_kv_str(&e.pk, "direction", g_cls.direction);
	ccq_pack_kv_str(&e.pk, "type", g_cls.type);
	ccq_pack_kv_str(&e.pk, "source", src);
	if (ccq_link_call(&e, id, &r) < 0) {
		ccq_link_count_fallback();
		return 2;
	}
	if (r.code != 0) {
		LM_ERR("queued refused txn.create for Call-ID %s: %s: %.*s\n", callid,
			ccq_err_name(r.code), (int)r.errmsg_len, r.errmsg);
		ccq_msg_free(&r);
		ccq_link_count_fallback();
		return 2;
	} else {
		uint64_t txn = 0;
		ccq_map_uint(r.body, "id", &txn);
		snprintf(g_cls.txn, sizeof(g_cls.txn), "%llu", (unsigned long long)txn);
		LM_DBG("Call-ID %s: txn %s\n", callid, g_cls.txn);
	}
	ccq_msg_free(&r);
	return 1;
}

static int w_ccq_classify(struct sip_msg *msg, char *p1, char *p2)
{
	return ki_ccq_classify(msg);
}

/* ---- $ccq(key) -------------------------------------------------------- */

static int pv_parse_ccq_name(pv_spec_p sp, str *in)
{
	static const struct { const char *name; int key; } names[] = {
		{"type", CCQ_PV_TYPE}, {"txn", CCQ_PV_TXN}, {"direction", CCQ_PV_DIRECTION},
		{"link", CCQ_PV_LINK},
	};
	if (!sp || !in || in->len <= 0)
		return -1;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if ((size_t)in->len == strlen(names[i].name)
				&& strncmp(in->s, names[i].name, in->len) == 0) {
			sp->pvp.pvn.type = PV_NAME_INTSTR;
			sp->pvp.pvn.u.isname.type = 0;
			sp->pvp.pvn.u.isname.name.n = names[i].key;
			return 0;
		}
	}
	LM_ERR("unknown key in $ccq(%.*s): use type, txn, direction or link\n", in->len, in->s);
	return -1;
}

static int pv_get_ccq(struct sip_msg *msg, pv_param_t *param, pv_value_t *res)
{
	str s;

	switch (param->pvn.u.isname.name.n) {
	case CCQ_PV_LINK: {
		struct ccq_link_stats st;
		ccq_link_get_stats(&st);
		s.s = st.outage ? "down" : "up";
		s.len = strlen(s.s);
		return pv_get_strval(msg, param, res, &s);
	}
	case CCQ_PV_TYPE:
		s.s = g_cls.type;
		break;
	case CCQ_PV_DIRECTION:
		s.s = g_cls.direction;
		break;
	case CCQ_PV_TXN:
		s.s = g_cls.txn;
		break;
	default:
		return pv_get_null(msg, param, res);
	}
	if (!cls_current(msg) || !s.s[0])
		return pv_get_null(msg, param, res);
	s.len = strlen(s.s);
	return pv_get_strval(msg, param, res, &s);
}

/* ---- RPC -------------------------------------------------------------- */

static const char *ccq_rpc_status_doc[] = {
	"Module version, queued address and the state of the link to queued"
	" (pings queued from the RPC process)",
	0
};

static void ccq_rpc_status(rpc_t *rpc, void *ctx)
{
	struct ccq_link_stats st;
	void *th;
	ccq_enc e;
	ccq_msg r;
	uint64_t id = ccq_link_next_id();
	char qver[64] = "", qschema[24] = "";
	int reachable = 0;

	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "ping", 0);
	if (ccq_link_call(&e, id, &r) == 0) {
		if (r.code == 0) {
			uint64_t schema = 0;
			reachable = 1;
			ccq_map_strcpy(r.body, "version", qver, sizeof(qver));
			ccq_map_uint(r.body, "schema", &schema);
			snprintf(qschema, sizeof(qschema), "%llu", (unsigned long long)schema);
		}
		ccq_msg_free(&r);
	}
	ccq_link_get_stats(&st);
	if (rpc->add(ctx, "{", &th) < 0) {
		rpc->fault(ctx, 500, "Internal error creating the reply");
		return;
	}
	rpc->struct_add(th, "sssssd", "module", "ccq", "version", CCQ_MODULE_VERSION,
		"queued_addr", ccq_link_addr(), "link", reachable ? "up" : "down",
		"queued_version", reachable ? qver : "-", "outage_since",
		st.outage ? (int)st.outage_since : 0);
	rpc->struct_add(th, "sdddd", "queued_schema", reachable ? qschema : "-",
		"requests", (int)st.requests, "ok", (int)st.ok, "failed", (int)st.failed,
		"fallbacks", (int)st.fallbacks);
}

static rpc_export_t ccq_rpc[] = {
	{"ccq.status", ccq_rpc_status, ccq_rpc_status_doc, 0},
	{0, 0, 0, 0}
};

/* ---- KEMI ------------------------------------------------------------- */

/* clang-format off */
static sr_kemi_t sr_kemi_ccq_exports[] = {
	{ str_init("ccq"), str_init("ccq_classify"),
		SR_KEMIP_INT, ki_ccq_classify,
		{ SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ {0, 0}, {0, 0}, 0, NULL, { 0, 0, 0, 0, 0, 0 } }
};
/* clang-format on */

int mod_register(char *path, int *dlflags, void *p1, void *p2)
{
	sr_kemi_modules_add(sr_kemi_ccq_exports);
	return 0;
}

/* ---- life cycle ------------------------------------------------------- */

static int mod_init(void)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	char err[256];

	if (ccq_addr_parse(queued_addr, &ss, &sl, err, sizeof(err)) < 0) {
		LM_ERR("modparam queued_addr '%s' is invalid: %s\n", queued_addr, err);
		return -1;
	}
	if (p_timeout >= 0) {
		if (p_timeout < 10 || p_timeout > 60000) {
			LM_ERR("modparam timeout must be 10..60000 ms, not %d\n", p_timeout);
			return -1;
		}
		default_ccq_cfg.timeout = p_timeout;
	}
	if (p_retries >= 0) {
		if (p_retries > 5) {
			LM_ERR("modparam retries must be 0..5, not %d\n", p_retries);
			return -1;
		}
		default_ccq_cfg.retries = p_retries;
	}
	if (p_reconnect >= 0)
		default_ccq_cfg.reconnect_interval = p_reconnect;
	if (cfg_declare("ccq", ccq_cfg_def, &default_ccq_cfg, cfg_sizeof(ccq), &ccq_cfg)) {
		LM_ERR("cannot declare the ccq cfg group\n");
		return -1;
	}
	if (rpc_register_array(ccq_rpc) != 0) {
		LM_ERR("cannot register the RPC commands\n");
		return -1;
	}
	if (ccq_link_init_shm() < 0)
		return -1;
	return 0;
}

static int child_init(int rank)
{
	/* No sockets before the fork: every process opens its own. The main
	 * process and the tcp/timer helpers never talk to queued. */
	if (rank == PROC_INIT || rank == PROC_MAIN || rank == PROC_TCP_MAIN)
		return 0;
	ccq_link_child_init(queued_addr);
	return 0;
}

static void mod_destroy(void)
{
	ccq_link_destroy_shm();
}
