"""The module's link to queued: reconnect after a restart, and the
documented fallback while queued is down (the call proceeds without a TXN,
and the outage is logged once, not once per call)."""

import re

# Kamailio log lines of the ccq module saying the link to queued is down.
LINK_DOWN_RX = re.compile(r"queued at \S+ is unreachable")
CALLS_DURING_OUTAGE = 4


def test_queued_restart_module_reconnects(running_lab):
    lab = running_lab
    c = lab.call()
    lab.assert_call_ok(c)
    assert lab.wait_txn_for_call(c["call_id"]), "no TXN before the restart"

    old = lab.pid("queued")
    assert lab.stop_queued(), "queued did not exit within 20 s of SIGTERM"
    assert "stopped" in lab.status().stdout
    lab.up(timeout=300)                 # restarts only the missing component
    new = lab.pid("queued")
    assert new and new != old and lab.alive(new)
    assert lab.alive(lab.pid("kamailio")), "Kamailio died while queued restarted"

    # the very next call must get its TXN: the module reconnects by itself
    c = lab.call()
    lab.assert_call_ok(c)
    ids = lab.wait_txn_for_call(c["call_id"])
    assert len(ids) == 1, "no TXN for the first call after queued restarted (%s)" % c["call_id"]


def test_queued_down_calls_proceed_and_outage_logged_once(running_lab):
    lab = running_lab
    # make sure the link is up (and every state is settled) before the outage
    c = lab.call()
    lab.assert_call_ok(c)
    assert lab.wait_txn_for_call(c["call_id"])

    assert lab.stop_queued(), "queued did not exit within 20 s of SIGTERM"
    off = lab.log_size("kamailio")
    call_ids = []
    for _ in range(CALLS_DURING_OUTAGE):
        c = lab.call()
        lab.assert_call_ok(c)           # the fallback: the call goes through
        call_ids.append(c["call_id"])
    for cid in call_ids:
        assert lab.txn_ids_for_call(cid) == [], "a TXN appeared while queued was down"

    log = lab.log_since("kamailio", off)
    down_lines = [l for l in log.splitlines() if LINK_DOWN_RX.search(l)]
    assert down_lines, "Kamailio's log does not say the link to queued is down:\n" + log[-4000:]
    assert len(down_lines) == 1, (
        "the outage was logged %d times for %d calls (expected once):\n%s"
        % (len(down_lines), CALLS_DURING_OUTAGE, "\n".join(down_lines)))

    ccq_status = lab.kamcmd("ccq.status")
    assert ccq_status.returncode == 0, ccq_status.stderr

    # back up: the next call gets a TXN again
    lab.up(timeout=300)
    c = lab.call()
    lab.assert_call_ok(c)
    assert len(lab.wait_txn_for_call(c["call_id"])) == 1, "no TXN after queued came back"
