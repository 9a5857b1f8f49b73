"""Session fixture: a private ccq lab for the system tests.

The lab lives in $CCQ_TEST_LAB_DIR (default build/lab-test) on ports that do
not clash with the default lab of `tools/ccq-lab up`: SIP 5070, trunk 5085,
agent phone 5091, queued TCP 7071, rtpengine ng 22223, RTP 31000-31999.
Those ports can be moved with CCQ_TEST_SIP_PORT, CCQ_TEST_TRUNK_PORT (the
carrier trunks use it and the next few ports), CCQ_TEST_AGENT_PORT,
CCQ_TEST_QUEUED_TCP_PORT, CCQ_TEST_NG_PORT, CCQ_TEST_RTP_MIN/MAX (to run two
suites side by side). Other phones, unknown callers and sipp's control ports
come from a pool of ports outside the kernel's ephemeral range, never reused
within a session (CCQ_TEST_PORT_POOL, default 20000-26199; see ccqlab.PortPool).
It is wiped and started from nothing at the start of the session and stopped
at the end (set CCQ_TEST_KEEP_LAB=1 to leave it running for a post-mortem).
When a test fails, the tail of every component's log is attached to its
report.
"""

import os

import pytest

from ccqlab import COMPONENTS, TOP, Lab, Org

LAB_DIR = os.environ.get("CCQ_TEST_LAB_DIR", os.path.join(TOP, "build", "lab-test"))

PORT_ENV = (("CCQ_TEST_SIP_PORT", "sip_port"), ("CCQ_TEST_TRUNK_PORT", "trunk_port"),
            ("CCQ_TEST_QUEUED_TCP_PORT", "queued_tcp_port"), ("CCQ_TEST_NG_PORT", "ng_port"),
            ("CCQ_TEST_RTP_MIN", "rtp_min"), ("CCQ_TEST_RTP_MAX", "rtp_max"),
            ("CCQ_TEST_AGENT_PORT", "agent_port"))


def lab_ports():
    return {key: int(os.environ[env]) for env, key in PORT_ENV if os.environ.get(env)}


_lab = None


@pytest.fixture(scope="session")
def lab():
    global _lab
    lab = Lab(LAB_DIR, **lab_ports())
    lab.down()          # leftovers of an interrupted run, by pid file only
    lab.wipe()
    _lab = lab
    lab.up()
    yield lab
    if os.environ.get("CCQ_TEST_KEEP_LAB") != "1":
        r = lab.down()
        if r.returncode != 0:
            print("ccq-lab down failed:", r.stdout, r.stderr)
    _lab = None


@pytest.fixture
def running_lab(lab):
    """The lab with every component running (a test before may have stopped
    one): `ccq-lab up` starts only what is missing."""
    if lab.status().returncode != 0:
        lab.up(timeout=300)
    return lab


@pytest.fixture
def org(running_lab):
    """A fresh organisation (its own name) in the running lab."""
    return Org(running_lab)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _lab is not None:
        st = _lab.status()
        rep.sections.append(("ccq-lab status", st.stdout + st.stderr))
        for comp in COMPONENTS:
            rep.sections.append(("%s log (tail)" % comp, _lab.log_tail(comp, 60)))


def pytest_sessionfinish(session, exitstatus):
    # `tools/ccq-lab test` promises no skipped tests: a skip fails the run.
    if os.environ.get("CCQ_STRICT_RUN") == "1":
        skipped = session.config.pluginmanager.get_plugin("terminalreporter")
        if skipped is not None and skipped.stats.get("skipped"):
            session.exitstatus = 1
