"""The lab starts from nothing, and its `env` makes the tools work."""

import os
import re
import subprocess

from ccqlab import CCQ_LAB, COMPONENTS, TOP


def test_lab_started_from_nothing(lab):
    # the session fixture wiped the lab dir and ran `ccq-lab up`
    st = lab.status()
    assert st.returncode == 0, "ccq-lab status: %s%s" % (st.stdout, st.stderr)
    for comp in COMPONENTS:
        assert re.search(r"^%s\s+running\s+pid\s+\d+" % comp, st.stdout, re.M), st.stdout
        pid = lab.pid(comp)
        assert lab.alive(pid), "%s: pid %s from its pid file is not alive" % (comp, pid)
    assert os.path.isdir(os.path.join(lab.root, "mysql", "data", "ccq")), \
        "the private MariaDB has no ccq database"
    assert os.path.isdir(os.path.join(lab.root, "rtpengine", "recordings")), \
        "rtpengine's recording dir is not in the lab dir"
    # the migrations ran and recorded the schema version
    rows = lab.sql("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    assert int(rows[0][0]) >= 1, rows


def test_kamcmd_ccq_status_shows_version_and_link(lab):
    r = lab.kamcmd("ccq.status")
    assert r.returncode == 0, "kamcmd ccq.status failed: %s%s" % (r.stdout, r.stderr)
    out = r.stdout
    assert re.search(r"version", out, re.I), "no version in ccq.status:\n" + out
    assert re.search(r"\d+\.\d+", out), "no version number in ccq.status:\n" + out
    assert re.search(r"queued|link", out, re.I), "no queued link state in ccq.status:\n" + out


def test_ccqctl_ping(lab):
    info = lab.ccqctl_json("ping")
    assert isinstance(info, dict), info
    for key in ("version", "proto", "schema"):
        assert key in info, "ping result lacks %r: %r" % (key, info)
    assert info["proto"] == 1, info


def test_env_makes_the_tools_work_without_flags(lab):
    script = r'''
set -e
eval "$("$CCQ_LAB_TOOL" env)"
test "$CCQ_LAB_DIR" = "$EXPECT_LAB"
test "$CCQ_SIP_ADDR" = "$EXPECT_SIP"
test "$CCQ_TRUNK_ADDR" = "$EXPECT_TRUNK"
test -S "$CCQ_CTL_SOCK"
test -S "$CCQ_QUEUED_SOCK"
test -S "$CCQ_MYSQL_SOCK"
test "$(command -v ccqctl)" = "$EXPECT_TOP/tools/ccqctl"
test "$(command -v queued)" = "$EXPECT_TOP/queued/queued"
ccqctl ping
kamcmd -s "unix:$CCQ_CTL_SOCK" ccq.status
mariadb --no-defaults --socket="$CCQ_MYSQL_SOCK" -N -B -e 'select 1'
'''
    env = dict(lab.env)
    env.pop("CCQ_QUEUED_SOCK", None)      # must come from `env`
    env.update(CCQ_LAB_TOOL=CCQ_LAB, EXPECT_LAB=lab.root, EXPECT_SIP=lab.sip_addr,
               EXPECT_TRUNK=lab.trunk_addr, EXPECT_TOP=TOP)
    r = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, "after eval \"$(ccq-lab env)\": %s%s" % (r.stdout, r.stderr)


def test_up_is_idempotent(lab):
    pids = {c: lab.pid(c) for c in COMPONENTS}
    lab.up(timeout=300)
    assert {c: lab.pid(c) for c in COMPONENTS} == pids, "a second `up` restarted something"
