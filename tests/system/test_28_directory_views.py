"""queued decides a new call from its directory cache (trunks by source
address, DIDs) and from its view of each inbox's members (queued(8)). A
change made through queued reaches the very next call; a change made with
SQL behind queued's back within the cache's 5 seconds; the view follows
membership changes and an agent's wrap-up."""

import threading
import time
from datetime import datetime

from ccqlab import PORTS, WireClient, wait_until


def at(s):
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f")


def missed_inbox(lab, did):
    """Call DID from the lab's trunk; the inbox (max wait 0, nobody
    available) takes the missed-call flow: 480. Returns the TXN's inbox."""
    call = lab.carrier(did, scenario="carrier_reject.xml", timeout=15)
    assert call.final() == 480, (call.responses(), call.summary())
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
    assert t and t["result"] == "missed", t
    return t["inbox"]


def answered_call(lab, phone, did, ring=None, timeout=30):
    """A call to DID that PHONE answers (RING: another phone's ringing sipp,
    stopped with it). Returns the ended TXN."""
    ans = phone.answer()
    try:
        call = lab.carrier(did, duration_ms=500, timeout=timeout)
        assert call.rc == 0, call.summary()
        assert ans.wait(20) == 0, ans.summary()
    finally:
        if ring:
            ring.stop()
        ans.stop()
    return lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")


def test_a_moved_did_reaches_its_new_inbox_at_once(running_lab, org):
    lab = running_lab
    alpha = org.inbox("Alpha", max_wait=0)
    org.inbox("Beta", max_wait=0, did=False)
    did = alpha.did
    lab.trunk_port(0)
    assert missed_inbox(lab, did) == "Alpha"          # now in the cache
    # removed: the next call is refused at once, not served from the cache
    org.json("inbox", "did", "remove", "Alpha", did)
    call = lab.carrier(did, scenario="carrier_reject.xml", timeout=15)
    assert call.final() == 404, call.responses()
    # given to another inbox: the next call goes there
    org.json("inbox", "did", "add", "Beta", did)
    assert missed_inbox(lab, did) == "Beta"
    # an SQL edit behind queued's back is seen once the entry expires (5 s)
    lab.sql("UPDATE inbox_did d JOIN inbox b ON b.id = d.inbox_id JOIN inbox a "
            "ON a.org_id = b.org_id AND a.name = 'Alpha' SET d.inbox_id = a.id "
            "WHERE d.did = '%s'" % did)
    seen = []
    assert wait_until(lambda: seen.append(missed_inbox(lab, did)) or seen[-1] == "Alpha", 12,
                      interval=1.0), seen


def test_an_address_becomes_a_trunk_at_once(running_lab, org):
    """queued caches "not a trunk" for a source address; adding the trunk
    makes the next call from it a carrier call."""
    lab = running_lab
    inbox = org.inbox("Sales", max_wait=0)
    port = PORTS.take("peer")

    def call():
        return lab.sipp("carrier_reject.xml", port, "-s", inbox.did.lstrip("+"),
                        remote=lab.sip_addr, timeout=15, name="new-trunk")
    first = call()
    assert first.final() in (401, 407), first.summary()
    r = lab.ccqctl("trunk", "add", "carrier-new-%d" % port, "127.0.0.1", "--port", str(port))
    assert r.returncode == 0, r.stdout + r.stderr
    second = call()
    assert second.final() == 480, "a call from the new trunk: %r\n%s" % (
        second.responses(), second.summary())


def test_a_removed_member_is_not_rung(running_lab, org):
    """Alice would be offered the call first (never called); removed from
    the inbox just before it, she is not rung."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=10, max_wait=20)
    alice = org.agent(ib, "101", "Alice Lim")
    bob = org.agent(ib, "102", "Bob Tan")
    bob.register()
    # a first call, while only Bob is registered, puts the inbox's view in
    # queued; then Alice registers (never called: first in the order)
    answered_call(lab, bob, ib.did)
    alice.register()
    org.json("inbox", "member", "remove", "Sales", "101")
    ring = alice.ring(timeout=15)
    t = answered_call(lab, bob, ib.did, ring=ring)
    assert ring.requests() == [], "the removed member rang: %r" % ring.requests()
    assert t["agent_ext"] == "102", t


def test_a_new_registration_reaches_the_next_call(running_lab, org):
    """Alice registers after queued read the inbox's view (when only Bob
    was registered); never called, she is offered the very next call."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=10, max_wait=20)
    alice = org.agent(ib, "101", "Alice Lim")
    bob = org.agent(ib, "102", "Bob Tan")
    bob.register()
    assert answered_call(lab, bob, ib.did)["agent_ext"] == "102"
    alice.register()
    t = answered_call(lab, alice, ib.did)
    rings = [e["text"] for e in t["events"] if e["kind"] == "ringing"]
    assert len(rings) == 1 and rings[0].startswith("Ringing 101 "), rings
    assert t["agent_ext"] == "101", t


def rpc_agents(lab, org, ib):
    """The inbox's agents as `kamcmd ccq.inbox ORG INBOX` shows them (the
    module asks queued's inbox.state): {ext: {key: value}}."""
    r = lab.kamcmd("ccq.inbox", org.name, ib.name)
    assert r.returncode == 0 and "agents:" in r.stdout, r.stdout + r.stderr
    agents, cur = {}, None
    for line in r.stdout.split("agents:", 1)[1].splitlines():
        k, sep, v = line.strip().partition(": ")
        if not sep:
            continue
        if k == "ext":
            cur = agents.setdefault(v, {})
        elif cur is not None:
            cur[k] = v
    return agents


def test_wrapup_holds_the_agents_next_call(running_lab, org):
    """After a talked call the agent is in wrap-up (3 s here): the next call
    waits in the queue and rings the agent only once the wrap-up is over.
    The operator's view (kamcmd ccq.inbox) shows the wrap-up and when the
    agent's last call ended, then the agent available again."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=10, max_wait=30)
    org.user("101", "Alice Lim", wrapup=3)
    org.member(ib, "101")
    phone = org.device("101")
    phone.register()
    assert rpc_agents(lab, org, ib)["101"]["idle_since"] == "-"
    t1 = answered_call(lab, phone, ib.did)
    ended = at([e for e in t1["events"] if e["kind"] == "ended"][0]["at"])
    a = rpc_agents(lab, org, ib)["101"]
    end1 = [e for e in t1["events"] if e["kind"] == "ended"][0]["at"]
    assert a["state"] == "wrap-up" and a["idle_since"] == end1[:19], (a, end1)
    t2 = answered_call(lab, phone, ib.did, timeout=40)
    kinds = [e["kind"] for e in t2["events"]]
    assert "queued" in kinds, t2["events"]
    rang = at([e for e in t2["events"] if e["kind"] == "ringing"][0]["at"])
    assert (rang - ended).total_seconds() >= 3.0, (ended, rang, t2["events"])
    assert t2["result"] == "answered" and t2["agent_ext"] == "101", t2
    # the wrap-up after the second call over: available again
    assert wait_until(lambda: rpc_agents(lab, org, ib)["101"]["state"] == "available", 6), \
        rpc_agents(lab, org, ib)


def route(lab, call_id, did, caller="+6591234567"):
    """queued's decision for a carrier call, asked as the proxy asks it
    (call.route over the unix socket, as the local operator)."""
    with WireClient(lab.queued_sock) as w:
        rid, reply = w.request("call.route", {
            "call_id": call_id, "from": "<sip:%s@127.0.0.1>" % caller,
            "caller": caller, "caller_name": "", "did": did,
            "source_ip": "127.0.0.1", "source_port": lab.trunk_port(0)})
    assert reply[:4] == [1, 1, rid, 0], "call.route failed: %r" % (reply,)
    return reply[4]


def test_retried_decision_reuses_its_txn(running_lab, org):
    """The proxy asks again for a call it already asked about (a retry
    after a lost reply): the decision's one batch stops at the TXN's
    INSERT (the Call-ID has one), and the general path decides for that
    TXN. One TXN per Call-ID, the first ring's agent not rung again within
    two ring timeouts (the call queues), no error logged; the same for a
    call nobody could take the first time."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=20, max_wait=30)
    phone = org.agent(ib, "101", "Alice Lim")
    phone.register(expires=600)
    org.customer("Jane Tan", "+6591234567")
    log0 = lab.log_size("queued")
    cid = "ccqtest-retry-%s@127.0.0.1" % org.name
    p0 = route_paths(lab)
    first = route(lab, cid, ib.did)
    assert first["action"] == "ring" and first["txn"] > 0, first
    again = route(lab, cid, ib.did)
    assert again["txn"] == first["txn"], (first, again)
    # (counted once each: the claim held, then the retry)
    assert delta(route_paths(lab), p0) == {"claimed": 1, "refused": 0, "no_candidate": 0,
                                           "retried": 1}
    assert again["action"] == "queue", again
    assert lab.txn_ids_for_call(cid) == [first["txn"]]
    t = lab.txn(first["txn"])
    tx = [e["text"] for e in t["events"]]
    assert tx[0].startswith("Call received from") and "(Jane Tan)" in tx[0], tx
    assert sum(1 for x in tx if x.startswith("Ringing 101 - Alice Lim")) == 1, tx

    # nobody to ring: an inbox with no member
    ib2 = org.inbox("Empty", ring_timeout=20, max_wait=30)
    cid2 = "ccqtest-retry2-%s@127.0.0.1" % org.name
    p0 = route_paths(lab)
    first = route(lab, cid2, ib2.did)
    assert first["action"] == "queue" and first["txn"] > 0, first
    again = route(lab, cid2, ib2.did)
    assert again["action"] == "queue" and again["txn"] == first["txn"], (first, again)
    assert delta(route_paths(lab), p0) == {"claimed": 0, "refused": 0, "no_candidate": 1,
                                           "retried": 1}
    assert lab.txn_ids_for_call(cid2) == [first["txn"]]
    log = lab.log_since("queued", log0)
    assert "MySQL error" not in log, log


def route_paths(lab):
    """queued's count of call.route decisions by path (server.stats)."""
    return lab.ccqctl_json("stats")["route"]


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after}


def uids(lab, org, *exts):
    return {ext: int(lab.sql("SELECT u.id FROM user u JOIN org o ON o.id = u.org_id WHERE "
                             "o.name = '%s' AND u.ext_key = '%s'" % (org.name, ext))[0][0])
            for ext in exts}


def ring_and_end(lab, call_id, did, ext):
    """A decision that rings EXT (the view's first), answered and ended:
    EXT is then the view's last (most recent call)."""
    d = route(lab, call_id, did)
    # (the answer leaves before the TXN's COMMIT: it shows a moment later)
    assert lab.wait_txn_for_call(call_id, 5) == [d["txn"]]
    assert d["action"] == "ring" and lab.txn(d["txn"])["events"][2]["text"].startswith(
        "Ringing %s" % ext), lab.txn(d["txn"])["events"]
    with WireClient(lab.queued_sock) as w:
        for op, args in (("call.answered", {"call_id": call_id, "contact": d["targets"][0]}),
                         ("call.ended", {"call_id": call_id, "by": "caller"})):
            rid, reply = w.request(op, args)
            assert reply[:4] == [1, 1, rid, 0], (op, reply)
    assert lab.txn(d["txn"])["result"] == "answered"


def only_ring(lab, txn, ext, name, uid):
    """TXN rings EXT alone: its journey, its status and its ring row."""
    t = lab.txn(txn)
    rings = [e["text"] for e in t["events"] if e["kind"] == "ringing"]
    assert len(rings) == 1 and rings[0].startswith("Ringing %s - %s" % (ext, name)), t["events"]
    assert len([e for e in t["events"] if e["kind"] == "recording"]) == 1, t["events"]
    assert t["status"] == "Assigning" and t["agent_ext"] == ext, t
    assert lab.sql("SELECT user_id FROM txn_ring WHERE txn_id = %d" % txn) == [[str(uid)]]


def test_a_claim_refused_by_mysql_takes_the_general_path(running_lab, org):
    """queued's view names a member that MySQL no longer lets ring (here
    their max_calls was set to 0 with SQL, behind queued's back, so the
    view still has them free): the claim is refused, the TXN is committed
    Waiting, and the general path rings the other member from MySQL
    (server.stats counts the decision as refused). The journey rings only
    the one who really rang; the refused member's slot is given back."""
    refused_claim(running_lab, org)


def test_a_refused_claim_on_the_connection_of_an_earlier_claim(running_lab, org):
    """The same with one MySQL worker, so that every decision runs on one
    MySQL session, whose variables the batch uses without a SET of its
    own: the refused claim must not leave the earlier decision's member
    (the claim sets the member, or NULL), and a caller who is nobody's
    customer must not get the customer of the call before (the outcome's
    read clears them)."""
    with running_lab.queued_env(CCQ_MYSQL_WORKERS="1", CCQ_DECISION_WORKERS="0") as lab:
        refused_claim(lab, org)
        ib = org.inbox("Support", ring_timeout=20, max_wait=30)
        org.customer("Jane Tan", "+6591234567")
        for who, caller, name in (("known", "+6591234567", "Jane Tan"),
                                  ("stranger", "+6598765432", "")):
            cid = "ccqtest-%s-%s@127.0.0.1" % (who, org.name)
            d = route(lab, cid, ib.did, caller=caller)
            assert lab.wait_txn_for_call(cid, 5) == [d["txn"]]
            t = lab.txn(d["txn"])
            assert (t["customer"] or "") == name, t
            received = t["events"][0]["text"]
            assert received.startswith("Call received from") and \
                ("(Jane Tan)" in received) == bool(name), received


def test_a_claim_refused_for_a_wrapup_the_view_does_not_know(running_lab, org):
    """The claim's wrap-up check reads agent_state (schema 9): a wrap-up
    set there with SQL, behind queued's back (the view still has the agent
    free), refuses the claim, and the general path rings the other member;
    once it is over, the agent is claimed again."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=20, max_wait=30)
    for ext, name in (("101", "Alice Lim"), ("102", "Bob Tan")):
        org.agent(ib, ext, name).register(expires=600)
    uid = uids(lab, org, "101", "102")
    # Alice rings first (lowest id); answered and ended, Bob is the first
    ring_and_end(lab, "ccqtest-wrap1-%s@127.0.0.1" % org.name, ib.did, "101")
    lab.sql("INSERT INTO agent_state (user_id, wrapup_until) VALUES (%d, UTC_TIMESTAMP(3) + "
            "INTERVAL 1 HOUR) ON DUPLICATE KEY UPDATE wrapup_until = VALUES(wrapup_until)"
            % uid["102"])
    p0 = route_paths(lab)
    c2 = "ccqtest-wrap2-%s@127.0.0.1" % org.name
    d2 = route(lab, c2, ib.did)
    assert d2["action"] == "ring", d2
    assert delta(route_paths(lab), p0) == {"claimed": 0, "refused": 1, "no_candidate": 0,
                                           "retried": 0}
    assert lab.wait_txn_for_call(c2, 5) == [d2["txn"]]
    only_ring(lab, d2["txn"], "101", "Alice Lim", uid["101"])
    # the wrap-up over: Bob (never called, his slot given back) is claimed
    lab.sql("UPDATE agent_state SET wrapup_until = NULL WHERE user_id = %d" % uid["102"])
    p0 = route_paths(lab)
    c3 = "ccqtest-wrap3-%s@127.0.0.1" % org.name
    d3 = route(lab, c3, ib.did)
    assert delta(route_paths(lab), p0)["claimed"] == 1, d3
    assert lab.wait_txn_for_call(c3, 5) == [d3["txn"]]
    only_ring(lab, d3["txn"], "102", "Bob Tan", uid["102"])


def refused_claim(lab, org):
    ib = org.inbox("Sales", ring_timeout=20, max_wait=30)
    alice = org.agent(ib, "101", "Alice Lim")
    bob = org.agent(ib, "102", "Bob Tan")
    alice.register(expires=600)
    bob.register(expires=600)
    uid = uids(lab, org, "101", "102")
    # call 1 reads the view (fresh after the registrations) and rings Alice
    # (never called, lowest id); answered and ended, it makes Bob (never
    # called) the view's first
    p0 = route_paths(lab)
    ring_and_end(lab, "ccqtest-refuse1-%s@127.0.0.1" % org.name, ib.did, "101")
    assert delta(route_paths(lab), p0) == {"claimed": 1, "refused": 0, "no_candidate": 0,
                                           "retried": 0}
    # behind queued's back: Bob may take no call
    lab.sql("UPDATE user SET max_calls = 0 WHERE id = %d" % uid["102"])
    log0 = lab.log_size("queued")
    p0 = route_paths(lab)
    try:
        c2 = "ccqtest-refuse2-%s@127.0.0.1" % org.name
        d2 = route(lab, c2, ib.did)
    finally:
        lab.sql("UPDATE user SET max_calls = 2 WHERE id = %d" % uid["102"])
    assert d2["action"] == "ring", d2
    assert delta(route_paths(lab), p0) == {"claimed": 0, "refused": 1, "no_candidate": 0,
                                           "retried": 0}
    assert lab.wait_txn_for_call(c2, 5) == [d2["txn"]]
    only_ring(lab, d2["txn"], "101", "Alice Lim", uid["101"])
    assert "MySQL error" not in lab.log_since("queued", log0)
    # Bob's slot was given back (and the view read again): free once more,
    # never called, he is the next call's first and rings
    c3 = "ccqtest-refuse3-%s@127.0.0.1" % org.name
    d3 = route(lab, c3, ib.did)
    assert d3["action"] == "ring", d3
    assert lab.wait_txn_for_call(c3, 5) == [d3["txn"]]
    only_ring(lab, d3["txn"], "102", "Bob Tan", uid["102"])


def test_an_ending_call_does_not_refuse_its_agents_next_call(running_lab, org):
    """The end of an agent's talked call writes their idle time and wrap-up
    to agent_state, not to the user row a new call's claim locks: a call
    routed to that agent while the end's transaction is still open (held
    here for 3 s by a trigger on agent_state) is claimed at once, not
    refused (before schema 9 the end updated the user row and about 1 % of
    the claims at 160 calls/s found it locked), and the end commits after."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=20, max_wait=30)
    alice = org.agent(ib, "101", "Alice Lim")     # two calls at most
    alice.register(expires=600)
    uid = uids(lab, org, "101")["101"]
    c1 = "ccqtest-ending1-%s@127.0.0.1" % org.name
    d1 = route(lab, c1, ib.did)
    assert d1["action"] == "ring" and lab.wait_txn_for_call(c1, 5) == [d1["txn"]], d1
    with WireClient(lab.queued_sock) as w:
        rid, reply = w.request("call.answered", {"call_id": c1, "contact": d1["targets"][0]})
        assert reply[:4] == [1, 1, rid, 0], reply
    # (an AFTER INSERT trigger: Alice, new, has no agent_state row yet, so
    # her first end inserts one)
    lab.sql("DROP TRIGGER IF EXISTS ccqtest_hold_end")
    lab.sql("DELIMITER //\nCREATE TRIGGER ccqtest_hold_end AFTER INSERT ON agent_state "
            "FOR EACH ROW BEGIN IF NEW.user_id = %d THEN DO SLEEP(3); END IF; END//" % uid)
    ended = {}

    def end():
        with WireClient(lab.queued_sock) as w:
            rid, reply = w.request("call.ended", {"call_id": c1, "by": "caller"})
            ended["reply"] = reply

    t = threading.Thread(target=end)
    try:
        t.start()
        # the end's transaction has written agent_state and sleeps in the
        # trigger, its locks held
        assert wait_until(lambda: lab.sql(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE state = 'User sleep'")
            == [["1"]], 2, 0.02), \
            "the end never reached agent_state: %r" % lab.sql(
                "SELECT state, LEFT(info, 80) FROM information_schema.processlist")
        p0 = route_paths(lab)
        c2 = "ccqtest-ending2-%s@127.0.0.1" % org.name
        t0 = time.monotonic()
        d2 = route(lab, c2, ib.did)
        took = time.monotonic() - t0
        assert d2["action"] == "ring", d2
        assert delta(route_paths(lab), p0) == {"claimed": 1, "refused": 0,
                                               "no_candidate": 0, "retried": 0}
        assert "reply" not in ended and took < 1.0, (took, ended)
        t.join(10)
    finally:
        lab.sql("DROP TRIGGER IF EXISTS ccqtest_hold_end")
        t.join(10)
    assert not t.is_alive() and "reply" in ended, ended
    assert ended["reply"][3] == 0, ended
    assert lab.wait_txn_for_call(c2, 5) == [d2["txn"]]
    only_ring(lab, d2["txn"], "101", "Alice Lim", uid)
    assert lab.txn(d1["txn"])["result"] == "answered"
    assert lab.sql("SELECT last_call_end IS NOT NULL FROM agent_state WHERE user_id = %d"
                   % uid) == [["1"]]
