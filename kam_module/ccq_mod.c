/*
 * ccq Kamailio module: exports (parameters, script functions, KEMI,
 * pseudo-variables, RPC) and the glue to the logic in ccq_link.c.
 * The manual is doc/ccq.md.
 */
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

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

#include "core/route.h"
#include "core/dset.h"
#include "core/parser/contact/parse_contact.h"
#include "core/parser/parse_expires.h"
#include "core/parser/parse_uri.h"
#include "core/parser/parse_refer_to.h"

#include "ccq_cfg.h"
#include "ccq_link.h"
#include "ccq_async.h"
#include "ccq_media.h"
#include "ccq_comp.h"
#include "ccq_gate.h"
#include "ccq_cb.h"
#include "ccq_api.h"
#include "core/locking.h"
#include "core/mem/shm_mem.h"
#include <openssl/evp.h>
#include <time.h>

MODULE_VERSION

static char *queued_addr = "unix:/run/ccq/queued.sock";
static char *rtpengine_ng = "";
static char *hold_music = "";
static char *db_url = "";
static int compliance_poll = 500;
static char *callback_secret = "";
static char *callback_secret_file = "";
static char *callback_prompt = "";
static char *callback_proxy = "";
static int p_timeout = -1, p_retries = -1, p_reconnect = -1, p_decision = -1;

static int mod_init(void);
static int child_init(int rank);
static void mod_destroy(void);
static int w_ccq_classify(struct sip_msg *msg, char *p1, char *p2);
static int w_ccq_classify_mode(struct sip_msg *msg, char *mode, char *p2);
static int w_ccq_callback_handle(struct sip_msg *msg, char *p1, char *p2);
static int bind_ccq(ccq_api_t *api);
static int w_ccq_route_call(struct sip_msg *msg, char *route, char *p2);
static int w_ccq_ring_failed(struct sip_msg *msg, char *route, char *p2);
static int w_ccq_wait(struct sip_msg *msg, char *route, char *p2);
static int w_ccq_ring(struct sip_msg *msg, char *p1, char *p2);
static int w_ccq_report_answer(struct sip_msg *msg, char *p1, char *p2);
static int w_ccq_report_end(struct sip_msg *msg, char *by, char *p2);
static int w_ccq_report_register(struct sip_msg *msg, char *p1, char *p2);
static int w_ccq_report_transfer(struct sip_msg *msg, char *p1, char *p2);
static int w_ccq_hold(struct sip_msg *msg, char *p1, char *p2);
static int w_ccq_outbound(struct sip_msg *msg, char *p1, char *p2);
static int w_ccq_unhold(struct sip_msg *msg, char *p1, char *p2);
static int fixup_route_name(void **param, int param_no);
static int pv_get_ccq(struct sip_msg *msg, pv_param_t *param, pv_value_t *res);
static int pv_parse_ccq_name(pv_spec_p sp, str *in);

static cmd_export_t cmds[] = {
	{"ccq_classify", (cmd_function)w_ccq_classify, 0, 0, 0, REQUEST_ROUTE},
	{"ccq_classify", (cmd_function)w_ccq_classify_mode, 1, fixup_spve_null, 0, REQUEST_ROUTE},
	{"ccq_callback_handle", (cmd_function)w_ccq_callback_handle, 0, 0, 0, REQUEST_ROUTE},
	{"bind_ccq", (cmd_function)bind_ccq, 0, 0, 0, 0},
	{"ccq_route_call", (cmd_function)w_ccq_route_call, 1, fixup_route_name, 0, REQUEST_ROUTE},
	{"ccq_ring_failed", (cmd_function)w_ccq_ring_failed, 1, fixup_route_name, 0,
		REQUEST_ROUTE | FAILURE_ROUTE},
	{"ccq_wait", (cmd_function)w_ccq_wait, 1, fixup_route_name, 0,
		REQUEST_ROUTE | FAILURE_ROUTE},
	{"ccq_ring", (cmd_function)w_ccq_ring, 0, 0, 0, REQUEST_ROUTE | FAILURE_ROUTE},
	{"ccq_report_answer", (cmd_function)w_ccq_report_answer, 0, 0, 0, ONREPLY_ROUTE},
	{"ccq_report_end", (cmd_function)w_ccq_report_end, 1, fixup_spve_null, 0,
		REQUEST_ROUTE | FAILURE_ROUTE | ONREPLY_ROUTE},
	{"ccq_report_register", (cmd_function)w_ccq_report_register, 0, 0, 0, REQUEST_ROUTE},
	{"ccq_report_transfer", (cmd_function)w_ccq_report_transfer, 0, 0, 0, REQUEST_ROUTE},
	{"ccq_hold", (cmd_function)w_ccq_hold, 0, 0, 0, REQUEST_ROUTE | FAILURE_ROUTE},
	{"ccq_outbound", (cmd_function)w_ccq_outbound, 0, 0, 0, REQUEST_ROUTE | FAILURE_ROUTE},
	{"ccq_unhold", (cmd_function)w_ccq_unhold, 0, 0, 0, REQUEST_ROUTE | FAILURE_ROUTE},
	{0, 0, 0, 0, 0, 0}
};

static param_export_t params[] = {
	{"queued_addr", PARAM_STRING, &queued_addr},
	{"timeout", PARAM_INT, &p_timeout},
	{"retries", PARAM_INT, &p_retries},
	{"reconnect_interval", PARAM_INT, &p_reconnect},
	{"decision_timeout", PARAM_INT, &p_decision},
	{"rtpengine_ng", PARAM_STRING, &rtpengine_ng},
	{"hold_music", PARAM_STRING, &hold_music},
	{"db_url", PARAM_STRING, &db_url},
	{"compliance_poll", PARAM_INT, &compliance_poll},
	{"callback_secret", PARAM_STRING, &callback_secret},
	{"callback_secret_file", PARAM_STRING, &callback_secret_file},
	{"callback_prompt", PARAM_STRING, &callback_prompt},
	{"callback_proxy", PARAM_STRING, &callback_proxy},
	/* processes that run resumed routes (ccq_async.h: why a pool) */
	{"resume_processes", PARAM_INT, &ccq_resume_procs},
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

enum ccq_pv_key { CCQ_PV_TYPE = 1, CCQ_PV_TXN, CCQ_PV_DIRECTION, CCQ_PV_LINK,
	CCQ_PV_ACTION, CCQ_PV_CODE, CCQ_PV_REASON, CCQ_PV_INBOX, CCQ_PV_RING_TIMEOUT,
	CCQ_PV_MAX_WAIT, CCQ_PV_TARGETS, CCQ_PV_ERROR, CCQ_PV_VERDICT, CCQ_PV_RULE,
	CCQ_PV_NUMBER, CCQ_PV_CALLER_ID, CCQ_PV_EXTENSION, CCQ_PV_CUSTOMER, CCQ_PV_RECORD,
	CCQ_PV_REC_META };

/* The last gate decision of this process (valid for the message it was made for). */
static struct {
	unsigned int msg_id;
	int msg_pid;
	char verdict[8];
	char rule[24];
	char reason[64];
	char number[20];      /* "+E164" */
	char caller_id[24];
	int record;           /* recording of this outbound call (doc/recording.md) */
	char record_rule[16];
	char rec_meta[96];
} g_gate;

static struct {
	unsigned int msg_id;
	int msg_pid;
	int valid;
	char type[16];
	char direction[16];
	char txn[24];
	char ext[33];             /* callback: the agent's extension */
	char customer[20];        /* callback: the customer's +E164 number */
	unsigned ring_timeout;    /* callback: seconds the agent's device rings */
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

/* The value of the first header called name ("" and 0 when absent). */
static int hdr_value(struct sip_msg *msg, const char *name, str *v)
{
	size_t nl = strlen(name);
	v->s = NULL;
	v->len = 0;
	if (parse_headers(msg, HDR_EOH_F, 0) < 0)
		return -1;
	for (struct hdr_field *h = msg->headers; h; h = h->next) {
		if ((size_t)h->name.len == nl && strncasecmp(h->name.s, name, nl) == 0) {
			*v = h->body;
			while (v->len > 0 && (v->s[v->len - 1] == ' ' || v->s[v->len - 1] == '\r'
					|| v->s[v->len - 1] == '\n' || v->s[v->len - 1] == '\t'))
				v->len--;
			while (v->len > 0 && (*v->s == ' ' || *v->s == '\t')) {
				v->s++;
				v->len--;
			}
			return 1;
		}
	}
	return 0;
}

/*
 * A callback's agent leg: the X-CCQ-Callback token queued signed. 1 valid
 * (g_cls filled: type callback), 0 no marker, -1 a marker that does not
 * verify (logged; the call is then a direct call like any other).
 */
static int classify_callback(struct sip_msg *msg, const char *callid)
{
	str v, rt;
	struct ccq_token t;
	const char *why = "";

	if (hdr_value(msg, "X-CCQ-Callback", &v) <= 0)
		return 0;
	if (ccq_cb_token_check(v.s, (size_t)v.len, 'a', callid, &t, &why) < 0) {
		LM_NOTICE("INVITE %s from %s:%d carries a callback marker that is refused (%s):"
			" treated as a direct call\n", callid, ip_addr2a(&msg->rcv.src_ip),
			(int)msg->rcv.src_port, why);
		return -1;
	}
	strcpy(g_cls.type, "callback");
	strcpy(g_cls.direction, "outbound");
	snprintf(g_cls.txn, sizeof(g_cls.txn), "%llu", (unsigned long long)t.txn);
	snprintf(g_cls.ext, sizeof(g_cls.ext), "%s", t.ext);
	snprintf(g_cls.customer, sizeof(g_cls.customer), "+%s", t.digits);
	g_cls.ring_timeout = 30;
	if (hdr_value(msg, "X-CCQ-Ring-Timeout", &rt) > 0 && rt.len > 0 && rt.len < 4) {
		unsigned n = 0;
		for (int i = 0; i < rt.len && rt.s[i] >= '0' && rt.s[i] <= '9'; i++)
			n = n * 10 + (unsigned)(rt.s[i] - '0');
		if (n >= 5 && n <= 300)
			g_cls.ring_timeout = n;
	}
	return 1;
}

/*
 * Classify an initial INVITE and open its transaction in queued.
 * Returns 1 (TXN opened: $ccq(txn) set; or a verified callback), 2
 * (classified, but queued was unreachable or refused: the call proceeds
 * without a TXN, the documented fallback), -1 (not an initial INVITE or
 * unparsable). With token_only, a direct call opens nothing (returns 2):
 * the script asks queued itself (ccq_route_call).
 */
static int classify(struct sip_msg *msg, int token_only)
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
	if (classify_callback(msg, callid) == 1)
		return 1;
	strcpy(g_cls.type, "direct");
	strcpy(g_cls.direction, "inbound");
	if (token_only)
		return 2;

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

static int ki_ccq_classify(struct sip_msg *msg)
{
	return classify(msg, 0);
}

static int ki_ccq_classify_mode(struct sip_msg *msg, str *mode)
{
	if (mode->len == 5 && strncmp(mode->s, "token", 5) == 0)
		return classify(msg, 1);
	if (mode->len == 0 || (mode->len == 3 && strncmp(mode->s, "txn", 3) == 0))
		return classify(msg, 0);
	LM_ERR("ccq_classify(\"%.*s\"): the mode is \"token\" or \"txn\"\n", mode->len, mode->s);
	return -1;
}

static int w_ccq_classify(struct sip_msg *msg, char *p1, char *p2)
{
	return ki_ccq_classify(msg);
}

static int w_ccq_classify_mode(struct sip_msg *msg, char *mode, char *p2)
{
	str m;
	if (fixup_get_svalue(msg, (gparam_t *)mode, &m) < 0)
		return -1;
	return ki_ccq_classify_mode(msg, &m);
}

/*
 * ccq_callback_handle(): an in-dialog request the agent's phone sends to
 * ccq's callback controller (NOTIFY about the transfer, BYE during the
 * prompt): answered here, 1. -1 for anything else (route it as usual).
 */
static int ki_ccq_callback_handle(struct sip_msg *msg)
{
	return ccq_cb_own_request(msg);
}

static int w_ccq_callback_handle(struct sip_msg *msg, char *p1, char *p2)
{
	return ki_ccq_callback_handle(msg);
}


/* ---- asynchronous decisions (no SIP worker waits on queued) ----------- */

/* Wall-clock ms: reports carry the time of the event, so that a report
 * applied late (queued restarting, MySQL briefly down) keeps the right time. */
static uint64_t now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static int fixup_route_name(void **param, int param_no)
{
	int idx;
	if (param_no != 1)
		return 0;
	idx = route_lookup(&main_rt, (char *)*param);
	if (idx < 0) {
		LM_ERR("route[%s] is not defined in the routing script\n", (char *)*param);
		return -1;
	}
	*param = (void *)(long)idx;
	return 0;
}

static int hdr_field_str(str *v, char *buf, size_t size)
{
	if (!v || !v->s || v->len <= 0) {
		buf[0] = '\0';
		return 0;
	}
	return str_arg(v, buf, size);
}

/* The URI of a Contact without parameters: sip:user@host:port */
static void contact_core(str *uri, char *buf, size_t size)
{
	int n = 0;
	while (n < uri->len && uri->s[n] != ';' && uri->s[n] != '>')
		n++;
	if ((size_t)n >= size)
		n = (int)size - 1;
	memcpy(buf, uri->s, n);
	buf[n] = '\0';
}

static int call_id_of(struct sip_msg *msg, char *buf, size_t size)
{
	if ((!msg->callid && (parse_headers(msg, HDR_CALLID_F, 0) < 0 || !msg->callid))
			|| msg->callid->body.len <= 0) {
		LM_WARN("message without a Call-ID\n");
		return -1;
	}
	if (str_arg(&msg->callid->body, buf, size) < 0) {
		LM_WARN("Call-ID longer than %zu bytes\n", size - 1);
		return -1;
	}
	return 0;
}

/*
 * ccq_route_call(route): ask queued what to do with an initial INVITE.
 * Suspends the transaction and returns 0 (stop the script); the named
 * route runs when the answer comes, with $ccq(action) set. -1 if it could
 * not be suspended (queued's answer will not come; decide now).
 */
static int w_ccq_route_call(struct sip_msg *msg, char *route, char *p2)
{
	char callid[256], from[512], fuser[64], fname[128], ruser[64], src[64];
	struct to_body *fb;
	struct sip_uri *ru;
	ccq_enc e;
	uint64_t id;

	if (msg->first_line.type != SIP_REQUEST
			|| msg->first_line.u.request.method_value != METHOD_INVITE) {
		LM_WARN("ccq_route_call() is for initial INVITE requests\n");
		return -1;
	}
	if (call_id_of(msg, callid, sizeof(callid)) < 0 || parse_from_header(msg) < 0
			|| !parse_from_uri(msg) || parse_sip_msg_uri(msg) < 0) {
		LM_WARN("INVITE from %s with a broken Call-ID, From or request URI\n",
			ip_addr2a(&msg->rcv.src_ip));
		return -1;
	}
	fb = get_from(msg);
	ru = &msg->parsed_uri;
	str_arg(&fb->uri, from, sizeof(from));
	hdr_field_str(&fb->parsed_uri.user, fuser, sizeof(fuser));
	hdr_field_str(&fb->display, fname, sizeof(fname));
	hdr_field_str(&ru->user, ruser, sizeof(ruser));
	snprintf(src, sizeof(src), "%s", ip_addr2a(&msg->rcv.src_ip));

	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "call.route", 7);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	ccq_pack_kv_str(&e.pk, "from", from);
	ccq_pack_kv_str(&e.pk, "caller", fuser);
	ccq_pack_kv_str(&e.pk, "caller_name", fname);
	ccq_pack_kv_str(&e.pk, "did", ruser);
	ccq_pack_kv_str(&e.pk, "source_ip", src);
	ccq_pack_kv_uint(&e.pk, "source_port", msg->rcv.src_port);
	if (ccq_async_suspend(msg, CCQ_ASYNC_CALL, (int)(long)route, &e, id, callid,
			cfg_get(ccq, ccq_cfg, decision_timeout)) < 0)
		return -1;
	ccq_async_watch_final(msg);
	return 0;
}

/*
 * ccq_ring_failed(route): in a failure route, the ringing agent did not
 * answer: ask queued for the next step (ring another agent, queue, or the
 * missed-call flow). Returns 0 when suspended.
 */
static int w_ccq_ring_failed(struct sip_msg *msg, char *route, char *p2)
{
	char callid[256];
	ccq_enc e;
	uint64_t id;

	if (call_id_of(msg, callid, sizeof(callid)) < 0)
		return -1;
	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "call.ring_failed", 1);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	if (ccq_async_suspend(msg, CCQ_ASYNC_CALL, (int)(long)route, &e, id, callid,
			cfg_get(ccq, ccq_cfg, decision_timeout)) < 0)
		return -1;
	return 0;
}

/*
 * ccq_wait(route): the call was queued; wait (suspended) until queued
 * dispatches it to an agent or gives up (missed-call flow). Returns 0.
 */
static int w_ccq_wait(struct sip_msg *msg, char *route, char *p2)
{
	char callid[256];
	ccq_enc e;
	uint64_t id;
	int wait_ms;

	if (call_id_of(msg, callid, sizeof(callid)) < 0)
		return -1;
	/* queued decides the end of the wait; this is only the safety net */
	wait_ms = ((ccq_async_result.active ? (int)ccq_async_result.max_wait : 600) + 15) * 1000;
	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "call.wait", 1);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	if (ccq_async_suspend(msg, CCQ_ASYNC_WAIT, (int)(long)route, &e, id, callid, wait_ms) < 0)
		return -1;
	return 0;
}

/*
 * ccq_ring(): point the request at the devices queued chose: the request
 * URI becomes the first device's AOR and one branch is added per other
 * device; follow with lookup_branches("location") and t_relay().
 */
static int w_ccq_ring(struct sip_msg *msg, char *p1, char *p2)
{
	struct ccq_result *ar = &ccq_async_result;
	str u;

	if (!ar->active || ar->ntargets == 0) {
		LM_WARN("ccq_ring(): no devices to ring (use it in the route resumed by ccq_route_call)\n");
		return -1;
	}
	u.s = ar->targets[0];
	u.len = strlen(u.s);
	if (rewrite_uri(msg, &u) < 0) {
		LM_ERR("cannot set the request URI to %s\n", u.s);
		return -1;
	}
	clear_branches();
	for (int i = 1; i < ar->ntargets; i++) {
		u.s = ar->targets[i];
		u.len = strlen(u.s);
		if (append_branch(msg, &u, 0, 0, Q_UNSPECIFIED, 0, 0, 0, 0, 0, 0) < 0)
			LM_ERR("cannot add a branch for %s\n", u.s);
	}
	return 1;
}

/* ccq_report_answer(): in an onreply route, a 200 OK for an INVITE. */
static int w_ccq_report_answer(struct sip_msg *msg, char *p1, char *p2)
{
	char callid[256], contact[256] = "";
	ccq_enc e;
	uint64_t id;

	if (msg->first_line.type != SIP_REPLY || call_id_of(msg, callid, sizeof(callid)) < 0)
		return -1;
	if (parse_headers(msg, HDR_CONTACT_F, 0) == 0 && msg->contact
			&& parse_contact(msg->contact) == 0) {
		contact_body_t *cb = (contact_body_t *)msg->contact->parsed;
		if (cb && cb->contacts)
			contact_core(&cb->contacts->uri, contact, sizeof(contact));
	}
	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "call.answered", 3);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	ccq_pack_kv_str(&e.pk, "contact", contact);
	ccq_pack_kv_uint(&e.pk, "at_ms", now_ms());
	return ccq_async_report(&e, id) < 0 ? -1 : 1;
}

/* ccq_report_end(by): the call ended; by is caller, agent, canceled or failed. */
static int w_ccq_report_end(struct sip_msg *msg, char *by, char *p2)
{
	char callid[256], bybuf[32];
	str b;
	ccq_enc e;
	uint64_t id;

	if (fixup_get_svalue(msg, (gparam_t *)by, &b) < 0 || b.len <= 0
			|| (size_t)b.len >= sizeof(bybuf)) {
		LM_ERR("ccq_report_end(): bad parameter\n");
		return -1;
	}
	memcpy(bybuf, b.s, b.len);
	bybuf[b.len] = '\0';
	if (call_id_of(msg, callid, sizeof(callid)) < 0)
		return -1;
	if (ccq_cb_is_agent_leg(callid))
		return 1; /* the callback controller reports its own leg */
	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "call.ended", 3);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	ccq_pack_kv_str(&e.pk, "by", bybuf);
	ccq_pack_kv_uint(&e.pk, "at_ms", now_ms());
	return ccq_async_report(&e, id) < 0 ? -1 : 1;
}

/*
 * ccq_report_register(): after save("location"), tell queued where the
 * device is (or that it unregistered), so that it knows who can ring.
 */
static int w_ccq_report_register(struct sip_msg *msg, char *p1, char *p2)
{
	struct to_body *tb;
	char user[65], domain[129];
	int expires_hdr = 3600, n = 0;
	contact_t *c;
	ccq_enc e;
	uint64_t id;

	if (parse_headers(msg, HDR_TO_F | HDR_CONTACT_F | HDR_EXPIRES_F, 0) < 0 || !msg->to) {
		LM_WARN("REGISTER without a To header\n");
		return -1;
	}
	tb = get_to(msg);
	if (parse_uri(tb->uri.s, tb->uri.len, &tb->parsed_uri) < 0) {
		LM_WARN("REGISTER with a bad To URI\n");
		return -1;
	}
	hdr_field_str(&tb->parsed_uri.user, user, sizeof(user));
	hdr_field_str(&tb->parsed_uri.host, domain, sizeof(domain));
	if (msg->expires && parse_expires(msg->expires) == 0 && msg->expires->parsed)
		expires_hdr = ((exp_body_t *)msg->expires->parsed)->val;
	if (!msg->contact) /* a query, not a change */
		return 1;
	if (parse_contact(msg->contact) < 0) {
		LM_WARN("REGISTER with a bad Contact header\n");
		return -1;
	}
	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "device.contact", 4);
	ccq_pack_kv_str(&e.pk, "username", user);
	ccq_pack_kv_str(&e.pk, "domain", domain);
	if (((contact_body_t *)msg->contact->parsed)->star) {
		ccq_pack_kv_bool(&e.pk, "all", 1);
		ccq_pack_kv_uint(&e.pk, "expires", 0);
		return ccq_async_report(&e, id) < 0 ? -1 : 1;
	}
	ccq_pack_str(&e.pk, "contacts");
	for (c = ((contact_body_t *)msg->contact->parsed)->contacts; c; c = c->next)
		n++;
	msgpack_pack_array(&e.pk, n > 8 ? 8 : n);
	n = 0;
	for (c = ((contact_body_t *)msg->contact->parsed)->contacts; c && n < 8; c = c->next, n++) {
		char uri[256];
		int exp = expires_hdr;
		if (c->expires && c->expires->body.len > 0)
			exp = atoi(c->expires->body.s);
		contact_core(&c->uri, uri, sizeof(uri));
		msgpack_pack_map(&e.pk, 2);
		ccq_pack_kv_str(&e.pk, "uri", uri);
		ccq_pack_kv_uint(&e.pk, "expires", exp < 0 ? 0 : (uint64_t)exp);
	}
	ccq_pack_kv_uint(&e.pk, "expires", (uint64_t)expires_hdr);
	return ccq_async_report(&e, id) < 0 ? -1 : 1;
}

/*
 * ccq_report_transfer(): an in-dialog REFER (blind transfer): the TXN
 * becomes Transferring; the call the caller then places to the Refer-To
 * target joins the same TXN.
 */
static int w_ccq_report_transfer(struct sip_msg *msg, char *p1, char *p2)
{
	char callid[256], target[256];
	struct to_body *rt;
	ccq_enc e;
	uint64_t id;

	if (msg->first_line.type != SIP_REQUEST
			|| msg->first_line.u.request.method_value != METHOD_REFER)
		return -1;
	if (call_id_of(msg, callid, sizeof(callid)) < 0)
		return -1;
	if (ccq_cb_is_agent_leg(callid))
		return 1; /* the controller's own REFER to the agent's phone */
	if (parse_refer_to_header(msg) < 0 || !msg->refer_to || !(rt = get_refer_to(msg))) {
		LM_WARN("REFER without a usable Refer-To header\n");
		return -1;
	}
	contact_core(&rt->uri, target, sizeof(target));
	id = ccq_async_next_id();
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "call.transfer", 3);
	ccq_pack_kv_str(&e.pk, "call_id", callid);
	ccq_pack_kv_str(&e.pk, "target", target);
	ccq_pack_kv_uint(&e.pk, "at_ms", now_ms());
	return ccq_async_report(&e, id) < 0 ? -1 : 1;
}

/*
 * ccq_hold(): a queued caller hears hold music (183 with rtpengine's SDP,
 * then play media). 1 music playing, 2 early media without music, -1 not
 * possible (no rtpengine_ng/hold_music, rtpengine down): send a plain 182.
 */
static int w_ccq_hold(struct sip_msg *msg, char *p1, char *p2)
{
	return ccq_media_hold(msg);
}

/* ccq_unhold(): stop the hold music before the call rings an agent. */
static int w_ccq_unhold(struct sip_msg *msg, char *p1, char *p2)
{
	return ccq_media_unhold(msg);
}


/* ---- the outbound compliance gate --------------------------------------- */

#define PIN_PREFIX '*'
#define LOCKS_BITS 12
#define LOCKS_MAX (1u << LOCKS_BITS)     /* users with recent wrong PINs at once */
#define LOCKS_FILL (LOCKS_MAX / 4 * 3)   /* sweep expired entries above this */

/*
 * The PIN lockout state of users with recent wrong PINs (or a lock), in one
 * shared table: open addressing by user id, linear probing, user 0 = free.
 * An entry expires when the user is not locked and the run of wrong PINs is
 * forgotten (fail_window); it is deleted with backward-shift deletion, so
 * that the table has no tombstones and a probe stops at the first free
 * slot. Every call of a user looks it up: one probe in the usual case.
 */
struct pin_locks {
	gen_lock_t lock;
	unsigned used;
	struct { uint32_t user; struct ccq_pin_lock l; } slot[LOCKS_MAX];
};
static struct pin_locks *g_locks;
static const struct ccq_pin_lock_cfg g_lock_cfg = { 5, 900, 3600 };

static int pin_locks_init(void)
{
	g_locks = shm_malloc(sizeof(*g_locks));
	if (!g_locks) {
		SHM_MEM_ERROR;
		return -1;
	}
	memset(g_locks, 0, sizeof(*g_locks));
	return lock_init(&g_locks->lock) ? 0 : -1;
}

static time_t mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static unsigned lock_home(uint32_t user)
{
	return (unsigned)((user * 2654435761u) >> (32 - LOCKS_BITS));
}

/* The slot of user, or -1; under the lock. */
static int lock_find(uint32_t user)
{
	for (unsigned i = lock_home(user), n = 0; n < LOCKS_MAX; i = (i + 1) & (LOCKS_MAX - 1), n++) {
		if (g_locks->slot[i].user == user)
			return (int)i;
		if (!g_locks->slot[i].user)
			return -1;
	}
	return -1;
}

/* Remove slot i, moving later entries of the probe run back (no tombstones). */
static void lock_delete(unsigned i)
{
	unsigned j = i;

	g_locks->used--;
	for (;;) {
		unsigned k;
		g_locks->slot[i].user = 0;
		memset(&g_locks->slot[i].l, 0, sizeof(g_locks->slot[i].l));
		for (;;) {
			j = (j + 1) & (LOCKS_MAX - 1);
			if (!g_locks->slot[j].user)
				return;
			k = lock_home(g_locks->slot[j].user);
			/* j's entry may move to i if its home is not cyclically in (i, j] */
			if (i <= j ? (i >= k || k > j) : (i >= k && k > j))
				break;
		}
		g_locks->slot[i] = g_locks->slot[j];
		i = j;
	}
}

/* An entry that holds nothing any more: not locked, no fails to remember. */
static int lock_expired(const struct ccq_pin_lock *l, time_t now)
{
	return !ccq_pin_locked(l, now) && (l->fails == 0
		|| (g_lock_cfg.fail_window && now - l->last_fail > (time_t)g_lock_cfg.fail_window));
}

static void lock_sweep(time_t now)
{
	for (unsigned i = 0; i < LOCKS_MAX; i++)
		while (g_locks->slot[i].user && lock_expired(&g_locks->slot[i].l, now))
			lock_delete(i);
}

/* A new entry for user (not in the table); -1 if full of live entries. */
static int lock_insert(uint32_t user, time_t now)
{
	unsigned i;

	if (g_locks->used >= LOCKS_FILL)
		lock_sweep(now);
	if (g_locks->used >= LOCKS_FILL)
		return -1;
	for (i = lock_home(user); g_locks->slot[i].user; i = (i + 1) & (LOCKS_MAX - 1))
		;
	g_locks->slot[i].user = user;
	memset(&g_locks->slot[i].l, 0, sizeof(g_locks->slot[i].l));
	g_locks->used++;
	return (int)i;
}

/* The lock state of a user: 1 locked. fail/ok record an attempt. */
static int pin_lock_update(uint32_t user, int fail, int ok)
{
	int locked = 0, i;
	time_t now = mono_s();

	if (!user)
		return 0;
	lock_get(&g_locks->lock);
	i = lock_find(user);
	if (i < 0 && fail && (i = lock_insert(user, now)) < 0)
		LM_WARN("user %u: wrong PIN not counted: %u users have recent wrong PINs\n", user,
			g_locks->used);
	if (i >= 0) {
		if (fail && ccq_pin_lock_fail(&g_locks->slot[i].l, &g_lock_cfg, now))
			LM_NOTICE("user %u: outbound calls locked for %u s after %u wrong PINs\n", user,
				g_lock_cfg.lock_seconds, g_lock_cfg.max_fails);
		if (ok)
			ccq_pin_lock_ok(&g_locks->slot[i].l);
		locked = ccq_pin_locked(&g_locks->slot[i].l, now);
		if (lock_expired(&g_locks->slot[i].l, now))
			lock_delete((unsigned)i);
	}
	lock_release(&g_locks->lock);
	return locked;
}

/* Lift a user's lockout (an operator who knows the agent). 1 if there was one. */
static int pin_lock_clear(uint32_t user)
{
	int was = 0, i;
	time_t now = mono_s();
	lock_get(&g_locks->lock);
	if ((i = lock_find(user)) >= 0) {
		was = ccq_pin_locked(&g_locks->slot[i].l, now);
		lock_delete((unsigned)i);
	}
	lock_release(&g_locks->lock);
	return was;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Check a PIN against "pbkdf2-sha256$<iter>$<salt hex>$<hash hex>". */
static int pin_matches(const char *stored, const char *pin)
{
	unsigned char salt[64], want[64], got[64];
	int iter, sl = 0, hl = 0, diff = 0;
	const char *p, *q;

	if (strncmp(stored, "pbkdf2-sha256$", 14) != 0)
		return 0;
	iter = atoi(stored + 14);
	if (iter < 1000 || iter > 1000000 || !(p = strchr(stored + 14, '$')) || !(q = strchr(p + 1, '$')))
		return 0;
	for (const char *c = p + 1; c + 1 < q && sl < 64; c += 2)
		salt[sl++] = (unsigned char)(hexval(c[0]) * 16 + hexval(c[1]));
	for (const char *c = q + 1; c[0] && c[1] && hl < 64; c += 2)
		want[hl++] = (unsigned char)(hexval(c[0]) * 16 + hexval(c[1]));
	if (hl != 32 || !PKCS5_PBKDF2_HMAC(pin, (int)strlen(pin), salt, sl, iter, EVP_sha256(), 32, got))
		return 0;
	for (int i = 0; i < 32; i++)
		diff |= got[i] ^ want[i];
	return diff == 0;
}

static void gate_set(struct sip_msg *msg, const char *verdict, const char *rule,
		const char *reason, const char *number, const char *caller_id)
{
	g_gate.msg_id = msg->id;
	g_gate.msg_pid = msg->pid;
	snprintf(g_gate.verdict, sizeof(g_gate.verdict), "%s", verdict);
	snprintf(g_gate.rule, sizeof(g_gate.rule), "%s", rule);
	snprintf(g_gate.reason, sizeof(g_gate.reason), "%s", reason);
	snprintf(g_gate.number, sizeof(g_gate.number), "%s", number ? number : "");
	snprintf(g_gate.caller_id, sizeof(g_gate.caller_id), "%s", caller_id ? caller_id : "");
}

/* The value of URI parameter name in params ("a=b;c=d"); 1 found. */
static int uri_param(const str *params, const char *name, str *v)
{
	size_t nl = strlen(name);
	const char *p = params->s, *end = params->s + params->len;

	while (p && p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *e = semi ? semi : end;
		while (p < e && *p == ' ')
			p++;
		if ((size_t)(e - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == '=') {
			v->s = (char *)p + nl + 1;
			v->len = (int)(e - v->s);
			return 1;
		}
		p = semi ? semi + 1 : NULL;
	}
	return 0;
}

/*
 * The customer leg of a callback: the agent's phone follows the
 * controller's REFER to sip:+<number>@<proxy>;ccqcb=<token>. 1 valid for
 * this extension and number (t filled), 0 no marker, -1 refused (logged;
 * the call is then an ordinary manual call).
 */
static int customer_leg(struct sip_msg *msg, const char *callid, const struct comp_user *u,
		const str *dialled, struct ccq_token *t)
{
	str v;
	const char *why = "";

	if (!msg->parsed_uri.params.s || !uri_param(&msg->parsed_uri.params, "ccqcb", &v))
		return 0;
	if (ccq_cb_token_check(v.s, (size_t)v.len, 'c', callid, t, &why) < 0)
		goto refused;
	if (strcmp(t->ext, u->ext) != 0) {
		why = "the token is for another extension";
		goto refused;
	}
	if (!dialled->s || dialled->len != (int)strlen(t->digits) + 1 || dialled->s[0] != '+'
			|| memcmp(dialled->s + 1, t->digits, strlen(t->digits)) != 0) {
		why = "the token is for another number";
		goto refused;
	}
	return 1;
refused:
	LM_NOTICE("call %s from extension %s carries a callback marker that is refused (%s):"
		" treated as a manual call\n", callid, u->ext, why);
	return -1;
}

/*
 * Recording is decided alongside the gate: the most specific of the user's,
 * the inbox's and the organisation's settings, for the extension's default
 * inbox or the one dialled with **<inbox id>* (doc/recording.md).
 */
static void gate_record(const struct comp_snap *s, const struct comp_user *u, uint32_t inbox)
{
	const char *rule;
	int rec;

	if (!comp_user_record(s, u, inbox, &rec, &rule))
		inbox = 0;
	g_gate.record = rec;
	snprintf(g_gate.record_rule, sizeof(g_gate.record_rule), "%s", rule);
	snprintf(g_gate.rec_meta, sizeof(g_gate.rec_meta), "ccq_org:%u|ccq_inbox:%u|ccq_agent:%s",
		comp_orgs(s)[u->org].id, inbox ? inbox : u->inbox_id, u->ext);
	for (char *c = g_gate.rec_meta; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')
				|| *c == '_' || *c == ':' || *c == '|' || *c == '.' || *c == '-'))
			*c = '_';
}

/*
 * ccq_outbound(): the compliance gate for a call an authenticated device
 * places (From user@domain is the device). Decides from shared memory, with
 * no round trip: 1 allowed ($ccq(number) is the E.164 number to send to the
 * trunk, PIN removed; $ccq(caller_id) the extension's caller ID), -1
 * blocked ($ccq(rule), $ccq(reason) say why: answer 403 with the reason).
 * The verdict is reported to queued for the TXN's journey either way.
 */
static int w_ccq_outbound(struct sip_msg *msg, char *p1, char *p2)
{
	struct comp_snap *s;
	const struct comp_user *u;
	struct to_body *fb;
	char user[65], domain[129], pin[16] = "", num[64], callid[256], e164[24];
	const char *why = NULL;
	str ru_user;
	struct comp_verdict v;
	enum ccq_pin_state ps = CCQ_PIN_ABSENT;
	int rc, locked, allowed, cbleg = 0;
	uint32_t inbox_id = 0;
	struct ccq_token ct;

	memset(&g_gate, 0, sizeof(g_gate));
	/* parse_from_uri(): the From URI's parts, whether or not auth_check()
	 * or sanity_check() parsed them already (a KEMI script may call us first) */
	if (parse_from_header(msg) < 0 || !parse_from_uri(msg) || parse_sip_msg_uri(msg) < 0
			|| call_id_of(msg, callid, sizeof(callid)) < 0) {
		gate_set(msg, "block", "invalid_number", "Blocked: invalid request", NULL, NULL);
		return -1;
	}
	fb = get_from(msg);
	hdr_field_str(&fb->parsed_uri.user, user, sizeof(user));
	hdr_field_str(&fb->parsed_uri.host, domain, sizeof(domain));
	ru_user = msg->parsed_uri.user;
	if (!(s = ccq_comp_get())) {
		/* no lists loaded: refuse rather than dial unchecked */
		gate_set(msg, "block", "unavailable", "Compliance data unavailable", NULL, NULL);
		LM_ERR("outbound call %s refused: no compliance snapshot loaded\n", callid);
		return -1;
	}
	u = comp_user_by_device(s, user, domain);
	if (!u) {
		ccq_comp_put(s);
		gate_set(msg, "block", "unknown_device", "Blocked: unknown device", NULL, NULL);
		return -1;
	}
	gate_record(s, u, 0);
	cbleg = customer_leg(msg, callid, u, &ru_user, &ct) == 1;
	if (cbleg) {
		/* a callback's customer leg: the agent's PIN, if the policy needs
		 * one, was checked by queued when the callback was requested */
		memset(&g_cls, 0, sizeof(g_cls));
		g_cls.msg_id = msg->id;
		g_cls.msg_pid = msg->pid;
		g_cls.valid = 1;
		strcpy(g_cls.type, "callback");
		strcpy(g_cls.direction, "outbound");
		snprintf(g_cls.txn, sizeof(g_cls.txn), "%llu", (unsigned long long)ct.txn);
		snprintf(g_cls.ext, sizeof(g_cls.ext), "%s", ct.ext);
		snprintf(g_cls.customer, sizeof(g_cls.customer), "+%s", ct.digits);
		if (strchr(ct.flags, 'p'))
			ps = CCQ_PIN_VALID;
		/* queued decided the recording with the callback's inbox: 'r' on,
		 * 'n' off, and whose setting won ('u', 'i', 'o'); a token without
		 * them keeps the extension's default inbox's decision */
		if (strchr(ct.flags, 'r') || strchr(ct.flags, 'n')) {
			g_gate.record = strchr(ct.flags, 'r') != NULL;
			snprintf(g_gate.record_rule, sizeof(g_gate.record_rule), "%s",
				strchr(ct.flags, 'u') ? "user" : strchr(ct.flags, 'i') ? "inbox"
				: "organisation");
		}
		ccq_cb_customer_leg(ct.txn);
	}
	/* "**<inbox id>*" first: the call is routed to that inbox instead of
	 * the extension's default one (doc/compliance.md) */
	if (ru_user.s && ru_user.len > 3 && ru_user.s[0] == '*' && ru_user.s[1] == '*' && !cbleg) {
		int k = 2;
		uint32_t ib = 0;
		while (k < ru_user.len && k < 12 && ru_user.s[k] >= '0' && ru_user.s[k] <= '9')
			ib = ib * 10 + (uint32_t)(ru_user.s[k++] - '0');
		if (k == 2 || k >= ru_user.len || ru_user.s[k] != '*' || !ib) {
			ccq_comp_put(s);
			gate_set(msg, "block", "invalid_number", "Blocked: invalid number", NULL,
				u->caller_id);
			LM_NOTICE("outbound call %s from %s: bad inbox prefix\n", callid, u->ext);
			goto report;
		}
		inbox_id = ib;
		/* the recording of a call routed to that inbox follows its
		 * setting, if the extension may work in it (else queued keeps the
		 * call in the default inbox, and so does the decision) */
		gate_record(s, u, ib);
		ru_user.s += k + 1;
		ru_user.len -= k + 1;
	}
	rc = ccq_gate_split_pin(ru_user.s ? ru_user.s : "", ru_user.s ? (size_t)ru_user.len : 0,
		PIN_PREFIX, 0, pin, sizeof(pin), num, sizeof(num), &why);
	if (rc < 0) {
		ccq_comp_put(s);
		gate_set(msg, "block", "invalid_number", "Blocked: invalid number", NULL, u->caller_id);
		LM_NOTICE("outbound call %s from %s: bad dial string (%s)\n", callid, u->ext, why);
		goto report;
	}
	if (rc == 1 && !cbleg) {
		/* the PIN is checked only here; it is never logged */
		ps = (u->pin_hash[0] && pin_matches(u->pin_hash, pin)) ? CCQ_PIN_VALID : CCQ_PIN_WRONG;
		memset(pin, 0, sizeof(pin));
	}
	locked = pin_lock_update(u->id, 0, 0);
	ccq_comp_check(s, u, num, strlen(num), ps, locked, &v);
	/* only a PIN the policy looked at counts towards the lockout */
	if (v.res.rule == CCQ_RULE_PIN_WRONG)
		pin_lock_update(u->id, 1, 0);
	else if (ps == CCQ_PIN_VALID && v.res.verdict == CCQ_GATE_ALLOW && !cbleg)
		pin_lock_update(u->id, 0, 1);
	snprintf(e164, sizeof(e164), "%s%s", v.number[0] ? "+" : "", v.number);
	allowed = v.res.verdict == CCQ_GATE_ALLOW;
	gate_set(msg, allowed ? "allow" : "block", ccq_gate_rule_name(v.res.rule),
		ccq_gate_rule_reason(v.res.rule), e164, u->caller_id);
	ccq_comp_put(s);
report:
	{
		ccq_enc e;
		uint64_t id = ccq_async_next_id();
		ccq_enc_init(&e);
		ccq_enc_request(&e, id, "call.outbound", 10 + (cbleg ? 1 : 0) + (inbox_id ? 1 : 0));
		ccq_pack_kv_str(&e.pk, "call_id", callid);
		ccq_pack_kv_str(&e.pk, "username", user);
		ccq_pack_kv_str(&e.pk, "domain", domain);
		ccq_pack_kv_str(&e.pk, "number", g_gate.number);
		ccq_pack_kv_str(&e.pk, "verdict", g_gate.verdict);
		ccq_pack_kv_str(&e.pk, "rule", g_gate.rule);
		ccq_pack_kv_str(&e.pk, "reason", g_gate.reason);
		ccq_pack_kv_uint(&e.pk, "at_ms", now_ms());
		ccq_pack_kv_uint(&e.pk, "record", (uint64_t)g_gate.record);
		ccq_pack_kv_str(&e.pk, "record_rule", g_gate.record_rule[0] ? g_gate.record_rule
			: "organisation");
		if (cbleg)
			ccq_pack_kv_uint(&e.pk, "callback_txn", ct.txn);
		if (inbox_id)
			ccq_pack_kv_uint(&e.pk, "inbox_id", inbox_id);
		ccq_async_report(&e, id);
	}
	return strcmp(g_gate.verdict, "allow") == 0 ? 1 : -1;
}

static int ki_ccq_outbound(struct sip_msg *msg)
{
	return w_ccq_outbound(msg, NULL, NULL);
}

/* ---- $ccq(key) -------------------------------------------------------- */

static int pv_parse_ccq_name(pv_spec_p sp, str *in)
{
	static const struct { const char *name; int key; } names[] = {
		{"type", CCQ_PV_TYPE}, {"txn", CCQ_PV_TXN}, {"direction", CCQ_PV_DIRECTION},
		{"link", CCQ_PV_LINK}, {"action", CCQ_PV_ACTION}, {"code", CCQ_PV_CODE},
		{"reason", CCQ_PV_REASON}, {"inbox", CCQ_PV_INBOX},
		{"ring_timeout", CCQ_PV_RING_TIMEOUT}, {"max_wait", CCQ_PV_MAX_WAIT},
		{"targets", CCQ_PV_TARGETS}, {"error", CCQ_PV_ERROR}, {"verdict", CCQ_PV_VERDICT},
		{"rule", CCQ_PV_RULE}, {"number", CCQ_PV_NUMBER}, {"caller_id", CCQ_PV_CALLER_ID},
		{"extension", CCQ_PV_EXTENSION}, {"customer", CCQ_PV_CUSTOMER},
		{"record", CCQ_PV_RECORD}, {"rec_meta", CCQ_PV_REC_META},
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
	LM_ERR("unknown key in $ccq(%.*s): use type, txn, direction, link, action, code, reason,"
		" inbox, ring_timeout, max_wait, targets, error, verdict, rule, number, caller_id,"
		" extension, customer, record or rec_meta\n", in->len, in->s);
	return -1;
}

static int pv_get_ccq(struct sip_msg *msg, pv_param_t *param, pv_value_t *res)
{
	str s;
	struct ccq_result *ar = &ccq_async_result;
	int key = param->pvn.u.isname.name.n;

	/* recording: the gate's decision for an outbound call, else queued's for
	 * a call it rings */
	if (key == CCQ_PV_RECORD || key == CCQ_PV_REC_META) {
		int gate = g_gate.msg_id == msg->id && g_gate.msg_pid == msg->pid && g_gate.verdict[0];
		if (!gate && !ar->active)
			return pv_get_null(msg, param, res);
		if (key == CCQ_PV_RECORD) {
			s.s = (gate ? g_gate.record : ar->record) ? "on" : "off";
		} else {
			s.s = gate ? g_gate.rec_meta : ar->rec_meta;
			if (!s.s[0])
				return pv_get_null(msg, param, res);
		}
		s.len = strlen(s.s);
		return pv_get_strval(msg, param, res, &s);
	}

	/* the gate's own variables, and $ccq(reason) after a gate decision on
	 * this very message (even inside a resumed route) */
	if ((key >= CCQ_PV_VERDICT && key <= CCQ_PV_CALLER_ID) || (key == CCQ_PV_REASON
			&& (!ar->active || (g_gate.msg_id == msg->id && g_gate.msg_pid == msg->pid
				&& g_gate.verdict[0])))) {
		if (g_gate.msg_id != msg->id || g_gate.msg_pid != msg->pid)
			return pv_get_null(msg, param, res);
		s.s = key == CCQ_PV_VERDICT ? g_gate.verdict : key == CCQ_PV_RULE ? g_gate.rule
			: key == CCQ_PV_NUMBER ? g_gate.number : key == CCQ_PV_CALLER_ID ? g_gate.caller_id
			: g_gate.reason;
		if (!s.s[0])
			return pv_get_null(msg, param, res);
		s.len = strlen(s.s);
		return pv_get_strval(msg, param, res, &s);
	}


	/* inside a route resumed with a decision from queued */
	if (ar->active) {
		switch (key) {
		case CCQ_PV_ACTION: s.s = ar->action; break;
		case CCQ_PV_REASON: s.s = ar->reason; break;
		case CCQ_PV_INBOX: s.s = ar->inbox; break;
		case CCQ_PV_TXN: s.s = ar->txn; break;
		case CCQ_PV_ERROR: s.s = ar->error; break;
		case CCQ_PV_CODE:
			return ar->code ? pv_get_sintval(msg, param, res, ar->code)
				: pv_get_null(msg, param, res);
		case CCQ_PV_RING_TIMEOUT:
			return pv_get_sintval(msg, param, res, (int)ar->ring_timeout);
		case CCQ_PV_MAX_WAIT:
			return pv_get_sintval(msg, param, res, (int)ar->max_wait);
		case CCQ_PV_TARGETS:
			return pv_get_sintval(msg, param, res, ar->ntargets);
		default: s.s = NULL;
		}
		if (s.s) {
			if (!s.s[0])
				return pv_get_null(msg, param, res);
			s.len = strlen(s.s);
			return pv_get_strval(msg, param, res, &s);
		}
	}

	switch (key) {
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
	case CCQ_PV_EXTENSION:
		s.s = g_cls.ext;
		break;
	case CCQ_PV_CUSTOMER:
		s.s = g_cls.customer;
		break;
	case CCQ_PV_RING_TIMEOUT:
		if (!cls_current(msg) || !g_cls.ring_timeout)
			return pv_get_null(msg, param, res);
		return pv_get_sintval(msg, param, res, (int)g_cls.ring_timeout);
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
	rpc->struct_add(th, "suuuu", "queued_schema", reachable ? qschema : "-",
		"requests", (unsigned)st.requests, "ok", (unsigned)st.ok, "failed",
		(unsigned)st.failed, "fallbacks", (unsigned)st.fallbacks);
}

/* Copy a decoded msgpack value into an RPC reply (structs, arrays, scalars). */
static void rpc_put(rpc_t *rpc, void *h, int in_array, const char *key,
		const msgpack_object *o, int depth)
{
	char buf[1100];
	void *sub;

	switch (o->type) {
	case MSGPACK_OBJECT_MAP:
		if (depth > 6)
			return;
		if ((in_array ? rpc->array_add(h, "{", &sub) : rpc->struct_add(h, "{", key, &sub)) < 0)
			return;
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			char k[64];
			size_t n;
			if (kv->key.type != MSGPACK_OBJECT_STR)
				continue;
			n = kv->key.via.str.size < sizeof(k) - 1 ? kv->key.via.str.size : sizeof(k) - 1;
			if (n)
				memcpy(k, kv->key.via.str.ptr, n);
			k[n] = '\0';
			rpc_put(rpc, sub, 0, k, &kv->val, depth + 1);
		}
		return;
	case MSGPACK_OBJECT_ARRAY:
		if (depth > 6)
			return;
		if ((in_array ? rpc->array_add(h, "[", &sub) : rpc->struct_add(h, "[", key, &sub)) < 0)
			return;
		for (uint32_t i = 0; i < o->via.array.size; i++)
			rpc_put(rpc, sub, 1, NULL, &o->via.array.ptr[i], depth + 1);
		return;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)o->via.u64);
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		snprintf(buf, sizeof(buf), "%lld", (long long)o->via.i64);
		break;
	case MSGPACK_OBJECT_BOOLEAN:
		snprintf(buf, sizeof(buf), "%s", o->via.boolean ? "yes" : "no");
		break;
	case MSGPACK_OBJECT_STR: {
		size_t n = o->via.str.size < sizeof(buf) - 1 ? o->via.str.size : sizeof(buf) - 1;
		if (n)
			memcpy(buf, o->via.str.ptr, n);
		buf[n] = '\0';
		break;
	}
	default:
		snprintf(buf, sizeof(buf), "-");
	}
	if (in_array)
		rpc->array_add(h, "s", buf);
	else
		rpc->struct_add(h, "s", key, buf);
}

/* Ask queued (as the local operator) and send its answer as the RPC reply. */
static void rpc_ask(rpc_t *rpc, void *ctx, ccq_enc *e, uint64_t id)
{
	ccq_msg r;
	void *h;

	if (ccq_link_call(e, id, &r) < 0) {
		rpc->fault(ctx, 503, "queued is unreachable");
		return;
	}
	if (r.code != 0) {
		char msg[300];
		snprintf(msg, sizeof(msg), "%s: %.*s", ccq_err_name(r.code), (int)r.errmsg_len,
			r.errmsg ? r.errmsg : "");
		rpc->fault(ctx, r.code == CCQ_E_NOT_FOUND ? 404 : 400, "%s", msg);
		ccq_msg_free(&r);
		return;
	}
	if (rpc->add(ctx, "{", &h) < 0) {
		ccq_msg_free(&r);
		return;
	}
	if (r.body && r.body->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < r.body->via.map.size; i++) {
			const msgpack_object_kv *kv = &r.body->via.map.ptr[i];
			char k[64];
			size_t n = kv->key.via.str.size < sizeof(k) - 1 ? kv->key.via.str.size : sizeof(k) - 1;
			if (kv->key.type != MSGPACK_OBJECT_STR)
				continue;
			if (n)
				memcpy(k, kv->key.via.str.ptr, n);
			k[n] = '\0';
			rpc_put(rpc, h, 0, k, &kv->val, 1);
		}
	}
	ccq_msg_free(&r);
}

static const char *ccq_rpc_stats_doc[] = {
	"Link counters and the latency of queued's call decisions (p50, p99, max in ms)",
	0
};

static void ccq_rpc_stats(rpc_t *rpc, void *ctx)
{
	struct ccq_link_stats st;
	double p50, p99, mx;
	unsigned long n = 0;
	void *th;

	ccq_link_get_stats(&st);
	p50 = p99 = mx = 0;
	ccq_async_latency(&p50, &p99, &mx, &n);
	if (rpc->add(ctx, "{", &th) < 0)
		return;
	rpc->struct_add(th, "uuuuu", "requests", (unsigned)st.requests, "ok", (unsigned)st.ok,
		"failed", (unsigned)st.failed, "fallbacks", (unsigned)st.fallbacks,
		"decisions", (unsigned)n);
	rpc->struct_add(th, "fff", "decision_p50_ms", p50, "decision_p99_ms", p99,
		"decision_max_ms", mx);
	rpc->struct_add(th, "d", "callback_legs", ccq_cb_active());
	ccq_async_rpc_stats(rpc, th);
}

static const char *ccq_rpc_inbox_doc[] = {
	"Waiting callers and agents' states of an inbox. Parameters: organisation, inbox name",
	0
};

static void ccq_rpc_inbox(rpc_t *rpc, void *ctx)
{
	str org, inbox;
	char o[128], i[128];
	ccq_enc e;
	uint64_t id = ccq_link_next_id();

	if (rpc->scan(ctx, ".S.S", &org, &inbox) < 2) {
		rpc->fault(ctx, 400, "usage: ccq.inbox <organisation> <inbox name>");
		return;
	}
	snprintf(o, sizeof(o), "%.*s", org.len, org.s);
	snprintf(i, sizeof(i), "%.*s", inbox.len, inbox.s);
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "inbox.state", 2);
	ccq_pack_kv_str(&e.pk, "org", o);
	ccq_pack_kv_str(&e.pk, "inbox", i);
	rpc_ask(rpc, ctx, &e, id);
}

static const char *ccq_rpc_txn_doc[] = {
	"A transaction and its journey. Parameter: transaction id",
	0
};

static void ccq_rpc_txn(rpc_t *rpc, void *ctx)
{
	int txn;
	ccq_enc e;
	uint64_t id = ccq_link_next_id();

	if (rpc->scan(ctx, "d", &txn) < 1 || txn <= 0) {
		rpc->fault(ctx, 400, "usage: ccq.txn <transaction id>");
		return;
	}
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "txn.get", 1);
	ccq_pack_kv_uint(&e.pk, "id", (uint64_t)txn);
	rpc_ask(rpc, ctx, &e, id);
}


/* ---- callback RPCs -------------------------------------------------------- */

static const char *ccq_rpc_callbacks_doc[] = {
	"Open callback requests (queued, dialling, connected) of every organisation, or of"
	" one extension: ccq.callbacks [<ext>@<org>]",
	0
};

static void ccq_rpc_callbacks(rpc_t *rpc, void *ctx)
{
	str who = STR_NULL;
	char w[200] = "";
	ccq_enc e;
	uint64_t id = ccq_link_next_id();

	if (rpc->scan(ctx, "*S", &who) >= 1 && who.len > 0) {
		if (who.len >= (int)sizeof(w) || !memchr(who.s, '@', who.len)) {
			rpc->fault(ctx, 400, "usage: ccq.callbacks [<ext>@<org>]");
			return;
		}
		snprintf(w, sizeof(w), "%.*s", who.len, who.s);
	}
	ccq_enc_init(&e);
	/* one extension's queue: what that user sees of their own requests */
	ccq_enc_request(&e, id, "callback.list", w[0] ? 2 : 1);
	ccq_pack_kv_str(&e.pk, "status", "open");
	if (w[0])
		ccq_pack_kv_str(&e.pk, "as", w);
	rpc_ask(rpc, ctx, &e, id);
}

static const char *ccq_rpc_callback_request_doc[] = {
	"Request a callback: ccq.callback.request <ext>@<org> <number> [txn]. With a TXN the"
	" extension calls the number from that transaction (as if the agent clicked Call);"
	" without, it is a customer's request for that extension. With kamcmd, pass"
	" digits-only values as s:<value>.",
	0
};

static void ccq_rpc_callback_request(rpc_t *rpc, void *ctx)
{
	str who, number;
	int txn = 0;
	char w[200], org[160], num[64];
	char *at;
	ccq_enc e;
	uint64_t id = ccq_link_next_id();

	if (rpc->scan(ctx, "SS*d", &who, &number, &txn) < 2 || who.len <= 0
			|| who.len >= (int)sizeof(w) || number.len <= 0 || number.len >= (int)sizeof(num)) {
		rpc->fault(ctx, 400, "usage: ccq.callback.request <ext>@<org> <number> [txn]");
		return;
	}
	snprintf(w, sizeof(w), "%.*s", who.len, who.s);
	snprintf(num, sizeof(num), "%.*s", number.len, number.s);
	if (!(at = strchr(w, '@')) || at == w || !at[1]) {
		rpc->fault(ctx, 400, "the extension is <ext>@<org>");
		return;
	}
	ccq_enc_init(&e);
	if (txn > 0) {
		ccq_enc_request(&e, id, "callback.request", 3);
		ccq_pack_kv_str(&e.pk, "as", w);
		ccq_pack_kv_uint(&e.pk, "txn", (uint64_t)txn);
		ccq_pack_kv_str(&e.pk, "number", num);
	} else {
		snprintf(org, sizeof(org), "%s", at + 1);
		*at = '\0';
		ccq_enc_request(&e, id, "callback.request", 4);
		ccq_pack_kv_str(&e.pk, "source", "customer");
		ccq_pack_kv_str(&e.pk, "ext", w);
		ccq_pack_kv_str(&e.pk, "org", org);
		ccq_pack_kv_str(&e.pk, "number", num);
	}
	rpc_ask(rpc, ctx, &e, id);
}

/* ---- recording of a live call --------------------------------------------- */

static const char *ccq_rpc_record_doc[] = {
	"Change the recording of a live call: ccq.record start|pause|resume|stop <txn>"
	" (pause while a card number is read out); the TXN's journey notes it",
	0
};

static void ccq_rpc_record(rpc_t *rpc, void *ctx)
{
	static const struct { const char *action, *ng, *done; } acts[] = {
		{ "start", "start recording", "started" },
		{ "pause", "pause recording", "paused" },
		{ "resume", "start recording", "resumed" },
		{ "stop", "stop recording", "stopped" },
	};
	str action;
	int txn = 0, a = -1, ok;
	char callid[256] = "", why[200];
	ccq_enc e;
	ccq_msg r;
	uint64_t id = ccq_link_next_id();
	void *th;

	if (rpc->scan(ctx, "Sd", &action, &txn) < 2 || txn <= 0) {
		rpc->fault(ctx, 400, "usage: ccq.record start|pause|resume|stop <txn>");
		return;
	}
	for (int i = 0; i < 4; i++)
		if ((size_t)action.len == strlen(acts[i].action)
				&& strncmp(action.s, acts[i].action, action.len) == 0)
			a = i;
	if (a < 0) {
		rpc->fault(ctx, 400, "the action is start, pause, resume or stop");
		return;
	}
	/* the TXN's live leg */
	ccq_enc_init(&e);
	ccq_enc_request(&e, id, "txn.get", 1);
	ccq_pack_kv_uint(&e.pk, "id", (uint64_t)txn);
	if (ccq_link_call(&e, id, &r) < 0) {
		rpc->fault(ctx, 503, "queued is unreachable");
		return;
	}
	if (r.code != 0) {
		rpc->fault(ctx, r.code == CCQ_E_NOT_FOUND ? 404 : 400, "%s: %.*s", ccq_err_name(r.code),
			(int)r.errmsg_len, r.errmsg ? r.errmsg : "");
		ccq_msg_free(&r);
		return;
	}
	if (ccq_map_strcpy(r.body, "live_call_id", callid, sizeof(callid)) != 1 || !callid[0])
		ccq_map_strcpy(r.body, "call_id", callid, sizeof(callid));
	{
		char status[32] = "";
		ccq_map_strcpy(r.body, "status", status, sizeof(status));
		ccq_msg_free(&r);
		if (!callid[0] || strcmp(status, "Ended") == 0 || strcmp(status, "Failed") == 0) {
			rpc->fault(ctx, 409, "TXN %d has no live call", txn);
			return;
		}
	}
	ok = ccq_media_ng_command(acts[a].ng, callid, why, sizeof(why)) == 0;
	if (!ok && a == 1 && strstr(why, "Unrecognized command")) {
		/* rtpengine before 11 has no "pause recording": stop it; "resume" is
		 * "start recording" either way, which continues the same call's
		 * recording */
		ok = ccq_media_ng_command("stop recording", callid, why, sizeof(why)) == 0;
	}
	LM_NOTICE("recording of TXN %d (call %s) %s by the operator: %s\n", txn, callid,
		acts[a].done, why);
	{
		ccq_enc rep;
		uint64_t rid = ccq_async_next_id();
		ccq_enc_init(&rep);
		ccq_enc_request(&rep, rid, "call.recording", 6);
		ccq_pack_kv_str(&rep.pk, "call_id", callid);
		ccq_pack_kv_str(&rep.pk, "action", acts[a].action);
		ccq_pack_kv_str(&rep.pk, "by", "operator");
		ccq_pack_kv_bool(&rep.pk, "ok", ok);
		ccq_pack_kv_str(&rep.pk, "detail", why);
		ccq_pack_kv_uint(&rep.pk, "at_ms", now_ms());
		ccq_async_report(&rep, rid);
	}
	if (!ok) {
		rpc->fault(ctx, 502, "%s", why);
		return;
	}
	if (rpc->add(ctx, "{", &th) >= 0)
		rpc->struct_add(th, "dss", "txn", txn, "call_id", callid, "recording", acts[a].done);
}

/* ---- compliance RPCs ------------------------------------------------------ */

/* ---- the API for other modules (ccq_api.h) ------------------------------- */

static int api_gate_check(const char *ext, const char *org, const char *number, int pin,
		struct ccq_gate_answer *a)
{
	struct comp_snap *s;
	const struct comp_user *u;
	struct comp_verdict v;
	enum ccq_pin_state ps = pin == CCQ_API_PIN_VALID ? CCQ_PIN_VALID
		: pin == CCQ_API_PIN_WRONG ? CCQ_PIN_WRONG : CCQ_PIN_ABSENT;

	memset(a, 0, sizeof(*a));
	if (!(s = ccq_comp_get()))
		return -1;
	if (!(u = comp_user_by_ext(s, org && org[0] ? org : NULL, ext))) {
		ccq_comp_put(s);
		return -2;
	}
	/* the lockout as a call would see it (read only) */
	a->locked = pin_lock_update(u->id, 0, 0);
	ccq_comp_check(s, u, number, strlen(number), ps, a->locked, &v);
	ccq_comp_put(s);
	a->allowed = v.res.verdict == CCQ_GATE_ALLOW;
	a->pin_needed = v.res.pin_needed;
	a->international = v.res.international;
	snprintf(a->rule, sizeof(a->rule), "%s", ccq_gate_rule_name(v.res.rule));
	snprintf(a->reason, sizeof(a->reason), "%s", ccq_gate_rule_reason(v.res.rule));
	snprintf(a->number, sizeof(a->number), "%s%s", v.number[0] ? "+" : "", v.number);
	snprintf(a->country, sizeof(a->country), "%s", v.res.country ? v.res.country : "");
	snprintf(a->why, sizeof(a->why), "%s", v.why ? v.why : "");
	return a->allowed ? 1 : 0;
}

static int bind_ccq(ccq_api_t *api)
{
	if (!api) {
		LM_ERR("bind_ccq: no API structure\n");
		return -1;
	}
	api->gate_check = api_gate_check;
	return 0;
}

/*
 * The snapshot and the user "<ext>[@<org>]" names, for the RPCs; NULL (and
 * the fault sent) when there is none. Release the snapshot with
 * ccq_comp_put().
 */
static const struct comp_user *rpc_user(rpc_t *rpc, void *ctx, str *who, struct comp_snap **sp)
{
	char w[160], *at;
	const struct comp_user *u;

	if (who->len <= 0 || who->len >= (int)sizeof(w)) {
		rpc->fault(ctx, 400, "the extension is <ext>[@<org>]");
		return NULL;
	}
	snprintf(w, sizeof(w), "%.*s", who->len, who->s);
	if (!(*sp = ccq_comp_get())) {
		rpc->fault(ctx, 503, "no compliance data loaded yet (is db_url set and MySQL reachable?)");
		return NULL;
	}
	at = strchr(w, '@');
	if (at)
		*at++ = '\0';
	if (!(u = comp_user_by_ext(*sp, at, w))) {
		ccq_comp_put(*sp);
		*sp = NULL;
		rpc->fault(ctx, 404, "no such extension (add @<organisation> if it is ambiguous)");
	}
	return u;
}

static const char *ccq_rpc_comp_check_doc[] = {
	"Dry run of the outbound compliance gate: ccq.compliance.check <ext>[@<org>] <number>"
	" [valid|wrong] (a PIN dialled and valid or wrong; omit it for none). Nothing is"
	" dialled. With kamcmd, pass digits-only values as s:<value>.",
	0
};

static void ccq_rpc_comp_check(rpc_t *rpc, void *ctx)
{
	str who, num, pin = STR_NULL;
	char n[80], w[160], *org;
	struct ccq_gate_answer a;
	int ps = CCQ_API_PIN_NONE, rc;
	void *th;

	/* ".": a digits-only extension (kamcmd sends it as an integer) is taken
	 * as text; the number must arrive as text: kamcmd turns "+6591234567"
	 * into a truncated integer, so a number given as an integer is refused */
	if (rpc->scan(ctx, ".S", &who) < 1) {
		rpc->fault(ctx, 400, "usage: ccq.compliance.check <ext>[@<org>] <number> [valid|wrong]");
		return;
	}
	if (rpc->scan(ctx, "S", &num) < 1) {
		rpc->fault(ctx, 400, "give the number as text (with kamcmd: s:+6591234567)");
		return;
	}
	if (rpc->scan(ctx, "*.S", &pin) == 1 && pin.len > 0)
		ps = (pin.len == 5 && strncmp(pin.s, "valid", 5) == 0) ? CCQ_API_PIN_VALID
			: CCQ_API_PIN_WRONG;
	snprintf(n, sizeof(n), "%.*s", num.len, num.s);
	if (who.len <= 0 || who.len >= (int)sizeof(w)) {
		rpc->fault(ctx, 400, "the extension is <ext>[@<org>]");
		return;
	}
	snprintf(w, sizeof(w), "%.*s", who.len, who.s);
	if ((org = strchr(w, '@')))
		*org++ = '\0';
	/* the same evaluation other modules get through bind_ccq (ccq_api.h) */
	rc = api_gate_check(w, org, n, ps, &a);
	if (rc == -1) {
		rpc->fault(ctx, 503, "no compliance data loaded yet (is db_url set and MySQL reachable?)");
		return;
	}
	if (rc == -2) {
		rpc->fault(ctx, 404, "no such extension (add @<organisation> if it is ambiguous)");
		return;
	}
	if (rpc->add(ctx, "{", &th) >= 0) {
		rpc->struct_add(th, "ssssssdd", "verdict", a.allowed ? "allow" : "block",
			"rule", a.rule, "reason", a.reason, "number", a.number[0] ? a.number : "-",
			"country", a.country[0] ? a.country : "-", "why", a.why[0] ? a.why : "-",
			"international", a.international, "pin_needed", a.pin_needed);
		rpc->struct_add(th, "d", "locked", a.locked);
	}
}

static const char *ccq_rpc_pin_unlock_doc[] = {
	"Lift an extension's outbound lockout after repeated wrong PINs:"
	" ccq.pin.unlock <ext>[@<org>]",
	0
};

static void ccq_rpc_pin_unlock(rpc_t *rpc, void *ctx)
{
	str who;
	struct comp_snap *s;
	const struct comp_user *u;
	void *th;
	int was;

	if (rpc->scan(ctx, ".S", &who) < 1) {
		rpc->fault(ctx, 400, "usage: ccq.pin.unlock <ext>[@<org>]");
		return;
	}
	if (!(u = rpc_user(rpc, ctx, &who, &s)))
		return;
	was = pin_lock_clear(u->id);
	LM_NOTICE("extension %s: outbound lockout lifted by an operator (was %s)\n", u->ext,
		was ? "locked" : "not locked");
	if (rpc->add(ctx, "{", &th) >= 0)
		rpc->struct_add(th, "sd", "extension", u->ext, "was_locked", was);
	ccq_comp_put(s);
}

static const char *ccq_rpc_comp_reload_doc[] = {
	"Reload the compliance lists from MySQL now (they also reload by themselves"
	" within compliance_poll ms of any change)",
	0
};

static void ccq_rpc_comp_reload(rpc_t *rpc, void *ctx)
{
	ccq_comp_reload();
	rpc->rpl_printf(ctx, "reload requested");
}

static const char *ccq_rpc_comp_stats_doc[] = {
	"The compliance snapshot in use and what the loader did: version, entries, bytes, load"
	" times, DNC base and delta, full builds vs delta applications, last change to use",
	0
};

static void ccq_rpc_comp_stats(rpc_t *rpc, void *ctx)
{
	struct comp_snap *s = ccq_comp_get();
	struct comp_stats st;
	void *th;
	if (!s) {
		rpc->fault(ctx, 503, "no compliance data loaded yet");
		return;
	}
	ccq_comp_stats(&st);
	if (rpc->add(ctx, "{", &th) >= 0) {
		char b[14][32];
		size_t base = comp_dnc_base_bytes(s), total = s->size + base;
		snprintf(b[0], 32, "%llu", (unsigned long long)s->version);
		snprintf(b[1], 32, "%llu", (unsigned long long)s->dnc_count);
		snprintf(b[2], 32, "%llu", (unsigned long long)(s->numbers - s->dnc_count));
		snprintf(b[3], 32, "%zu", total);
		snprintf(b[4], 32, "%.2f", s->numbers ? (double)total / (double)s->numbers : 0.0);
		snprintf(b[5], 32, "%llu", (unsigned long long)s->dnc_version);
		snprintf(b[6], 32, "%llu", (unsigned long long)(s->dnc ? s->dnc->version : 0));
		snprintf(b[7], 32, "%zu", base);
		snprintf(b[8], 32, "%zu", s->dnc_off ? s->size - (size_t)s->dnc_off : 0);
		snprintf(b[9], 32, "%llu", (unsigned long long)st.full_builds);
		snprintf(b[10], 32, "%llu", (unsigned long long)st.delta_applies);
		snprintf(b[11], 32, "%llu", (unsigned long long)st.dir_loads);
		snprintf(b[12], 32, "%llu", (unsigned long long)st.bulk_rows);
		snprintf(b[13], 32, "%lld", (long long)st.last_change_ms);
		rpc->struct_add(th, "sssssuuuu", "version", b[0], "dnc_entries", b[1],
			"list_entries", b[2], "bytes", b[3], "bytes_per_entry", b[4],
			"organisations", (unsigned)s->norgs, "users", (unsigned)s->nusers,
			"devices", (unsigned)s->ndevices, "load_ms", (unsigned)s->load_ms);
		rpc->struct_add(th, "sssuuus", "dnc_version", b[5], "dnc_base_version", b[6],
			"dnc_base_bytes", b[7], "dnc_base_load_ms", (unsigned)(s->dnc ? s->dnc->load_ms : 0),
			"dnc_delta_adds", (unsigned)s->delta_adds,
			"dnc_delta_removes", (unsigned)s->delta_removes, "dnc_delta_bytes", b[8]);
		rpc->struct_add(th, "ssssdds", "full_builds", b[9], "delta_applies", b[10],
			"directory_loads", b[11], "bulk_rows", b[12], "rebuilding", st.rebuilding,
			"rebuild_pending", st.rebuild_pending,
			"rebuild_reason", st.rebuild_reason[0] ? st.rebuild_reason : "-");
		rpc->struct_add(th, "ss", "last_change_ms", b[13],
			"last_change_kind", st.last_change_kind[0] ? st.last_change_kind : "-");
		if (st.last_error_at)
			rpc->struct_add(th, "s", "last_error", st.last_error);
	}
	ccq_comp_put(s);
}

static rpc_export_t ccq_rpc[] = {
	{"ccq.status", ccq_rpc_status, ccq_rpc_status_doc, 0},
	{"ccq.stats", ccq_rpc_stats, ccq_rpc_stats_doc, 0},
	{"ccq.inbox", ccq_rpc_inbox, ccq_rpc_inbox_doc, 0},
	{"ccq.txn", ccq_rpc_txn, ccq_rpc_txn_doc, 0},
	{"ccq.callbacks", ccq_rpc_callbacks, ccq_rpc_callbacks_doc, 0},
	{"ccq.callback.request", ccq_rpc_callback_request, ccq_rpc_callback_request_doc, 0},
	{"ccq.record", ccq_rpc_record, ccq_rpc_record_doc, 0},
	{"ccq.compliance.check", ccq_rpc_comp_check, ccq_rpc_comp_check_doc, 0},
	{"ccq.pin.unlock", ccq_rpc_pin_unlock, ccq_rpc_pin_unlock_doc, 0},
	{"ccq.compliance.reload", ccq_rpc_comp_reload, ccq_rpc_comp_reload_doc, 0},
	{"ccq.compliance.stats", ccq_rpc_comp_stats, ccq_rpc_comp_stats_doc, 0},
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
	{ str_init("ccq"), str_init("ccq_classify_mode"),
		SR_KEMIP_INT, ki_ccq_classify_mode,
		{ SR_KEMIP_STR, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("ccq"), str_init("ccq_outbound"),
		SR_KEMIP_INT, ki_ccq_outbound,
		{ SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE,
			SR_KEMIP_NONE, SR_KEMIP_NONE, SR_KEMIP_NONE }
	},
	{ str_init("ccq"), str_init("ccq_callback_handle"),
		SR_KEMIP_INT, ki_ccq_callback_handle,
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
	if (p_timeout != -1) {
		if (p_timeout < 10 || p_timeout > 60000) {
			LM_ERR("modparam timeout must be 10..60000 ms, not %d\n", p_timeout);
			return -1;
		}
		default_ccq_cfg.timeout = p_timeout;
	}
	if (p_retries != -1) {
		if (p_retries < 0 || p_retries > 5) {
			LM_ERR("modparam retries must be 0..5, not %d\n", p_retries);
			return -1;
		}
		default_ccq_cfg.retries = p_retries;
	}
	if (p_reconnect != -1) {
		if (p_reconnect < 0 || p_reconnect > 600000) {
			LM_ERR("modparam reconnect_interval must be 0..600000 ms, not %d\n", p_reconnect);
			return -1;
		}
		default_ccq_cfg.reconnect_interval = p_reconnect;
	}
	if (p_decision != -1) {
		if (p_decision < 100 || p_decision > 60000) {
			LM_ERR("modparam decision_timeout must be 100..60000 ms, not %d\n", p_decision);
			return -1;
		}
		default_ccq_cfg.decision_timeout = p_decision;
	}
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
	if (ccq_async_init() < 0)
		return -1;
	if (ccq_media_init(rtpengine_ng, hold_music) < 0)
		return -1;
	if (compliance_poll < 50 || compliance_poll > 60000) {
		LM_ERR("modparam compliance_poll must be 50..60000 ms, not %d\n", compliance_poll);
		return -1;
	}
	if (ccq_comp_init(db_url, compliance_poll) < 0)
		return -1;
	if (ccq_cb_init(callback_secret, callback_secret_file, callback_prompt, callback_proxy) < 0)
		return -1;
	if (pin_locks_init() < 0)
		return -1;
	return 0;
}

static int child_init(int rank)
{
	/* No sockets before the fork: every process opens its own connection
	 * (SIP workers, timers, ctl/RPC). The main process only forks the ccq
	 * async process, which holds the connection used for decisions, and
	 * the ccq resume processes, which run the resumed routes. */
	if (rank == PROC_INIT || rank == PROC_TCP_MAIN)
		return 0;
	if (rank == PROC_MAIN) {
		ccq_link_set_addr(queued_addr); /* for the async process; no connection here */
		if (ccq_async_fork() < 0)
			return -1;
		return ccq_comp_fork();
	}
	ccq_async_child();
	ccq_link_child_init(queued_addr);
	return 0;
}

static void mod_destroy(void)
{
	ccq_link_destroy_shm();
}
