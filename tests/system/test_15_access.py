"""Access: owners and admins with the contact-center add-on see all inboxes
of their organisation; everyone else only the inboxes assigned to them; no
one sees another organisation. Lists are filtered, and a single read of an
invisible TXN is the same not_found as a missing one."""

import re

import pytest

from ccqlab import Org


@pytest.fixture
def world(running_lab, org):
    """Org with inboxes Sales and Billing (max_wait 0: every call is missed
    at once, which is enough to make TXNs), one call to each, and users:
    100 owner + add-on, 103 admin without add-on (member of Sales),
    101 member of Sales, 102 member of Billing, 104 admin + add-on member of
    nothing; and another org whose owner has the add-on."""
    lab = running_lab
    sales = org.inbox("Sales", max_wait=0)
    billing = org.inbox("Billing", max_wait=0)
    org.user("100", "Olivia Owner", role="owner", addon=True)
    org.user("101", "Alice Lim")
    org.user("102", "Bob Ong")
    org.user("103", "Adam Admin", role="admin")
    org.user("104", "Ada Addon", role="admin", addon=True)
    org.member(sales, "101")
    org.member(sales, "103")
    org.member(billing, "102")
    txns = {}
    for ib in (sales, billing):
        call = lab.carrier(ib.did, scenario="carrier_reject.xml", timeout=15)
        assert call.final() == 480, call.summary()
        txns[ib.name] = lab.wait_txn_for_call(call.call_id)[0]
    other = Org(lab, prefix="other")
    other.user("100", "Otto Other", role="owner", addon=True)
    return {"org": org, "other": other, "txns": txns}


def visible(org, ext):
    return {int(t["id"]) for t in org.json("txn", "list", "--limit", "1000", as_=ext)}


def can_show(org, ext, txn):
    r = org.ctl("--json", "txn", "show", str(txn), as_=ext)
    if r.returncode == 0:
        return True
    assert r.returncode == 1 and '"error":"not_found"' in r.stdout.replace(" ", ""), \
        "txn show as %s: %s%s" % (ext, r.stdout, r.stderr)
    # exactly what a missing TXN gets (nothing leaks)
    missing = org.ctl("--json", "txn", "show", "999999999", as_=ext)
    assert r.stdout.replace(str(txn), "N") == missing.stdout.replace("999999999", "N"), \
        (r.stdout, missing.stdout)
    return False


CASES = [
    # ext, sees Sales, sees Billing, inbox names listed
    ("100", True, True, ["Billing", "Sales"]),      # owner with the add-on
    ("104", True, True, ["Billing", "Sales"]),      # admin with the add-on
    ("103", True, False, ["Sales"]),                # admin without it: own inboxes
    ("101", True, False, ["Sales"]),                # member of Sales
    ("102", False, True, ["Billing"]),              # member of Billing
]


@pytest.mark.parametrize("ext,sales,billing,inboxes", CASES)
def test_txn_visibility(world, ext, sales, billing, inboxes):
    org, txns = world["org"], world["txns"]
    want = {txns["Sales"]} if sales else set()
    want |= {txns["Billing"]} if billing else set()
    got = visible(org, ext) & set(txns.values())
    assert got == want, "user %s sees TXNs %r, expected %r" % (ext, got, want)
    assert can_show(org, ext, txns["Sales"]) == sales
    assert can_show(org, ext, txns["Billing"]) == billing
    assert sorted(i["name"] for i in org.json("inbox", "list", as_=ext)) == inboxes
    # the readable list is filtered the same way
    out = org.ctl("txn", "list", "--limit", "1000", as_=ext).stdout
    for name, txn in txns.items():
        shown = bool(re.search(r"^%d\s" % txn, out, re.M))
        assert shown == (name in [n for n, s in (("Sales", sales), ("Billing", billing)) if s]), out


def test_another_org_sees_nothing(world):
    org, other, txns = world["org"], world["other"], world["txns"]
    assert visible(other, "100") & set(txns.values()) == set()
    for txn in txns.values():
        assert not can_show(other, "100", txn)
    assert other.json("inbox", "list", as_="100") == []
    # naming the other organisation does not help
    r = other.lab.ccqctl("--as", "100@%s" % other.name, "-o", org.name, "--json", "inbox", "list")
    assert r.returncode == 1 and "not_found" in r.stdout, r.stdout + r.stderr
    r = other.lab.ccqctl("--as", "100@%s" % other.name, "-o", org.name, "--json", "user", "list")
    assert r.returncode == 1 and "not_found" in r.stdout, r.stdout + r.stderr


def test_operator_sees_everything(world, running_lab):
    got = {int(t["id"]) for t in running_lab.ccqctl_json("txn", "list", "--limit", "1000")}
    assert set(world["txns"].values()) <= got


def test_members_cannot_change_the_directory(world):
    org = world["org"]
    code, _ = org.error("inbox", "create", "Mine", as_="101")
    assert code == "denied"
    code, _ = org.error("inbox", "member", "add", "Sales", "102", as_="101")
    assert code == "denied"
    code, _ = org.error("trunk", "add", "evil", "127.0.0.9", as_="100")
    assert code == "denied"
    assert sorted(i["name"] for i in org.json("inbox", "list")) == ["Billing", "Sales"]
    # an admin without the add-on still manages the directory
    org.json("inbox", "create", "Admin Made", as_="103")


def test_kamcmd_ccq_status_still_works(running_lab):
    r = running_lab.kamcmd("ccq.status")
    assert r.returncode == 0, r.stderr
    assert re.search(r"link:\s*up", r.stdout), r.stdout
    assert re.search(r"version:\s*\d+\.\d+", r.stdout), r.stdout
