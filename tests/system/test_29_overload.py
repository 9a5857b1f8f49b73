"""Overload: while queued's MySQL workers are behind (a job they could take
has waited more than shed_after, 250 ms by default), a new call's decision
is refused at once instead of joining the queue; the proxy then answers its
documented fallback (503 with Retry-After) and the carrier fails over. The
end report of a call refused that way is answered without a job. The calls
already taken go on, and once the workers catch up new calls are decided
again."""

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
        # one decision per worker, each held 3 s in its batch
        for i in range(workers):
            busy.send_raw(frame(mp_pack([1, 0, 100 + i, "call.route",
                                         route_args(lab, hold % i, ib.did)])))
        assert wait_until(lambda: lab.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE STATE = 'User sleep'") == [[str(workers)]], 5), \
            "the decisions did not all reach their INSERT"
        # a decision that waits for a worker: not refused, nothing was
        # queued when it came
        waiting.send_raw(frame(mp_pack([1, 0, 200, "call.route",
                                        route_args(lab, cid % 90, ib.did)])))
        time.sleep(0.5)
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
        got = {}
        for _ in range(workers):
            r = busy.read_frame()
            got[r[2]] = r
        assert sorted(got) == list(range(100, 100 + workers)), got
        assert all(r[3] == 0 for r in got.values()), got
        r = waiting.read_frame()
        assert r[2] == 200 and r[3] == 0, r
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
