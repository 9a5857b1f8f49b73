"""Distribution of an inbox's calls to its agents: ring timeout then the
next agent, longest idle first, all devices of the agent in parallel."""

from datetime import datetime

JANE = "+6591234567"


def at(s):
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f")


def events(t, kind):
    return [e for e in t["events"] if e["kind"] == kind]


def test_no_answer_then_next_agent(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=5, max_wait=30)
    # Alice is chosen first (never called, created first); her phone only rings
    alice = org.agent(ib, "101", "Alice Lim")
    bob = org.agent(ib, "102", "Bob Ong")
    alice.register()
    bob.register()
    ringing = alice.ring()
    answering = bob.answer()
    try:
        call = lab.carrier(ib.did, duration_ms=1000, timeout=30)
        assert call.rc == 0, call.summary()
        assert ringing.wait(10) == 0, "Alice's phone did not get its CANCEL:\n" + ringing.summary()
        assert answering.wait(10) == 0, answering.summary()
    finally:
        ringing.stop()
        answering.stop()
    assert ringing.requests()[:1] == ["INVITE"] and "CANCEL" in ringing.requests()
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
    assert t["result"] == "answered" and t["agent_ext"] == "102", t
    texts = [e["text"] for e in t["events"]]
    kinds = [e["kind"] for e in t["events"]]
    ring1 = next(i for i, x in enumerate(texts) if x.startswith("Ringing 101 - Alice Lim"))
    noans = texts.index("No answer from 101 - Alice Lim")
    ring2 = next(i for i, x in enumerate(texts) if x.startswith("Ringing 102 - Bob Ong"))
    ansd = texts.index("Answered by 102 - Bob Ong - desk_phone")
    assert ring1 < noans < ring2 < ansd, texts
    assert kinds[noans] == "no_answer", kinds
    waited = (at(t["events"][noans]["at"]) - at(t["events"][ring1]["at"])).total_seconds()
    assert 4.5 <= waited <= 7, "the ring timeout is 5 s, Alice rang %.1f s" % waited


def test_silent_device_times_out_after_the_ring_timeout(running_lab, org):
    """A registered phone that has gone away (answers nothing, not even
    100/180) must not hold the call longer than the inbox's ring timeout."""
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=5, max_wait=60)
    gone = org.agent(ib, "101", "Alice Lim")
    bob = org.agent(ib, "102", "Bob Ong")
    gone.register()
    bob.register()
    # nothing listens on Alice's port any more
    answering = bob.answer(timeout=60)
    try:
        call = lab.carrier(ib.did, duration_ms=500, timeout=50)
        assert call.rc == 0, call.summary()
    finally:
        answering.stop()
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
    assert t["agent_ext"] == "102", t
    ring1 = events(t, "ringing")[0]
    ans = events(t, "answered")[0]
    took = (at(ans["at"]) - at(ring1["at"])).total_seconds()
    assert took <= 8, ("Bob answered %.1f s after Alice's silent phone started ringing; "
                       "the ring timeout is 5 s" % took)


def test_longest_idle_agent_first(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=5, max_wait=30)
    phones = {"101": org.agent(ib, "101", "Alice Lim"), "102": org.agent(ib, "102", "Bob Ong")}
    for p in phones.values():
        p.register()
    got = []
    for _ in range(3):
        runs = {ext: p.answer(timeout=30) for ext, p in phones.items()}
        try:
            call = lab.carrier(ib.did, duration_ms=500, timeout=20)
            assert call.rc == 0, call.summary()
        finally:
            for r in runs.values():
                r.stop()
        t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
        assert t["result"] == "answered", t
        got.append(t["agent_ext"])
        # the other phone was not rung
        others = [ext for ext, r in runs.items() if r.requests()]
        assert others == [t["agent_ext"]], (others, t["agent_ext"])
    # never-called agents first (Alice, then Bob), then who has been idle longest
    assert got == ["101", "102", "101"], "agents chosen in order %r" % got


def test_all_devices_of_the_agent_ring_in_parallel(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=10, max_wait=30)
    org.user("101", "Alice Lim")
    org.member(ib, "101")
    org.customer("Jane Tan", JANE)
    desk = org.device("101", kind="desk_phone")
    mobile = org.device("101", kind="mobile_app", label="Alice mobile")
    desk.register()
    mobile.register()
    ids = {d["username"]: int(d["id"]) for d in org.json("device", "list")}
    # the desk phone rings on; the mobile app (the second device) answers
    ringing = desk.ring()
    answering = mobile.answer()
    try:
        call = lab.carrier(ib.did, duration_ms=1000, timeout=30)
        assert call.rc == 0, call.summary()
        assert answering.wait(10) == 0, answering.summary()
        assert ringing.wait(10) == 0, "the desk phone got no CANCEL:\n" + ringing.summary()
    finally:
        ringing.stop()
        answering.stop()
    assert ringing.requests()[0] == "INVITE" and "CANCEL" in ringing.requests(), \
        ringing.requests()
    assert answering.requests()[0] == "INVITE"
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
    assert t["result"] == "answered" and t["agent_ext"] == "101", t
    ring = events(t, "ringing")
    assert len(ring) == 1, "one agent, one ringing event: %r" % ring
    assert "desk_phone" in ring[0]["text"] and "mobile_app (Alice mobile)" in ring[0]["text"], ring
    assert events(t, "answered")[0]["text"] == \
        "Answered by 101 - Alice Lim - mobile_app (Alice mobile)", t["events"]
    assert int(t["device_id"]) == ids[mobile.username], (t["device_id"], ids)


def test_many_devices_with_long_labels_all_ring(running_lab, org):
    """queued reads the free agents' devices as one text cut at 512
    characters (ops_call.c, DEVICES_CUT); an agent whose devices do not fit
    (four devices with 100-character labels: about 560) has them read on
    their own: every device still rings, every label is in the journey."""
    lab = running_lab
    ib = org.inbox("Support", ring_timeout=10, max_wait=30)
    org.user("102", "Bob Tan")
    org.member(ib, "102")
    kinds = ("desk_phone", "mobile_app", "desktop_app", "web_phone")
    labels = [("%s " % k.split("_")[0]).ljust(100, "x") for k in kinds]
    devs = [org.device("102", kind=k, label=lb) for k, lb in zip(kinds, labels)]
    for d in devs:
        d.register()
    ringers = [d.ring() for d in devs[:3]]
    answering = devs[3].answer()
    try:
        call = lab.carrier(ib.did, duration_ms=1000, timeout=30)
        assert call.rc == 0, call.summary()
        assert answering.wait(10) == 0, answering.summary()
        for rg in ringers:
            assert rg.wait(10) == 0, "a ringing device got no CANCEL:\n" + rg.summary()
    finally:
        for rg in ringers:
            rg.stop()
        answering.stop()
    for rg in ringers:
        assert rg.requests()[0] == "INVITE" and "CANCEL" in rg.requests(), rg.requests()
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
    assert t["result"] == "answered" and t["agent_ext"] == "102", t
    ring = events(t, "ringing")
    assert len(ring) == 1, ring
    for k, lb in zip(kinds, labels):
        assert "%s (%s)" % (k, lb) in ring[0]["text"], (k, ring)
