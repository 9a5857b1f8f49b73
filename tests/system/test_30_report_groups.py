"""The proxy's reports of different calls (call.answered, call.ended) that
wait for a MySQL worker together run in one transaction: one round trip for
all their reads, one for all their writes and the COMMIT (report_batch,
queued(8)). Each call's TXN and journey come out exactly as when its
report runs alone; a report that fails inside a group does not take the
others with it (the group is rolled back and each report runs alone), and
its own caller gets a clear error while nothing of it is written.

The proxy's role is played over queued's socket (its requests are the
module's); MySQL is the lab's. The reports are sent together, as the proxy
sends them in a busy hour."""

import time
import uuid

from ccqlab import WireClient, frame, mp_pack, wait_until

CCQ_E_NOT_FOUND = 6
CCQ_E_INTERNAL = 8


def route_args(lab, call_id, did):
    return {"call_id": call_id, "from": "<sip:+6591234567@127.0.0.1>",
            "caller": "+6591234567", "caller_name": "", "did": did,
            "source_ip": "127.0.0.1", "source_port": lab.trunk_port(0)}


def ringing_calls(lab, org, n):
    """n calls routed to one agent (max_calls n): each TXN Assigning."""
    ib = org.inbox("Groups", ring_timeout=20, max_wait=30)
    phone = org.agent(ib, "301", "Grace Goh", max_calls=n + 1)
    phone.register(expires=600)
    cids = ["ccqtest-group-%s-%d@127.0.0.1" % (org.name, i) for i in range(n)]
    with WireClient(lab.queued_sock, timeout=10) as w:
        for cid in cids:
            rid, reply = w.request("call.route", route_args(lab, cid, ib.did))
            assert reply[:4] == [1, 1, rid, 0], reply
            assert reply[4]["action"] == "ring", reply
    txns = {}
    for cid in cids:
        ids = lab.wait_txn_for_call(cid)
        assert len(ids) == 1, cid
        txns[cid] = ids[0]
    return phone, cids, txns


def burst(lab, holder_txn, holder_cid, reports):
    """The end of the holder's call, then `reports` [(op, args)], all in
    one write. The first may run alone (the report before it came long
    ago: no reason to wait); the second came right after it, faster than
    report_linger (10 ms), so the worker that takes it waits until it is
    that old and takes the ones queued behind it into its group. Returns
    {request id: reply} for the reports."""
    replies = {}
    with WireClient(lab.queued_sock, timeout=15) as w:
        data = frame(mp_pack([1, 0, 1, "call.ended", {"call_id": holder_cid, "by": "caller"}]))
        data += b"".join(frame(mp_pack([1, 0, 100 + i, op, args]))
                         for i, (op, args) in enumerate(reports))
        w.send_raw(data)
        for _ in range(len(reports) + 1):
            r = w.read_frame()
            replies[r[2]] = r
    assert replies[1][3] == 0, replies[1]
    return {i: replies[100 + i] for i in range(len(reports))}


def groups(lab):
    st = lab.ccqctl_json("stats")
    return st["groups"], st["grouped"]


def status(lab, txn):
    return lab.sql("SELECT status, COALESCE(result, ''), COALESCE(failure_reason, '') "
                   "FROM txn WHERE id = %d" % txn)[0]


def journey(lab, txn):
    return lab.sql("SELECT kind, text FROM txn_event WHERE txn_id = %d ORDER BY id" % txn)


def test_reports_of_several_calls_share_a_transaction(running_lab, org):
    lab = running_lab
    phone, cids, txns = ringing_calls(lab, org, 7)
    holder, a, b, c, d, e, f = cids
    g0, n0 = groups(lab)
    replies = burst(lab, txns[holder], holder, [
        ("call.answered", {"call_id": a, "contact": phone.contact}),
        ("call.answered", {"call_id": b, "contact": phone.contact}),
        ("call.answered", {"call_id": c, "contact": phone.contact}),
        ("call.ended", {"call_id": d, "by": "caller"}),
        ("call.ended", {"call_id": e, "by": "failed:503"}),
        ("call.ended", {"call_id": f, "by": "agent"}),
        # a call queued never heard of: run alone, answered as alone
        ("call.answered", {"call_id": "x" + a, "contact": phone.contact}),
    ])
    for i in range(6):
        assert replies[i][3] == 0, replies[i]
        assert replies[i][4] == {"action": "ok"}, replies[i]
    assert replies[6][3] == CCQ_E_NOT_FOUND and "no transaction" in str(replies[6][4]), \
        replies[6]
    g1, n1 = groups(lab)
    assert n1 - n0 >= 7, (g0, n0, g1, n1)
    assert g1 - g0 < n1 - n0, "no group held more than one report: %s" % ((g0, n0, g1, n1),)

    for cid in (a, b, c):
        assert status(lab, txns[cid])[0] == "Assigned", cid
        ev = journey(lab, txns[cid])
        answered = [t for k, t in ev if k == "answered"]
        assert len(answered) == 1 and answered[0].startswith("Answered by 301 - Grace Goh - "), ev
    assert status(lab, txns[d]) == ["Ended", "abandoned", ""]
    assert status(lab, txns[e]) == ["Failed", "failed", "SIP 503"]
    assert status(lab, txns[f]) == ["Ended", "abandoned", ""]
    assert [t for k, t in journey(lab, txns[d]) if k == "ended"] == \
        ["Caller hung up while ringing"]
    assert [t for k, t in journey(lab, txns[e]) if k == "ended"] == ["Call failed (SIP 503)"]
    # the agent's device stops ringing for the three others
    assert lab.sql("SELECT result FROM txn_ring WHERE txn_id = %d" % txns[d]) == [["canceled"]]

    # the answered calls end together too: talking duration, the agent idle again
    replies = burst(lab, txns[a], a, [
        ("call.ended", {"call_id": b, "by": "agent"}),
        ("call.ended", {"call_id": c, "by": "caller"}),
    ])
    assert all(r[3] == 0 for r in replies.values()), replies
    for cid, by in ((a, "caller"), (b, "agent"), (c, "caller")):
        assert status(lab, txns[cid]) == ["Ended", "answered", ""], cid
        assert [t for k, t in journey(lab, txns[cid]) if k == "ended"] == \
            ["Call ended by the %s" % by], cid
    assert lab.sql("SELECT s.last_call_end IS NOT NULL, s.wrapup_until IS NOT NULL FROM user u "
                   "JOIN org o ON o.id = u.org_id JOIN agent_state s ON s.user_id = u.id "
                   "WHERE o.name = '%s' AND u.ext_key = '301'" % org.name) == [["1", "1"]]
    # `ccqctl me` sees the agent free again
    assert org.json("me", as_="301")["calls"] == []


def test_a_report_that_fails_in_a_group_does_not_take_the_others(running_lab, org):
    lab = running_lab
    phone, cids, txns = ringing_calls(lab, org, 4)
    holder, a, bad, c = cids
    # the end of `bad` cannot be written (its journey row is refused)
    lab.sql("DROP TRIGGER IF EXISTS ccqtest_group_fault")
    lab.sql("DELIMITER //\nCREATE TRIGGER ccqtest_group_fault BEFORE INSERT ON txn_event "
            "FOR EACH ROW BEGIN IF NEW.txn_id = %d AND NEW.kind = 'ended' THEN "
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'ccqtest refuses'; END IF; END//"
            % txns[bad])
    log0 = lab.log_size("queued")
    try:
        g0, n0 = groups(lab)
        replies = burst(lab, txns[holder], holder, [
            ("call.ended", {"call_id": a, "by": "caller"}),
            ("call.ended", {"call_id": bad, "by": "caller"}),
            ("call.ended", {"call_id": c, "by": "caller"}),
        ])
        g1, n1 = groups(lab)
    finally:
        lab.sql("DROP TRIGGER IF EXISTS ccqtest_group_fault")
    assert g1 - g0 < n1 - n0, "the reports did not run in one group: %s" % ((g0, n0, g1, n1),)
    assert replies[0][3] == 0 and replies[2][3] == 0, replies
    # the failed one: a clear error to its reporter, nothing of it written
    assert replies[1][3] == CCQ_E_INTERNAL, replies[1]
    assert "database error" in str(replies[1][4]), replies[1]
    assert status(lab, txns[bad])[0] == "Assigning"
    assert not [k for k, _ in journey(lab, txns[bad]) if k == "ended"]
    for cid in (a, c):
        assert status(lab, txns[cid]) == ["Ended", "abandoned", ""], cid
        assert [k for k, _ in journey(lab, txns[cid])].count("ended") == 1, cid
    assert "ccqtest refuses" in lab.log_since("queued", log0)
    # the fault gone, the proxy's report (sent again) lands
    with WireClient(lab.queued_sock, timeout=10) as w:
        rid, reply = w.request("call.ended", {"call_id": bad, "by": "caller"})
        assert reply[:4] == [1, 1, rid, 0], reply
    assert status(lab, txns[bad]) == ["Ended", "abandoned", ""]


def test_reports_of_a_transfer_in_one_group_keep_their_order(running_lab, org):
    """A blind transfer's two legs belong to one TXN: once the second leg
    rings the target, the transferring agent's leg ends (a report that runs
    alone: not the TXN's live leg), then the target answers. Queued
    together, the answer must not be committed before the end it came
    after: the journey shows the previous leg ending, then the target's
    answer, as when the reports run one by one."""
    lab = running_lab
    ib = org.inbox("Transfers", ring_timeout=20, max_wait=30)
    p1 = org.agent(ib, "101", "Alice Lim", max_calls=3)
    # the target: not a member of the inbox (its calls all ring 101)
    org.user("102", "Bob Tan", max_calls=3)
    p2 = org.device("102")
    p1.register(expires=600)
    p2.register(expires=600)
    caller = "+6598%06d" % (uuid.uuid4().int % 1000000)
    base = "ccqtest-xfer-%s-%%s@127.0.0.1" % org.name
    holder, a, b = base % "holder", base % "a", base % "b"

    def route(cid, did):
        args = {"call_id": cid, "from": "<sip:%s@127.0.0.1>" % caller, "caller": caller,
                "caller_name": "", "did": did, "source_ip": "127.0.0.1",
                "source_port": lab.trunk_port(0)}
        with WireClient(lab.queued_sock, timeout=10) as w:
            rid, reply = w.request("call.route", args)
        assert reply[:4] == [1, 1, rid, 0] and reply[4]["action"] == "ring", reply
        return reply[4]

    route(holder, ib.did)
    route(a, ib.did)
    txn = lab.wait_txn_for_call(a)[0]
    holder_txn = lab.wait_txn_for_call(holder)[0]
    with WireClient(lab.queued_sock, timeout=10) as w:
        rid, reply = w.request("call.answered", {"call_id": a, "contact": p1.contact})
        assert reply[:4] == [1, 1, rid, 0], reply
        rid, reply = w.request("call.transfer", {"call_id": a, "target": "sip:102@127.0.0.1"})
        assert reply[:4] == [1, 1, rid, 0], reply
    second = route(b, "102")
    assert second.get("txn") == txn, second
    replies = burst(lab, holder_txn, holder, [
        ("call.ended", {"call_id": a, "by": "agent"}),
        ("call.answered", {"call_id": b, "contact": p2.contact}),
    ])
    assert all(r[3] == 0 for r in replies.values()), replies
    ev = journey(lab, txn)
    assert ev[-2:] == [["leg_ended", "Previous leg ended"],
                       ["answered", "Answered by 102 - Bob Tan - desk_phone"]], \
        "\n".join(map(str, ev))
    assert [k for k, _ in ev].count("answered") == 2, ev
    assert status(lab, txn)[0] == "Assigned"
    assert lab.sql("SELECT u.ext_key FROM txn t JOIN user u ON u.id = t.agent_id "
                   "WHERE t.id = %d" % txn) == [["102"]]
