"""queued decides concurrent calls on several MySQL workers at once
(mysql_workers): calls arriving together are decided side by side, yet no
agent is ever given more calls than max_calls, each call's own reports stay
in order, and `ccqctl stats` shows what the workers did."""

from ccqlab import wait_until

CALLS = 8
AGENTS = 3


def assigning_by_agent(lab, inbox_id):
    rows = lab.sql("SELECT COALESCE(agent_id, 0), COUNT(*) FROM txn WHERE inbox_id = %d "
                   "AND status = 'Assigning' GROUP BY agent_id" % inbox_id)
    return {int(a): int(n) for a, n in rows}


def test_simultaneous_calls_never_exceed_max_calls(running_lab, org):
    lab = running_lab
    lab.ccqctl_json("stats", "--reset")
    # decided well before the first ring timeout; the callers give up after
    # the maximum wait
    ib = org.inbox("Rush", ring_timeout=10, max_wait=14)
    inbox_id = int(lab.sql("SELECT i.id FROM inbox i JOIN org o ON o.id = i.org_id "
                           "WHERE o.name = '%s' AND i.name = 'Rush'" % org.name)[0][0])
    phones = [org.agent(ib, str(300 + k), "Rush Agent %d" % k, max_calls=1)
              for k in range(AGENTS)]
    for p in phones:
        p.register()
    # every phone rings and never answers; each can take all the calls
    rings = [lab.sipp("agent_ring.xml", p.port, timeout=60, background=True,
                      name="ring-%s" % p.username, calls=CALLS) for p in phones]
    calls = []
    try:
        # all calls at once, each from its own trunk port (its own carrier)
        calls = [lab.carrier(ib.did, trunk=k, duration_ms=500, timeout=40, background=True)
                 for k in range(CALLS)]
        # every call got its TXN and a decision: ringing an agent or waiting
        decided = wait_until(lambda: int(lab.sql(
            "SELECT COUNT(*) FROM txn WHERE inbox_id = %d AND status IN "
            "('Assigning', 'Waiting')" % inbox_id)[0][0]) == CALLS, 8)
        assert decided, lab.sql("SELECT id, status, agent_id FROM txn WHERE inbox_id = %d"
                                % inbox_id)
        # the moment they are all decided: one ringing call per agent (each
        # has max_calls 1), every agent used, the rest waiting in the queue
        by_agent = assigning_by_agent(lab, inbox_id)
        assert sorted(by_agent.values()) == [1] * AGENTS, (
            "ringing calls per agent with max_calls 1: %r" % by_agent)
        waiting = int(lab.sql("SELECT COUNT(*) FROM txn WHERE inbox_id = %d AND status = "
                              "'Waiting'" % inbox_id)[0][0])
        assert waiting == CALLS - AGENTS
        # and it stays true while the queue moves on (ring timeouts pass the
        # calls from agent to agent), until the calls give up
        seen = []

        def over():
            a = assigning_by_agent(lab, inbox_id)
            seen.append(a)
            assert all(n <= 1 for n in a.values()), "an agent rang for %r calls" % a
            return all(c.wait(0) is not None for c in calls)
        assert wait_until(over, 50, interval=0.3), "the callers did not finish"
    finally:
        for c in calls:
            c.stop()
        for r in rings:
            r.stop()
    # every call ended (missed after the maximum wait, or abandoned)
    rows = lab.sql("SELECT status, COUNT(*) FROM txn WHERE inbox_id = %d GROUP BY status"
                   % inbox_id)
    failed = lab.sql("SELECT t.id, e.kind, e.text FROM txn t JOIN txn_event e ON e.txn_id = t.id "
                     "WHERE t.inbox_id = %d AND t.status <> 'Ended' ORDER BY t.id, e.at, e.id"
                     % inbox_id)
    assert {s for s, _ in rows} <= {"Ended"}, (rows, failed)
    # each TXN's journey is whole and in order: received, routed first
    for (txn,) in lab.sql("SELECT id FROM txn WHERE inbox_id = %d" % inbox_id):
        kinds = [k for (k,) in lab.sql("SELECT kind FROM txn_event WHERE txn_id = %s "
                                       "ORDER BY at, id" % txn)]
        assert kinds[:2] == ["received", "routed"], (txn, kinds)
        assert kinds[-1] in ("missed", "ended"), (txn, kinds)
    # what the workers did
    st = lab.ccqctl_json("stats")
    assert st["workers"] >= 2, st
    ops = {i["op"]: i for i in st["items"]}
    assert ops["call.route"]["count"] >= CALLS, ops
    assert ops["call.route"]["errors"] == 0, ops["call.route"]
    for k in ("wait_p50_ms", "run_p50_ms", "run_p99_ms", "run_max_ms"):
        assert 0 <= ops["call.route"][k] <= ops["call.route"]["run_max_ms"] + \
            ops["call.route"]["wait_max_ms"] + 1, (k, ops["call.route"])
    # arrival to answer (which may leave before the job's COMMIT), ordered
    cr = ops["call.route"]
    assert 0 < cr["total_p50_ms"] <= cr["total_p90_ms"] <= cr["total_p99_ms"] \
        <= cr["total_max_ms"], cr


def test_stats_are_for_the_operator(running_lab, org):
    org.user("390", "Stats Member")
    r = org.ctl("--json", "stats", as_="390", org=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "local operator" in r.stdout, r.stdout
    ping = running_lab.ccqctl("ping")
    assert ping.returncode == 0 and "MySQL workers" in ping.stdout, ping.stdout
