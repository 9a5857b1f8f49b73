"""Devices register and call as real phones do: digest authentication
against the credentials ccqctl created; anything that is neither a trunk
nor an authenticated device gets the proper SIP rejection."""

import re

from ccqlab import PORTS, wait_until


def test_register_with_right_password(org, running_lab):
    lab = running_lab
    org.user("101", "Alice Lim")
    phone = org.device("101")
    assert phone.registered() == 0
    run = phone.register(expires=120)
    assert run.responses()[-1] == 200, run.summary()
    assert wait_until(lambda: phone.registered() == 1, 5), \
        "device list does not show the device registered:\n%s" % org.ctl("device", "list").stdout
    # Kamailio's location table has the contact too
    r = lab.kamcmd("ul.lookup", "location", phone.username)
    assert r.returncode == 0 and "127.0.0.1:%d" % phone.port in r.stdout, r.stdout + r.stderr
    r = org.ctl("device", "list")
    assert re.search(r"%s\s+127\.0\.0\.1\s+1\s+1\s*$" % re.escape(phone.username), r.stdout,
                     re.M), r.stdout
    # unregistering (Expires: 0) takes it off again
    phone.unregister()
    assert wait_until(lambda: phone.registered() == 0, 5), "still registered after Expires: 0"


def test_register_with_wrong_password_is_refused(org, running_lab):
    org.user("101", "Alice Lim")
    phone = org.device("101")
    run = phone.register(password="wrong-password", expect_ok=False)
    assert run.rc == 0, "the REGISTER was not refused with 401/403:\n" + run.summary()
    assert run.responses()[-1] in (401, 403), run.responses()
    assert 200 not in run.responses(), run.summary()
    assert phone.registered() == 0
    r = running_lab.kamcmd("ul.lookup", "location", phone.username)
    assert "127.0.0.1:%d" % phone.port not in r.stdout, r.stdout


def test_register_of_unknown_device_is_refused(org):
    org.user("101", "Alice Lim")
    phone = org.device("101")
    phone.username = phone.username + "-nobody"
    run = phone.register(expect_ok=False)
    assert run.rc == 0 and run.responses()[-1] in (401, 403), run.summary()


def test_disabled_device_cannot_register_nor_ring(org, running_lab):
    """A disabled device can neither authenticate nor be rung; enabled
    again, it registers."""
    inbox = org.inbox("Sales", max_wait=0)
    phone = org.agent(inbox, "101", "Alice Lim")
    dev_id = org.json("device", "list")[0]["id"]
    org.json("device", "disable", str(dev_id))
    run = phone.register(expect_ok=False)
    assert run.rc == 0 and run.responses()[-1] in (401, 403), \
        "a disabled device registered:\n" + run.summary()
    assert phone.registered() == 0
    ring = phone.answer(timeout=10)
    try:
        call = running_lab.carrier(inbox.did, scenario="carrier_reject.xml", timeout=15)
        assert call.final() == 480, "a call to an inbox whose only device is disabled: %r\n%s" % (
            call.responses(), call.summary())
        assert ring.requests() == [], "the disabled device rang"
    finally:
        ring.stop()
    org.json("device", "enable", str(dev_id))
    phone.register()
    assert wait_until(lambda: phone.registered() == 1, 5)


def test_invite_from_unknown_address_is_challenged(running_lab, org):
    lab = running_lab
    inbox = org.inbox("Sales")
    before = lab.txn_count()
    # not a trunk (an unprovisioned port), no credentials
    run = lab.carrier(inbox.did, scenario="carrier_reject.xml", trunk=None, timeout=15)
    assert run.rc == 0, run.summary()
    assert run.final() in (401, 407), "expected a digest challenge, got %r" % run.responses()
    reply = run.received("SIP/2.0 %d" % run.final())[0]
    assert re.search(r"^(Proxy|WWW)-Authenticate:\s*Digest ", reply, re.M | re.I), reply
    # the trunk's address (127.0.0.1) but another port is not the trunk either
    other = lab.sipp("carrier_reject.xml", PORTS.take("peer"), "-s", inbox.did.lstrip("+"),
                     remote=lab.sip_addr, timeout=15, name="not-trunk")
    assert other.final() in (401, 407), other.summary()
    assert lab.txn_count() == before, "an unauthenticated call created a TXN"


def test_device_call_with_credentials_is_authenticated_then_gated(org, running_lab):
    """An authenticated device call goes through the outbound compliance gate:
    a number on the DNC registry gets 403 with the rule's reason, and the
    blocked call is recorded; a wrong password never gets that far."""
    lab = running_lab
    org.user("101", "Alice Lim")
    phone = org.device("101")
    lab.ccqctl("list", "add", "dnc", "+6591234567")
    # the proxy's snapshot holds the device once it holds this DNC entry
    def gated():
        # kamcmd sends "+6591234567" as an integer (losing the +): s: keeps it text
        r = lab.kamcmd("ccq.compliance.check", "101@" + org.name, "s:+6591234567")
        return r.returncode == 0 and "rule: dnc" in r.stdout
    assert wait_until(gated, 5), "the DNC entry did not reach Kamailio within 5 s"
    before = lab.txn_count()
    run = lab.sipp("device_call.xml", phone.port, "-s", "+6591234567", "-key", "user",
                   phone.username, "-au", phone.username, "-ap", phone.password,
                   remote=lab.sip_addr, timeout=15, name="device-call")
    assert run.rc == 0, run.summary()
    codes = [c for c in run.responses() if c >= 200]
    assert codes[0] in (401, 407), codes
    assert codes[-1] == 403, "authenticated device call to a DNC number: expected 403, got %r\n%s" % (
        codes, run.summary())
    assert "Blocked by DNC registry" in run.received("SIP/2.0 403")[0]
    assert wait_until(lambda: lab.txn_count() == before + 1, 5), "the blocked call has no TXN"
    # with a wrong password the second INVITE is challenged again, never gated
    bad = lab.sipp("device_call.xml", phone.port, "-s", "+6591234567", "-key", "user",
                   phone.username, "-au", phone.username, "-ap", "wrong-password",
                   remote=lab.sip_addr, timeout=15, name="device-call-bad")
    assert [c for c in bad.responses() if c >= 200][-1] in (401, 407), bad.summary()
    assert lab.txn_count() == before + 1
    lab.ccqctl("list", "remove", "dnc", "+6591234567")
