"""A carrier call to an inbox DID: TXN, notifications, pick-up by a
registered agent, the agent's current-call view and the call journey."""

import re
import time

from ccqlab import new_did, wait_until

JANE = "+6591234567"            # the caller ID the carrier scenarios send


def inbox_with_agent(org, ext="101", name="Alice Lim", inbox="Sales", **kw):
    ib = org.inbox(inbox, **kw)
    phone = org.agent(ib, ext, name)
    phone.register()
    org.customer("Jane Tan", JANE)
    return ib, phone


def kinds(txn):
    return [e["kind"] for e in txn["events"]]


def texts(txn):
    return [e["text"] for e in txn["events"]]


def test_unknown_did_gets_404_and_no_txn(running_lab, org):
    lab = running_lab
    lab.trunk_port(0)
    before = lab.txn_count()
    off = lab.log_size("queued")
    for did in (new_did(), new_did()[1:], "not-a-number"):
        run = lab.carrier(did, scenario="carrier_reject.xml", timeout=15)
        assert run.rc == 0, run.summary()
        assert run.final() == 404, "DID %s: expected 404, got %r" % (did, run.responses())
        assert "Unknown number" in run.received("SIP/2.0 404")[0]
    assert lab.txn_count() == before, "a call to an unowned DID created a TXN"
    assert wait_until(lambda: "no inbox has this DID" in lab.log_since("queued", off), 5), \
        "queued did not log the unknown DID:\n" + lab.log_since("queued", off)[-2000:]


def test_answered_call_and_its_journey(running_lab, org):
    lab = running_lab
    ib, phone = inbox_with_agent(org)
    ans = phone.answer()
    try:
        # the carrier sends the DID without '+' (E.164 digits)
        call = lab.carrier(ib.did.lstrip("+"), duration_ms=3000, timeout=30)
        assert call.rc == 0, call.summary()
        assert ans.wait(15) == 0, ans.summary()
    finally:
        ans.stop()
    assert 180 in call.responses() and call.final() == 200, call.responses()
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
    assert t and t["status"] == "Ended", t
    assert t["result"] == "answered", t
    assert t["agent_ext"] == "101" and t["agent_name"] == "Alice Lim", t
    assert t["inbox"] == "Sales" and t["customer"] == "Jane Tan", t
    assert t["number"] == JANE, t
    assert t["answered_at"] and t["ended_at"], t
    assert t["talking_seconds"] is not None and 2 <= int(t["talking_seconds"]) <= 4, t
    assert t["type"] == "direct" and t["direction"] == "inbound", t

    k = kinds(t)
    order = ["received", "routed", "ringing", "answered", "ended"]
    assert [x for x in k if x in order] == order, "journey kinds out of order: %r" % k
    tx = dict(zip(k, texts(t)))
    assert "+65 9123 4567" in tx["received"] and "Jane Tan" in tx["received"], tx
    assert tx["routed"] == "Call routed to Inbox [Sales]", tx
    assert tx["ringing"].startswith("Ringing 101 - Alice Lim"), tx
    assert tx["answered"] == "Answered by 101 - Alice Lim - desk_phone", tx
    assert "ended" in tx["ended"].lower(), tx
    ats = [e["at"] for e in t["events"]]
    assert ats == sorted(ats), ats
    # the device is recorded
    dev = org.json("device", "list")[0]
    assert int(t["device_id"]) == int(dev["id"]), (t, dev)

    # the readable timeline
    r = lab.ccqctl("txn", "show", str(t["id"]))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"^Result\s+answered$", out, re.M), out
    assert re.search(r"^Talking Duration\s+0:00:0[234]$", out, re.M), out
    assert re.search(r"^Agent\s+101 - Alice Lim$", out, re.M), out
    lines = [l for l in out.splitlines() if re.match(r"\s+\d{4}-\d\d-\d\d ", l)]
    for want in ("Call received from +65 9123 4567 (Jane Tan)", "Call routed to Inbox [Sales]",
                 "Ringing 101 - Alice Lim", "Answered by 101 - Alice Lim - desk_phone"):
        assert any(want in l for l in lines), "timeline lacks %r:\n%s" % (want, out)


def test_watch_notifies_members_of_the_inbox_only(running_lab, org):
    lab = running_lab
    ib, phone = inbox_with_agent(org)
    other = org.inbox("Billing")
    org.user("102", "Bob Ong")
    org.member(other, "102")
    org.user("100", "Olivia Owner", role="owner", addon=True)
    from ccqlab import Org
    stranger = Org(lab, prefix="stranger")
    stranger.user("100", "Sam Stranger", role="owner", addon=True)

    w_member = org.watch("101", secs=12, count=3)
    w_owner = org.watch("100", secs=12, count=3)
    w_other = org.watch("102", secs=8)
    w_stranger = stranger.watch("100", secs=8)
    ans = phone.answer()
    try:
        call = lab.carrier(ib.did, duration_ms=1500)
        assert call.rc == 0, call.summary()
        ans.wait(15)
    finally:
        ans.stop()
    txn = lab.wait_txn_for_call(call.call_id)[0]
    want = "incoming call in inbox Sales from +65 9123 4567 (Jane Tan)"
    for who, w in (("member 101", w_member), ("owner with add-on", w_owner)):
        evs = w.events()
        names = [e["event"] for e in evs]
        assert names[:1] == ["call.incoming"], "%s got %r" % (who, evs)
        inc = evs[0]["data"]
        assert inc["text"] == want, inc
        assert int(inc["txn"]) == txn and inc["inbox"] == "Sales", inc
        assert inc["number"] == JANE and inc["customer"] == "Jane Tan", inc
        assert "call.answered" in names and "call.ended" in names, "%s got %r" % (who, names)
        assert all(int(e["data"]["txn"]) == txn for e in evs), evs
    assert w_other.events() == [], "a member of another inbox was notified"
    assert w_stranger.events() == [], "another organisation was notified"


def test_me_shows_the_current_call_while_it_is_up(running_lab, org):
    lab = running_lab
    ib, phone = inbox_with_agent(org)
    me = org.json("me", as_="101")
    assert me["ext"] == "101" and me["calls"] == [], me
    ans = phone.answer()
    try:
        call = lab.carrier(ib.did, duration_ms=4000, background=True)
        seen = wait_until(lambda: [c for c in org.json("me", as_="101")["calls"]
                                   if c["status"] == "Assigned"], 8, interval=0.2)
        assert seen, "`me` never showed the call: %r" % org.json("me", as_="101")
        cur = seen[0]
        txn = lab.wait_txn_for_call(call.call_id)[0]
        assert int(cur["txn"]) == txn, cur
        assert cur["customer"] == "Jane Tan" and cur["number"] == JANE, cur
        assert cur["inbox"] == "Sales" and cur["device"] == "desk_phone", cur
        assert cur["since"], cur
        # the readable form
        r = org.ctl("me", as_="101")
        assert "TXN %d" % txn in r.stdout and "Jane Tan" in r.stdout, r.stdout
        # the inbox's TXN list shows it assigned at once
        items = org.json("txn", "list", "--inbox", str(ib.id), as_="101")
        assert [(int(i["id"]), i["status"], i["agent_ext"]) for i in items] == \
            [(txn, "Assigned", "101")], items
        assert call.wait() == 0, call.summary()
    finally:
        ans.stop()
    assert wait_until(lambda: org.json("me", as_="101")["calls"] == [], 5), \
        "`me` still shows the call after it ended"
    # someone else's view is empty
    org.user("102", "Bob Ong")
    assert org.json("me", as_="102")["calls"] == []
