"""Faults during calls: queued restarting while a call rings or talks (the
call completes, its TXN and journey are whole), MySQL briefly unavailable
(nothing acknowledged is lost)."""

import time

from ccqlab import WireClient, frame, mp_pack, wait_until

JANE = "+6591234567"

ORDER = ["received", "routed", "ringing", "answered", "ended"]


def setup_agent(org):
    ib = org.inbox("Sales", ring_timeout=15, max_wait=30)
    phone = org.agent(ib, "101", "Alice Lim")
    phone.register()
    org.customer("Jane Tan", JANE)
    return ib, phone


def assert_whole(lab, call_id, talk_min, talk_max, timeout=20):
    t = lab.wait_txn_state(call_id, lambda t: t["status"] == "Ended", timeout)
    assert t and t["status"] == "Ended", "TXN of %s did not end: %r" % (call_id, t)
    assert t["result"] == "answered" and t["agent_ext"] == "101", t
    kinds = [e["kind"] for e in t["events"]]
    assert [k for k in kinds if k in ORDER] == ORDER, kinds
    assert kinds.count("answered") == 1 and kinds.count("ended") == 1, kinds
    assert talk_min <= int(t["talking_seconds"]) <= talk_max, (
        "talking duration %s s, expected %d..%d s: answered_at %s, ended_at %s (events %r)"
        % (t["talking_seconds"], talk_min, talk_max, t["answered_at"], t["ended_at"],
           [(e["at"], e["kind"]) for e in t["events"]]))
    return t


def test_queued_restarts_while_the_call_rings(running_lab, org):
    lab = running_lab
    ib, phone = setup_agent(org)
    ans = phone.answer(ring_ms=4000, timeout=40)
    try:
        call = lab.carrier(ib.did, duration_ms=2000, timeout=40, background=True)
        assert lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Assigning", 8), \
            "the call never rang"
        lab.restart_queued()
        assert call.wait() == 0, "the call did not complete:\n" + call.summary()
        assert ans.wait(10) == 0, ans.summary()
    finally:
        call.stop()
        ans.stop()
    assert_whole(lab, call.call_id, 1, 3)


def test_queued_restarts_during_the_conversation(running_lab, org):
    lab = running_lab
    ib, phone = setup_agent(org)
    ans = phone.answer(timeout=40)
    try:
        call = lab.carrier(ib.did, duration_ms=6000, timeout=40, background=True)
        assert lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Assigned", 8), \
            "the call was not answered"
        lab.restart_queued()
        assert call.wait() == 0, "the call did not complete:\n" + call.summary()
        assert ans.wait(10) == 0, ans.summary()
    finally:
        call.stop()
        ans.stop()
    assert_whole(lab, call.call_id, 5, 7)
    # Alice is free again for the next call
    assert org.json("me", as_="101")["calls"] == []


def test_mysql_briefly_unavailable_loses_nothing(running_lab, org):
    lab = running_lab
    ib, phone = setup_agent(org)
    ans = phone.answer(timeout=60)
    try:
        call = lab.carrier(ib.did, duration_ms=3000, timeout=60, background=True)
        assert lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Assigned", 8), \
            "the call was not answered"
        r = lab.lab("down", "mysql", timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        # the caller hangs up while MySQL is down: the proxy's report must not
        # be lost, and the end is when the caller hung up, not when MySQL came back
        assert call.wait() == 0, "the call did not complete:\n" + call.summary()
        time.sleep(4)
        lab.up(timeout=300)
        assert ans.wait(10) == 0, ans.summary()
    finally:
        call.stop()
        ans.stop()
    assert_whole(lab, call.call_id, 2, 4, timeout=30)


def test_answered_call_without_an_end_is_ended_after_max_call_duration(running_lab, org):
    """An answered call whose BYE never reached the proxy (lost with a proxy
    restart) must not hold its agent's call slot for ever: after
    max_call_duration (4 h) queued's janitor ends it and says why; a call
    answered recently is left alone."""
    lab = running_lab
    setup_agent(org)
    uid = int(lab.sql("SELECT u.id FROM user u JOIN org o ON o.id = u.org_id "
                      "WHERE o.name = '%s' AND u.ext_key = '101'" % org.name)[0][0])
    oid = int(lab.sql("SELECT id FROM org WHERE name = '%s'" % org.name)[0][0])

    def fake_call(hours_ago):
        lab.sql("INSERT INTO txn (org_id, agent_id, kind, direction, call_type, status, "
                "created_at, updated_at, answered_at) VALUES (%d, %d, 'call', 'inbound', "
                "'direct', 'Assigned', UTC_TIMESTAMP(3) - INTERVAL %d MINUTE, "
                "UTC_TIMESTAMP(3) - INTERVAL %d MINUTE, UTC_TIMESTAMP(3) - INTERVAL %d MINUTE)"
                % (oid, uid, hours_ago * 60, hours_ago * 60, hours_ago * 60))
        return int(lab.sql("SELECT MAX(id) FROM txn WHERE agent_id = %d" % uid)[0][0])

    old, recent = fake_call(5), fake_call(1)

    def status(t):
        return lab.sql("SELECT status, COALESCE(failure_reason, '') FROM txn WHERE id = %d" % t)[0]

    # the janitor runs every 30 s
    assert wait_until(lambda: status(old)[0] == "Ended", 45), status(old)
    assert status(old)[1] == "call state lost", status(old)
    text = lab.sql("SELECT text FROM txn_event WHERE txn_id = %d AND kind = 'lost'" % old)
    assert text and text[0][0].startswith("No end of the call reported within 14400 s"), text
    assert status(recent)[0] == "Assigned", status(recent)


# A fault in the decision's own batch, after its answer: a trigger on one
# of the tables MySQL writes after the SELECT whose result queued answers
# on (txn: the TXN's row; txn_ring: the ring). The flags are rows of a
# MEMORY table, which a failed statement does not roll back, so the fault
# happens `times` times.
def batch_fault(lab, body, table="txn_ring", times=1):
    lab.sql("DROP TRIGGER IF EXISTS ccqtest_batch_fault")
    lab.sql("CREATE TABLE IF NOT EXISTS ccqtest_fault (n INT) ENGINE=MEMORY")
    lab.sql("DELETE FROM ccqtest_fault")
    lab.sql("INSERT INTO ccqtest_fault VALUES %s" % ", ".join(["(1)"] * times))
    # (the client splits statements at ';': the trigger's body has some)
    lab.sql("DELIMITER //\nCREATE TRIGGER ccqtest_batch_fault BEFORE INSERT ON %s "
            "FOR EACH ROW BEGIN IF (SELECT COUNT(*) FROM ccqtest_fault) > 0 THEN "
            "DELETE FROM ccqtest_fault LIMIT 1; %s END IF; END//" % (table, body))


def no_batch_fault(lab):
    lab.sql("DROP TRIGGER IF EXISTS ccqtest_batch_fault")
    lab.sql("DROP TABLE IF EXISTS ccqtest_fault")


def told_txn(lab, off, call_id):
    """The TXN id the proxy was given for a call (its log)."""
    for line in lab.log_since("kamailio", off).splitlines():
        if "call %s: queued says ring (txn " % call_id in line:
            return int(line.split("(txn ")[1].split(",")[0])
    return None


def test_the_decision_answers_before_its_commit(running_lab, org):
    """The agent's phones ring as soon as the claim is made: the answer
    does not wait for the TXN's row (here its INSERT is held up for 3 s by
    a trigger), nor for the first leg, the journey events, the ring row and
    the COMMIT after it. The TXN becomes visible with the COMMIT, and the
    call's answer report waits for it."""
    lab = running_lab
    ib, phone = setup_agent(org)
    ans = phone.answer(timeout=60)
    kam = lab.log_size("kamailio")
    batch_fault(lab, "DO SLEEP(3);", table="txn")
    try:
        call = lab.carrier(ib.did, duration_ms=2000, timeout=60, background=True)
        assert wait_until(lambda: told_txn(lab, kam, call.call_id), 2.5), \
            "the proxy was not told to ring within 2.5 s:\n" + lab.log_tail("kamailio", 20)
        assert lab.txn_ids_for_call(call.call_id) == [], \
            "the TXN was visible before the batch's COMMIT"
        txn = told_txn(lab, kam, call.call_id)
        assert lab.wait_txn_for_call(call.call_id, 10) == [txn]
        assert call.wait() == 0, "the call did not complete:\n" + call.summary()
        assert ans.wait(10) == 0, ans.summary()
    finally:
        call.stop()
        ans.stop()
        no_batch_fault(lab)
    t = assert_whole(lab, call.call_id, 1, 3)
    assert t["id"] == txn, t


def test_a_decision_whose_writes_fail_after_its_answer_is_written_again(running_lab, org):
    """The statements after the answer fail (here the ring row's INSERT,
    once): queued rolls the batch back and writes the TXN it answered
    again, with the id the proxy was given and the agent who rings, so the
    call, its answer and end and its journey are whole. The incoming-call
    notification still names the caller's customer (the batch that failed
    had looked it up; the write again reads it back)."""
    lab = running_lab
    ib, phone = setup_agent(org)
    ans = phone.answer(timeout=60)
    kam, qd = lab.log_size("kamailio"), lab.log_size("queued")
    watch = org.watch("101", secs=15, count=1)
    batch_fault(lab, "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'ccq test: ring row refused';")
    try:
        call = lab.carrier(ib.did, duration_ms=2000, timeout=60, background=True)
        assert call.wait() == 0, "the call did not complete:\n" + call.summary()
        assert ans.wait(10) == 0, ans.summary()
        assert lab.sql("SELECT COUNT(*) FROM ccqtest_fault") == [["0"]], "the fault never fired"
    finally:
        call.stop()
        ans.stop()
        no_batch_fault(lab)
    t = assert_whole(lab, call.call_id, 1, 3)
    assert lab.txn_ids_for_call(call.call_id) == [told_txn(lab, kam, call.call_id)] == [t["id"]]
    assert [e["kind"] for e in t["events"]].count("ringing") == 1, t["events"]
    assert lab.sql("SELECT COUNT(*) FROM txn_ring WHERE txn_id = %d" % t["id"]) == [["1"]]
    log = lab.log_since("queued", qd)
    assert "ring row refused" in log and "written again after its decision's batch failed" \
        in log, log[-3000:]
    evs = watch.events()
    assert [e["event"] for e in evs] == ["call.incoming"], evs
    inc = evs[0]["data"]
    assert int(inc["txn"]) == t["id"] and inc["customer"] == "Jane Tan", inc
    assert inc["text"] == "incoming call in inbox Sales from +65 9123 4567 (Jane Tan)", inc


def test_a_caller_who_hangs_up_while_the_decision_is_written_again_is_not_lost(
        running_lab, org):
    """The decision's writes fail after its answer and keep failing for
    about three seconds (the ring row refused four times: the batch, the
    rewrite at once, those one and two seconds later); the caller hangs up
    while the agent's phone rings, before the TXN exists. The end report waits
    for the rewrite rather than finding "no TXN": the TXN ends as
    abandoned, not left Assigning."""
    lab = running_lab
    ib, phone = setup_agent(org)
    ring = phone.ring(timeout=60)
    qd = lab.log_size("queued")
    batch_fault(lab, "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'ccq test: ring row refused';",
                times=4)
    call = None
    try:
        call = lab.carrier(ib.did, scenario="carrier_cancel.xml", duration_ms=500, timeout=30)
        assert call.rc == 0, "the CANCEL was not answered with 200 + 487:\n" + call.summary()
        assert lab.txn_ids_for_call(call.call_id) == [], \
            "the TXN was written before the caller hung up: the test shows nothing"
        # meanwhile the end of another call that has no TXN (a device's
        # INVITE challenged with 407) is answered at once, not held back
        # until this call's rewrite is through
        with WireClient(lab.queued_sock, timeout=0.8) as w:
            rid, reply = w.request("call.ended", {"call_id": "ccqtest-no-txn-%s" % org.name,
                                                  "by": "caller"})
            assert reply[:4] == [1, 1, rid, 0], reply
        assert lab.txn_ids_for_call(call.call_id) == [], "the rewrite was through already"
        t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended", 10)
        assert lab.sql("SELECT COUNT(*) FROM ccqtest_fault") == [["0"]], "the faults never fired"
    finally:
        if call:
            call.stop()
        ring.stop()
        no_batch_fault(lab)
    assert t and t["status"] == "Ended" and t["result"] == "abandoned", t
    kinds = [e["kind"] for e in t["events"]]
    assert kinds[:3] == ["received", "routed", "ringing"] and kinds[-1] == "ended", kinds
    assert t["events"][-1]["text"] == "Caller hung up while ringing", t["events"]
    log = lab.log_since("queued", qd)
    assert "written again after its decision's batch failed" in log, log[-3000:]


def test_a_decision_whose_txn_id_was_handed_out_again_gets_a_new_one(running_lab, org):
    """MySQL hands out, for a new call, the id of a TXN that exists (as a
    MariaDB that crashed before its sequence's state reached the disk
    could; here txn_seq is moved back with ALTER SEQUENCE ... RESTART): the
    decision answers with that id, its TXN's INSERT then fails (duplicate
    id), and queued writes the call's TXN again with a new id. The older
    TXN is untouched; the call, found by its Call-ID, is whole."""
    lab = running_lab
    ib, phone = setup_agent(org)
    old_cid = "ccqtest-old-%s" % org.name
    lab.sql("INSERT INTO txn (kind, direction, call_type, status, sip_call_id, created_at, "
            "updated_at) VALUES ('call', 'inbound', 'direct', 'Ended', '%s', UTC_TIMESTAMP(3), "
            "UTC_TIMESTAMP(3))" % old_cid)
    old = lab.txn_ids_for_call(old_cid)[0]
    assert lab.sql("SELECT MAX(id) FROM txn") == [[str(old)]]
    lab.sql("ALTER SEQUENCE txn_seq RESTART WITH %d" % old)
    ans = phone.answer(timeout=60)
    kam, qd = lab.log_size("kamailio"), lab.log_size("queued")
    try:
        call = lab.carrier(ib.did, duration_ms=2000, timeout=60, background=True)
        assert call.wait() == 0, "the call did not complete:\n" + call.summary()
        assert ans.wait(10) == 0, ans.summary()
    finally:
        call.stop()
        ans.stop()
    assert told_txn(lab, kam, call.call_id) == old, lab.log_since("kamailio", kam)[-2000:]
    t = assert_whole(lab, call.call_id, 1, 3)
    assert t["id"] == old + 1 and lab.txn_ids_for_call(call.call_id) == [old + 1], t
    assert [e["kind"] for e in t["events"]].count("ringing") == 1, t["events"]
    assert lab.sql("SELECT COUNT(*) FROM txn_ring WHERE txn_id = %d" % t["id"]) == [["1"]]
    assert lab.sql("SELECT sip_call_id, status, (SELECT COUNT(*) FROM txn_event e WHERE "
                   "e.txn_id = t.id) FROM txn t WHERE id = %d" % old) == [[old_cid, "Ended", "0"]]
    log = lab.log_since("queued", qd)
    assert "was handed out again" in log and "TXN %d written again" % (old + 1) in log, \
        log[-3000:]


def test_a_report_retried_is_not_overtaken_by_a_later_one_of_its_call(running_lab, org):
    """The answer report of a call fails for a moment (MySQL says deadlock
    every time, a trigger here) and waits to be run again a second later;
    the call's end, reported meanwhile with MySQL fine again, waits behind
    it instead of running first: the TXN ends answered, its journey shows
    the answer before the end. (Run first, the end would find the call
    ringing and end it abandoned, and the answer would come too late.)
    Reports of one call waiting together are run again in the order they
    came, too."""
    lab = running_lab
    ib, phone = setup_agent(org)
    cid = "ccqtest-retry-order-%s@127.0.0.1" % org.name
    args = {"call_id": cid, "from": "<sip:%s@127.0.0.1>" % JANE, "caller": JANE,
            "caller_name": "", "did": ib.did, "source_ip": "127.0.0.1",
            "source_port": lab.trunk_port(0)}
    with WireClient(lab.queued_sock, timeout=10) as w:
        rid, reply = w.request("call.route", args)
        assert reply[:4] == [1, 1, rid, 0] and reply[4]["action"] == "ring", reply
    txn = lab.wait_txn_for_call(cid)[0]
    lab.sql("DROP TRIGGER IF EXISTS ccqtest_deadlock")
    lab.sql("DELIMITER //\nCREATE TRIGGER ccqtest_deadlock BEFORE UPDATE ON txn FOR EACH ROW "
            "BEGIN IF NEW.id = %d AND NEW.status = 'Assigned' THEN SIGNAL SQLSTATE '40001' "
            "SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'ccqtest deadlock'; END IF; END//" % txn)
    log0 = lab.log_size("queued")
    w = WireClient(lab.queued_sock, timeout=10)
    try:
        w.send_raw(frame(mp_pack([1, 0, 1, "call.answered",
                                  {"call_id": cid, "contact": phone.contact}])))
        assert wait_until(lambda: "call.answered: MySQL unavailable; retrying every second"
                          in lab.log_since("queued", log0), 5, interval=0.05), \
            lab.log_since("queued", log0)[-2000:]
        lab.sql("DROP TRIGGER IF EXISTS ccqtest_deadlock")
        # within the second before the answer's next attempt
        w.send_raw(frame(mp_pack([1, 0, 2, "call.ended", {"call_id": cid, "by": "caller"}])))
        got = {}
        for _ in range(2):
            r = w.read_frame()
            got[r[2]] = r
    finally:
        w.close()
        lab.sql("DROP TRIGGER IF EXISTS ccqtest_deadlock")
    assert got[1][3] == 0 and got[2][3] == 0, got
    t = lab.wait_txn_state(cid, lambda t: t["status"] == "Ended", 10)
    assert t and t["result"] == "answered", t
    kinds = [e["kind"] for e in t["events"]]
    assert kinds.index("answered") < kinds.index("ended"), kinds
    assert t["events"][-1]["text"] == "Call ended by the caller", t["events"]
