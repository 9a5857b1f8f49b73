"""queued as an operator meets it: config check mode, SIGHUP reload with a
bad config, a schema newer than the binary."""

import os
import re
import shutil
import signal
import subprocess
import time

from ccqlab import QUEUED, WireClient, read_conf, wait_until, write_queued_conf


def test_sighup_with_bad_config_keeps_old_one(running_lab):
    lab = running_lab
    pid = lab.pid("queued")
    saved = lab.queued_conf + ".saved"
    shutil.copyfile(lab.queued_conf, saved)
    try:
        conf = read_conf(lab.queued_conf)
        conf["log_level"] = "loud"
        write_queued_conf(lab.queued_conf, **conf)
        off = lab.log_size("queued")
        os.kill(pid, signal.SIGHUP)
        said = wait_until(lambda: "log_level" in lab.log_since("queued", off), 10)
        log = lab.log_since("queued", off)
        assert said, "queued did not log the bad key after SIGHUP:\n" + log
        assert re.search(r"keep|old|previous|unchanged|still", log, re.I), \
            "queued does not say it keeps the old config:\n" + log
        time.sleep(0.5)
        assert lab.alive(pid), "queued died on SIGHUP with a bad config"
        with WireClient(lab.queued_sock) as w:
            w.ping()
        assert lab.ccqctl("ping").returncode == 0
    finally:
        shutil.move(saved, lab.queued_conf)
    # a good config reloads without complaint
    off = lab.log_size("queued")
    os.kill(pid, signal.SIGHUP)
    time.sleep(1)
    assert lab.alive(pid)
    with WireClient(lab.queued_sock) as w:
        w.ping()
    assert "log_level" not in lab.log_since("queued", off)


def run_check(conf, timeout=20):
    return subprocess.run([QUEUED, "-t", "-c", conf], capture_output=True, text=True,
                          timeout=timeout)


def test_config_check_mode(running_lab, tmp_path):
    lab = running_lab
    good = read_conf(lab.queued_conf)

    r = run_check(lab.queued_conf)
    assert r.returncode == 0, "queued -t rejects the lab's config: %s%s" % (r.stdout, r.stderr)

    bad = dict(good, log_level="loud")
    path = str(tmp_path / "bad.conf")
    write_queued_conf(path, **bad)
    r = run_check(path)
    assert r.returncode != 0, "queued -t accepted log_level = loud"
    assert "log_level" in r.stdout + r.stderr, "the error does not name the key: " + r.stderr

    bad = dict(good, mysql_connect_timeout="soon")
    write_queued_conf(path, **bad)
    r = run_check(path)
    assert r.returncode != 0 and "mysql_connect_timeout" in r.stdout + r.stderr, r.stderr

    bad = dict(good, no_such_key="1")
    write_queued_conf(path, **bad)
    r = run_check(path)
    assert r.returncode != 0 and "no_such_key" in r.stdout + r.stderr, r.stderr

    missing = dict(good, mysql_database=None)
    write_queued_conf(path, **missing)
    r = run_check(path)
    assert r.returncode != 0, "queued -t accepted a config without mysql_database"
    assert "mysql_database" in r.stdout + r.stderr, "the error does not name the key: " + r.stderr

    r = run_check(str(tmp_path / "does-not-exist.conf"))
    assert r.returncode != 0 and "does-not-exist.conf" in r.stdout + r.stderr, r.stderr


def queued_on(lab, database, tmp_path, name):
    """A second queued of the lab's, on database DATABASE and its own unix
    socket only. Returns (process, socket path)."""
    conf = read_conf(lab.queued_conf)
    sock = str(tmp_path / (name + ".sock"))
    conf.update(mysql_database=database, listen_unix=sock, listen_tcp=None,
                pid_file=str(tmp_path / (name + ".pid")))
    path = str(tmp_path / (name + ".conf"))
    write_queued_conf(path, **conf)
    p = subprocess.Popen([QUEUED, "-c", path], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    return p, sock


def test_schema_newer_than_binary_refuses_to_start(running_lab, tmp_path):
    lab = running_lab
    lab.sql("DROP DATABASE IF EXISTS ccq_future", db=None)
    lab.sql("CREATE DATABASE ccq_future", db=None)
    lab.sql("GRANT ALL PRIVILEGES ON ccq_future.* TO 'ccq'@'localhost'", db=None)
    lab.sql("CREATE TABLE schema_version (version INT NOT NULL PRIMARY KEY, "
            "name VARCHAR(200) NOT NULL, applied_at DATETIME(3) NOT NULL)", db="ccq_future")
    lab.sql("INSERT INTO schema_version VALUES (9999, 'from the future', NOW(3))",
            db="ccq_future")

    p, _ = queued_on(lab, "ccq_future", tmp_path, "future")
    try:
        out, _ = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate(timeout=10)
        raise AssertionError("queued kept running on a schema newer than itself:\n" + out)
    assert p.returncode != 0, "queued exited 0 on a newer schema:\n" + out
    assert re.search(r"schema", out, re.I) and re.search(r"newer", out, re.I), \
        "queued does not say the schema is newer:\n" + out
    assert "9999" in out, out
    # it touched nothing
    rows = lab.sql("SELECT version FROM schema_version", db="ccq_future")
    assert rows == [["9999"]], rows
    tables = lab.sql("SHOW TABLES", db="ccq_future")
    assert tables == [["schema_version"]], "queued created tables in a newer schema: %r" % tables
    lab.sql("DROP DATABASE ccq_future", db=None)


def test_the_upgrade_from_schema_7_keeps_txns_and_agents_states(running_lab, tmp_path):
    """A database at schema 7 with TXNs and agents: queued migrates it to 9.
    The ids of new TXNs (from the sequence txn_seq, also the column's
    default) come after the highest existing one; the existing TXNs and
    their journeys are kept; the agents' last call ends and wrap-ups move
    from their user rows to agent_state (schema 9)."""
    lab = running_lab
    sql_dir = read_conf(lab.queued_conf)["sql_dir"]
    lab.sql("DROP DATABASE IF EXISTS ccq_up", db=None)
    lab.sql("CREATE DATABASE ccq_up CHARACTER SET utf8mb4", db=None)
    lab.sql("GRANT ALL PRIVILEGES ON ccq_up.* TO 'ccq'@'localhost'", db=None)
    lab.sql("CREATE TABLE schema_version (version INT NOT NULL PRIMARY KEY, "
            "name VARCHAR(200) NOT NULL, applied_at DATETIME(3) NOT NULL)", db="ccq_up")
    files = sorted(f for f in os.listdir(sql_dir) if re.match(r"\d{3}_.*\.sql$", f))
    for f in files:
        if int(f[:3]) > 7:
            continue
        with open(os.path.join(sql_dir, f)) as fh:
            lab.sql(fh.read(), db="ccq_up")
        lab.sql("INSERT INTO schema_version VALUES (%d, '%s', NOW(3))" % (int(f[:3]), f),
                db="ccq_up")
    for i in (41, 4242):
        lab.sql("INSERT INTO txn (id, kind, direction, call_type, status, sip_call_id, "
                "created_at, updated_at) VALUES (%d, 'call', 'inbound', 'direct', 'Ended', "
                "'old-%d', NOW(3), NOW(3))" % (i, i), db="ccq_up")
        lab.sql("INSERT INTO txn_event (txn_id, at, kind, text) VALUES (%d, NOW(3), 'ended', "
                "'Call ended')" % i, db="ccq_up")
    lab.sql("INSERT INTO org (id, name, default_country, created_at) VALUES (1, 'Up', 'SG', "
            "NOW(3)); INSERT INTO user (id, org_id, ext_key, name, last_call_end, wrapup_until, "
            "created_at) VALUES (7, 1, '101', 'Ada', '2026-01-02 03:04:05.678', "
            "'2026-01-02 03:05:05.678', NOW(3)), (8, 1, '102', 'Bo', NULL, NULL, NOW(3))",
            db="ccq_up")

    p, sock = queued_on(lab, "ccq_up", tmp_path, "up")
    try:
        assert wait_until(lambda: os.path.exists(sock), 30), "queued did not start"
        assert lab.sql("SELECT MAX(version) FROM schema_version", db="ccq_up") == [["9"]]
        # schema 9: the agent who had a call keeps its end and wrap-up; the
        # one who never had one has no state row (never called)
        assert lab.sql("SELECT user_id, last_call_end, wrapup_until FROM agent_state",
                       db="ccq_up") == [["7", "2026-01-02 03:04:05.678",
                                         "2026-01-02 03:05:05.678"]]
        assert lab.sql("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = "
                       "'ccq_up' AND table_name = 'user' AND column_name IN ('last_call_end', "
                       "'wrapup_until')", db="ccq_up") == [["0"]]
        # queued's way (an explicit id from the sequence, as LAST_INSERT_ID())
        rows = lab.sql("INSERT INTO txn (id, kind, direction, call_type, status, created_at, "
                       "updated_at) VALUES (LAST_INSERT_ID(NEXTVAL(txn_seq)), 'chat', "
                       "'inbound', 'chat', 'Waiting', NOW(3), NOW(3)); SELECT LAST_INSERT_ID()",
                       db="ccq_up")
        first = int(rows[0][0])
        assert first == 4243, "the sequence does not start after the highest id: %d" % first
        # by hand, without an id: the column's default takes the next one
        lab.sql("INSERT INTO txn (kind, direction, call_type, status, sip_call_id, created_at, "
                "updated_at) VALUES ('call', 'inbound', 'direct', 'Waiting', 'by-hand', NOW(3), "
                "NOW(3))", db="ccq_up")
        rows = lab.sql("SELECT id FROM txn WHERE sip_call_id = 'by-hand'", db="ccq_up")
        assert int(rows[0][0]) == first + 1, rows
        rows = lab.sql("SELECT t.id, COUNT(e.id) FROM txn t JOIN txn_event e ON e.txn_id = t.id "
                       "WHERE t.sip_call_id LIKE 'old-%' GROUP BY t.id ORDER BY t.id",
                       db="ccq_up")
        assert rows == [["41", "1"], ["4242", "1"]], rows
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate(timeout=10)
    lab.sql("DROP DATABASE ccq_up", db=None)
