"""How a compliance change reaches Kamailio without rereading the DNC registry
(issue 5; kam_module/doc/ccq.md 14.2, doc/compliance.md "How a change reaches
the calls").

With a registry of 200 000 numbers loaded, `kamcmd ccq.compliance.stats`
shows which path every change took:

* one DNC number added or removed through ccqctl is applied as a delta
  (dnc_change log rows, an overlay on the base image): the gate's verdict
  changes, `delta_applies` grows, the base image (`dnc_base_version`,
  `full_builds`) stays the same;
* a change to users or company lists rereads the directory only and keeps
  the DNC base and delta;
* a bulk import (batches of 5000) is debounced into few base rebuilds, after
  which the delta is folded into the new base;
* `ccq.compliance.reload` rebuilds the base.

No timing is asserted: every wait is bounded and only its outcome counts.
"""

import random
import subprocess

import pytest

from ccqlab import CCQCTL, wait_until
from test_20_compliance import check, db_version, fresh_number, rpc, stats, synced

REGISTRY = 200000


def stat_int(lab, key):
    return int(stats(lab)[key])


def wait_stats(lab, pred, what, timeout=30.0):
    """Poll ccq.compliance.stats until pred(stats) holds (bounded)."""
    last = [None]

    def probe():
        last[0] = stats(lab)
        return pred(last[0])
    assert wait_until(probe, timeout, interval=0.05), "%s: stats are %r" % (what, last[0])
    return last[0]


def wait_verdict(lab, who, number, rule, timeout=5.0):
    last = [None]

    def probe():
        last[0] = check(lab, who, number)
        return last[0]["rule"] == rule
    assert wait_until(probe, timeout, interval=0.05), \
        "%s %s: expected %s, the dry run says %r" % (who, number, rule, last[0])


def import_numbers(lab, numbers, timeout=300):
    """ccqctl list import dnc - (batches of 5000, as from a registry file)."""
    r = subprocess.run([CCQCTL, "-s", lab.queued_sock, "list", "import", "dnc", "-"],
                       input="\n".join(numbers) + "\n", capture_output=True, text=True,
                       env=lab.env, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def settled(lab, timeout=60.0):
    """The snapshot reflects the database and no base rebuild is running or
    waiting."""
    want = db_version(lab)
    return wait_stats(lab, lambda s: int(s["version"]) >= want and s["rebuilding"] == "0"
                      and s["rebuild_pending"] == "0", "settle", timeout)


def caller(lab, org):
    """Extension 101 of a fresh organisation, once the loader is settled."""
    org.user("101", "Alice Lim")
    settled(lab)
    return "101@" + org.name


def outside(registry):
    """A +653 number that is not in the imported registry."""
    taken = set(registry)
    n = fresh_number("+653")
    while n in taken:
        n = fresh_number("+653")
    return n


@pytest.fixture(scope="module")
def registry(lab):
    """200 000 numbers +653xxxxxxx imported into the DNC registry (returned),
    and removed again after the tests of this file (the lab is shared)."""
    if lab.status().returncode != 0:
        lab.up(timeout=300)
    start = random.randint(0, 10 ** 7 - REGISTRY - 1)
    nums = ["+653%07d" % (start + i) for i in range(REGISTRY)]
    b0 = stat_int(lab, "full_builds") if "full_builds" in stats(lab) else 0
    out = import_numbers(lab, nums)
    assert "%d valid numbers" % REGISTRY in out, out
    s = settled(lab)
    assert int(s["dnc_entries"]) >= REGISTRY, s
    assert int(s["full_builds"]) > b0, s
    yield nums
    for i in range(0, len(nums), 5000):
        r = lab.ccqctl("list", "remove", "dnc", *nums[i:i + 5000], timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_stats_name_the_paths(running_lab, registry):
    s = stats(running_lab)
    for k in ("dnc_version", "dnc_base_version", "dnc_base_bytes", "dnc_base_load_ms",
              "dnc_delta_adds", "dnc_delta_removes", "dnc_delta_bytes", "full_builds",
              "delta_applies", "directory_loads", "bulk_rows", "rebuilding",
              "rebuild_pending", "rebuild_reason", "last_change_ms", "last_change_kind"):
        assert k in s, (k, s)
    # bytes per number: the base image in use, at 200 000 numbers well under 8
    assert int(s["dnc_base_bytes"]) < 8 * int(s["dnc_entries"]), s
    assert int(s["bulk_rows"]) >= REGISTRY // 5000, s


def test_one_number_is_a_delta_not_a_rebuild(running_lab, org, registry):
    lab = running_lab
    who = caller(lab, org)
    s0 = stats(lab)
    new = outside(registry)
    old = registry[12345]
    assert check(lab, who, new)["rule"] == "default_allow"
    assert check(lab, who, old)["rule"] == "dnc"

    org.ok("list", "add", "dnc", new)
    wait_verdict(lab, who, new, "dnc")
    synced(lab)
    s1 = stats(lab)
    assert int(s1["full_builds"]) == int(s0["full_builds"]), (s0, s1)
    assert s1["dnc_base_version"] == s0["dnc_base_version"], (s0, s1)
    assert int(s1["delta_applies"]) > int(s0["delta_applies"]), (s0, s1)
    assert int(s1["dnc_delta_adds"]) >= int(s0["dnc_delta_adds"]) + 1, (s0, s1)
    assert int(s1["dnc_version"]) > int(s0["dnc_version"]), (s0, s1)
    assert int(s1["dnc_entries"]) == int(s0["dnc_entries"]) + 1, (s0, s1)
    assert s1["last_change_kind"] == "dnc delta", s1
    assert int(s1["last_change_ms"]) >= 0, s1

    # a number of the base removed: the overlay hides it
    org.ok("list", "remove", "dnc", old)
    wait_verdict(lab, who, old, "default_allow")
    synced(lab)
    s2 = stats(lab)
    assert int(s2["full_builds"]) == int(s0["full_builds"]), (s0, s2)
    assert s2["dnc_base_version"] == s0["dnc_base_version"], (s0, s2)
    assert int(s2["dnc_delta_removes"]) >= int(s0["dnc_delta_removes"]) + 1, (s0, s2)
    assert int(s2["dnc_entries"]) == int(s1["dnc_entries"]) - 1, (s1, s2)
    # and back: the last change of a number wins
    org.ok("list", "add", "dnc", old)
    wait_verdict(lab, who, old, "dnc")
    org.ok("list", "remove", "dnc", new)
    wait_verdict(lab, who, new, "default_allow")
    synced(lab)
    s3 = stats(lab)
    assert int(s3["full_builds"]) == int(s0["full_builds"]), (s0, s3)
    assert int(s3["dnc_entries"]) == int(s0["dnc_entries"]), (s0, s3)
    # the rest of the registry is untouched
    for n in (registry[0], registry[REGISTRY // 2], registry[-1]):
        assert check(lab, who, n)["rule"] == "dnc", n


def test_directory_change_keeps_the_dnc_base(running_lab, org, registry):
    lab = running_lab
    who = caller(lab, org)
    s0 = stats(lab)
    bl = fresh_number()
    org.ok("list", "add", "blacklist", bl)
    org.user("102", "Bob Tan")
    wait_verdict(lab, who, bl, "company_blacklist")
    synced(lab)
    s1 = stats(lab)
    assert int(s1["directory_loads"]) > int(s0["directory_loads"]), (s0, s1)
    assert int(s1["full_builds"]) == int(s0["full_builds"]), (s0, s1)
    assert s1["dnc_base_version"] == s0["dnc_base_version"], (s0, s1)
    assert s1["dnc_entries"] == s0["dnc_entries"], (s0, s1)
    assert s1["last_change_kind"] == "directory", s1
    assert check(lab, who, registry[7])["rule"] == "dnc"


def test_bulk_import_is_debounced_and_folds_the_delta(running_lab, org, registry):
    lab = running_lab
    who = caller(lab, org)
    single = outside(registry)
    org.ok("list", "add", "dnc", single)
    wait_verdict(lab, who, single, "dnc")
    s0 = settled(lab)
    assert int(s0["dnc_delta_adds"]) >= 1, s0

    batches = 20
    start = random.randint(0, 10 ** 7 - 5000 * batches - 1)
    more = ["+658%07d" % (start + i) for i in range(5000 * batches)]
    import_numbers(lab, more)
    s1 = settled(lab)
    builds = int(s1["full_builds"]) - int(s0["full_builds"])
    # one rebuild for the import, not one per batch (a slow machine may
    # split it: a pause of a second between two batches)
    assert 1 <= builds < batches // 2, (builds, s0, s1)
    assert int(s1["bulk_rows"]) - int(s0["bulk_rows"]) == batches, (s0, s1)
    assert int(s1["dnc_base_version"]) > int(s0["dnc_base_version"]), (s0, s1)
    assert s1["rebuild_reason"] == "bulk import", s1
    # the delta went into the new base
    assert s1["dnc_delta_adds"] == "0" and s1["dnc_delta_removes"] == "0", s1
    assert int(s1["dnc_entries"]) == int(lab.sql("SELECT COUNT(*) FROM dnc_number")[0][0]), s1
    for n in (single, more[0], more[-1], registry[3]):
        assert check(lab, who, n)["rule"] == "dnc", n
    org.ok("list", "remove", "dnc", single)
    # out again in batches of 5000 (bulk too); the gate allows them again
    for i in range(0, len(more), 5000):
        r = lab.ccqctl("list", "remove", "dnc", *more[i:i + 5000], timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    settled(lab)
    wait_verdict(lab, who, more[0], "default_allow")
    assert check(lab, who, more[-1])["rule"] == "default_allow"
    assert check(lab, who, single)["rule"] == "default_allow"


def test_reload_rebuilds_the_base(running_lab, registry):
    lab = running_lab
    s0 = settled(lab)
    assert "reload" in rpc(lab, "ccq.compliance.reload")
    s1 = wait_stats(lab, lambda s: int(s["full_builds"]) > int(s0["full_builds"])
                    and s["rebuilding"] == "0", "reload")
    assert s1["rebuild_reason"] == "reload", s1
    assert s1["dnc_entries"] == s0["dnc_entries"], (s0, s1)
    assert s1["version"] == s0["version"], (s0, s1)
