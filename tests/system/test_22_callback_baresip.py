"""A callback with a real softphone as the agent's phone (issue 4): baresip
(tests/baresip) registers, auto-answers the system's call, hears the prompt
and follows the REFER by calling the customer, a sipp UAS on the lab's
trunk address.

That the prompt reached the phone is measured on the wire, not taken from
the journey: a raw packet socket on loopback (ccqlab.RtpCapture, root)
counts the RTP packets that rtpengine sends to baresip's RTP ports, and only
those that carry sound (G.711 bytes other than the codecs' silence) before
the customer's INVITE left the proxy count. Without the prompt, nothing
audible reaches the phone before the transfer: rtpengine has nothing else to
send it (the controller's side sends no media), so this cannot pass without
the prompt.
"""

import random
import re

from ccqlab import PORTS, Baresip, RtpCapture, audible, wait_until

CALLER_ID = "+6560005678"


def texts(t):
    return [e["text"] for e in t["events"]]


def test_baresip_hears_the_prompt_then_calls_the_customer(running_lab, org):
    lab = running_lab
    ib = org.inbox("Support", ring_timeout=10, max_wait=20)
    org.json("user", "create", "105", "Bea Baresip", "--caller-id", CALLER_ID)
    org.member(ib, "105")
    number = "+6596%06d" % random.randint(0, 999999)
    cust = org.customer("Jane Tan", number)
    org.user("100", "Olivia Owner", role="owner", addon=True)
    chat = org.chat(ib, cust, as_="100")
    phone = org.device("105", kind="desktop_app", label="baresip")
    bs = Baresip(phone).start(secs=120)
    cap = customer = None
    try:
        assert wait_until(lambda: phone.registered() == 1, 10), \
            "baresip did not register:\n" + bs.log()[-3000:]
        rtp_ports = (PORTS.base + 6000, PORTS.base + 6199)     # Baresip's rtp_ports
        cap = RtpCapture(rtp_ports, lab.rtp_range, secs=90)
        port = int(lab.trunk_addr.rsplit(":", 1)[1])
        customer = lab.sipp("outbound_trunk_hangup.xml", port, "-d", "3000", timeout=60,
                            background=True, name="customer")
        reply = org.callback("105", txn=chat, device=phone)
        cb = int(reply["txn"])
        got = wait_until(lambda: customer.received("INVITE "), 40, interval=0.1)
        assert got, "the customer never got a call: baresip did not follow the REFER?\n" \
            "--- baresip:\n%s\n--- customer:\n%s\n--- journey:\n  %s" % (
                bs.log()[-4000:], customer.summary(), "\n  ".join(texts(lab.txn(cb))))
        assert customer.wait(30) == 0, customer.summary() + "\n--- baresip:\n" + bs.log()[-3000:]
        packets = cap.stop()
    finally:
        if cap is not None:
            cap.stop()
        if customer is not None:
            customer.stop()
        bs.stop()

    transfer_at = customer.first_time("received", "INVITE ")
    heard = [p for p in packets if p[0] < transfer_at and audible(p[3])]
    total = [p for p in packets if p[0] < transfer_at]
    # the prompt lasts 4.3 s: 215 packets of 20 ms; at least 2 s of sound
    assert len(heard) >= 100, "only %d RTP packets with sound (of %d) reached baresip's ports " \
        "%d-%d before the customer's INVITE: the agent did not hear the prompt" % (
            len(heard), len(total), rtp_ports[0], rtp_ports[1])
    span = heard[-1][0] - heard[0][0]
    assert span >= 3.0, "the sound lasted %.1f s, the prompt 4.3 s" % span

    # the customer leg: E.164, the extension's caller ID, no token
    inv = customer.received("INVITE ")[0]
    assert re.search(r"^INVITE sip:%s@" % re.escape(number), inv, re.M), inv
    assert "ccqcb" not in inv and "x-ccq-callback" not in inv.lower(), inv
    assert CALLER_ID in inv, "the extension's caller ID is not in the carrier's INVITE:\n" + inv

    last = {}

    def ended():
        last["t"] = lab.txn(cb)
        return last["t"]["status"] in ("Ended", "Failed")
    wait_until(ended, 20)
    t = last["t"]
    x = texts(t)
    assert t["status"] == "Ended" and t["result"] == "answered", (t["status"], x)
    assert t["type"] == "callback" and t["agent_ext"] == "105", t
    want = [r"^Ringing extension 105 - Bea Baresip - desktop_app \(baresip\)$",
            r"^Agent answered on desktop_app \(baresip\)$",
            r"^Prompt played to the agent \(4\.\d s\)$",
            r"^Customer dialled: .*; compliance check passed$",
            r"^Answered by Jane Tan$"]
    at = 0
    for p in want:
        i = next((i for i in range(at, len(x)) if re.search(p, x[i])), None)
        assert i is not None, "the journey has no %r after line %d:\n  %s" % (p, at, "\n  ".join(x))
        at = i + 1
    assert "Call established" in bs.log(), bs.log()[-3000:]
