"""`tools/ccq-lab demo` on the running lab: provisioning (idempotent, so it
runs twice), a registered agent phone, a carrier call to the DID, the
agent's view during the call and the TXN's journey afterwards."""

import re


def test_demo_runs_and_narrates_the_call(running_lab):
    lab = running_lab
    for attempt in (1, 2):
        r = lab.lab("demo", timeout=180)
        out = r.stdout + r.stderr
        assert r.returncode == 0, "demo run %d failed (exit %d):\n%s" % (
            attempt, r.returncode, out[-6000:])
        for want in ("Current call: TXN", "(Assigned)",
                     "incoming call in inbox Sales from +65 9123 4567 (Jane Tan)",
                     "Answered by 101 - Alice Lim - desk_phone",
                     "Call routed to Inbox [Sales]", "No current call."):
            assert want in out, "demo run %d does not show %r:\n%s" % (attempt, want, out[-6000:])
        assert re.search(r"Result\s+answered", out), out[-4000:]
    # the second run found everything in place
    assert "already there from an earlier run" in out, out[-6000:]
