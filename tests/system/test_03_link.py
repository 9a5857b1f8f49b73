"""The module's link to queued: reconnect after a restart, and the
documented fallback while queued is down: every call is refused at once with
503 and Retry-After (without queued nobody knows which agent may take it),
and the outage is logged once, not once per call."""

import re
import time

from ccqlab import wait_until

# Kamailio log lines of the ccq module announcing that queued is unreachable
# (the async decision process, or a worker's/RPC link).
LINK_DOWN_RX = re.compile(r"ccq async: queued unreachable|queued at \S+ is unreachable")
RECONNECTED_RX = re.compile(r"connected to queued again|reachable again")
CALLS_DURING_OUTAGE = 4


def wait_reconnected(lab, off, timeout=3):
    """Give the module's async process its reconnect interval (1 s in the
    shipped cfg): done when it logs the reconnection, else after timeout."""
    wait_until(lambda: RECONNECTED_RX.search(lab.log_since("kamailio", off)), timeout)


def test_queued_restart_module_reconnects(running_lab):
    lab = running_lab
    c = lab.call()
    lab.assert_call_ok(c)
    assert lab.wait_txn_for_call(c["call_id"]), "no TXN before the restart"

    old = lab.pid("queued")
    off = lab.log_size("kamailio")
    assert lab.stop_queued(), "queued did not exit within 20 s of SIGTERM"
    assert "stopped" in lab.status().stdout
    lab.up(timeout=300)                 # restarts only the missing component
    new = lab.pid("queued")
    assert new and new != old and lab.alive(new)
    assert lab.alive(lab.pid("kamailio")), "Kamailio died while queued restarted"
    wait_reconnected(lab, off)

    # the next call gets its TXN and is answered: the module reconnected by itself
    c = lab.call()
    lab.assert_call_ok(c)
    ids = lab.wait_txn_for_call(c["call_id"])
    assert len(ids) == 1, "no TXN for the first call after queued restarted (%s)" % c["call_id"]
    t = lab.wait_txn_state(c["call_id"], lambda t: t["status"] == "Ended")
    assert t["result"] == "answered", t


def test_queued_down_calls_get_503_and_outage_logged_once(running_lab):
    lab = running_lab
    did = lab.basic()["inbox"].did
    # make sure the link is up (and every state is settled) before the outage
    c = lab.call()
    lab.assert_call_ok(c)
    assert lab.wait_txn_for_call(c["call_id"])

    off = lab.log_size("kamailio")
    assert lab.stop_queued(), "queued did not exit within 20 s of SIGTERM"
    calls = []
    for _ in range(CALLS_DURING_OUTAGE):
        run = lab.carrier(did, scenario="carrier_reject.xml", timeout=15)
        calls.append(run)
        assert run.rc == 0, "the carrier did not get a clean refusal:\n" + run.summary()
        assert run.final() == 503, "expected 503 while queued is down, got %r:\n%s" % (
            run.responses(), run.summary())
        reply = run.received("SIP/2.0 503")[0]
        assert re.search(r"^Retry-After:\s*30\b", reply, re.M | re.I), \
            "the 503 has no 'Retry-After: 30':\n" + reply
        # at once: no decision timeout, no retries while queued is known down
        assert run.elapsed() < 2.5, "the 503 took %.1f s" % run.elapsed()

    log = lab.log_since("kamailio", off)
    down_lines = [l for l in log.splitlines() if LINK_DOWN_RX.search(l)]
    assert down_lines, "Kamailio's log does not say queued is unreachable:\n" + log[-4000:]
    assert len(down_lines) == 1, (
        "the outage was logged %d times for %d calls (expected once):\n%s"
        % (len(down_lines), CALLS_DURING_OUTAGE, "\n".join(down_lines)))

    ccq_status = lab.kamcmd("ccq.status")
    assert ccq_status.returncode == 0, ccq_status.stderr
    assert re.search(r"link:\s*down", ccq_status.stdout), ccq_status.stdout

    # back up: the next call is answered and gets a TXN again
    off = lab.log_size("kamailio")
    lab.up(timeout=300)
    wait_reconnected(lab, off)
    c = lab.call()
    lab.assert_call_ok(c)
    assert len(lab.wait_txn_for_call(c["call_id"])) == 1, "no TXN after queued came back"
    for run in calls:
        assert lab.txn_ids_for_call(run.call_id) == [], \
            "a TXN exists for call %s refused while queued was down" % run.call_id
