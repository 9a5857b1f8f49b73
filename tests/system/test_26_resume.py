"""Resumed routes run in several "ccq resume" processes (module parameter
resume_processes, set in cfg/kamailio.cfg), not all in the one "ccq async"
process that talks to queued: concurrent calls still get the right
verdicts, each call's resumes (the decision, then a queue wait's outcome)
run in resume processes, more than one of them takes a share, and
kamcmd ccq.stats counts them along with the decision latency."""

import os
import re

from ccqlab import new_did, wait_until

CFG = os.path.join(os.path.dirname(__file__), "..", "..", "cfg", "kamailio.cfg")


def shipped_resume_processes():
    """modparam("ccq", "resume_processes", N) of the shipped script."""
    with open(CFG) as f:
        m = re.search(r'^modparam\("ccq",\s*"resume_processes",\s*(\d+)\)', f.read(), re.M)
    assert m, "cfg/kamailio.cfg sets no resume_processes"
    return int(m.group(1))


RESUME_PROCS = shipped_resume_processes()


def rpc_fields(text):
    """kamcmd's printout of a flat struct -> {name: value string}."""
    return {m.group(1): m.group(2).strip()
            for m in re.finditer(r"^\s*([a-z0-9_]+):\s*(.*)$", text, re.M)}


def stats(lab):
    r = lab.kamcmd("ccq.stats")
    assert r.returncode == 0, r.stdout + r.stderr
    return rpc_fields(r.stdout)


def processes(lab):
    """{pid: description} of every Kamailio process (core.psx)."""
    r = lab.kamcmd("core.psx")
    assert r.returncode == 0, r.stdout + r.stderr
    out, pid = {}, None
    for line in r.stdout.splitlines():
        m = re.match(r"\s*PID:\s*(\d+)", line)
        if m:
            pid = int(m.group(1))
        m = re.match(r"\s*DSC:\s*(.*)$", line)
        if m and pid is not None:
            out[pid] = m.group(1).strip()
    return out


def finals_by_call(run):
    """{Call-ID: (first final code to the INVITE, reason phrase)} from a sipp
    run that placed many calls."""
    out = {}
    for d, first, blk in run.messages():
        if d != "received" or not first.startswith("SIP/2.0 "):
            continue
        code = int(first.split()[1])
        cid = re.search(r"^(?:Call-ID|i):\s*(\S+)", blk, re.M | re.I)
        if code >= 200 and cid and re.search(r"^CSeq:\s*\d+ INVITE", blk, re.M | re.I):
            out.setdefault(cid.group(1), (code, first.split(" ", 2)[2].strip()))
    return out


def resumed_in(lab, off):
    """[(pid, Call-ID, action)] of route[CCQ_DECISION]'s log line since
    OFF: which process ran each resumed route."""
    rx = re.compile(r"^\s*\d+\((\d+)\) \w+: <script>: call (\S+): queued says (\w+)", re.M)
    return [(int(p), c, a) for p, c, a in rx.findall(lab.log_since("kamailio", off))]


def test_resume_processes_exist(running_lab):
    assert RESUME_PROCS >= 2, "the shipped script should run resumed routes in several processes"
    procs = processes(running_lab)
    resumers = sorted(d for d in procs.values() if d.startswith("ccq resume"))
    assert resumers == ["ccq resume %d" % i for i in range(1, RESUME_PROCS + 1)], procs
    assert list(procs.values()).count("ccq async") == 1, procs
    s = stats(running_lab)
    assert int(s["resume_processes"]) == RESUME_PROCS, s
    assert len(s["resumes_per_process"].split()) == RESUME_PROCS, s


def test_concurrent_calls_resume_in_several_processes(running_lab, org):
    """30 calls to a DID nobody owns (queued rejects: 404) and 20 calls to an
    inbox with nobody in it (queued queues them: the caller waits, then the
    1 s maximum wait sends it to the missed-call flow: 480), all at once."""
    lab = running_lab
    n_rej, n_missed = 30, 20
    ib = org.inbox("Overflow", ring_timeout=5, max_wait=1)
    procs = processes(lab)
    resume_pids = {p for p, d in procs.items() if d.startswith("ccq resume")}
    s0 = stats(lab)
    off = lab.log_size("kamailio")

    rej = lab.sipp("carrier_reject.xml", lab.trunk_port(1), "-s", new_did(), "-r", "15",
                   "-l", str(n_rej), remote=lab.sip_addr, calls=n_rej, timeout=90,
                   background=True, name="reject")
    mis = lab.sipp("carrier_reject.xml", lab.trunk_port(2), "-s", ib.did, "-r", "10",
                   "-l", str(n_missed), remote=lab.sip_addr, calls=n_missed, timeout=90,
                   background=True, name="missed")
    try:
        assert rej.wait() == 0, rej.summary()
        assert mis.wait() == 0, mis.summary()
    finally:
        rej.stop()
        mis.stop()

    # the verdicts: every call got its own, whichever process resumed it
    f_rej, f_mis = finals_by_call(rej), finals_by_call(mis)
    assert len(f_rej) == n_rej, f_rej
    assert all(v == (404, "Unknown number") for v in f_rej.values()), f_rej
    assert len(f_mis) == n_missed, f_mis
    assert all(v[0] == 480 for v in f_mis.values()), f_mis
    for cid in f_mis:
        t = lab.wait_txn_state(cid, lambda t: t["status"] == "Ended")
        assert t and t["status"] == "Ended" and t["result"] == "missed", (cid, t)
        assert t["inbox"] == "Overflow", t

    # where the resumed routes ran: resume processes only, more than one,
    # each call's decision and (for the queued calls) the wait's outcome
    ours = set(f_rej) | set(f_mis)
    assert wait_until(lambda: len([r for r in resumed_in(lab, off) if r[1] in ours])
                      >= n_rej + 2 * n_missed, 10), lab.log_since("kamailio", off)[-3000:]
    seen = [r for r in resumed_in(lab, off) if r[1] in ours]
    acts = {}
    for pid, cid, act in seen:
        assert pid in resume_pids, "call %s resumed in %s (%s), not a ccq resume process" % (
            cid, pid, procs.get(pid))
        acts.setdefault(cid, []).append(act)
    assert all(acts[c] == ["reject"] for c in f_rej), acts
    assert all(acts[c] == ["queue", "missed"] for c in f_mis), acts
    used = {pid for pid, _, _ in seen}
    assert len(used) >= 2, "every resumed route ran in one process: %r" % used

    # ccq.stats: per-process counts, none in the async process, and the
    # decision latency still measured (the 50 decisions of these calls)
    s1 = stats(lab)
    per0 = [int(x) for x in s0["resumes_per_process"].split()]
    per1 = [int(x) for x in s1["resumes_per_process"].split()]
    grew = [b - a for a, b in zip(per0, per1)]
    assert sum(grew) >= n_rej + 2 * n_missed, (s0, s1)
    assert len([g for g in grew if g > 0]) >= 2, (s0, s1)
    assert int(s1["resumes_in_async"]) == int(s0["resumes_in_async"]), (s0, s1)
    assert int(s1["resumes"]) - int(s0["resumes"]) == sum(grew), (s0, s1)
    assert int(s1["decisions"]) - int(s0["decisions"]) >= n_rej + n_missed, (s0, s1)
    assert float(s1["decision_p50_ms"]) > 0 and float(s1["decision_max_ms"]) > 0, s1
