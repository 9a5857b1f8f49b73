// The outbound gate through KEMI: KSR.ccq.ccq_outbound() evaluates the
// request (From = the device, request URI user = the dialled number) and
// the answer's reason carries what the script can read: verdict, rule,
// E.164 number, caller ID.
function ksr_gate() {
	var rc = KSR.ccq.ccq_outbound();
	var v = KSR.pv.get("$ccq(verdict)");
	var r = KSR.pv.get("$ccq(rule)");
	var n = KSR.pv.get("$ccq(number)");
	var c = KSR.pv.get("$ccq(caller_id)");
	KSR.sl.sl_send_reply(rc > 0 ? 200 : 403, "rc=" + rc + " verdict=" + v + " rule=" + r +
		" number=" + n + " caller_id=" + c);
}
