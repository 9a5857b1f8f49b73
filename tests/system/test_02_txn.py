"""A carrier call to an inbox DID, answered by a registered agent, produces
a transaction (TXN) in MySQL via queued; ccqctl shows and lists it."""


def txn_items(listing):
    if isinstance(listing, dict):
        listing = listing.get("items", listing.get("txns"))
    assert isinstance(listing, list), "txn list: unexpected JSON %r" % (listing,)
    return listing


def test_invite_creates_txn(running_lab):
    lab = running_lab
    c = lab.call()
    lab.assert_call_ok(c)
    did = lab.basic()["inbox"].did

    ids = lab.wait_txn_for_call(c["call_id"])
    assert len(ids) == 1, "expected one TXN row for Call-ID %s, got %r" % (c["call_id"], ids)
    txn_id = ids[0]
    row = lab.sql("SELECT direction, call_type, status, to_uri, result "
                  "FROM txn WHERE id = %d" % txn_id)[0]
    direction, call_type, status, to_uri, result = row
    assert direction == "inbound", row
    assert call_type == "direct", row        # no callback token: a direct call
    assert did in to_uri, row

    shown = lab.ccqctl_json("txn", "show", str(txn_id))
    assert isinstance(shown, dict), shown
    assert int(shown.get("id")) == txn_id, shown
    assert c["call_id"] in shown.values(), \
        "ccqctl txn show %d does not carry the SIP Call-ID %s: %r" % (txn_id, c["call_id"], shown)

    items = txn_items(lab.ccqctl_json("txn", "list"))
    assert txn_id in [int(t.get("id")) for t in items], \
        "txn %d not in ccqctl txn list: %r" % (txn_id, items)

    # the readable forms work too
    r = lab.ccqctl("txn", "show", str(txn_id))
    assert r.returncode == 0 and c["call_id"] in r.stdout, r.stdout + r.stderr
    r = lab.ccqctl("txn", "list")
    assert r.returncode == 0 and str(txn_id) in r.stdout, r.stdout + r.stderr


def test_txn_show_unknown_id_fails(running_lab):
    r = running_lab.ccqctl("--json", "txn", "show", "999999999")
    assert r.returncode != 0, "txn show of a missing id succeeded: " + r.stdout


def test_two_calls_two_txns(running_lab):
    lab = running_lab
    ids = []
    for _ in range(2):
        c = lab.call()
        lab.assert_call_ok(c)
        got = lab.wait_txn_for_call(c["call_id"])
        assert len(got) == 1, (c["call_id"], got)
        ids += got
    assert ids[0] != ids[1]
