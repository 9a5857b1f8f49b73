"""The outbound compliance gate (issue 5, doc/compliance.md) on the real stack.

TestDryRun: the rules and their order, PIN policies, normalisation, invalid
numbers, list management with ccqctl (add, remove, show, count, bulk import
with junk), hostile input, and how fast a change reaches Kamailio: all
through the dry-run RPC `kamcmd ccq.compliance.check EXT@ORG NUMBER [pin]`
and `ccq.compliance.stats` (nothing is dialled).

TestOutboundCalls: a registered sipp device (outbound_call.xml) calls
through Kamailio; a sipp UAS on the lab's trunk address (outbound_trunk.xml)
plays the carrier. Allowed calls reach the carrier as sip:+E164@trunk with
the extension's caller ID and no PIN; blocked calls get 403 with the rule's
reason and the carrier sees nothing; the TXN journey tells the story.

The DNC registry is shared by every organisation in the lab, so every test
draws its own random numbers (fresh_number) and never blocks a range
another test could dial.
"""

import os
import random
import re
import subprocess
import time

import pytest

from ccqlab import CCQCTL, Org, wait_until

# ------------------------------------------------------------------ helpers

_used_numbers = set()


def fresh_number(prefix="+658", digits=7):
    """A Singapore number (E.164 with '+') no test of this session has used;
    +658xxxxxxx by default, which the other test files never dial."""
    while True:
        n = prefix + "".join(random.choice("0123456789") for _ in range(digits))
        if n not in _used_numbers:
            _used_numbers.add(n)
            return n


def national(e164, cc="65"):
    """+65 8123 4567 -> '81234567' (what an agent in SG dials)."""
    assert e164.startswith("+" + cc), e164
    return e164[len(cc) + 1:]


def parse_rpc(text):
    """kamcmd's struct output ('{', 'key: value' lines, '}') as a dict."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line in ("{", "}") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        out[k.strip()] = v.strip()
    return out


def rpc(lab, *args):
    """A kamcmd RPC that must succeed (kamcmd exits 0 even on a fault, so
    the output is checked too). Every argument is passed as a string."""
    r = lab.kamcmd(*args)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and not out.lstrip().startswith("error"), \
        "kamcmd %s failed (%d): %s" % (" ".join(args), r.returncode, out)
    return out


def rpc_fault(lab, *args):
    """A kamcmd RPC that must fail: returns its error text."""
    r = lab.kamcmd(*args)
    out = r.stdout + r.stderr
    assert out.lstrip().startswith("error"), \
        "kamcmd %s: expected an RPC fault, got: %s" % (" ".join(args), out)
    return out


def check(lab, who, number, pin=None):
    """ccq.compliance.check WHO NUMBER [pin] -> dict (verdict, rule, reason,
    number, country, why, international, pin_needed)."""
    args = ["ccq.compliance.check", "s:" + who, "s:" + number]
    if pin is not None:
        args.append("s:" + pin)
    v = parse_rpc(rpc(lab, *args))
    assert "verdict" in v and "rule" in v, "no verdict from the dry run: %r" % v
    return v


def stats(lab):
    return parse_rpc(rpc(lab, "ccq.compliance.stats"))


def db_version(lab):
    return int(lab.sql("SELECT SUM(version) FROM list_version")[0][0])


def synced(lab, timeout=3.0):
    """Wait (bounded) until Kamailio's snapshot is the database's current
    state: ccq.compliance.stats' version equals SUM(list_version)."""
    want = db_version(lab)
    ok = wait_until(lambda: int(stats(lab)["version"]) >= want, timeout, interval=0.05)
    assert ok, "Kamailio's compliance snapshot is still version %s %.1f s after the change " \
        "(database: %d)" % (stats(lab)["version"], timeout, want)


def wait_rule(lab, who, number, rule, timeout=3.0, pin=None):
    """Poll the dry run until it answers RULE (bounded); returns (verdict
    dict, seconds it took)."""
    t0 = time.monotonic()
    last = [None]

    def probe():
        last[0] = check(lab, who, number, pin)
        return last[0]["rule"] == rule
    wait_until(probe, timeout, interval=0.05)
    took = time.monotonic() - t0
    assert last[0]["rule"] == rule, "after %.1f s the dry run for %s %s still says %r" % (
        took, who, number, last[0])
    return last[0], took


def set_pin(org, ext, pin):
    """echo PIN | ccqctl -o ORG pin set EXT (the PIN is read from stdin)."""
    lab = org.lab
    r = subprocess.run([CCQCTL, "-s", lab.queued_sock, "-o", org.name, "pin", "set", ext],
                       input=pin + "\n", capture_output=True, text=True, env=lab.env,
                       timeout=20)
    assert r.returncode == 0, "pin set %s failed (%d): %s%s" % (ext, r.returncode, r.stdout,
                                                                r.stderr)
    return r


def user_with_caller_id(org, ext, name, caller_id):
    org.json("user", "create", ext, name, "--caller-id", caller_id)


def expect(lab, who, dialled, verdict, rule, pin=None, **fields):
    v = check(lab, who, dialled, pin)
    got = {"verdict": v["verdict"], "rule": v["rule"]}
    got.update({k: v.get(k) for k in fields})
    want = {"verdict": verdict, "rule": rule}
    want.update({k: str(x) for k, x in fields.items()})
    assert got == want, "%s dials %r (pin %s): expected %r, got %r" % (
        who, dialled, pin, want, v)
    return v


REASONS = {
    "invalid_number": "Blocked: invalid number",
    "country_whitelist": "Blocked: destination country not allowed",
    "company_blacklist": "Blocked by company blacklist",
    "company_whitelist": "Allowed by company whitelist",
    "personal_whitelist": "Allowed by personal whitelist",
    "dnc": "Blocked by DNC registry",
    "pin_locked": "Blocked: PIN locked after too many wrong PINs",
    "pin_wrong": "Blocked: wrong PIN",
    "pin_required": "Blocked: PIN required",
    "default_allow": "Allowed",
}


# ------------------------------------------------------------------ dry run

class TestDryRun:
    """The gate through `kamcmd ccq.compliance.check` (no call is placed)."""

    def test_rule_order(self, running_lab, org):
        """Blacklist beats both whitelists; a company or personal whitelist
        beats the DNC registry (and says so); the DNC registry blocks; a
        personal whitelist is only its user's; the reasons are the
        documented ones."""
        lab = running_lab
        org.user("101", "Alice Lim")
        org.user("102", "Bob Ong")
        a, b = "101@" + org.name, "102@" + org.name
        plain, dnc, bl = fresh_number(), fresh_number(), fresh_number()
        bl_wl, bl_pw, wl_dnc, pw_dnc, both_dnc, wl_only = (fresh_number() for _ in range(6))
        org.ok("list", "add", "dnc", dnc, wl_dnc, pw_dnc, both_dnc, bl_wl)
        org.ok("list", "add", "blacklist", bl, bl_wl, bl_pw)
        org.ok("list", "add", "whitelist", bl_wl, wl_dnc, both_dnc, wl_only)
        org.ok("list", "add", "personal", "--ext", "101", bl_pw, pw_dnc, both_dnc)
        synced(lab)

        table = [
            (a, plain, "allow", "default_allow"),
            (a, dnc, "block", "dnc"),
            (a, bl, "block", "company_blacklist"),
            (a, bl_wl, "block", "company_blacklist"),       # blacklist beats company whitelist
            (a, bl_pw, "block", "company_blacklist"),       # ... and the personal whitelist
            (a, wl_dnc, "allow", "company_whitelist"),      # company whitelist beats DNC
            (a, pw_dnc, "allow", "personal_whitelist"),     # personal whitelist beats DNC
            (b, pw_dnc, "block", "dnc"),                    # ... but only for its owner
            (a, both_dnc, "allow", "company_whitelist"),    # both: the company's is named
            (a, wl_only, "allow", "company_whitelist"),
        ]
        for who, number, verdict, rule in table:
            v = expect(lab, who, number, verdict, rule, number=number, country="SG",
                       international=0)
            assert v["reason"] == REASONS[rule], v
        # the other organisation's lists do not apply
        other = Org(lab, prefix="other")
        other.user("101", "Carol Other")
        synced(lab)
        c = "101@" + other.name
        expect(lab, c, bl, "allow", "default_allow")
        expect(lab, c, wl_dnc, "block", "dnc")          # the DNC registry is everyone's

    def test_country_whitelist_comes_first(self, running_lab, org):
        """With a country whitelist, a destination outside it is blocked
        before any list is looked at (even a company whitelist)."""
        lab = running_lab
        org.user("101", "Alice Lim")
        who = "101@" + org.name
        gb_wl = "+4420794%05d" % random.randint(0, 99999)
        gb_bl = "+4420795%05d" % random.randint(0, 99999)
        gb_dnc = "+4420796%05d" % random.randint(0, 99999)
        my = "+6012%07d" % random.randint(0, 9999999)
        org.ok("list", "add", "whitelist", gb_wl)
        org.ok("list", "add", "blacklist", gb_bl)
        org.ok("list", "add", "dnc", gb_dnc)
        # lower case and blanks are accepted and stored canonically
        org.ok("policy", "set", "--countries", "sg, my")
        assert org.json("policy", "show")["country_whitelist"] == "SG,MY"
        synced(lab)
        expect(lab, who, fresh_number(), "allow", "default_allow")
        expect(lab, who, my, "allow", "default_allow", country="MY", international=1)
        for n in (gb_wl, gb_bl, gb_dnc, "+12125550123", "+80012345678"):
            v = expect(lab, who, n, "block", "country_whitelist")
            assert v["reason"] == REASONS["country_whitelist"], v
        # an unknown country code is refused and the policy is unchanged
        code, msg = org.error("policy", "set", "--countries", "SG,XX")
        assert code == "bad_request" and "XX" in msg, (code, msg)
        assert org.json("policy", "show")["country_whitelist"] == "SG,MY"
        # no whitelist again: the lists decide
        org.ok("policy", "set", "--countries", "")
        wait_rule(lab, who, gb_wl, "company_whitelist")
        expect(lab, who, gb_bl, "block", "company_blacklist")
        expect(lab, who, gb_dnc, "block", "dnc")

    def test_long_country_whitelist_is_honoured_whole(self, running_lab, org):
        """A whitelist of many countries (the database holds 400 characters)
        is applied whole: the last country listed is allowed too."""
        lab = running_lab
        org.user("101", "Alice Lim")
        who = "101@" + org.name
        many = ["AD", "AE", "AF", "AG", "AL", "AM", "AO", "AR", "AT", "AU", "AZ", "BA", "BB",
                "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BN", "BO", "BR", "BT", "BW", "BY",
                "BZ", "CD", "CF", "CG", "CH", "CI", "CL", "CM", "CN", "CO", "CR", "CU", "CV",
                "CY", "CZ", "DE", "DJ", "DK", "SG", "MY"]
        org.ok("policy", "set", "--countries", ",".join(many))
        stored = org.json("policy", "show")["country_whitelist"]
        assert stored == ",".join(many), stored
        synced(lab)
        expect(lab, who, "+4420794%05d" % random.randint(0, 99999), "block", "country_whitelist")
        expect(lab, who, "+3361234%04d" % random.randint(0, 9999), "block", "country_whitelist")
        expect(lab, who, "+4930123%05d" % random.randint(0, 99999), "allow", "default_allow")
        expect(lab, who, fresh_number(), "allow", "default_allow", country="SG")
        expect(lab, who, "+6012%07d" % random.randint(0, 9999999), "allow", "default_allow",
               country="MY")

    @pytest.mark.parametrize("policy", ["none", "international", "all"])
    def test_pin_policy(self, running_lab, org, policy):
        """Which calls need a PIN, and what an absent, valid or wrong PIN
        does under each policy (the organisation is in SG)."""
        lab = running_lab
        org.user("101", "Alice Lim")
        set_pin(org, "101", "4821")
        org.ok("policy", "set", "--pin-policy", policy)
        assert org.json("policy", "show")["pin_policy"] == policy
        synced(lab)
        who = "101@" + org.name
        home = fresh_number()
        abroad = "+6012%07d" % random.randint(0, 9999999)
        want = {
            # (destination, pin): rule
            "none": {(home, None): "default_allow", (home, "valid"): "default_allow",
                     (home, "wrong"): "default_allow", (abroad, None): "default_allow",
                     (abroad, "valid"): "default_allow", (abroad, "wrong"): "default_allow"},
            "international": {(home, None): "default_allow", (home, "valid"): "default_allow",
                              (home, "wrong"): "pin_wrong", (abroad, None): "pin_required",
                              (abroad, "valid"): "default_allow", (abroad, "wrong"): "pin_wrong"},
            "all": {(home, None): "pin_required", (home, "valid"): "default_allow",
                    (home, "wrong"): "pin_wrong", (abroad, None): "pin_required",
                    (abroad, "valid"): "default_allow", (abroad, "wrong"): "pin_wrong"},
        }[policy]
        needed = {"none": (0, 0), "international": (0, 1), "all": (1, 1)}[policy]
        bad = []
        for (number, pin), rule in sorted(want.items(), key=str):
            v = check(lab, who, number, pin)
            verdict = "allow" if rule == "default_allow" else "block"
            intl = 1 if number == abroad else 0
            pin_needed = needed[intl]
            if (v["verdict"], v["rule"], v["reason"], v["international"], v["pin_needed"]) != \
                    (verdict, rule, REASONS[rule], str(intl), str(pin_needed)):
                bad.append(((number, pin), rule, v))
        assert not bad, "policy %s: wrong answers:\n%s" % (
            policy, "\n".join(repr(x) for x in bad))

    def test_pin_comes_after_the_lists(self, running_lab, org):
        """The list rules decide before the PIN; a whitelist does not excuse
        the PIN."""
        lab = running_lab
        org.user("101", "Alice Lim")
        set_pin(org, "101", "4821")
        who = "101@" + org.name
        dnc, bl, wl_dnc = fresh_number(), fresh_number(), fresh_number()
        org.ok("list", "add", "dnc", dnc, wl_dnc)
        org.ok("list", "add", "blacklist", bl)
        org.ok("list", "add", "whitelist", wl_dnc)
        org.ok("policy", "set", "--pin-policy", "all", "--countries", "SG")
        synced(lab)
        expect(lab, who, dnc, "block", "dnc", pin="wrong")
        expect(lab, who, dnc, "block", "dnc", pin="valid")
        expect(lab, who, bl, "block", "company_blacklist", pin="valid")
        expect(lab, who, "+6012%07d" % random.randint(0, 9999999), "block", "country_whitelist",
               pin="valid")
        expect(lab, who, wl_dnc, "block", "pin_required")
        expect(lab, who, wl_dnc, "block", "pin_wrong", pin="wrong")
        expect(lab, who, wl_dnc, "allow", "company_whitelist", pin="valid")

    def test_pin_is_stored_hashed(self, running_lab, org):
        """ccqctl pin set keeps a PBKDF2 hash, never the PIN; neither queued
        nor Kamailio logs it."""
        lab = running_lab
        org.user("101", "Alice Lim")
        off_q, off_k = lab.log_size("queued"), lab.log_size("kamailio")
        set_pin(org, "101", "937264")
        rows = lab.sql("SELECT u.pin_hash FROM user u JOIN org o ON o.id = u.org_id "
                       "WHERE o.name = '%s' AND u.ext_key = '101'" % org.name)
        h = rows[0][0]
        assert h.startswith("pbkdf2-sha256$") and "937264" not in h, h
        synced(lab)
        assert "937264" not in lab.log_since("queued", off_q)
        assert "937264" not in lab.log_since("kamailio", off_k)
        # a PIN is digits, 4 to 12 of them
        for bad in ("12a4", "123", "1234567890123"):
            r = subprocess.run([CCQCTL, "-s", lab.queued_sock, "-o", org.name, "pin", "set", "101"],
                               input=bad + "\n", capture_output=True, text=True, env=lab.env,
                               timeout=20)
            assert r.returncode != 0, "PIN %r was accepted: %s" % (bad, r.stdout)
        assert lab.sql("SELECT pin_hash FROM user u JOIN org o ON o.id = u.org_id WHERE "
                       "o.name = '%s' AND u.ext_key = '101'" % org.name)[0][0] == h

    INVALID = [
        # (dialled, why the normaliser gives)
        ("+65 9123 ABCD", "contains letters"),
        ("tel:+6591234567", "contains letters"),
        ("+", "no digits after the international prefix"),
        ("00", "no digits after the international prefix"),
        ("+65 123", "too short"),
        ("123", None),
        ("+65 9123 4567 8901 234", "too long"),
        ("+1 212 555 12345", "too long"),
        ("+28 1234 5678", "unknown country calling code"),
        ("65+91234567", "'+' is only allowed once, at the start"),
        ("++6591234567", "'+' is only allowed once, at the start"),
        ("+65#91234567", "neither a digit nor a separator"),
        ("*1234", "neither a digit nor a separator"),
        ("0 9123 4567", "not a valid number for its country"),     # SG has no trunk 0
        ("+65 0123 4567", "not a valid number for its country"),
        ("  - ", "empty number"),
        ("6591234567'; DROP TABLE user; --", None),
    ]

    def test_invalid_numbers(self, running_lab, org):
        lab = running_lab
        org.user("101", "Alice Lim")
        synced(lab)
        who = "101@" + org.name
        bad = []
        for dialled, why in self.INVALID:
            v = check(lab, who, dialled)
            ok = (v["verdict"], v["rule"], v["reason"], v["number"]) == (
                "block", "invalid_number", REASONS["invalid_number"], "-")
            if not ok or (why and why not in v["why"]):
                bad.append((dialled, why, v))
        assert not bad, "\n".join(repr(x) for x in bad)

    NORMALISE = [
        # (org country, dialled, E.164, country, international)
        ("SG", "91234567", "+6591234567", "SG", 0),
        ("SG", "9123 4567", "+6591234567", "SG", 0),
        ("SG", "9123-4567", "+6591234567", "SG", 0),
        ("SG", "9123.4567", "+6591234567", "SG", 0),
        ("SG", "+65 9123 4567", "+6591234567", "SG", 0),
        ("SG", "(+65) 9123-4567", "+6591234567", "SG", 0),
        ("SG", "0065 9123 4567", "+6591234567", "SG", 0),
        ("SG", "0060 12-345 6789", "+60123456789", "MY", 1),
        ("SG", "+44 (0)20 7946 0000", "+442079460000", "GB", 1),
        ("MY", "012-345 6789", "+60123456789", "MY", 0),
        ("MY", "12 345 6789", "+60123456789", "MY", 0),
        ("MY", "+60 12.345.6789", "+60123456789", "MY", 0),
        ("MY", "0060123456789", "+60123456789", "MY", 0),
        ("MY", "9123 4567", "+6091234567", "MY", 0),
        ("MY", "+65 9123 4567", "+6591234567", "SG", 1),
        ("GB", "020 7946 0000", "+442079460000", "GB", 0),
        ("GB", "+44 (0)20 7946 0000", "+442079460000", "GB", 0),
        ("GB", "0044 20 7946 0000", "+442079460000", "GB", 0),
        ("GB", "0044 020 7946 0000", "+442079460000", "GB", 0),
        ("US", "(212) 555-0123", "+12125550123", "US", 0),
        ("US", "1 212 555 0123", "+12125550123", "US", 0),
        ("US", "011 65 9123 4567", "+6591234567", "SG", 1),
        ("US", "+1 416 555 0123", "+14165550123", "CA", 1),
        ("IT", "06 1234 5678", "+390612345678", "IT", 0),
    ]

    def test_normalisation(self, running_lab):
        """Numbers as agents type them become E.164 with the organisation's
        default country (national trunk prefix, +, 00, 011, separators)."""
        lab = running_lab
        who = {}
        for cc in sorted({row[0] for row in self.NORMALISE}):
            o = Org(lab, prefix="n" + cc.lower(), country=cc)
            o.user("101", "Alice Lim")
            who[cc] = "101@" + o.name
        synced(lab)
        bad = []
        for cc, dialled, e164, country, intl in self.NORMALISE:
            v = check(lab, who[cc], dialled)
            got = (v["verdict"], v["number"], v["country"], v["international"])
            if got != ("allow", e164, country, str(intl)):
                bad.append((cc, dialled, (e164, country, intl), v))
        assert not bad, "\n".join(repr(x) for x in bad)

    def test_list_normalises_entries_like_the_gate(self, running_lab, org):
        """A number added in national or spaced form is stored as E.164 and
        matches however the agent dials it."""
        lab = running_lab
        org.user("101", "Alice Lim")
        who = "101@" + org.name
        n = fresh_number()
        nat = national(n)
        org.ok("list", "add", "blacklist", "%s %s" % (nat[:4], nat[4:]))
        assert org.json("list", "show", "blacklist")["numbers"] == [n]
        synced(lab)
        for dialled in (n, nat, "00" + n[1:], "+65 %s-%s" % (nat[:4], nat[4:]),
                        "%s.%s" % (nat[:4], nat[4:])):
            expect(lab, who, dialled, "block", "company_blacklist", number=n)

    def test_own_country_code_without_plus_cannot_dodge_a_list(self, running_lab, org):
        """"6581234567" typed in Singapore reads as national +65 6581234567,
        but may be meant as +65 8123 4567: when that reading is on the DNC
        registry or the blacklist, the call is blocked."""
        lab = running_lab
        org.user("101", "Alice Lim")
        who = "101@" + org.name
        dnc, bl = fresh_number(), fresh_number()
        org.ok("list", "add", "dnc", dnc)
        org.ok("list", "add", "blacklist", bl)
        synced(lab)
        expect(lab, who, dnc[1:], "block", "dnc", number=dnc)
        expect(lab, who, bl[1:], "block", "company_blacklist", number=bl)
        # a number not on any list is still read as national
        n = fresh_number()
        v = expect(lab, who, n[1:], "allow", "default_allow")
        assert v["number"] in (n, "+65" + n[1:]), v

    def test_change_reaches_kamailio_within_a_second(self, running_lab, org):
        """Add to (and remove from) the DNC registry, a personal whitelist
        and the policy: each is in force within a second, no reload needed."""
        lab = running_lab
        org.user("101", "Alice Lim")
        synced(lab)
        who, n = "101@" + org.name, fresh_number()
        expect(lab, who, n, "allow", "default_allow")
        took = {}
        org.ok("list", "add", "dnc", n)
        took["dnc add"] = wait_rule(lab, who, n, "dnc")[1]
        org.ok("list", "add", "personal", "--ext", "101", n)
        took["personal add"] = wait_rule(lab, who, n, "personal_whitelist")[1]
        org.ok("list", "remove", "personal", "--ext", "101", n)
        took["personal remove"] = wait_rule(lab, who, n, "dnc")[1]
        org.ok("list", "remove", "dnc", n)
        took["dnc remove"] = wait_rule(lab, who, n, "default_allow")[1]
        org.ok("policy", "set", "--pin-policy", "all")
        took["policy"] = wait_rule(lab, who, n, "pin_required")[1]
        slow = {k: round(v, 2) for k, v in took.items() if v > 1.0}
        assert not slow, "changes took longer than a second to reach Kamailio: %r (all: %r)" % (
            slow, took)
        # a user created just now is known to the gate as quickly
        org.user("102", "Bob Ong")
        t0 = time.monotonic()
        assert wait_until(lambda: "verdict" in parse_rpc(lab.kamcmd(
            "ccq.compliance.check", "s:102@" + org.name, "s:" + n).stdout), 3, 0.05), \
            "a new user is unknown to the gate after 3 s"
        assert time.monotonic() - t0 <= 1.0

    def test_list_add_remove_show_count(self, running_lab, org):
        lab = running_lab
        org.user("101", "Alice Lim")
        org.user("102", "Bob Ong")
        nums = sorted(fresh_number() for _ in range(3))
        r = org.ok("list", "add", "whitelist", *nums)
        assert "added 3" in r.stdout, r.stdout
        r = org.ok("list", "add", "whitelist", nums[0])          # already there
        assert "added 0" in r.stdout, r.stdout
        assert org.ok("list", "count", "whitelist").stdout.strip() == "3"
        assert org.json("list", "show", "whitelist")["numbers"] == nums
        assert org.json("list", "show", "whitelist", "--limit", "1", "--after",
                        nums[0])["numbers"] == [nums[1]]
        r = org.ok("list", "remove", "whitelist", nums[1], fresh_number())
        assert "removed 1" in r.stdout, r.stdout
        assert org.json("list", "show", "whitelist")["numbers"] == [nums[0], nums[2]]
        # personal whitelists are per user
        org.ok("list", "add", "personal", "--ext", "101", nums[0])
        assert org.json("list", "show", "personal", "--ext", "101")["numbers"] == [nums[0]]
        assert org.json("list", "show", "personal", "--ext", "102")["numbers"] == []
        assert org.json("list", "count", "personal", "--ext", "102")["count"] == 0
        code, _ = org.error("list", "add", "personal", "--ext", "999", nums[0])
        assert code == "not_found", code
        # prefixes: only for the blacklist and the DNC registry
        j = org.json("list", "add", "whitelist", "+6531*")
        assert j["added"] == 0 and j["rejected"] == 1 and "prefix" in j["errors"][0]["why"], j
        j = org.json("list", "add", "blacklist", "+6531*")
        assert j["added"] == 1, j
        assert "6531*" in org.json("list", "show", "blacklist")["numbers"]
        synced(lab)
        expect(lab, "101@" + org.name, "+6531%06d" % random.randint(0, 999999), "block",
               "company_blacklist")
        code, _ = org.error("list", "add", "greylist", nums[0])
        assert code == "bad_request", code
        # members may not change the company's lists
        code, _ = org.error("list", "add", "blacklist", fresh_number(), as_="102")
        assert code == "denied", code
        code, _ = org.error("list", "add", "dnc", fresh_number(), as_="102")
        assert code == "denied", code

    def test_dnc_import_with_junk(self, running_lab, org, tmp_path):
        """A DNC file as registries ship them, with Windows line endings,
        blank lines, comments, duplicates (also in other formats), national
        numbers (--country), junk and hostile lines: every bad line is
        reported with its line number, the rest is loaded once."""
        lab = running_lab
        org.user("101", "Alice Lim")
        who = "101@" + org.name
        good = [fresh_number() for _ in range(5)]
        lines = [
            "# national DNC registry extract",          # 1 comment
            good[0],                                     # 2
            "",                                          # 3 blank
            "   ",                                       # 4 blank
            good[1],                                     # 5
            good[0],                                     # 6 duplicate
            "00" + good[1][1:],                          # 7 duplicate, other format
            "hello world",                               # 8 junk
            "+65 123",                                   # 9 too short
            "12345678901234567890",                      # 10 too long
            "+",                                         # 11 only '+'
            "'; DROP TABLE dnc_number; --",              # 12 hostile
            "6591234567' OR '1'='1",                     # 13 hostile
            national(good[2]),                           # 14 national (with --country SG)
            "%s %s" % (national(good[3])[:4], national(good[3])[4:]),   # 15 spaced national
            "x" * 80,                                    # 16 longer than 64 characters
            good[4] + "\t",                              # 17 trailing blank
        ]
        path = tmp_path / "dnc.txt"
        path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
        before = int(org.ok("list", "count", "dnc").stdout)
        r = org.ok("list", "import", "dnc", str(path), "--country", "SG", timeout=60)
        out = r.stdout
        rejected = {int(m.group(1)): m.group(0) for m in
                    re.finditer(r"^line (\d+): rejected: .*$", out, re.M)}
        assert sorted(rejected) == [8, 9, 10, 11, 12, 13, 16], out
        assert "\r" not in out, "a CR of the Windows line ending leaked into the report: %r" % out
        m = re.search(r"^(\d+) lines read, (\d+) valid numbers, (\d+) newly added, (\d+) rejected$",
                      out, re.M)
        assert m, out
        assert [int(x) for x in m.groups()] == [17, 7, 5, 7], out
        assert int(org.ok("list", "count", "dnc").stdout) == before + 5
        synced(lab)
        for n in good:
            expect(lab, who, n, "block", "dnc")
        # the hostile lines did nothing: the tables are there, the gate works
        assert int(lab.sql("SELECT COUNT(*) FROM dnc_number WHERE number NOT REGEXP "
                           "'^[0-9]{1,15}[*]?$'")[0][0]) == 0
        # importing the same file again adds nothing
        r = org.ok("list", "import", "dnc", str(path), "--country", "SG", timeout=60)
        assert re.search(r"^17 lines read, 7 valid numbers, 0 newly added, 7 rejected$",
                         r.stdout, re.M), r.stdout
        # without a country, national numbers cannot be placed
        path2 = tmp_path / "national.txt"
        path2.write_text(national(fresh_number()) + "\n")
        r = org.ok("list", "import", "dnc", str(path2))
        assert re.search(r"^line 1: rejected: .*national", r.stdout, re.M), r.stdout
        # an unknown country is refused
        r = org.ctl("list", "import", "dnc", str(path2), "--country", "XX")
        assert r.returncode != 0, r.stdout
        # a missing file is a usage error, not a crash
        r = org.ctl("list", "import", "dnc", str(tmp_path / "nope.txt"))
        assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)

    def test_dnc_import_from_stdin_in_batches(self, running_lab, org):
        """More numbers than one batch (5000) from standard input: all are
        loaded, and the gate has them within a few seconds."""
        lab = running_lab
        org.user("101", "Alice Lim")
        start = random.randint(0, 10 ** 7 - 12001)
        nums = ["+653%07d" % (start + i) for i in range(12000)]
        data = "\n".join(nums) + "\n"
        before = int(org.ok("list", "count", "dnc").stdout)
        r = subprocess.run([CCQCTL, "-s", lab.queued_sock, "list", "import", "dnc", "-"],
                           input=data, capture_output=True, text=True, env=lab.env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"^12000 lines read, 12000 valid numbers, \d+ newly added, 0 rejected$",
                         r.stdout, re.M), r.stdout
        after = int(org.ok("list", "count", "dnc").stdout)
        assert after >= before + 12000 - 10, (before, after)   # a few may exist already
        synced(lab, timeout=5)
        who = "101@" + org.name
        for n in (nums[0], nums[4999], nums[5000], nums[-1]):
            expect(lab, who, n, "block", "dnc")
        # and out again (list remove takes many numbers per request)
        for i in range(0, len(nums), 5000):
            r = lab.ccqctl("list", "remove", "dnc", *nums[i:i + 5000], timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
        synced(lab, timeout=5)
        expect(lab, who, nums[-1], "allow", "default_allow")

    def test_sql_hostile_entries(self, running_lab, org):
        """Hostile strings in list entries, extensions and the RPC are refused
        as numbers; nothing is changed and nothing breaks."""
        lab = running_lab
        org.user("101", "Alice Lim")
        keep = fresh_number()
        org.ok("list", "add", "blacklist", keep)
        hostile = ["'; DROP TABLE org_list_number; --", "1' OR '1'='1", "\\", "\"; --",
                   "6591234567'--", "65912345%", "6591234567); DELETE FROM org_list_number; --",
                   "+65 9123 4567;", "\u0665\u0669\u0661", "65*' OR 1=1 --"]
        for listname in ("blacklist", "whitelist", "dnc"):
            j = org.json("list", "add", listname, *hostile)
            assert j["added"] == 0 and j["rejected"] == len(hostile), (listname, j)
            j = org.json("list", "remove", listname, *hostile)
            assert j["removed"] == 0 and j["rejected"] == len(hostile), (listname, j)
        j = org.json("list", "add", "personal", "--ext", "101", *hostile)
        assert j["added"] == 0, j
        code, _ = org.error("list", "add", "personal", "--ext", "101' OR '1'='1", keep)
        assert code == "not_found", code
        # paging with a hostile cursor is just a cursor
        assert org.json("list", "show", "blacklist", "--after", "' OR 1=1 --")["numbers"] == [keep]
        assert org.json("list", "count", "blacklist")["count"] == 1
        # the RPC refuses them as numbers or extensions
        synced(lab)
        who = "101@" + org.name
        for h in hostile[:3]:
            v = check(lab, who, h)
            assert v["rule"] == "invalid_number", (h, v)
        rpc_fault(lab, "ccq.compliance.check", "s:101' OR '1'='1@" + org.name, "s:" + keep)
        # everything still works
        for t in ("org_list_number", "dnc_number", "user_list_number", "user", "org"):
            lab.sql("SELECT COUNT(*) FROM %s" % t)
        expect(lab, who, keep, "block", "company_blacklist")
        assert running_lab.status().returncode == 0

    def test_rpc_usage_errors(self, running_lab, org):
        lab = running_lab
        org.user("101", "Alice Lim")
        other = Org(lab, prefix="dup")
        other.user("101", "Dup User")
        synced(lab)
        n = fresh_number()
        assert "404" in rpc_fault(lab, "ccq.compliance.check", "s:999@" + org.name, "s:" + n)
        assert "404" in rpc_fault(lab, "ccq.compliance.check", "s:101@no-such-org", "s:" + n)
        # ext 101 exists in two organisations: ambiguous without @org
        assert "404" in rpc_fault(lab, "ccq.compliance.check", "s:101", "s:" + n)
        assert "400" in rpc_fault(lab, "ccq.compliance.check", "s:101@" + org.name)
        assert "400" in rpc_fault(lab, "ccq.compliance.check")
        expect(lab, "101@" + org.name, n, "allow", "default_allow")

    def test_rpc_number_typed_without_s_prefix(self, running_lab, org):
        """kamcmd sends an argument that looks like a number as an integer
        (a 32-bit int: +6591234567 does not fit). The dry run must answer
        for the number typed, or refuse it; never for some other number."""
        lab = running_lab
        org.user("101", "Alice Lim")
        synced(lab)
        for typed, e164 in (("+6591234567", "+6591234567"), ("91234567", "+6591234567"),
                            ("+60123456789", "+60123456789")):
            r = lab.kamcmd("ccq.compliance.check", "s:101@" + org.name, typed)
            out = r.stdout + r.stderr
            if out.lstrip().startswith("error"):
                continue        # refused: fine (s:%s is the way)
            v = parse_rpc(out)
            assert v.get("number") == e164, \
                "kamcmd ccq.compliance.check 101@ORG %s: a verdict for something else than " \
                "%s (the RPC got it as an integer): %r" % (typed, e164, v)

    def test_stats_move(self, running_lab, org):
        """ccq.compliance.stats: version, entries, bytes, users and devices
        follow the changes; ccq.compliance.reload reloads at once."""
        lab = running_lab
        synced(lab)
        s0 = stats(lab)
        for k in ("version", "dnc_entries", "list_entries", "bytes", "bytes_per_entry",
                  "organisations", "users", "devices", "load_ms"):
            assert k in s0, s0
        org.user("101", "Alice Lim")
        org.device("101")
        dnc = [fresh_number() for _ in range(7)]
        bl = [fresh_number() for _ in range(4)]
        org.ok("list", "add", "dnc", *dnc)
        org.ok("list", "add", "blacklist", *bl)
        org.ok("list", "add", "personal", "--ext", "101", *bl[:2])
        synced(lab)
        s1 = stats(lab)
        assert int(s1["version"]) > int(s0["version"]), (s0, s1)
        assert int(s1["dnc_entries"]) == int(s0["dnc_entries"]) + 7, (s0, s1)
        assert int(s1["list_entries"]) == int(s0["list_entries"]) + 6, (s0, s1)
        assert int(s1["bytes"]) > int(s0["bytes"]), (s0, s1)
        assert int(s1["organisations"]) >= int(s0["organisations"]) + 1, (s0, s1)
        assert int(s1["users"]) == int(s0["users"]) + 1, (s0, s1)
        assert int(s1["devices"]) == int(s0["devices"]) + 1, (s0, s1)
        # the DNC count matches the table
        assert int(s1["dnc_entries"]) == int(lab.sql("SELECT COUNT(*) FROM dnc_number")[0][0])
        org.ok("list", "remove", "dnc", *dnc[:3])
        synced(lab)
        s2 = stats(lab)
        assert int(s2["dnc_entries"]) == int(s1["dnc_entries"]) - 3, (s1, s2)
        # reload on demand: a fresh load is logged, the data is unchanged
        off = lab.log_size("kamailio")
        out = rpc(lab, "ccq.compliance.reload")
        assert "reload" in out, out
        assert wait_until(lambda: "compliance snapshot %s loaded" % s2["version"]
                          in lab.log_since("kamailio", off), 3, 0.1), \
            "no reload logged:\n" + lab.log_since("kamailio", off)[-2000:]
        assert stats(lab)["dnc_entries"] == s2["dnc_entries"]


# ------------------------------------------------------------------ SIP

def outbound_org(lab, caller_id=None, pin=None, policy=None, ext="101", name="Alice Lim"):
    """An organisation (SG) with user EXT (caller ID, first inbox Sales,
    optionally a PIN and a PIN policy) and a registered desk phone; the
    lab's trunk is provisioned. Returns (org, phone, caller ID)."""
    org = Org(lab, prefix="ob")
    caller_id = caller_id or "+656%07d" % random.randint(0, 9999999)
    user_with_caller_id(org, ext, name, caller_id)
    org.inbox("Sales", did=False)
    org.inbox("Billing", did=False)
    org.member("Sales", ext)
    org.member("Billing", ext)
    if pin:
        set_pin(org, ext, pin)
    if policy:
        org.ok("policy", "set", "--pin-policy", policy)
    phone = org.device(ext)
    phone.register(expires=600)
    lab.trunk_port(0)
    synced(lab)
    return org, phone, caller_id


class Call:
    """One device call (outbound_call.xml) with the carrier (outbound_trunk.xml)
    listening on the lab's trunk address."""

    def __init__(self, lab, phone, dialled, talk_ms=1000, spoof=None, carrier_hangs_up=False):
        self.lab, self.phone, self.dialled = lab, phone, dialled
        self.call_id = "ccqout-%s@127.0.0.1" % os.urandom(8).hex()
        tport = int(lab.trunk_addr.rsplit(":", 1)[1])
        if carrier_hangs_up:
            self.trunk = lab.sipp("outbound_trunk_hangup.xml", tport, "-d", str(talk_ms),
                                  timeout=30, background=True, name="trunk")
        else:
            self.trunk = lab.sipp("outbound_trunk.xml", tport, timeout=30, background=True,
                                  name="trunk")
        self.trunk.call_id = self.call_id
        try:
            args = ["-s", dialled, "-key", "user", phone.username, "-au", phone.username,
                    "-ap", phone.password, "-cid_str", self.call_id]
            scen = "outbound_call.xml"
            if carrier_hangs_up:
                scen = "outbound_call_hungup.xml"
            else:
                args += ["-d", str(talk_ms)]
            if spoof:
                args += ["-key", "spoof", spoof]
                scen = "outbound_call_spoof.xml"
            self.dev = lab.sipp(scen, phone.port, *args, remote=lab.sip_addr, timeout=25,
                                name="dial")
            self.dev.call_id = self.call_id
            if self.dev.final() == 200:
                self.trunk.wait(15)
            else:
                # whatever the proxy would have sent the carrier has arrived by now
                time.sleep(0.7)
        finally:
            self.trunk.stop()

    def _final_line(self):
        """The first line of the final response to the authenticated INVITE
        (CSeq 2; the 407 to the first one is not it)."""
        for d, first, blk in self.dev.messages():
            if d == "received" and first.startswith("SIP/2.0 ") \
                    and re.search(r"^CSeq:\s*2 INVITE", blk, re.M | re.I) \
                    and int(first.split()[1]) >= 200:
                return first
        return None

    def final(self):
        line = self._final_line()
        return int(line.split()[1]) if line else None

    def reason(self):
        """The reason phrase of the final response."""
        line = self._final_line()
        return line.split(" ", 2)[2].strip() if line else None

    def trunk_invite(self):
        invs = self.trunk.received("INVITE ")
        assert invs, "the carrier got no INVITE for %s (device got %r)\n%s\n--- carrier:\n%s" % (
            self.dialled, self.dev.responses(), self.dev.summary(), self.trunk.summary())
        return invs[0]

    def assert_answered(self):
        assert self.dev.rc == 0 and self.final() == 200, \
            "the call to %r was not answered: %r (final: %s %s)\n%s\n--- carrier:\n%s" % (
                self.dialled, self.dev.responses(), self.final(), self.reason(),
                self.dev.summary(), self.trunk.summary())
        assert self.trunk.rc == 0, "the carrier's side failed:\n" + self.trunk.summary()

    def assert_blocked(self, reason):
        assert self.dev.rc == 0, self.dev.summary()
        assert self.final() == 403 and self.reason() == reason, \
            "dialled %r: expected 403 %s, got %r %r\n%s" % (
                self.dialled, reason, self.dev.responses(), self.reason(), self.dev.summary())
        assert self.trunk.requests() == [], \
            "the carrier saw a blocked call to %r:\n%s" % (self.dialled, self.trunk.summary())

    def txn(self, status=("Ended", "Failed"), timeout=10):
        t = self.lab.wait_txn_state(self.call_id, lambda t: t["status"] in status, timeout)
        assert t and t["status"] in status, "TXN of %s: wanted %s, got %r" % (
            self.call_id, status, t)
        return t


def header(msg, name, short=None):
    names = name if not short else "(?:%s|%s)" % (name, short)
    m = re.search(r"^%s\s*:\s*(.*?)\r?$" % names, msg, re.M | re.I)
    return m.group(1) if m else None


def uri_user(value):
    m = re.search(r"<?sips?:([^@;>]+)@", value or "")
    return m.group(1) if m else None


def kinds(t):
    return [e["kind"] for e in t["events"]]


def texts(t):
    return [e["text"] for e in t["events"]]


class TestOutboundCalls:
    """A device's calls through Kamailio to the carrier trunk."""

    def test_allowed_call_reaches_the_trunk_with_the_extension_caller_id(self, running_lab):
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        number = fresh_number()
        org.customer("Jane Tan", number)
        call = Call(lab, phone, national(number), talk_ms=2000)
        call.assert_answered()
        inv = call.trunk_invite()
        tport = lab.trunk_addr
        assert re.search(r"^INVITE sip:%s@%s[;> ]" % (re.escape(number), re.escape(tport)),
                         inv, re.M), "request URI is not sip:%s@%s:\n%s" % (number, tport, inv)
        frm = header(inv, "From", "f")
        assert uri_user(frm) == cid, "From user is not the caller ID %s: %s" % (cid, frm)
        assert phone.username not in frm, frm
        pai = header(inv, "P-Asserted-Identity")
        assert pai and uri_user(pai) == cid, "P-Asserted-Identity: %r" % pai
        # the media is anchored in rtpengine
        m = re.search(r"^m=audio (\d+) ", inv, re.M)
        lo, hi = lab.rtp_range
        assert m and lo <= int(m.group(1)) <= hi, "the carrier got the device's own SDP:\n" + inv
        # the journey and the sidebar fields
        t = call.txn(("Ended",))
        assert t["direction"] == "outbound" and t["type"] == "outbound", t
        assert t["caller_id"] == cid and t["number"] == number, t
        assert t["result"] == "answered" and t["answered_at"] and t["ended_at"], t
        assert t["agent_ext"] == "101" and t["inbox"] == "Sales", t
        assert t["customer"] == "Jane Tan", t
        assert t["talking_seconds"] is not None and 1 <= int(t["talking_seconds"]) <= 4, t
        k, tx = kinds(t), texts(t)
        # the product page's order: initiated, routed, the agent's device, the customer, ended
        order = ["initiated", "routed", "agent_answered", "answered", "ended"]
        assert [x for x in k if x in order] == order, "journey out of order: %r" % list(zip(k, tx))
        ev = dict(zip(k, tx))
        assert ev["initiated"] == "Outgoing call initiated from Extension 101 - Alice Lim", ev
        assert ev["routed"] == "Call routed to Inbox [Sales]", ev
        assert ev["agent_answered"].startswith("Answered by 101 - Alice Lim - desk_phone"), ev
        assert ev["answered"] == "Answered by Jane Tan", ev
        assert ev["ended"].startswith("Call ended"), ev
        assert not any(x.startswith("Blocked") for x in tx), tx
        ats = [e["at"] for e in t["events"]]
        assert ats == sorted(ats), ats

    def test_inbox_prefix_chooses_the_inbox(self, running_lab):
        """**<inbox id>* before the number routes the call to that inbox (one
        of the extension's); an inbox that is not theirs falls back to the
        default one and the journey says so; the prefix never reaches the
        trunk; a malformed prefix is an invalid number."""
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        mine = org.json("inbox", "create", "Support")["id"]
        org.member("Support", "101")
        other = org.json("inbox", "create", "Secret")["id"]
        number = fresh_number()
        call = Call(lab, phone, "**%d*%s" % (mine, national(number)))
        call.assert_answered()
        inv = call.trunk_invite()
        assert re.search(r"^INVITE sip:%s@" % re.escape(number), inv, re.M), inv
        t = call.txn(("Ended",))
        assert t["inbox"] == "Support", t
        assert "Call routed to Inbox [Support]" in texts(t), texts(t)
        # not one of the extension's inboxes: the default one (Sales)
        call = Call(lab, phone, "**%d*%s" % (other, national(number)))
        call.assert_answered()
        t = call.txn(("Ended",))
        assert t["inbox"] == "Sales", t
        tx = texts(t)
        assert any(x.startswith("Inbox %d is not one of extension 101's inboxes" % other)
                   for x in tx), tx
        assert "Call routed to Inbox [Sales]" in tx, tx
        # with a PIN after it (policy none: the PIN is removed and ignored)
        call = Call(lab, phone, "**%d**1234*%s" % (mine, national(number)))
        call.assert_answered()
        assert call.txn(("Ended",))["inbox"] == "Support"
        for bad in ("**%d" % mine, "**x*" + national(number), "**0*" + national(number)):
            Call(lab, phone, bad).assert_blocked("Blocked: invalid number")

    def test_answered_by_number_when_no_customer(self, running_lab):
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        number = fresh_number()
        call = Call(lab, phone, "+65" + national(number))
        call.assert_answered()
        t = call.txn(("Ended",))
        ev = dict(zip(kinds(t), texts(t)))
        assert ev.get("answered") in ("Answered by %s" % number,
                                      "Answered by +65 %s %s" % (national(number)[:4],
                                                                 national(number)[4:])), ev

    def test_caller_id_falls_back_to_the_inbox_did_then_withheld(self, running_lab):
        """A user without a caller ID presents the first DID of their default
        inbox; with no inbox number either, the call goes out withheld
        (anonymous From, Privacy: id), never with the device's SIP user."""
        lab = running_lab
        org = Org(lab, prefix="ob")
        sales = org.inbox("Sales")          # with a DID
        org.user("101", "Alice Lim")
        org.member("Sales", "101")
        org.user("102", "Bob Ong")          # no caller ID, no inbox
        alice, bob = org.device("101"), org.device("102")
        alice.register(expires=600)
        bob.register(expires=600)
        lab.trunk_port(0)
        synced(lab)
        call = Call(lab, alice, national(fresh_number()))
        call.assert_answered()
        frm = header(call.trunk_invite(), "From", "f")
        assert uri_user(frm) == sales.did, "From is not the inbox DID %s: %s" % (sales.did, frm)
        assert alice.username not in frm, frm
        assert call.txn(("Ended",))["caller_id"] == sales.did
        call = Call(lab, bob, national(fresh_number()))
        call.assert_answered()
        inv = call.trunk_invite()
        frm = header(inv, "From", "f")
        assert "sip:anonymous@anonymous.invalid" in frm and "Anonymous" in frm, frm
        assert bob.username not in frm and bob.username not in (header(inv, "P-Asserted-Identity")
                                                                or ""), inv
        assert (header(inv, "Privacy") or "").strip() == "id", inv
        assert not call.txn(("Ended",))["caller_id"]
        # joining an inbox alone reaches the proxy: Bob now presents its DID
        org.member("Sales", "102")
        synced(lab)
        call = Call(lab, bob, national(fresh_number()))
        call.assert_answered()
        frm = header(call.trunk_invite(), "From", "f")
        assert uri_user(frm) == sales.did, "a new member still goes out as %s" % frm

    def test_device_cannot_choose_its_caller_id(self, running_lab):
        """From display name, P-Asserted-Identity, P-Preferred-Identity and
        Remote-Party-ID from the device are not what the carrier sees."""
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        spoof = fresh_number("+6599")
        call = Call(lab, phone, national(fresh_number()), spoof=spoof)
        call.assert_answered()
        inv = call.trunk_invite()
        assert uri_user(header(inv, "From", "f")) == cid, inv
        assert uri_user(header(inv, "P-Asserted-Identity")) == cid, inv
        assert spoof not in inv and spoof[1:] not in inv, \
            "the device's own caller ID %s reached the carrier:\n%s" % (spoof, inv)
        t = call.txn(("Ended",))
        assert t["caller_id"] == cid, t

    def test_dnc_number_is_refused_and_the_trunk_sees_nothing(self, running_lab):
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        number = fresh_number()
        org.ok("list", "add", "dnc", number)
        synced(lab)
        call = Call(lab, phone, national(number))
        call.assert_blocked("Blocked by DNC registry")
        t = call.txn(("Failed",))
        assert t["direction"] == "outbound" and t["type"] == "outbound", t
        assert t["caller_id"] == cid and t["number"] == number, t
        assert not t["answered_at"], t
        k, tx = kinds(t), texts(t)
        assert k[:2] == ["initiated", "routed"], list(zip(k, tx))
        assert tx[0] == "Outgoing call initiated from Extension 101 - Alice Lim", tx
        assert tx[1] == "Call routed to Inbox [Sales]", tx
        assert any(x.startswith("Blocked by compliance: Blocked by DNC registry") for x in tx), tx
        assert not any(x.startswith("Answered") for x in tx), tx
        # the whitelist lets the same number through
        org.ok("list", "add", "whitelist", number)
        synced(lab)
        call = Call(lab, phone, national(number))
        call.assert_answered()
        assert re.search(r"^INVITE sip:%s@" % re.escape(number), call.trunk_invite(), re.M)

    @pytest.mark.parametrize("case", ["blacklist", "country", "invalid"])
    def test_other_rules_refuse_with_their_reason(self, running_lab, case):
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        if case == "blacklist":
            number = fresh_number()
            org.ok("list", "add", "blacklist", number)
            dialled, reason = national(number), "Blocked by company blacklist"
        elif case == "country":
            org.ok("policy", "set", "--countries", "SG")
            dialled, reason = "00601234%05d" % random.randint(0, 99999), \
                "Blocked: destination country not allowed"
        else:
            dialled, reason = "12", "Blocked: invalid number"
        synced(lab)
        call = Call(lab, phone, dialled)
        call.assert_blocked(reason)
        t = call.txn(("Failed",))
        assert any(x.startswith("Blocked by compliance: " + reason) for x in texts(t)), texts(t)

    def test_pin_is_stripped_before_the_trunk(self, running_lab):
        lab = running_lab
        org, phone, cid = outbound_org(lab, pin="739182", policy="all")
        number = fresh_number()
        call = Call(lab, phone, "*739182*" + national(number))
        call.assert_answered()
        inv = call.trunk_invite()
        assert re.search(r"^INVITE sip:%s@" % re.escape(number), inv, re.M), inv
        assert "739182" not in inv, "the PIN reached the carrier:\n%s" % inv
        t = call.txn(("Ended",))
        assert t["number"] == number, t
        assert not any("739182" in x for x in texts(t)), texts(t)

    def test_pin_required_and_wrong_pin_are_refused(self, running_lab):
        lab = running_lab
        org, phone, cid = outbound_org(lab, pin="739182", policy="all")
        number = national(fresh_number())
        Call(lab, phone, number).assert_blocked("Blocked: PIN required")
        call = Call(lab, phone, "*111111*" + number)
        call.assert_blocked("Blocked: wrong PIN")
        t = call.txn(("Failed",))
        assert any(x.startswith("Blocked by compliance: Blocked: wrong PIN") for x in texts(t)), t
        assert not any("111111" in x for x in texts(t)), texts(t)

    def test_pin_prefix_without_a_number_is_refused(self, running_lab):
        lab = running_lab
        org, phone, cid = outbound_org(lab, pin="739182", policy="international")
        for dialled in ("*739182*", "*739182", "*73a182*81234567"):
            call = Call(lab, phone, dialled)
            assert call.final() == 403, (dialled, call.dev.responses(), call.dev.summary())
            # doc/compliance.md: a malformed PIN prefix is invalid_number, not counted
            assert call.reason() == "Blocked: invalid number", (dialled, call.reason())
            assert call.trunk.requests() == [], call.trunk.summary()

    def test_five_wrong_pins_lock_the_user(self, running_lab):
        """Five wrong PINs in a row: the sixth call, even with the right PIN,
        is refused (pin_locked); another user of the organisation is not
        affected."""
        lab = running_lab
        org, phone, cid = outbound_org(lab, pin="739182", policy="all")
        user_with_caller_id(org, "102", "Bob Ong", "+6560009999")
        set_pin(org, "102", "246810")
        phone2 = org.device("102")
        phone2.register(expires=600)
        synced(lab)
        number = national(fresh_number())
        for i in range(5):
            Call(lab, phone, "*00000%d*%s" % (i, number)).assert_blocked("Blocked: wrong PIN")
        Call(lab, phone, "*739182*" + number).assert_blocked(
            "Blocked: PIN locked after too many wrong PINs")
        # the dry run sees the lockout as a call does
        v = check(lab, "101@" + org.name, number, "valid")
        assert (v["verdict"], v["rule"], v["locked"]) == ("block", "pin_locked", "1"), v
        # another user of the organisation is not locked
        ok = Call(lab, phone2, "*246810*" + number)
        ok.assert_answered()
        # an operator lifts the lockout; the right PIN works again
        out = parse_rpc(rpc(lab, "ccq.pin.unlock", "s:101@" + org.name))
        assert out.get("was_locked") == "1", out
        assert check(lab, "101@" + org.name, number, "valid")["locked"] == "0"
        Call(lab, phone, "*739182*" + number).assert_answered()
        assert "error" in rpc_fault(lab, "ccq.pin.unlock", "s:999@" + org.name)

    def test_carrier_hangs_up(self, running_lab):
        """The customer ends the call: the carrier's BYE reaches the device
        through the proxy, addressed to the device's own URI again (the
        caller ID the carrier saw is swapped back), and the journey says who
        ended it."""
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        number = fresh_number()
        org.customer("Jane Tan", number)
        call = Call(lab, phone, national(number), talk_ms=1500, carrier_hangs_up=True)
        call.assert_answered()
        byes = call.dev.received("BYE ")
        assert byes, "the device got no BYE:\n" + call.dev.summary()
        to = header(byes[0], "To", "t")
        assert uri_user(to) == phone.username, \
            "the BYE reached the device addressed to %r, not to its own URI" % to
        t = call.txn(("Ended",))
        assert t["result"] == "answered", t
        ev = dict(zip(kinds(t), texts(t)))
        assert ev["answered"] == "Answered by Jane Tan", ev
        assert ev["ended"] == "Call ended by the customer", ev
        assert 1 <= int(t["talking_seconds"]) <= 3, t

    def test_device_hangs_up_and_the_journey_says_so(self, running_lab):
        lab = running_lab
        org, phone, cid = outbound_org(lab)
        call = Call(lab, phone, national(fresh_number()), talk_ms=1000)
        call.assert_answered()
        assert call.trunk.received("BYE "), "the carrier got no BYE:\n" + call.trunk.summary()
        ev = dict(zip(kinds(call.txn(("Ended",))), texts(call.txn(("Ended",)))))
        assert ev["ended"] == "Call ended by the agent", ev

    def test_wrong_pin_on_a_call_a_list_blocks_does_not_count(self, running_lab):
        """Only a PIN the gate looked at counts towards the lockout: calls
        that a list rule (here the DNC registry) blocks before the PIN step
        do not lock the user, whatever PIN they carried."""
        lab = running_lab
        org, phone, cid = outbound_org(lab, pin="739182", policy="all")
        dnc = fresh_number()
        org.ok("list", "add", "dnc", dnc)
        synced(lab)
        for i in range(5):
            Call(lab, phone, "*00000%d*%s" % (i, national(dnc))).assert_blocked(
                "Blocked by DNC registry")
        Call(lab, phone, "*739182*" + national(fresh_number())).assert_answered()
