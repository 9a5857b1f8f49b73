"""Call recording (issue 6, doc/recording.md) on the real stack.

Both sides of a call talk: the carrier (tests/scenarios/rec_carrier.xml) and
the agent's phone (rec_agent.xml) send G.711 u-law, the device of a manual
outbound call (rec_device.xml) and the carrier answering it (rec_trunk.xml)
A-law, each from a file of raw G.711 these tests write into sipp's working
directory (the lab's sipp dir): a sequence of three tones of 200 ms with a
little noise, the customer's side on 400/700/1000 Hz, the agent's on
1500/1900/2300 Hz. rtpengine records what it receives (pcap method),
queued indexes the files, and `ccqrec fetch` must give the samples back:
each channel of the stereo WAV correlates with the audio its party sent
(and not with the other's), the mono mix with both.

The lab deletes a call in rtpengine 2 s after its BYE (CCQ_RTP_DELETE_DELAY),
when rtpengine writes the metadata file; queued scans for them every 2 s:
a recording is in the index some 5 s after the call.

Access: members see the recordings of their inboxes' TXNs; owners and admins
with the add-on all of their organisation's. Every test makes its own
organisation and calls (the purge acts on one organisation only, as its
owner).
"""

import hashlib
import os
import random
import time

from ccqlab import Org, Wav, best_match, g711_decode, ncorr, rms, tone_pattern, \
    wait_until, write_g711

JANE = "+6591234567"                 # the caller ID rec_carrier.xml sends
CUSTOMER_TONES = (400, 700, 1000)     # the customer's side (left channel)
AGENT_TONES = (1500, 1900, 2300)      # the agent's side (right channel)
SEG_MS = 200

# the files the rec_*.xml scenarios play: name -> (law, tones, noise seed)
FIXTURES = {
    "rec-carrier.ulaw": ("ulaw", CUSTOMER_TONES, 11),
    "rec-agent.ulaw": ("ulaw", AGENT_TONES, 12),
    "rec-trunk.alaw": ("alaw", CUSTOMER_TONES, 13),
    "rec-device.alaw": ("alaw", AGENT_TONES, 14),
}

_sources = {}


def fixtures(lab):
    """Write the scenarios' audio into the lab's sipp dir (once per lab dir);
    returns {file name: one period of it as sipp sends it, decoded}."""
    os.makedirs(lab.sipp_dir, exist_ok=True)
    for name, (law, tones, seed) in FIXTURES.items():
        path = os.path.join(lab.sipp_dir, name)
        if (path, name) in _sources and os.path.exists(path):
            continue
        period = tone_pattern(tones, SEG_MS, 1, seed=seed)
        data = write_g711(path, period * 2, law)
        _sources[(path, name)] = g711_decode(data[:len(period)], law)
        _sources[name] = _sources[(path, name)]
    return _sources


def texts(t):
    return [e["text"] for e in t["events"]]


def kinds(t):
    return [e["kind"] for e in t["events"]]


def event(t, kind):
    return next((e["text"] for e in t["events"] if e["kind"] == kind), None)


def prepare(org, record=None):
    """Inbox Sales (a DID) with agent 101 Alice (desk phone, registered),
    the owner 100 with the add-on, customer Jane Tan; the organisation's
    recording set to RECORD ("on"/"off") when given."""
    ib = org.inbox("Sales", ring_timeout=10, max_wait=20)
    phone = org.agent(ib, "101", "Alice Lim")
    phone.register(expires=600)
    org.user("100", "Olivia Owner", role="owner", addon=True)
    org.customer("Jane Tan", JANE)
    org.lab.trunk_port(0)
    if record:
        org.ok("recording", "set", "--org", record)
    return ib, phone


def talk(lab, inbox, phone, talk_ms=4000, during=None):
    """A carrier call to INBOX's DID that PHONE answers, both sides talking
    for TALK_MS; DURING(txn id) runs while the call is up. Returns
    (Call-ID, the TXN once Ended)."""
    fixtures(lab)
    secs = talk_ms // 1000 + 30
    ans = lab.sipp("rec_agent.xml", phone.port, timeout=secs, background=True,
                   name="rec-agent-%s" % phone.username)
    call = None
    try:
        call = lab.carrier(inbox.did, scenario="rec_carrier.xml", duration_ms=talk_ms,
                           background=True, timeout=secs)
        ids = lab.wait_txn_for_call(call.call_id, 10)
        assert ids, "no TXN for the call %s\n%s" % (call.call_id, call.summary())
        if during:
            assert wait_until(lambda: lab.txn(ids[-1])["status"] == "Assigned", 10, 0.05), \
                "the call was not answered:\n%s\n%s" % (call.summary(), ans.summary())
            during(ids[-1])
        assert call.wait() == 0, "the carrier's call failed:\n" + call.summary()
        assert ans.wait(15) == 0, "the agent's phone failed:\n" + ans.summary()
    finally:
        ans.stop()
        if call:
            call.stop()
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended", 15)
    assert t and t["status"] == "Ended" and t["result"] == "answered", t
    return call.call_id, t


def recorded(lab, txn, count=1):
    """The TXN's index rows once queued has indexed COUNT recordings."""
    rows = lab.wait_recordings(txn, count)
    assert len(rows) >= count, \
        "TXN %d: %d recording(s) indexed, expected %d; files: %r" % (
            txn, len(rows), count, os.listdir(lab.rec_dir) if os.path.isdir(lab.rec_dir)
            else "no %s" % lab.rec_dir)
    return rows


def nothing_recorded(lab, call_id, txn):
    assert lab.recording_files(call_id) == [], \
        "a call with recording off left files: %r" % lab.recording_files(call_id)
    assert lab.recording_rows(txn) == [], lab.recording_rows(txn)


def fetch(lab, txn, tmp_path, as_, stereo=False, name=None, extra=()):
    out = str(tmp_path / (name or "txn%d%s.wav" % (txn, "-stereo" if stereo else "")))
    args = ["fetch", str(txn), "-o", out] + (["--stereo"] if stereo else []) + list(extra)
    r = lab.ccqrec(*args, as_=as_)
    assert r.returncode == 0, "ccqrec %s as %s failed (%d): %s%s" % (
        " ".join(args), as_, r.returncode, r.stdout, r.stderr)
    assert os.path.getsize(out) > 44, "ccqrec fetch wrote no audio: " + out
    return Wav(out)


def first_loud(x, win=160, floor=300.0):
    return next((i for i in range(0, len(x) - win, win) if rms(x[i:i + win]) >= floor), None)


def loud_seconds(x, win=160, floor=300.0):
    return sum(win for i in range(0, len(x) - win + 1, win)
               if rms(x[i:i + win]) >= floor) / 8000.0


def check_stereo(w, customer, agent, talk_s, what):
    """Left = the customer's audio, right = the agent's, each alone on its
    channel, both over (about) the whole call, aligned."""
    assert (w.nch, w.rate, w.bits) == (2, 8000, 16), \
        "%s: %d channels, %d Hz, %d bits (expected 2, 8000, 16)" % (what, w.nch, w.rate, w.bits)
    assert talk_s - 1.5 <= w.seconds() <= talk_s + 4, \
        "%s lasts %.2f s for a call of %.1f s" % (what, w.seconds(), talk_s)
    left, right = w.channels
    for side, x, own, other in (("left (customer)", left, customer, agent),
                                ("right (agent)", right, agent, customer)):
        c_own, _ = best_match(x, own, span=8000)
        c_other, _ = best_match(x, other, span=8000)
        assert c_own >= 0.95, "%s: the %s channel does not carry that party's audio " \
            "(correlation %.3f with it, %.3f with the other party's)" % (what, side, c_own, c_other)
        assert c_other <= 0.2, "%s: the %s channel carries the other party's audio too " \
            "(correlation %.3f)" % (what, side, c_other)
        assert loud_seconds(x) >= talk_s - 1.5, "%s: the %s channel has only %.2f s of sound " \
            "for a call of %.1f s" % (what, side, loud_seconds(x), talk_s)
    a, b = first_loud(left), first_loud(right)
    assert a is not None and b is not None and abs(a - b) <= 0.5 * 8000, \
        "%s: the channels are not aligned: sound starts at %s and %s (samples)" % (what, a, b)


def check_mono(w, stereo, talk_s, what):
    """The mono WAV is the mix of the stereo one's channels: it follows
    left + right, and each party alone explains part of it."""
    assert (w.nch, w.rate, w.bits) == (1, 8000, 16), \
        "%s: %d channels, %d Hz, %d bits (expected 1, 8000, 16)" % (what, w.nch, w.rate, w.bits)
    assert talk_s - 1.5 <= w.seconds() <= talk_s + 4, \
        "%s lasts %.2f s for a call of %.1f s" % (what, w.seconds(), talk_s)
    m = w.channels[0]
    left, right = stereo.channels
    both = [a + b for a, b in zip(left, right)]
    # the same time base, normally; else the best shift within 50 ms
    mid = max(0, min(len(m), len(both)) // 2 - 1000)
    def fit(d):
        return ncorr(m[mid:mid + 2000], both[mid + d:mid + d + 2000]) if mid + d >= 0 else -1
    shift = 0 if fit(0) >= 0.95 else max(range(-400, 401), key=fit)

    def corr(y):
        a, b = (m, y[shift:]) if shift >= 0 else (m[-shift:], y)
        n = min(len(a), len(b))
        return ncorr(a[:n], b[:n])
    c = corr(both)
    assert c >= 0.95, "%s: the mix is not left + right of the stereo file (correlation %.3f, " \
        "shift %d samples)" % (what, c, shift)
    c1, c2 = corr(left), corr(right)
    # two uncorrelated parties of equal level: each explains about 1/sqrt(2)
    assert 0.45 <= c1 <= 0.9 and 0.45 <= c2 <= 0.9, \
        "%s: the mix does not hold both parties (correlation %.3f with the customer's " \
        "channel, %.3f with the agent's)" % (what, c1, c2)


def silent_runs(w, win=80, floor=30.0):
    """The runs of windows of WIN samples in which every channel is quiet
    (RMS below FLOOR), as (first sample, samples), longest first."""
    runs, start = [], None
    n = len(w.channels[0]) // win * win
    for i in range(0, n + win, win):
        quiet = i < n and all(rms(x[i:i + win]) < floor for x in w.channels)
        if quiet and start is None:
            start = i
        elif not quiet and start is not None:
            runs.append((start, i - start))
            start = None
    return sorted(runs, key=lambda r: -r[1])


def check_paused_call(w, rows, seg_s, sound, src, said=""):
    """The joined WAV of a 6 s call paused for 2.5 s: as long as its
    segments (SEG_S seconds in all) plus the pause, the pause near-zero in
    both channels, each party on its channel before and after it, as much
    sound as the segments (SOUND: per channel, summed over them)."""
    what = "ccqrec fetch --stereo of a paused call (%d recordings, %r; it said: %s)" % (
        len(rows), [(r["id"], r["caller_addr"], r["agent_addr"]) for r in rows], said)
    assert (w.nch, w.rate, w.bits) == (2, 8000, 16), (w.nch, w.rate, w.bits)
    assert 6.0 - 1.5 <= w.seconds() <= 6.0 + 4, \
        "%s lasts %.2f s for a call of 6 s" % (what, w.seconds())
    runs = silent_runs(w)
    assert runs, "%s: no silence in it" % what
    gap_at, gap_n = runs[0]
    gap_s = gap_n / 8000.0
    assert 1.5 <= gap_s <= 3.5, \
        "%s: the longest silence is %.2f s at %.2f s, for a pause of 2.5 s (silent runs: %r)" % (
            what, gap_s, gap_at / 8000.0, [(a / 8000.0, n / 8000.0) for a, n in runs[:5]])
    if len(rows) > 1:
        # the segments' audio and the pause between them, nothing lost or added
        assert abs(w.seconds() - seg_s - gap_s) <= 0.5, \
            "%s lasts %.2f s: its segments %.2f s and a gap of %.2f s" % (
                what, w.seconds(), seg_s, gap_s)
        assert all(v == 0 for x in w.channels
                   for v in x[gap_at + 160:gap_at + gap_n - 160]), \
            "%s: the pause (%.2f s at %.2f s) is not silence" % (what, gap_s, gap_at / 8000.0)
    # (per channel the segments fetched alone may differ: one without the
    # parties' addresses in its row guesses them, the joined fetch borrows
    # them from another segment)
    loud = sum(loud_seconds(x) for x in w.channels)
    assert abs(loud - sum(sound)) <= 0.3, \
        "%s: %.2f s of sound in its channels, %.2f s in its segments'" % (what, loud, sum(sound))
    customer, agent = src["rec-carrier.ulaw"], src["rec-agent.ulaw"]
    for part, a, b in (("before the pause", 0, gap_at), ("after the pause", gap_at + gap_n, None)):
        left, right = (x[a:b] for x in w.channels)
        assert len(left) >= 0.5 * 8000, "%s: only %.2f s %s" % (what, len(left) / 8000.0, part)
        for side, x, own, other in (("left (customer)", left, customer, agent),
                                    ("right (agent)", right, agent, customer)):
            c_own, _ = best_match(x, own, span=4000)
            c_other, _ = best_match(x, other, span=4000)
            assert c_own >= 0.95 and c_other <= 0.2, \
                "%s, %s: the %s channel correlates %.3f with its party's audio, %.3f with " \
                "the other's" % (what, part, side, c_own, c_other)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def ccqrec_json(lab, *args, as_=None):
    r = lab.ccqrec("--json", *args, as_=as_)
    assert r.returncode == 0, "ccqrec --json %s as %s failed (%d): %s%s" % (
        " ".join(args), as_, r.returncode, r.stdout, r.stderr)
    import json
    out = json.loads(r.stdout)
    return out.get("recordings", out) if isinstance(out, dict) else out


def listed_txns(lab, *args, as_=None):
    return sorted({int(x["txn"]) for x in ccqrec_json(lab, "list", *args, as_=as_)
                   if x.get("txn") is not None})


def refused(lab, args, as_, *words):
    """A ccqrec command that must fail with a message holding one of WORDS."""
    r = lab.ccqrec(*args, as_=as_)
    out = (r.stdout + r.stderr).lower()
    assert r.returncode != 0 and any(w.lower() in out for w in words), \
        "ccqrec %s as %s: expected a failure saying %s, got exit %d: %s%s" % (
            " ".join(args), as_, " or ".join(map(repr, words)), r.returncode, r.stdout, r.stderr)
    return r.stdout + r.stderr


# ------------------------------------------------------------------ tests

def test_policy_commands(running_lab, org):
    """ccqctl recording set/show: the organisation on/off, an inbox or a
    user on/off/inherit, what is in force for each and by which rule; only
    owners and admins with the add-on (and the operator) manage it."""
    ib, phone = prepare(org)
    org.user("102", "Bob Ong")
    org.member(ib, "102")
    show = org.json("recording", "show")
    assert show["org"] == "off", show
    org.ok("recording", "set", "--org", "on")
    org.ok("recording", "set", "--inbox", "Sales", "off")
    org.ok("recording", "set", "--user", "101", "on")
    show = org.json("recording", "show")
    assert show["org"] == "on", show
    sales = next(i for i in show["inboxes"] if i["name"] == "Sales")
    assert (sales["setting"], sales["effective"], sales["rule"]) == ("off", "off", "inbox"), sales
    users = {u["ext"]: u for u in show["users"]}
    assert (users["101"]["setting"], users["101"]["effective"], users["101"]["rule"]) == \
        ("on", "on", "user"), users["101"]
    assert (users["102"]["setting"], users["102"]["effective"], users["102"]["rule"]) == \
        ("inherit", "off", "inbox"), users["102"]
    org.ok("recording", "set", "--user", "101", "inherit")
    org.ok("recording", "set", "--inbox", "Sales", "inherit")
    users = {u["ext"]: u for u in org.json("recording", "show")["users"]}
    assert (users["101"]["effective"], users["101"]["rule"]) == ("on", "organisation"), users
    # the owner with the add-on may; a member may not
    r = org.ctl("recording", "set", "--org", "off", as_="100")
    assert r.returncode == 0, r.stdout + r.stderr
    code, msg = org.error("recording", "set", "--org", "on", as_="102")
    assert code == "denied", (code, msg)
    # usage errors: no inherit for the organisation, unknown scopes and values
    for bad in (["set", "--org", "inherit"], ["set", "--inbox", "Sales", "maybe"],
                ["set", "--team", "x", "on"], ["set"]):
        r = org.ctl("recording", *bad)
        assert r.returncode == 2, "recording %s: exit %d %s%s" % (" ".join(bad), r.returncode,
                                                                   r.stdout, r.stderr)
    code, msg = org.error("recording", "set", "--inbox", "Nope", "on")
    assert code == "not_found", (code, msg)


def test_recorded_call_gives_back_the_audio_of_each_party(running_lab, org, tmp_path):
    """Recording on for the organisation: rtpengine records the call,
    queued indexes it (TXN, files, size, SHA-256, parties, codec), and
    `ccqrec fetch` decodes it: stereo with the customer left and the agent
    right, each channel the samples that party sent; mono with both."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    src = fixtures(lab)
    cid, t = talk(lab, ib, phone, talk_ms=4000)
    txn = int(t["id"])
    rec = event(t, "recording")
    assert rec == "Recording on (organisation policy)", texts(t)
    k = kinds(t)
    assert k.index("recording") < k.index("answered"), list(zip(k, texts(t)))

    rows = recorded(lab, txn)
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["status"] == "ok", row
    assert row["call_id"] == cid, row
    pcap = row["pcap_path"]
    assert pcap.startswith(os.path.join(lab.rec_dir, "pcaps") + "/") and os.path.isfile(pcap), row
    assert int(row["size_bytes"]) == os.path.getsize(pcap), row
    assert row["sha256"] == sha256(pcap), row
    assert os.path.isfile(row["meta_path"]), row
    assert row["codec"].upper().startswith("PCMU"), row
    assert "ccq_txn:%d" % txn in row["rec_meta"], row
    assert row["caller_addr"] and row["agent_addr"] and row["caller_addr"] != row["agent_addr"], row
    # the metadata file left rtpengine's metadata/ for indexed/
    left = [f for f in lab.recording_files(cid)
            if os.path.relpath(f, lab.rec_dir).split(os.sep)[0] in ("metadata", "tmp")]
    assert left == [], "metadata not moved away after indexing: %r" % left

    # ccqrec, as the agent (a member of Sales)
    assert txn in listed_txns(lab, "--txn", str(txn), as_="101@" + org.name)
    stereo = fetch(lab, txn, tmp_path, "101@" + org.name, stereo=True)
    check_stereo(stereo, src["rec-carrier.ulaw"], src["rec-agent.ulaw"], 4.0,
                 "ccqrec fetch --stereo")
    w = fetch(lab, txn, tmp_path, "101@" + org.name)
    check_mono(w, stereo, 4.0, "ccqrec fetch (mono)")


def test_list_filters(running_lab, org):
    """ccqrec list by TXN, customer, inbox, agent and date range."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    other = org.inbox("Billing")
    org.agent(other, "102", "Bob Ong")
    cid, t = talk(lab, ib, phone, talk_ms=2000)
    txn = int(t["id"])
    recorded(lab, txn)
    owner = "100@" + org.name
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for args in (["--txn", str(txn)], ["--customer", JANE], ["--inbox", "Sales"],
                 ["--agent", "101"], ["--from", today], ["--from", today, "--to", today]):
        assert txn in listed_txns(lab, *args, as_=owner), "ccqrec list %s" % " ".join(args)
    for args in (["--inbox", "Billing"], ["--agent", "102"], ["--customer", "+6599990000"],
                 ["--to", "2020-01-01"]):
        assert txn not in listed_txns(lab, *args, as_=owner), "ccqrec list %s" % " ".join(args)


def test_recording_off_leaves_no_files(running_lab, org, tmp_path):
    """The default (organisation off): no pcap, no metadata, no index row,
    and ccqrec says there is no recording. The same call once recording is
    on is recorded: by then a file of the first call would be there too."""
    lab = running_lab
    ib, phone = prepare(org)
    cid, t = talk(lab, ib, phone, talk_ms=2000)
    txn = int(t["id"])
    assert event(t, "recording") == "Recording off (organisation policy)", texts(t)
    org.ok("recording", "set", "--org", "on")
    cid2, t2 = talk(lab, ib, phone, talk_ms=2000)
    assert event(t2, "recording") == "Recording on (organisation policy)", texts(t2)
    recorded(lab, int(t2["id"]))
    nothing_recorded(lab, cid, txn)
    owner = "100@" + org.name
    refused(lab, ["fetch", str(txn), "-o", str(tmp_path / "x.wav")], owner, "no recording")
    refused(lab, ["fetch", "999999999", "-o", str(tmp_path / "y.wav")], owner,
            "no such txn", "not found")
    assert txn not in listed_txns(lab, as_=owner)


def test_most_specific_setting_wins(running_lab, org):
    """Organisation on, inbox off: not recorded (inbox policy). The agent's
    own setting on: recorded (user policy)."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    org.ok("recording", "set", "--inbox", "Sales", "off")
    cid, t = talk(lab, ib, phone, talk_ms=2000)
    assert event(t, "recording") == "Recording off (inbox policy)", texts(t)
    org.ok("recording", "set", "--user", "101", "on")
    cid2, t2 = talk(lab, ib, phone, talk_ms=2000)
    assert event(t2, "recording") == "Recording on (user policy)", texts(t2)
    rows = recorded(lab, int(t2["id"]))
    assert rows[0]["status"] == "ok", rows
    nothing_recorded(lab, cid, int(t["id"]))
    # and the TXN view shows the decision in its timeline
    r = lab.ccqctl("txn", "show", str(t2["id"]))
    assert "Recording on (user policy)" in r.stdout, r.stdout


def test_access_follows_the_inboxes(running_lab, org, tmp_path):
    """A member of another inbox is denied the recording (and does not see
    it listed); the agent (a member of the call's inbox), the owner and an
    admin with the add-on get it; an admin without the add-on who is no
    member, and another organisation's owner, do not."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    billing = org.inbox("Billing")
    org.user("102", "Bob Ong")
    org.member(billing, "102")
    org.user("103", "Ada Admin", role="admin", addon=True)
    org.user("104", "Ned Admin", role="admin")
    stranger = Org(lab, prefix="rec-stranger")
    stranger.user("100", "Sam Stranger", role="owner", addon=True)
    cid, t = talk(lab, ib, phone, talk_ms=2000)
    txn = int(t["id"])
    recorded(lab, txn)
    for who in ("102@" + org.name, "104@" + org.name):
        out = refused(lab, ["fetch", str(txn), "-o", str(tmp_path / "denied.wav")], who,
                      "denied", "not allowed", "access", "may not see")
        assert not os.path.exists(tmp_path / "denied.wav") or \
            os.path.getsize(tmp_path / "denied.wav") == 0, out
        assert txn not in listed_txns(lab, as_=who), who
    refused(lab, ["fetch", str(txn), "-o", str(tmp_path / "s.wav")], "100@" + stranger.name,
            "denied", "not allowed", "access", "no such txn", "not found")
    for who in ("101@" + org.name, "100@" + org.name, "103@" + org.name):
        w = fetch(lab, txn, tmp_path, who, name="%s.wav" % who.split("@")[0])
        assert w.nch == 1 and w.seconds() > 1.0, (who, w.nch, w.seconds())
        assert txn in listed_txns(lab, as_=who), who


def test_verify_finds_tampered_and_missing_files(running_lab, org, tmp_path):
    """ccqrec verify: OK while the pcap is as indexed; a flipped byte is
    TAMPERED (exit 1), a deleted file MISSING (exit 1); fetch then says
    the file is missing."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    cid, t = talk(lab, ib, phone, talk_ms=2000)
    txn = int(t["id"])
    row = recorded(lab, txn)[0]
    owner = "100@" + org.name
    r = lab.ccqrec("verify", str(txn), as_=owner)
    assert r.returncode == 0 and "OK" in r.stdout.upper(), \
        "verify of an intact recording: exit %d %s%s" % (r.returncode, r.stdout, r.stderr)
    pcap = row["pcap_path"]
    with open(pcap, "r+b") as f:
        f.seek(os.path.getsize(pcap) // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xff]))
    r = lab.ccqrec("verify", str(txn), as_=owner)
    assert r.returncode == 1 and "TAMPERED" in r.stdout + r.stderr, \
        "verify of a tampered pcap: exit %d %s%s" % (r.returncode, r.stdout, r.stderr)
    assert wait_until(lambda: lab.recording_rows(txn)[0]["status"] == "tampered", 5), \
        lab.recording_rows(txn)
    os.unlink(pcap)
    r = lab.ccqrec("verify", str(txn), as_=owner)
    assert r.returncode == 1 and "MISSING" in r.stdout + r.stderr, \
        "verify of a deleted pcap: exit %d %s%s" % (r.returncode, r.stdout, r.stderr)
    assert wait_until(lambda: lab.recording_rows(txn)[0]["status"] == "missing", 5), \
        lab.recording_rows(txn)
    refused(lab, ["fetch", str(txn), "-o", str(tmp_path / "gone.wav")], owner, "missing")


def test_indexer_flags_a_recording_whose_pcap_is_gone(running_lab, org, tmp_path):
    """The pcap deleted between the call's end and the indexer's run: the
    recording is indexed as missing (with the reason), not dropped; ccqrec
    lists it so and fetch says the file is missing."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    cid, t = talk(lab, ib, phone, talk_ms=2000)
    txn = int(t["id"])
    # rtpengine writes the metadata delete-delay (2 s) after the BYE
    pcaps = [f for f in lab.recording_files(cid) if f.endswith(".pcap")]
    assert pcaps, "no pcap for %s: %r" % (cid, lab.recording_files(cid))
    assert not lab.recording_rows(txn), "indexed before the test could remove the pcap"
    for f in pcaps:
        os.unlink(f)
    row = recorded(lab, txn)[0]
    assert row["status"] == "missing" and "missing" in row["detail"], row
    owner = "100@" + org.name
    listed = [x for x in ccqrec_json(lab, "list", "--txn", str(txn), as_=owner)]
    assert [x["status"] for x in listed] == ["missing"], listed
    refused(lab, ["fetch", str(txn), "-o", str(tmp_path / "gone.wav")], owner, "missing")


def test_recording_without_a_txn_is_kept_for_the_operator(running_lab, org):
    """A recording rtpengine made for a Call-ID no TXN has (here: a call set
    up on rtpengine's control port directly) is indexed as no_txn: the
    local operator sees it, an organisation's owner does not."""
    lab = running_lab
    prepare(org)
    cid = "ccqrec-orphan-%s@127.0.0.1" % os.urandom(6).hex()
    sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           "m=audio %d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    r = lab.ng({"command": "offer", "call-id": cid, "from-tag": "orphan-a", "sdp": sdp % 40000,
                "record call": "yes", "metadata": "ccq_txn:0|test:orphan"})
    assert r.get("result") == "ok", r
    r = lab.ng({"command": "answer", "call-id": cid, "from-tag": "orphan-a",
                "to-tag": "orphan-b", "sdp": sdp % 40002})
    assert r.get("result") == "ok", r
    r = lab.ng({"command": "delete", "call-id": cid, "from-tag": "orphan-a"})
    assert r.get("result") == "ok", r

    def row():
        rows = lab.sql("SELECT id, status, COALESCE(txn_id, ''), COALESCE(org_id, '') "
                       "FROM recording WHERE call_id = '%s'" % cid)
        return rows[0] if rows else None
    got = wait_until(row, 25, interval=0.3)
    assert got, "the orphan recording was not indexed: %r" % lab.recording_files(cid)
    rid, status, txn, org_id = got
    assert (status, txn, org_id) == ("no_txn", "", ""), got
    ids = [str(x["id"]) for x in ccqrec_json(lab, "list", "--status", "no_txn")]
    assert rid in ids, "the operator does not see recording %s: %r" % (rid, ids)
    ids = [str(x["id"]) for x in ccqrec_json(lab, "list", as_="100@" + org.name)]
    assert rid not in ids, "an organisation's owner sees a recording without TXN"


def test_pause_and_resume_during_a_call(running_lab, org, tmp_path):
    """kamcmd ccq.record pause/resume TXN while the call is up: each change
    is a journey line, and what was said while paused is not in the
    recording. The RPC refuses an unknown TXN and a call that has ended."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    replies = []

    def pause_and_resume(txn):
        time.sleep(1.0)
        replies.append(lab.kamcmd("ccq.record", "pause", str(txn)))
        time.sleep(2.5)
        replies.append(lab.kamcmd("ccq.record", "resume", str(txn)))

    cid, t = talk(lab, ib, phone, talk_ms=6000, during=pause_and_resume)
    txn = int(t["id"])
    for r, done in zip(replies, ("paused", "resumed")):
        out = r.stdout + r.stderr
        assert r.returncode == 0 and not out.lstrip().startswith("error") and done in out, \
            "kamcmd ccq.record (%s): %s" % (done, out)
    tx = texts(t)
    assert "Recording paused by the operator" in tx and "Recording resumed by the operator" \
        in tx, tx
    assert tx.index("Recording paused by the operator") < \
        tx.index("Recording resumed by the operator"), tx
    k = kinds(t)
    assert k.index("answered") < tx.index("Recording paused by the operator") < k.index("ended"), \
        list(zip(k, tx))
    # rtpengine (10.5) closes the pcap when recording stops and opens another
    # when it starts again: the TXN may have a recording per segment
    recorded(lab, txn)
    time.sleep(3)
    rows = lab.recording_rows(txn)
    assert rows and all(r["status"] == "ok" for r in rows), rows
    owner = "100@" + org.name
    sound, seg_s = [0.0, 0.0], 0.0
    for i, row in enumerate(rows):
        w = fetch(lab, txn, tmp_path, owner, stereo=True, name="seg%d.wav" % i,
                  extra=["--id", row["id"]] if len(rows) > 1 else [])
        seg_s += w.seconds()
        for c, x in enumerate(w.channels):
            sound[c] += loud_seconds(x)
    for side, s in zip(("customer", "agent"), sound):
        assert 2.0 <= s <= 6.0 - 1.5, "the %s's side has %.2f s of sound in the recording(s) " \
            "of a 6 s call paused for 2.5 s: the pause is in it, or too little is" % (side, s)

    # a plain fetch joins the segments: one WAV of the whole call, the pause
    # silent between them
    out = str(tmp_path / "whole.wav")
    r = lab.ccqrec("fetch", str(txn), "-o", out, "--stereo", as_=owner)
    assert r.returncode == 0, "ccqrec fetch %d --stereo: exit %d %s%s" % (
        txn, r.returncode, r.stdout, r.stderr)
    check_paused_call(Wav(out), rows, seg_s, sound, fixtures(lab), r.stdout + r.stderr)
    whole = Wav(out)
    if len(rows) > 1:
        # a segment changed since it was indexed: the others are fetched,
        # the warning names it, the exit status is 1
        bad = rows[-1]
        with open(bad["pcap_path"], "r+b") as f:
            f.seek(os.path.getsize(bad["pcap_path"]) // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0xff]))
        out = str(tmp_path / "partial.wav")
        r = lab.ccqrec("fetch", str(txn), "-o", out, "--stereo", as_=owner)
        assert r.returncode == 1 and "recording %s left out" % bad["id"] in r.stderr, \
            "fetch with recording %s tampered: exit %d %s%s" % (bad["id"], r.returncode,
                                                               r.stdout, r.stderr)
        part = Wav(out)
        assert part.nch == 2 and 0.5 <= part.seconds() <= whole.seconds() - 1.0, \
            "fetch without the tampered segment: %.2f s (the whole call %.2f s)" % (
                part.seconds(), whole.seconds())
    # the RPC's refusals
    r = lab.kamcmd("ccq.record", "pause", str(txn))
    assert "no live call" in r.stdout + r.stderr, r.stdout + r.stderr
    r = lab.kamcmd("ccq.record", "pause", "999999999")
    assert (r.stdout + r.stderr).lstrip().startswith("error"), r.stdout + r.stderr
    r = lab.kamcmd("ccq.record", "rewind", str(txn))
    assert "start, pause, resume or stop" in r.stdout + r.stderr, r.stdout + r.stderr


def test_operator_starts_recording_of_an_unrecorded_call(running_lab, org):
    """Recording off by policy, `kamcmd ccq.record start TXN` mid-call:
    recorded from then on, and the journey says who started it."""
    lab = running_lab
    ib, phone = prepare(org)
    replies = []

    def start(txn):
        time.sleep(0.5)
        replies.append(lab.kamcmd("ccq.record", "start", str(txn)))

    cid, t = talk(lab, ib, phone, talk_ms=3000, during=start)
    out = replies[0].stdout + replies[0].stderr
    assert "started" in out and not out.lstrip().startswith("error"), out
    tx = texts(t)
    assert "Recording off (organisation policy)" in tx, tx
    assert "Recording started by the operator" in tx, tx
    rows = recorded(lab, int(t["id"]))
    assert rows[0]["status"] == "ok", rows


def caller_org(lab, prefix):
    """An organisation with extension 101 Alice Lim (her own caller ID), a
    member of inbox Sales (no DID)."""
    org = Org(lab, prefix=prefix)
    org.json("user", "create", "101", "Alice Lim", "--caller-id",
             "+656%07d" % random.randint(0, 9999999))
    org.inbox("Sales", did=False)
    org.member("Sales", "101")
    return org


class Outbound:
    """A manual outbound call: the device (rec_device.xml, A-law) dials
    NUMBER, the carrier on the lab's trunk address (rec_trunk.xml) answers;
    both talk for TALK_MS."""

    def __init__(self, lab, phone, number, talk_ms=4000):
        fixtures(lab)
        self.call_id = "ccqrec-%s@127.0.0.1" % os.urandom(8).hex()
        tport = int(lab.trunk_addr.rsplit(":", 1)[1])
        secs = talk_ms // 1000 + 30
        self.trunk = lab.sipp("rec_trunk.xml", tport, timeout=secs, background=True,
                              name="rec-trunk")
        self.trunk.call_id = self.call_id
        try:
            self.dev = lab.sipp("rec_device.xml", phone.port, "-s", number, "-key", "user",
                                phone.username, "-au", phone.username, "-ap", phone.password,
                                "-cid_str", self.call_id, "-d", str(talk_ms),
                                remote=lab.sip_addr, timeout=secs, name="rec-dial")
            self.dev.call_id = self.call_id
            self.trunk.wait(15)
        finally:
            self.trunk.stop()
        assert self.dev.rc == 0 and self.dev.final_for("2 INVITE") == 200, \
            "the outbound call was not answered: %r\n%s\n--- carrier:\n%s" % (
                self.dev.responses(), self.dev.summary(), self.trunk.summary())
        assert self.trunk.rc == 0, "the carrier's side failed:\n" + self.trunk.summary()


def test_manual_outbound_call_is_recorded(running_lab, tmp_path):
    """A device's call to a customer, with recording on for that user (the
    organisation off): recorded; the customer (the carrier) on the left,
    the agent's device on the right, decoded from A-law."""
    lab = running_lab
    org = caller_org(lab, "rec-ob")
    org.user("100", "Olivia Owner", role="owner", addon=True)
    phone = org.device("101")
    phone.register(expires=600)
    lab.trunk_port(0)
    org.ok("recording", "set", "--user", "101", "on")
    lab.module_synced()
    src = fixtures(lab)
    number = "+6597%06d" % random.randint(0, 999999)
    call = Outbound(lab, phone, number[3:], talk_ms=4000)
    t = lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended", 15)
    assert t and t["status"] == "Ended" and t["direction"] == "outbound", t
    assert event(t, "recording") == "Recording on (user policy)", texts(t)
    txn = int(t["id"])
    row = recorded(lab, txn)[0]
    assert row["status"] == "ok" and row["codec"].upper().startswith("PCMA"), row
    w = fetch(lab, txn, tmp_path, "101@" + org.name, stereo=True)
    check_stereo(w, src["rec-trunk.alaw"], src["rec-device.alaw"], 4.0,
                 "ccqrec fetch --stereo (outbound)")


def ended_call(lab, phone, dial):
    """A 2-s manual outbound call dialling DIAL: (the call, its TXN once Ended)."""
    call = Outbound(lab, phone, dial, talk_ms=2000)
    return call, lab.wait_txn_state(call.call_id, lambda t: t["status"] == "Ended", 15)


def test_outbound_call_routed_to_an_inbox_follows_that_inbox(running_lab, tmp_path):
    """**<inbox id>* routes a manual call to another of the extension's
    inboxes, and its recording follows that inbox's setting, not the
    default inbox's: Support (on) recorded while Sales (the default,
    inheriting the organisation's off) is not; an inbox the extension may
    not work in (Secret, on) leaves the call in Sales, unrecorded; the
    owner with the add-on may route a call to Secret (recorded, in the
    metadata as Secret's), and to an inbox created just before (which
    inherits the organisation's setting)."""
    lab = running_lab
    org = caller_org(lab, "rec-ib")
    support = org.json("inbox", "create", "Support")["id"]
    org.member("Support", "101")
    secret = org.json("inbox", "create", "Secret")["id"]
    org.user("100", "Olivia Owner", role="owner", addon=True)
    org.member("Sales", "100")
    phone = org.device("101")
    phone.register(expires=600)
    boss = org.device("100")
    boss.register(expires=600)
    lab.trunk_port(0)
    org.ok("recording", "set", "--inbox", "Support", "on")
    org.ok("recording", "set", "--inbox", "Secret", "on")
    lab.module_synced()
    number = "+6597%06d" % random.randint(0, 999999)

    call, t = ended_call(lab, phone, "**%d*%s" % (support, number[3:]))
    assert t["inbox"] == "Support", t
    assert event(t, "recording") == "Recording on (inbox policy)", texts(t)
    row = recorded(lab, int(t["id"]))[0]
    assert row["status"] == "ok", row

    call, t = ended_call(lab, phone, number[3:])
    assert t["inbox"] == "Sales", t
    assert event(t, "recording") == "Recording off (organisation policy)", texts(t)
    nothing_recorded(lab, call.call_id, int(t["id"]))

    call, t = ended_call(lab, phone, "**%d*%s" % (secret, number[3:]))
    assert t["inbox"] == "Sales", t
    assert event(t, "recording") == "Recording off (organisation policy)", texts(t)
    nothing_recorded(lab, call.call_id, int(t["id"]))

    call, t = ended_call(lab, boss, "**%d*%s" % (secret, number[3:]))
    assert t["inbox"] == "Secret", t
    assert event(t, "recording") == "Recording on (inbox policy)", texts(t)
    row = recorded(lab, int(t["id"]))[0]
    assert row["status"] == "ok", row
    assert "ccq_inbox:%d|" % secret in row["rec_meta"], row

    # an inbox created after everything else reaches the module's snapshot
    # by itself (inbox.create bumps the directory version): the owner's call
    # to it inherits the organisation's "on", not Sales' "off"
    org.ok("recording", "set", "--org", "on")
    org.ok("recording", "set", "--inbox", "Sales", "off")
    lab.module_synced()
    fresh = org.json("inbox", "create", "Fresh")["id"]
    lab.module_synced()
    call, t = ended_call(lab, boss, "**%d*%s" % (fresh, number[3:]))
    assert t["inbox"] == "Fresh", t
    assert event(t, "recording") == "Recording on (organisation policy)", texts(t)


def age(lab, txn, days):
    lab.sql("UPDATE recording SET started_at = started_at - INTERVAL %d DAY, ended_at = "
            "ended_at - INTERVAL %d DAY, indexed_at = indexed_at - INTERVAL %d DAY "
            "WHERE txn_id = %d" % (days, days, days, txn))


def test_purge_removes_files_and_rows_together(running_lab, org, tmp_path):
    """ccqrec purge --older-than DAYS: the dry run lists what would go and
    touches nothing; the purge removes the old recording's files and rows
    (ccqrec list no longer shows it), and keeps the recent one."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    cid_old, t_old = talk(lab, ib, phone, talk_ms=2000)
    cid_new, t_new = talk(lab, ib, phone, talk_ms=2000)
    old, new = int(t_old["id"]), int(t_new["id"])
    recorded(lab, old)
    recorded(lab, new)
    old_row, new_row = lab.recording_rows(old)[0], lab.recording_rows(new)[0]
    old_files = lab.recording_files(cid_old)
    assert old_row["pcap_path"] in old_files, (old_row, old_files)
    age(lab, old, 3)
    owner = "100@" + org.name

    r = lab.ccqrec("purge", "--older-than", "2", "--dry-run", as_=owner)
    assert r.returncode == 0, r.stdout + r.stderr
    assert old_row["pcap_path"] in r.stdout and new_row["pcap_path"] not in r.stdout, \
        "the dry run should list recording %s (TXN %d) and not %s (TXN %d):\n%s" % (
            old_row["id"], old, new_row["id"], new, r.stdout)
    assert lab.recording_files(cid_old) == old_files, "the dry run deleted files"
    assert len(lab.recording_rows(old)) == 1 and lab.recording_rows(old)[0]["status"] == "ok", \
        lab.recording_rows(old)

    r = lab.ccqrec("purge", "--older-than", "2", as_=owner)
    assert r.returncode == 0 and old_row["pcap_path"] in r.stdout, r.stdout + r.stderr
    for f in old_files:
        assert not os.path.exists(f), "the purge left %s" % f
    assert lab.recording_rows(old) == [], lab.recording_rows(old)
    assert old not in listed_txns(lab, as_=owner) and new in listed_txns(lab, as_=owner)
    refused(lab, ["fetch", str(old), "-o", str(tmp_path / "old.wav")], owner, "no recording")
    # the recent one is whole
    assert lab.recording_rows(new)[0]["status"] == "ok"
    assert all(os.path.exists(f) for f in lab.recording_files(cid_new))
    r = lab.ccqrec("verify", str(new), as_=owner)
    assert r.returncode == 0, r.stdout + r.stderr
    # a member may not purge
    org.user("102", "Bob Ong")
    org.member(ib, "102")
    refused(lab, ["purge", "--older-than", "2"], "102@" + org.name, "denied", "not allowed",
            "only")


def test_purge_older_than_zero_dry_run_lists_everything(running_lab, org):
    """--older-than 0 --dry-run: every finished recording of the
    organisation is listed, nothing is deleted."""
    lab = running_lab
    ib, phone = prepare(org, record="on")
    cid, t = talk(lab, ib, phone, talk_ms=2000)
    txn = int(t["id"])
    recorded(lab, txn)
    files = lab.recording_files(cid)
    row = lab.recording_rows(txn)[0]
    time.sleep(1.1)
    r = lab.ccqrec("purge", "--older-than", "0", "--dry-run", as_="100@" + org.name)
    assert r.returncode == 0 and row["pcap_path"] in r.stdout, \
        "purge --older-than 0 --dry-run: exit %d %s%s" % (r.returncode, r.stdout, r.stderr)
    assert lab.recording_files(cid) == files and lab.recording_rows(txn)[0]["status"] == "ok"
