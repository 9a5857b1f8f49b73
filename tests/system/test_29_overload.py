"""Overload: while queued's MySQL workers are behind (a job they could take
has waited more than shed_after, 250 ms by default), a new call's decision
is refused at once instead of joining the queue; the proxy then answers its
documented fallback (503 with Retry-After) and the carrier fails over. The
end report of a call refused that way is answered without a job. The calls
already taken go on, and once the workers catch up new calls are decided
again."""

import re
import socket
import time

from ccqlab import WireClient, frame, mp_pack, wait_until

CCQ_E_DB_UNAVAILABLE = 7


def route_args(lab, call_id, did):
    return {"call_id": call_id, "from": "<sip:+6591234567@127.0.0.1>",
            "caller": "+6591234567", "caller_name": "", "did": did,
            "source_ip": "127.0.0.1", "source_port": lab.trunk_port(0)}


def hold_workers(lab, seconds):
    """The TXN INSERT of a call whose Call-ID has '-hold-' sleeps `seconds`
    (a trigger): each such decision's batch then holds its MySQL worker
    that long, side by side."""
    lab.sql("DROP TRIGGER IF EXISTS ccqtest_hold")
    lab.sql("DELIMITER //\nCREATE TRIGGER ccqtest_hold BEFORE INSERT ON txn FOR EACH ROW "
            "BEGIN IF NEW.sip_call_id LIKE 'ccqtest-overload-%%-hold-%%' THEN "
            "DO SLEEP(%d); END IF; END//" % seconds)


def release_workers(lab):
    lab.sql("DROP TRIGGER IF EXISTS ccqtest_hold")


def fall_behind(lab, busy, waiting, workers, hold, waiter, did):
    """One decision per worker on `busy` (Call-IDs hold % i, each held in
    its batch by hold_workers), then on `waiting` one more (Call-ID
    waiter), which waits for a worker: not refused, nothing was queued when
    it came. Returns once it has waited 0.5 s (more than shed_after)."""
    for i in range(workers):
        busy.send_raw(frame(mp_pack([1, 0, 100 + i, "call.route",
                                     route_args(lab, hold % i, did)])))
    assert wait_until(lambda: lab.sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE STATE = 'User sleep'") == [[str(workers)]], 5), \
        "the decisions did not all reach their INSERT"
    waiting.send_raw(frame(mp_pack([1, 0, 200, "call.route", route_args(lab, waiter, did)])))
    time.sleep(0.5)


def caught_up(busy, waiting, workers):
    """The decisions of fall_behind all answered, without an error."""
    got = {}
    for _ in range(workers):
        r = busy.read_frame()
        got[r[2]] = r
    assert sorted(got) == list(range(100, 100 + workers)), got
    assert all(r[3] == 0 for r in got.values()), got
    r = waiting.read_frame()
    assert r[2] == 200 and r[3] == 0, r


def test_new_calls_are_refused_at_once_while_the_workers_are_behind(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=20, max_wait=30)
    phone = org.agent(ib, "101", "Alice Lim")
    phone.register(expires=600)
    workers = lab.ccqctl_json("stats")["workers"]
    shed0 = lab.ccqctl_json("stats").get("shed", 0)
    log0 = lab.log_size("queued")
    cid = "ccqtest-overload-%s-%%d@127.0.0.1" % org.name
    hold = "ccqtest-overload-%s-hold-%%d@127.0.0.1" % org.name
    hold_workers(lab, 3)
    busy = WireClient(lab.queued_sock, timeout=15)
    waiting = WireClient(lab.queued_sock, timeout=15)
    try:
        fall_behind(lab, busy, waiting, workers, hold, cid % 90, ib.did)
        # now a job a worker could take has waited 0.5 s: refused at once
        shed = cid % 91
        with WireClient(lab.queued_sock, timeout=1.0) as w:
            t0 = time.monotonic()
            rid, reply = w.request("call.route", route_args(lab, shed, ib.did))
            took = time.monotonic() - t0
            assert reply[:4] == [1, 1, rid, CCQ_E_DB_UNAVAILABLE], reply
            assert "overloaded" in str(reply[4]), reply
            assert took < 0.5, "the refusal took %.3f s" % took
            # its end (the proxy's 503) is answered without a job, at once
            ended0 = {i["op"]: i["count"] for i in lab.ccqctl_json("stats")["items"]}
            rid, reply = w.request("call.ended", {"call_id": shed, "by": "failed:503"})
            assert reply[:4] == [1, 1, rid, 0], reply
            ended1 = {i["op"]: i["count"] for i in lab.ccqctl_json("stats")["items"]}
            assert ended1.get("call.ended", 0) == ended0.get("call.ended", 0), \
                "the refused call's end ran as a job"
        # the calls taken before go on: every one is answered
        caught_up(busy, waiting, workers)
    except socket.timeout:
        raise AssertionError("queued did not answer:\n" + lab.log_since("queued", log0)[-3000:])
    finally:
        busy.close()
        waiting.close()
        release_workers(lab)
    assert lab.txn_ids_for_call(shed) == [], "the refused call has a TXN"
    for i in range(workers):
        assert len(lab.txn_ids_for_call(hold % i)) == 1, i
    assert len(lab.txn_ids_for_call(cid % 90)) == 1
    st = lab.ccqctl_json("stats")
    assert st["shed"] >= shed0 + 1, st
    # (the warning is logged at most every 10 s: an earlier one may stand
    # for this refusal too)
    log = lab.log_since("queued", 0)
    assert "overloaded: MySQL work is" in log and "new call(s) refused at once" in log, \
        log[-3000:]
    # caught up: a new call is decided again
    with WireClient(lab.queued_sock, timeout=5) as w:
        rid, reply = w.request("call.route", route_args(lab, cid % 92, ib.did))
        assert reply[:4] == [1, 1, rid, 0], reply


def decision_timeout_ms(lab):
    """The running proxy's decision_timeout (cfg/kamailio.cfg: 2000 ms): a
    decision that waits for a worker instead of being refused ends in the
    same fallback, only that late."""
    r = lab.kamcmd("cfg.get", "ccq", "decision_timeout")
    m = re.search(r"\d+", r.stdout)
    assert r.returncode == 0 and m, "kamcmd cfg.get ccq decision_timeout: %s%s" % (
        r.stdout, r.stderr)
    return int(m.group(0))


def test_carrier_call_gets_503_retry_after_at_once_while_the_workers_are_behind(
        running_lab, org):
    """The same overload as above, seen by a carrier through the whole stack:
    Kamailio turns queued's refusal into its fallback (503 with the
    Retry-After the shipped script sets, tests/scenarios/carrier_overloaded.xml
    checks it) at once, not after its decision_timeout (which would give the
    same 503, only late: the time and the reason in Kamailio's log tell the
    two apart), and no TXN is made for that call."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=20, max_wait=30)
    phone = org.agent(ib, "101", "Alice Lim")
    phone.register(expires=600)
    # the decisions that hold the workers go to an inbox nobody answers:
    # they queue there instead of taking Alice, who must be free for the
    # call after the release
    held = org.inbox("Overflow", ring_timeout=20, max_wait=30)
    lab.trunk_port(0)
    limit = decision_timeout_ms(lab)
    workers = lab.ccqctl_json("stats")["workers"]
    shed0 = lab.ccqctl_json("stats").get("shed", 0)
    qlog0 = lab.log_size("queued")
    klog0 = lab.log_size("kamailio")
    hold = "ccqtest-overload-%s-hold-%%d@127.0.0.1" % org.name
    sip = "ccqtest-overload-%s-sip-%%d@127.0.0.1" % org.name
    waiter = "ccqtest-overload-%s-wait@127.0.0.1" % org.name
    # held longer than decision_timeout plus the time to get the call out:
    # without shedding the carrier's decision would still be waiting when
    # the proxy gives up on it
    hold_workers(lab, 5)
    busy = WireClient(lab.queued_sock, timeout=15)
    waiting = WireClient(lab.queued_sock, timeout=15)
    try:
        fall_behind(lab, busy, waiting, workers, hold, waiter, held.did)
        # a job a worker could take has waited 0.5 s (> shed_after): the
        # carrier's call to Sales is refused, by Kamailio, with its fallback
        call = lab.carrier(ib.did, scenario="carrier_overloaded.xml", timeout=10,
                           call_id=sip % 1)
        assert call.rc == 0, \
            "the carrier did not get 503 with 'Retry-After: 30':\n" + call.summary()
        assert call.final() == 503, call.responses()
        sent = call.first_time("sent", "INVITE")
        refused = call.first_time("received", "SIP/2.0 503")
        assert sent and refused, call.summary()
        # at once: queued answers in a millisecond; waiting for a worker
        # would end in the same 503 after decision_timeout
        assert refused - sent < limit / 4000.0, \
            "the 503 came %.3f s after the INVITE (decision_timeout %d ms)" % (
                refused - sent, limit)
        # a second call refused within 10 s: its 503 too, but no log line
        # of the module's own (counted for the next one)
        second = lab.carrier(ib.did, scenario="carrier_overloaded.xml", timeout=10,
                             call_id=sip % 3)
        assert second.rc == 0 and second.final() == 503, second.summary()
        # the held calls go on, and the one that waited behind them
        caught_up(busy, waiting, workers)
    except socket.timeout:
        raise AssertionError("queued did not answer:\n" + lab.log_since("queued", qlog0)[-3000:])
    finally:
        busy.close()
        waiting.close()
        release_workers(lab)
    # the proxy's reason for the 503 is queued's refusal, not its own timeout
    line = "call %s: no decision from queued (" % call.call_id
    assert wait_until(lambda: any(
        l for l in lab.log_since("kamailio", klog0).splitlines()
        if line in l and "overloaded" in l), 5), \
        "Kamailio did not log the 503 as queued's overload refusal:\n" + "\n".join(
            l for l in lab.log_since("kamailio", klog0).splitlines() if call.call_id in l)
    # the module's own line is a warning (refusals under overload come by
    # the hundred: at most one such line per 10 s, none before this one in
    # this proxy's life), not an error per call
    klog = lab.log_since("kamailio", klog0)
    assert "decision for call %s refused (queued: db_unavailable: overloaded" % call.call_id \
        in klog and "logged at most every 10 s" in klog, klog[-3000:]
    assert "decision for call %s failed" % call.call_id not in klog, klog[-3000:]
    assert "decision for call %s " % second.call_id not in klog, klog[-3000:]
    assert lab.ccqctl_json("stats")["shed"] >= shed0 + 2
    # nobody waits for the held calls: end them (their caller "hung up")
    with WireClient(lab.queued_sock, timeout=10) as w:
        for cid in [hold % i for i in range(workers)] + [waiter]:
            rid, reply = w.request("call.ended", {"call_id": cid, "by": "caller"})
            assert reply[:4] == [1, 1, rid, 0], (cid, reply)

    # caught up: a new carrier call is decided again and rings Alice
    ans = phone.answer()
    try:
        again = lab.carrier(ib.did, duration_ms=1000, timeout=20, call_id=sip % 2)
        assert again.rc == 0, again.summary()
        assert ans.wait(15) == 0, ans.summary()
    finally:
        ans.stop()
    assert 180 in again.responses() and again.final() == 200, again.responses()
    t = lab.wait_txn_state(again.call_id, lambda t: t["status"] == "Ended")
    assert t and t["result"] == "answered" and t["agent_ext"] == "101", t
    # checked last: a decision that had only waited would have made its TXN
    # by now
    assert lab.txn_ids_for_call(call.call_id) == [], "the refused call has a TXN"
    assert lab.txn_ids_for_call(second.call_id) == [], "the refused call has a TXN"
