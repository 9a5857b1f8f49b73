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


def test_schema_newer_than_binary_refuses_to_start(running_lab, tmp_path):
    lab = running_lab
    lab.sql("DROP DATABASE IF EXISTS ccq_future", db=None)
    lab.sql("CREATE DATABASE ccq_future", db=None)
    lab.sql("GRANT ALL PRIVILEGES ON ccq_future.* TO 'ccq'@'localhost'", db=None)
    lab.sql("CREATE TABLE schema_version (version INT NOT NULL PRIMARY KEY, "
            "name VARCHAR(200) NOT NULL, applied_at DATETIME(3) NOT NULL)", db="ccq_future")
    lab.sql("INSERT INTO schema_version VALUES (9999, 'from the future', NOW(3))",
            db="ccq_future")

    conf = read_conf(lab.queued_conf)
    sock = str(tmp_path / "future.sock")
    conf.update(mysql_database="ccq_future", listen_unix=sock, listen_tcp=None,
                pid_file=str(tmp_path / "future.pid"))
    path = str(tmp_path / "future.conf")
    write_queued_conf(path, **conf)
    p = subprocess.Popen([QUEUED, "-c", path], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
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
