"""A real softphone as the agent: baresip registers with digest
authentication and auto-answers the carrier's call."""

from ccqlab import Baresip, wait_until

JANE = "+6591234567"


def test_baresip_agent_registers_and_answers(running_lab, org):
    lab = running_lab
    ib = org.inbox("Support", ring_timeout=10, max_wait=20)
    org.user("105", "Bea Baresip")
    org.member(ib, "105")
    org.customer("Jane Tan", JANE)
    phone = org.device("105", kind="desktop_app", label="baresip")
    bs = Baresip(phone).start()
    try:
        assert wait_until(lambda: phone.registered() == 1, 10), \
            "baresip did not register:\n" + bs.log()[-3000:]
        call = lab.carrier(ib.did, duration_ms=2000, timeout=20)
        assert call.rc == 0, call.summary() + "\n--- baresip:\n" + bs.log()[-3000:]
        assert wait_until(lambda: "terminated" in bs.log(), 5), bs.log()[-3000:]
    finally:
        bs.stop()
    assert "Call established" in bs.log(), bs.log()[-3000:]
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended")
    assert t["result"] == "answered" and t["agent_ext"] == "105", t
    answered = [e["text"] for e in t["events"] if e["kind"] == "answered"]
    assert answered == ["Answered by 105 - Bea Baresip - desktop_app (baresip)"], t["events"]
    assert 1 <= int(t["talking_seconds"]) <= 3, t
