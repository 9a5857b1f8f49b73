"""Nobody available: the caller waits in the inbox queue (183 Queued with
hold music from rtpengine as early media; 182 Queued without music) in
arrival order until an agent is free or the inbox's maximum wait passes
(480, missed-call flow); a caller who hangs up ends the TXN as abandoned."""

import re
import time
from datetime import datetime

from ccqlab import RtpCapture, audible, wait_until

JANE = "+6591234567"


def at(s):
    return datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f")


def kinds(t):
    return [e["kind"] for e in t["events"]]


def wait_status(lab, call_id, status, timeout=8):
    t = lab.wait_txn_state(call_id, lambda t: t["status"] == status, timeout)
    assert t and t["status"] == status, "TXN of %s: wanted %s, got %r" % (call_id, status, t)
    return t


def assert_queued_reply(lab, call):
    """The caller was told it waits in a queue: 182 Queued, or with hold
    music 183 with rtpengine's SDP, and rtpengine was asked to play it."""
    code = lab.queued_code()
    codes = call.responses()
    assert code in codes, "no %d for a queued call: %r" % (code, codes)
    reply = call.received("SIP/2.0 %d" % code)[0]
    assert re.search(r"^SIP/2\.0 %d Queued" % code, reply, re.M), reply
    if code == 183:
        m = re.search(r"^m=audio (\d+) RTP/AVP", reply, re.M)
        assert m and re.search(r"^c=IN IP4 127\.0\.0\.1", reply, re.M), reply
        lo, hi = lab.rtp_range
        assert lo <= int(m.group(1)) <= hi, "the early media is not rtpengine's: " + reply
        log = lab.log_since("rtpengine")
        assert re.search(r"\[%s\]: \[control\] Replying to 'play media'" % re.escape(call.call_id),
                         log), "rtpengine was not asked to play the hold music for " + call.call_id
    return codes.index(code)


def assert_hold_released(lab, call):
    """After a queued call ends without an agent, rtpengine stops playing
    to the caller: the hold session is deleted, not left to time out."""
    if lab.queued_code() != 183:
        return
    rx = re.compile(r"\[%s\]: \[control\] Received command 'delete'" % re.escape(call.call_id))
    assert wait_until(lambda: rx.search(lab.log_since("rtpengine")), 3), (
        "the hold music session of %s was not deleted in rtpengine (it keeps streaming to "
        "the caller until rtpengine's own timeout)" % call.call_id)


def waiting(org, inbox):
    return int([i for i in org.json("inbox", "list") if i["name"] == inbox.name][0]["waiting"])


def test_queued_caller_gets_agent_who_registers(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=5, max_wait=20)
    phone = org.agent(ib, "101", "Alice Lim")          # not registered yet
    org.customer("Jane Tan", JANE)
    call = lab.carrier(ib.did, duration_ms=1000, timeout=30, background=True)
    try:
        t = wait_status(lab, call.call_id, "Waiting")
        assert wait_until(lambda: "queued" in kinds(lab.txn(t["id"])), 5), lab.txn(t["id"])
        assert waiting(org, ib) == 1
        time.sleep(1.5)                # still waiting: nobody can take it
        assert lab.txn(t["id"])["status"] == "Waiting"
        phone.register()
        ans = phone.answer(timeout=20)
        try:
            assert call.wait() == 0, call.summary()
            assert ans.wait(10) == 0, ans.summary()
        finally:
            ans.stop()
    finally:
        call.stop()
    codes = call.responses()
    assert assert_queued_reply(lab, call) < codes.index(200), codes
    t = wait_status(lab, call.call_id, "Ended")
    assert t["result"] == "answered" and t["agent_ext"] == "101", t
    k = kinds(t)
    order = ["received", "routed", "queued", "ringing", "answered", "ended"]
    assert [x for x in k if x in order] == order, k
    assert waiting(org, ib) == 0


def test_queued_callers_are_served_in_arrival_order(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=5, max_wait=30)
    org.user("101", "Alice Lim", max_calls=1)
    org.member(ib, "101")
    phone = org.device("101")
    first = lab.carrier(ib.did, trunk=0, duration_ms=1500, timeout=40, background=True)
    second = None
    try:
        t1 = wait_status(lab, first.call_id, "Waiting")
        second = lab.carrier(ib.did, trunk=1, duration_ms=500, timeout=40, background=True)
        t2 = wait_status(lab, second.call_id, "Waiting")
        assert wait_until(lambda: waiting(org, ib) == 2, 5)
        phone.register()
        ans = lab.sipp("agent_uas.xml", phone.port, "-m", "2", timeout=40, background=True,
                       name="answer-twice")
        try:
            assert first.wait() == 0, first.summary()
            assert second.wait() == 0, second.summary()
            ans.wait(10)
        finally:
            ans.stop()
    finally:
        first.stop()
        if second:
            second.stop()
    t1 = wait_status(lab, first.call_id, "Ended")
    t2 = wait_status(lab, second.call_id, "Ended")
    assert t1["result"] == t2["result"] == "answered", (t1, t2)
    # the first caller got Alice first; the second only after that call ended
    assert at(t1["answered_at"]) < at(t2["answered_at"]), (t1["answered_at"], t2["answered_at"])
    assert at(t2["answered_at"]) >= at(t1["ended_at"]), (t1["ended_at"], t2["answered_at"])


def test_max_wait_ends_in_missed_call_flow(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=5, max_wait=3)
    org.agent(ib, "101", "Alice Lim")                  # never registers
    org.customer("Jane Tan", JANE)
    watch = org.watch("101", secs=12, count=2)
    call = lab.carrier(ib.did, scenario="carrier_reject.xml", timeout=20)
    assert call.rc == 0, call.summary()
    assert_queued_reply(lab, call)
    assert call.final() == 480, call.responses()
    assert 2.5 <= call.elapsed() <= 7, "480 after %.1f s; max_wait is 3 s" % call.elapsed()
    t = wait_status(lab, call.call_id, "Ended")
    assert t["result"] == "missed", t
    k = kinds(t)
    assert k.index("queued") < k.index("missed"), k
    evs = watch.events()
    names = [e["event"] for e in evs]
    assert names == ["call.incoming", "call.missed"], evs
    missed = evs[1]["data"]
    assert int(missed["txn"]) == int(t["id"]), missed
    assert "missed call in inbox Sales from +65 9123 4567" in missed["text"], missed
    assert waiting(org, ib) == 0
    assert_hold_released(lab, call)


def test_max_wait_zero_is_missed_at_once(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", max_wait=0)
    org.agent(ib, "101", "Alice Lim")
    call = lab.carrier(ib.did, scenario="carrier_reject.xml", timeout=15)
    assert call.final() == 480, call.responses()
    assert not {182, 183} & set(call.responses()), "max_wait 0 but queued: %r" % call.responses()
    assert call.elapsed() < 2.5, call.elapsed()
    assert wait_status(lab, call.call_id, "Ended")["result"] == "missed"


def test_caller_hangs_up_while_waiting(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=5, max_wait=30)
    phone = org.agent(ib, "101", "Alice Lim")
    call = lab.carrier(ib.did, scenario="carrier_cancel.xml", duration_ms=1500, timeout=20)
    assert call.rc == 0, "the CANCEL was not answered with 200 + 487:\n" + call.summary()
    assert_queued_reply(lab, call)
    assert 487 in call.responses(), call.responses()
    t = wait_status(lab, call.call_id, "Ended")
    assert t["result"] == "abandoned", t
    assert t["events"][-1]["text"] == "Caller hung up while waiting", t["events"]
    assert waiting(org, ib) == 0
    assert_hold_released(lab, call)
    # the call left the queue: an agent who becomes free now is not rung
    phone.register()
    ans = phone.answer(timeout=10)
    try:
        time.sleep(3)
        assert ans.requests() == [], "a cancelled call was dispatched: %r" % ans.requests()
    finally:
        ans.stop()


def test_caller_hangs_up_while_ringing(running_lab, org):
    lab = running_lab
    ib = org.inbox("Sales", ring_timeout=10, max_wait=30)
    phone = org.agent(ib, "101", "Alice Lim")
    phone.register()
    ring = phone.ring()
    try:
        call = lab.carrier(ib.did, scenario="carrier_cancel.xml", duration_ms=1000, timeout=20)
        assert call.rc == 0, call.summary()
        assert ring.wait(10) == 0, "the agent's phone got no CANCEL:\n" + ring.summary()
    finally:
        ring.stop()
    assert "\nVia: " in call.received("SIP/2.0 487")[0], call.received("SIP/2.0 487")[0]
    t = wait_status(lab, call.call_id, "Ended")
    assert t["result"] == "abandoned", t
    assert t["events"][-1]["text"] == "Caller hung up while ringing", t["events"]
    # Alice is free again: no call left on her
    assert org.json("me", as_="101")["calls"] == []


def test_queued_caller_hears_the_hold_music(running_lab, org):
    """The music is not just announced: while the caller waits, rtpengine
    sends RTP with sound (not codec silence) to the caller's media port."""
    lab = running_lab
    assert lab.queued_code() == 183, "the lab has no hold music (%s)" % lab.hold_music
    ib = org.inbox("Sales", ring_timeout=5, max_wait=4)
    org.agent(ib, "101", "Alice Lim")                  # never registers
    lo, hi = lab.rtp_range
    cap = RtpCapture((1024, 65535), (lo, hi), secs=20)
    try:
        call = lab.carrier(ib.did, scenario="carrier_reject.xml", timeout=20)
    finally:
        packets = cap.stop()
    assert call.rc == 0, call.summary()
    assert call.final() == 480, call.responses()
    heard = [p for p in packets if audible(p[3])]
    # 20 ms packets for about 4 s of waiting
    assert len(heard) >= 100, "only %d RTP packets with sound (of %d) reached the caller while " \
        "it waited" % (len(heard), len(packets))
