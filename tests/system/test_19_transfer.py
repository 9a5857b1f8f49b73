"""A blind transfer by the agent (REFER): the TXN shows Transferring, then
the new assignee (issue 3, item 5).

The agent's phone (tests/scenarios/transfer_agent.xml) answers an inbox call
and sends an in-dialog REFER (Refer-To: the colleague's extension at the
proxy) on the record-routed path to the carrier; the carrier
(tests/scenarios/transfer_carrier.xml) accepts it (202), NOTIFYs and writes
the Refer-To URI to a file. That file is the cue for the carrier's new call
to the target: sipp cannot open a second dialog, so the test places it, with
carrier_uac.xml, from another trunk of the same carrier (the first sipp
holds the first trunk's port), with the same caller ID and a new Call-ID.
queued attaches that call to the Transferring TXN as its new leg and rings
the target's phone.
"""

import os
import uuid

import pytest

from ccqlab import wait_until

JANE = "+6591234567"            # the caller ID both carrier scenarios send


def texts(t):
    return [e["text"] for e in t["events"]]


def kinds(t):
    return [e["kind"] for e in t["events"]]


def index_of(t, pred, what):
    for i, x in enumerate(texts(t)):
        if pred(x):
            return i
    raise AssertionError("the journey has no %s: %r" % (what, texts(t)))


def directory(org, inbox_ring_timeout=10):
    """Inbox Sales with one member, Alice (101); Bob (102, not a member: a
    colleague the agent may transfer to) with a desk phone; the customer."""
    ib = org.inbox("Sales", ring_timeout=inbox_ring_timeout, max_wait=30)
    alice = org.agent(ib, "101", "Alice Lim")
    org.user("102", "Bob Ong")
    bob = org.device("102")
    org.customer("Jane Tan", JANE)
    # the owner (with the add-on) sees every TXN of the organisation
    org.user("100", "Olivia Owner", role="owner", addon=True)
    alice.register()
    return ib, alice, bob


class Transfer:
    """The first call: the carrier calls the DID, Alice answers and
    REFERs the call to sip:TARGET@proxy; she hangs up her leg HANGUP_MS
    after the carrier's NOTIFY."""

    def __init__(self, lab, ib, alice, target, hangup_ms=0, timeout=40):
        self.lab = lab
        self.target_uri = "sip:%s@%s" % (target, lab.sip_addr)
        self.refer_file = os.path.join(lab.sipp_dir, "refer-%s" % uuid.uuid4().hex[:10])
        self.agent = lab.sipp("transfer_agent.xml", alice.port, "-key", "refer_target",
                              self.target_uri, "-d", str(hangup_ms), timeout=timeout,
                              background=True, name="xfer-agent-%s" % alice.username)
        try:
            self.carrier = lab.carrier(ib.did, scenario="transfer_carrier.xml", background=True,
                                       timeout=timeout, extra=("-key", "refer_file",
                                                               self.refer_file))
        except BaseException:
            self.agent.stop()
            raise
        self.call_id = self.carrier.call_id

    def referred_to(self, timeout=10):
        """The Refer-To URI the carrier received (once it has accepted the REFER)."""
        ok = wait_until(lambda: os.path.exists(self.refer_file), timeout, interval=0.05)
        assert ok, "the carrier got no REFER in %ds\n--- agent:\n%s\n--- carrier:\n%s" % (
            timeout, self.agent.summary(), self.carrier.summary())
        with open(self.refer_file) as f:
            return f.read().strip()

    def new_call(self, target, duration_ms, background=False, timeout=30):
        """The carrier's call to the transfer target: a new Call-ID, the
        same caller, from the carrier's second trunk."""
        return self.lab.carrier(target, trunk=1, duration_ms=duration_ms,
                                background=background, timeout=timeout)

    def stop(self):
        self.agent.stop()
        self.carrier.stop()


def txn_of(lab, call_id):
    ids = lab.wait_txn_for_call(call_id)
    assert len(ids) == 1, "call %s: TXNs %r" % (call_id, ids)
    return ids[0]


def wait_txn(lab, txn_id, pred, timeout=10):
    last = [None]

    def check():
        last[0] = lab.txn(txn_id)
        return pred(last[0])
    wait_until(check, timeout)
    return last[0]


def legs(lab, txn_id):
    return dict(lab.sql("SELECT call_id, kind FROM txn_leg WHERE txn_id = %d" % txn_id))


def referred_and_left(lab, xfer):
    """The REFER makes the TXN Transferring (Alice's leg may still be up);
    then Alice's leg ends (her BYE through the proxy) and the TXN lives on.
    Returns the TXN's id."""
    assert xfer.referred_to() == xfer.target_uri
    txn = txn_of(lab, xfer.call_id)
    t = wait_txn(lab, txn, lambda t: t["status"] == "Transferring", 5)
    assert t["status"] == "Transferring", t
    assert xfer.agent.wait(15) == 0, xfer.agent.summary()
    assert xfer.carrier.wait(15) == 0, xfer.carrier.summary()
    t = wait_txn(lab, txn, lambda t: "The transferring agent left the call" in texts(t), 5)
    assert "The transferring agent left the call" in texts(t), texts(t)
    assert t["status"] == "Transferring" and not t["ended_at"], t
    assert "ended" not in kinds(t), texts(t)
    return txn


def check_transferred_journey(t, leg_text):
    """Alice answered, the transfer to Bob, Bob rang and answered; the old
    leg's end did not end the TXN; the new leg's BYE ended it."""
    k, x = kinds(t), texts(t)
    a1 = x.index("Answered by 101 - Alice Lim - desk_phone")
    tr = x.index("Transferring to 102 - Bob Ong")
    rg = index_of(t, lambda s: s.startswith("Ringing 102 - Bob Ong - desk_phone")
                  and s.endswith("(transfer)"), "ringing of Bob's phone (transfer)")
    a2 = x.index("Answered by 102 - Bob Ong - desk_phone")
    left = x.index(leg_text)
    assert k[tr] == "transferring", k
    assert k[left] == "leg_ended", k
    assert a1 < tr < rg < a2, x
    assert tr < left, x
    # one end only, the last event, and only after Bob had answered
    assert k.count("ended") == 1 and k[-1] == "ended", x
    assert x[-1] == "Call ended by the caller", x
    assert a2 < len(x) - 1 and left < len(x) - 1, x
    ats = [e["at"] for e in t["events"]]
    assert ats == sorted(ats), ats
    assert t["status"] == "Ended" and t["result"] == "answered", t
    assert t["agent_ext"] == "102" and t["agent_name"] == "Bob Ong", t
    assert t["customer"] == "Jane Tan" and t["number"] == JANE and t["inbox"] == "Sales", t


def check_one_txn(lab, org, txn_id, first_cid, second_cid):
    """Both calls are legs of one TXN; the second created none of its own."""
    items = org.json("txn", "list", as_="100")
    assert [int(i["id"]) for i in items] == [txn_id], items
    assert lab.txn_ids_for_call(second_cid) == [], "the new call got a TXN of its own"
    assert legs(lab, txn_id) == {first_cid: "first", second_cid: "transfer"}, legs(lab, txn_id)


def test_blind_transfer_after_the_agent_left(running_lab, org):
    """The usual blind transfer: Alice hangs up as soon as the carrier has
    accepted the REFER; the carrier's call to Bob comes after her leg ended."""
    lab = running_lab
    ib, alice, bob = directory(org)
    bob.register()
    watch = org.watch("100", secs=40, count=5)
    xfer = Transfer(lab, ib, alice, "102", hangup_ms=0)
    answering = bob.answer(timeout=40)
    done = False
    try:
        txn = referred_and_left(lab, xfer)
        # the carrier calls the Refer-To target: Bob's phone rings and answers
        call = xfer.new_call("102", duration_ms=2000)
        assert call.rc == 0, call.summary()
        assert answering.wait(15) == 0, answering.summary()
        done = True
    finally:
        xfer.stop()
        answering.stop()
        if not done:
            watch.stop()

    # the REFER travelled agent -> proxy -> carrier, in the dialog
    refer = xfer.carrier.received("REFER ")
    assert len(refer) >= 1, xfer.carrier.summary()
    assert "Refer-To: <%s>" % xfer.target_uri in refer[0], refer[0]
    assert "Call-ID: %s" % xfer.call_id in refer[0], refer[0]
    assert "REFER sip:+6591234567@" in refer[0], refer[0]
    vias = [l for l in refer[0].splitlines() if l.startswith("Via:")]
    assert len(vias) == 2 and lab.sip_addr in vias[0], vias
    assert xfer.agent.responses()[:1] == [202], xfer.agent.responses()
    assert "NOTIFY" in xfer.agent.requests() and "BYE" in xfer.carrier.requests()
    # Bob's phone got the new call (its own Call-ID) from the carrier's trunk
    assert call.final() == 200 and 180 in call.responses(), call.responses()
    assert answering.received("INVITE ")[0].count("Call-ID: %s" % call.call_id) == 1

    t = wait_txn(lab, txn, lambda t: t["status"] == "Ended")
    check_transferred_journey(t, "The transferring agent left the call")
    check_one_txn(lab, org, txn, xfer.call_id, call.call_id)
    # Alice is idle from when her leg left (no wrap-up for a leg she passed
    # on); Bob, who talked, from the end of the call
    assert org.agent_state("101") == ["1", "0"], org.agent_state("101")
    assert org.agent_state("102") is not None and org.agent_state("102")[0] == "1"
    dev = {d["username"]: int(d["id"]) for d in org.json("device", "list")}
    assert int(t["device_id"]) == dev[bob.username], (t["device_id"], dev)
    # the readable timeline
    out = lab.ccqctl("txn", "show", str(txn)).stdout
    for want in ("Answered by 101 - Alice Lim - desk_phone", "Transferring to 102 - Bob Ong",
                 "(transfer)", "Answered by 102 - Bob Ong - desk_phone"):
        assert want in out, "timeline lacks %r:\n%s" % (want, out)

    # the owner was told of the transfer, as of the rest of the call
    evs = watch.events()
    names = [e["event"] for e in evs]
    assert names == ["call.incoming", "call.answered", "call.transferring", "call.answered",
                     "call.ended"], names
    tr = evs[2]["data"]
    assert int(tr["txn"]) == txn and "Transferring to 102 - Bob Ong" in tr["text"], tr


def test_blind_transfer_answered_before_the_agent_left(running_lab, org):
    """The carrier's call to Bob is answered while Alice's leg is still up;
    her BYE afterwards ends only her leg, the caller's BYE ends the TXN."""
    lab = running_lab
    ib, alice, bob = directory(org)
    bob.register()
    xfer = Transfer(lab, ib, alice, "102", hangup_ms=5000)
    answering = bob.answer(timeout=40)
    call = None
    try:
        assert xfer.referred_to() == xfer.target_uri
        txn = txn_of(lab, xfer.call_id)
        t = wait_txn(lab, txn, lambda t: t["status"] == "Transferring", 5)
        assert t["status"] == "Transferring", t
        call = xfer.new_call("102", duration_ms=8000, background=True)
        # Bob has the call while Alice's leg is still up
        t = wait_txn(lab, txn, lambda t: t["status"] == "Assigned"
                     and t["agent_ext"] == "102", 8)
        assert t["status"] == "Assigned" and t["agent_ext"] == "102", t
        assert xfer.agent.running(), "Alice's phone left before Bob answered:\n" + \
            xfer.agent.summary()
        cur = org.json("me", as_="102")["calls"]
        assert [(int(c["txn"]), c["status"]) for c in cur] == [(txn, "Assigned")], cur
        # Alice hangs up her leg: the TXN stays with Bob
        assert xfer.agent.wait(15) == 0, xfer.agent.summary()
        assert xfer.carrier.wait(15) == 0, xfer.carrier.summary()
        t = wait_txn(lab, txn, lambda t: "Previous leg ended" in texts(t), 5)
        assert "Previous leg ended" in texts(t), texts(t)
        assert t["status"] == "Assigned" and t["agent_ext"] == "102", t
        assert "ended" not in kinds(t), texts(t)
        assert call.running(), "the call to Bob ended with Alice's leg:\n" + call.summary()
        assert org.json("me", as_="101")["calls"] == [], org.json("me", as_="101")
        # the caller hangs up on Bob
        assert call.wait(20) == 0, call.summary()
        assert answering.wait(15) == 0, answering.summary()
    finally:
        xfer.stop()
        answering.stop()
        if call is not None:
            call.stop()
    t = wait_txn(lab, txn, lambda t: t["status"] == "Ended")
    check_transferred_journey(t, "Previous leg ended")
    check_one_txn(lab, org, txn, xfer.call_id, call.call_id)


def test_blind_transfer_across_a_queued_restart(running_lab, org):
    """queued restarts between the REFER and the carrier's call to the
    target: the transfer window (which tells a trunk's new call apart from
    an ordinary one) is read back from MySQL, so the call to Bob is still
    the TXN's transfer leg, not a call to an unknown number."""
    lab = running_lab
    ib, alice, bob = directory(org)
    bob.register()
    xfer = Transfer(lab, ib, alice, "102", hangup_ms=0)
    answering = bob.answer(timeout=60)
    call = None
    try:
        txn = referred_and_left(lab, xfer)
        lab.restart_queued()
        call = xfer.new_call("102", duration_ms=2000)
        assert call.rc == 0, call.summary()
        assert answering.wait(15) == 0, answering.summary()
    finally:
        xfer.stop()
        answering.stop()
    assert call.final() == 200 and 180 in call.responses(), call.responses()
    t = wait_txn(lab, txn, lambda t: t["status"] == "Ended")
    check_transferred_journey(t, "The transferring agent left the call")
    check_one_txn(lab, org, txn, xfer.call_id, call.call_id)


def test_transfer_to_an_extension_without_a_registered_device(running_lab, org):
    """Refer-To names Carol, who has a phone that is not registered: the
    carrier's new call gets 480 and the journey says why."""
    lab = running_lab
    ib, alice, bob = directory(org)
    org.user("103", "Carol Tay")
    carol = org.device("103")           # provisioned, never registered
    assert carol.registered() == 0
    xfer = Transfer(lab, ib, alice, "103", hangup_ms=0)
    try:
        assert xfer.referred_to() == "sip:103@%s" % lab.sip_addr
        txn = txn_of(lab, xfer.call_id)
        t = wait_txn(lab, txn, lambda t: t["status"] == "Transferring", 5)
        assert t["status"] == "Transferring", t
        assert "Transferring to 103 - Carol Tay" in texts(t), texts(t)
        assert xfer.agent.wait(15) == 0, xfer.agent.summary()
        assert xfer.carrier.wait(15) == 0, xfer.carrier.summary()
        call = xfer.new_call("103", duration_ms=500, timeout=20)
    finally:
        xfer.stop()
    assert call.final() == 480, "the call to 103: %r\n%s" % (call.responses(), call.summary())
    t = wait_txn(lab, txn, lambda t: "Transfer target has no registered device" in texts(t), 5)
    x = texts(t)
    assert "Transfer target has no registered device" in x, x
    assert kinds(t)[x.index("Transfer target has no registered device")] == "transfer_failed"
    assert x.index("Transferring to 103 - Carol Tay") < \
        x.index("Transfer target has no registered device"), x
    assert not any(s.startswith("Ringing 103") for s in x), x
    assert t["agent_ext"] == "101", "the failed transfer changed the agent: %r" % (t,)
    assert [int(i["id"]) for i in org.json("txn", "list", as_="100")] == [txn]
    assert lab.txn_ids_for_call(call.call_id) == []
    # Alice had left and the transfer failed: nobody is on the call any more,
    # the TXN must not stay open
    t = wait_txn(lab, txn, lambda t: t["status"] == "Ended")
    assert t["status"] == "Ended" and t["result"] == "answered", t
    assert kinds(t).count("ended") == 1 and kinds(t)[-1] == "ended", texts(t)



def test_failed_transfer_leaves_the_call_with_the_agent(running_lab, org):
    """Alice stays on the line while the carrier tries the transfer target;
    the target has no registered device (480): the call is still Alice's,
    and it ends when her leg ends."""
    lab = running_lab
    ib, alice, bob = directory(org)
    org.user("103", "Carol Tay")
    org.device("103")                   # provisioned, never registered
    xfer = Transfer(lab, ib, alice, "103", hangup_ms=6000)
    try:
        assert xfer.referred_to() == "sip:103@%s" % lab.sip_addr
        txn = txn_of(lab, xfer.call_id)
        t = wait_txn(lab, txn, lambda t: t["status"] == "Transferring", 5)
        assert t["status"] == "Transferring", t
        call = xfer.new_call("103", duration_ms=500, timeout=20)
        assert call.final() == 480, call.responses()
        assert xfer.agent.running(), "Alice's leg ended early:\n" + xfer.agent.summary()
        # the failed transfer leaves the TXN with Alice (give the proxy's
        # report of the 480 time to arrive: the TXN must not end)
        t = wait_txn(lab, txn, lambda t: t["status"] == "Ended", 2)
        assert "Transfer target has no registered device" in texts(t), texts(t)
        assert t["status"] == "Assigned" and t["agent_ext"] == "101", (t["status"], texts(t))
        assert xfer.agent.running(), "Alice's leg ended early:\n" + xfer.agent.summary()
        # Alice hangs up: that ends the call
        assert xfer.agent.wait(15) == 0, xfer.agent.summary()
        assert xfer.carrier.wait(15) == 0, xfer.carrier.summary()
    finally:
        xfer.stop()
    t = wait_txn(lab, txn, lambda t: t["status"] == "Ended")
    assert t["status"] == "Ended" and t["result"] == "answered", t
    assert texts(t)[-1] == "Call ended by the agent", texts(t)
    assert t["agent_ext"] == "101", t
