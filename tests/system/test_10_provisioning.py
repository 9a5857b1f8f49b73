"""Provisioning through ccqctl and queued's API: validation errors are
clear (unknown extension, duplicate DID, malformed number), hostile text is
stored verbatim, and a refused change writes nothing."""

import json

from ccqlab import new_did

HOSTILE = "O'Brien; DROP TABLE user;--"


def names(items, key="name"):
    return [i[key] for i in items]


def test_unknown_extension_is_not_found_and_writes_nothing(org):
    org.inbox("Sales")
    code, msg = org.error("device", "add", "999", "desk_phone", "ghost999", "secret-pass",
                          "--domain", "127.0.0.1")
    assert code == "not_found" and "999" in msg, (code, msg)
    assert org.json("device", "list") == [], "a device was written for an unknown extension"
    code, msg = org.error("inbox", "member", "add", "Sales", "999")
    assert code == "not_found" and "999" in msg, (code, msg)
    members = [i["members"] for i in org.json("inbox", "list") if i["name"] == "Sales"]
    assert members == [None], members
    code, msg = org.error("user", "update", "999", "--name", "Nobody")
    assert code == "not_found" and "999" in msg, (code, msg)
    # the readable form says it too, on stderr, with exit status 1
    r = org.ctl("device", "add", "999", "desk_phone", "ghost999", "secret-pass",
                "--domain", "127.0.0.1")
    assert r.returncode == 1 and "not_found" in r.stderr and "999" in r.stderr, r


def test_duplicate_did_is_a_conflict(org, running_lab):
    did = new_did()
    org.inbox("Sales", did=False)
    org.inbox("Support", did=False)
    org.json("inbox", "did", "add", "Sales", did)
    # the same number, in every spelling, on another inbox of this org or another org
    national = did[3:]                        # +65 6xxxxxxx -> 6xxxxxxx (SG default)
    spaced = "%s %s %s" % (did[:3], did[3:7], did[7:])
    for number in (did, national, spaced):
        code, msg = org.error("inbox", "did", "add", "Support", number)
        assert code == "conflict", (number, code, msg)
    from ccqlab import Org
    other = Org(running_lab, prefix="other")
    other.inbox("Sales", did=False)
    code, msg = other.error("inbox", "did", "add", "Sales", did)
    assert code == "conflict", (code, msg)
    dids = {i["name"]: i["dids"] for i in org.json("inbox", "list")}
    assert dids == {"Sales": did, "Support": None}, dids
    assert other.json("inbox", "list")[0]["dids"] is None


def test_malformed_numbers_are_bad_requests(org):
    org.inbox("Sales", did=False)
    for bad in ("12ab", "+", "hello", "+65 1", "+6561234567890123456", "6561234567;x"):
        code, msg = org.error("inbox", "did", "add", "Sales", bad)
        assert code == "bad_request", (bad, code, msg)
    assert org.json("inbox", "list")[0]["dids"] is None
    code, msg = org.error("customer", "create", "Bad Number", "--number", "not-a-number")
    assert code == "bad_request" and "not-a-number" in msg, (code, msg)
    code, msg = org.error("user", "create", "105", "Caller Id", "--caller-id", "12ab")
    assert code == "bad_request", (code, msg)
    assert "105" not in names(org.json("user", "list"), "ext")
    assert names(org.json("customer", "list")) == []


def test_other_validation_errors(org):
    org.user("101", "Alice Lim")
    for args in (("inbox", "create", "Slow", "--ring-timeout", "2"),
                 ("inbox", "create", "Slow", "--missed-flow", "shrug"),
                 ("device", "add", "101", "fax", "alice-fax", "secret-pass"),
                 ("device", "add", "101", "desk_phone", "alice-short", "short"),
                 ("device", "add", "101", "desk_phone", "alice bad", "secret-pass"),
                 ("user", "create", "bad ext", "Space Ext"),
                 ("user", "create", "106", "Role", "--role", "king")):
        code, msg = org.error(*args)
        assert code == "bad_request", (args, code, msg)
    assert org.json("inbox", "list") == []
    assert org.json("device", "list") == []
    assert names(org.json("user", "list"), "ext") == ["101"]
    code, _ = org.error("user", "create", "101", "Alice Again")
    assert code == "conflict"


def test_hostile_text_is_stored_and_listed_verbatim(org, running_lab):
    lab = running_lab
    tables_before = lab.sql("SHOW TABLES")
    hostile_user = "Robert'); DROP TABLE txn;--"
    hostile_inbox = 'Sales"; DELETE FROM inbox; --'
    unicode_name = "Zoë Tan 陈 \\ %s_%%" % "'"
    cust = org.customer(HOSTILE, "+6591230001")
    org.customer(unicode_name)
    org.user("107", hostile_user)
    org.inbox(hostile_inbox, did=False)
    org.json("device", "add", "107", "web_phone", "bobby-web", "secret-pass", "--domain",
             "127.0.0.1", "--label", HOSTILE)

    assert sorted(names(org.json("customer", "list"))) == sorted([HOSTILE, unicode_name])
    shown = org.json("customer", "show", str(cust))
    assert shown["name"] == HOSTILE and shown["numbers"][0]["number"] == "+6591230001", shown
    users = {u["ext"]: u["name"] for u in org.json("user", "list")}
    assert users == {"107": hostile_user}, users
    assert names(org.json("inbox", "list")) == [hostile_inbox]
    assert [d["label"] for d in org.json("device", "list")] == [HOSTILE]
    # the readable table shows it as it is too
    r = org.ctl("customer", "list")
    assert HOSTILE in r.stdout, r.stdout
    # and nothing was dropped or deleted
    assert lab.sql("SHOW TABLES") == tables_before
    assert int(lab.sql("SELECT COUNT(*) FROM user")[0][0]) >= 1
    # the inbox is usable by its hostile name
    org.json("inbox", "member", "add", hostile_inbox, "107")
    assert org.json("inbox", "list")[0]["members"] == "107"


def test_customer_with_one_bad_number_creates_nothing(org, running_lab):
    lab = running_lab
    good1, good2 = "+6591110001", "+6591110002"
    code, msg = org.error("customer", "create", "Half Written", "--number",
                          "%s,not-a-number,%s" % (good1, good2))
    assert code == "bad_request" and "not-a-number" in msg, (code, msg)
    assert names(org.json("customer", "list")) == []
    rows = lab.sql("SELECT COUNT(*) FROM customer c JOIN org o ON o.id = c.org_id "
                   "WHERE o.name = '%s'" % org.name)
    assert rows == [["0"]], rows
    # a number already taken by another customer: conflict, nothing written either
    org.customer("Jane Tan", "+6591234567")
    code, msg = org.error("customer", "create", "Copy Cat", "--number",
                          "%s,+6591234567" % good1)
    assert code == "conflict", (code, msg)
    assert names(org.json("customer", "list")) == ["Jane Tan"]
    # the good numbers were not kept anywhere: they are free
    cid = org.customer("Whole", good1, good2, verified=True)
    nums = org.json("customer", "show", str(cid))["numbers"]
    assert [(n["number"], n["verified"]) for n in nums] == [(good1, 1), (good2, 1)], nums


def test_json_errors_are_machine_readable(org):
    r = org.ctl("--json", "inbox", "member", "add", "Nope", "101")
    assert r.returncode == 1
    e = json.loads(r.stdout)
    assert e["error"] == "not_found" and "Nope" in e["message"], e
