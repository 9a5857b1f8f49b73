"""queued and ccqctl under valgrind (memcheck): a second queued on a scratch
database serves provisioning, transactions, call decisions (answered before
their commit, retried, written again after a failure), bad frames and a
graceful stop,
and ccqctl's commands run against it; valgrind must report no error and no
definitely or indirectly lost memory."""

import json
import os
import re
import signal
import subprocess

from ccqlab import CCQCTL, QUEUED, WireClient, read_conf, wait_until, write_queued_conf

VALGRIND = ["valgrind", "--tool=memcheck", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect",
            "--error-exitcode=99", "--track-fds=no"]


def leaks_and_errors(log):
    errors = re.search(r"ERROR SUMMARY: (\d+) errors", log)
    definite = re.search(r"definitely lost: ([\d,]+) bytes", log)
    indirect = re.search(r"indirectly lost: ([\d,]+) bytes", log)
    return (int(errors.group(1)) if errors else -1,
            int(definite.group(1).replace(",", "")) if definite else 0,
            int(indirect.group(1).replace(",", "")) if indirect else 0)


def test_queued_and_ccqctl_clean_under_valgrind(running_lab, tmp_path):
    lab = running_lab
    lab.sql("DROP DATABASE IF EXISTS ccq_memcheck", db=None)
    lab.sql("CREATE DATABASE ccq_memcheck", db=None)
    lab.sql("GRANT ALL PRIVILEGES ON ccq_memcheck.* TO 'ccq'@'localhost'", db=None)
    conf = read_conf(lab.queued_conf)
    sock = str(tmp_path / "mc.sock")
    conf.update(mysql_database="ccq_memcheck", listen_unix=sock, listen_tcp=None,
                pid_file=str(tmp_path / "mc.pid"), log_level="info")
    path = str(tmp_path / "mc.conf")
    write_queued_conf(path, **conf)
    vlog = str(tmp_path / "queued.vg")
    q = subprocess.Popen(VALGRIND + ["--log-file=" + vlog, QUEUED, "-c", path],
                         stdout=subprocess.DEVNULL, stderr=open(str(tmp_path / "queued.log"), "w"))
    try:
        assert wait_until(lambda: os.path.exists(sock), 60), "queued under valgrind did not start"

        def ctl(*args, ok=True, stdin=None):
            log = str(tmp_path / ("ccqctl-%d.vg" % ctl.n))
            ctl.n += 1
            r = subprocess.run(VALGRIND + ["--log-file=" + log, CCQCTL, "-s", sock, "-T", "20000"]
                               + list(args), input=stdin, capture_output=True, text=True,
                               timeout=120)
            if ok:
                assert r.returncode == 0, (args, r.stdout, r.stderr)
            e, d, i = leaks_and_errors(open(log).read())
            assert (e, d, i) == (0, 0, 0), "ccqctl %s: %d errors, %d/%d bytes lost\n%s" % (
                args, e, d, i, open(log).read()[-3000:])
            return r
        ctl.n = 0

        ctl("ping")
        ctl("org", "create", "Mem", "SG")
        ctl("-o", "Mem", "user", "create", "100", "Owner O'Brien", "--role", "owner", "--addon")
        ctl("-o", "Mem", "user", "create", "200", "Member")
        ctl("-o", "Mem", "device", "add", "200", "desk_phone", "mem-200", "longpassword",
            "--domain", "127.0.0.1")
        ctl("-o", "Mem", "inbox", "create", "Sales")
        ctl("-o", "Mem", "inbox", "did", "add", "Sales", "+65 6555 0199")
        ctl("-o", "Mem", "inbox", "member", "add", "Sales", "200")
        ctl("-o", "Mem", "customer", "create", "Jane", "--number", "9123 4567,abc", ok=False)
        cust = json.loads(ctl("-j", "-o", "Mem", "customer", "create", "Jane", "--number",
                              "9123 4567").stdout)["id"]
        ctl("-j", "-o", "Mem", "inbox", "list")
        chat = json.loads(ctl("-j", "--as", "200@Mem", "chat", "create", "Sales", "--customer",
                              str(cust)).stdout)["id"]
        ctl("--as", "200@Mem", "chat", "assign", str(chat), "200")
        ctl("--as", "200@Mem", "txn", "show", str(chat))
        ctl("--as", "200@Mem", "customer", "journey", str(cust))
        ctl("-o", "Mem", "list", "add", "blacklist", "+6599998888", "junk")
        ctl("-o", "Mem", "pin", "set", "200", stdin="1234\n")
        ctl("txn", "list")
        ctl("txn", "show", "999", ok=False)
        ctl("--as", "200@Mem", "watch", "--for", "1")

        # a call's decisions: answered early (the claim held), asked again
        # (the retry path), reported answered and ended; then one whose
        # writes fail once after its answer (written again)
        ctl("trunk", "add", "memtrunk", "127.0.0.1", "--port", "5999")
        with WireClient(sock) as c:
            def ok(op, args):
                rid, reply = c.request(op, args)
                assert reply[:4] == [1, 1, rid, 0], (op, reply)
                return reply[4]
            ok("device.contact", {"username": "mem-200", "domain": "127.0.0.1", "expires": 300,
                                  "contacts": [{"uri": "sip:mem-200@127.0.0.1:5998",
                                                "expires": 300}]})

            def route(cid):
                return ok("call.route", {"call_id": cid, "from": "<sip:+6591234567@127.0.0.1>",
                                         "caller": "+6591234567", "caller_name": "",
                                         "did": "+6565550199", "source_ip": "127.0.0.1",
                                         "source_port": 5999})
            first = route("mc-1@127.0.0.1")
            assert first["action"] == "ring", first
            assert route("mc-1@127.0.0.1")["txn"] == first["txn"]
            ok("call.answered", {"call_id": "mc-1@127.0.0.1",
                                 "contact": "sip:mem-200@127.0.0.1:5998"})
            ok("call.ended", {"call_id": "mc-1@127.0.0.1", "by": "caller"})
            db = "ccq_memcheck"
            lab.sql("CREATE TABLE mc_fault (n INT) ENGINE=MEMORY", db=db)
            lab.sql("INSERT INTO mc_fault VALUES (1)", db=db)
            lab.sql("DELIMITER //\nCREATE TRIGGER mc_ring_fault BEFORE INSERT ON txn_ring FOR "
                    "EACH ROW BEGIN IF (SELECT COUNT(*) FROM mc_fault) > 0 THEN DELETE FROM "
                    "mc_fault; SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused once'; "
                    "END IF; END//", db=db)
            second = route("mc-2@127.0.0.1")
            assert second["action"] == "ring", second
            assert wait_until(lambda: lab.sql("SELECT COUNT(*) FROM txn_ring WHERE txn_id = %d"
                                              % second["txn"], db=db) == [["1"]], 10), \
                "the answered decision was not written again"
            assert lab.sql("SELECT COUNT(*) FROM mc_fault", db=db) == [["0"]], "no fault fired"

        # hostile frames: oversized, lying array, wrong version
        with WireClient(sock) as c:
            c.send_raw(b"\x00\x00\x00\x05" + bytes([0xdd, 0x00, 0xff, 0xff, 0xff]))
            c.read_frame()
        with WireClient(sock) as c:
            c.send_raw(b"\x7f\xff\xff\xff" + b"x" * 100)
            try:
                c.read_frame()
            except Exception:
                pass
        with WireClient(sock) as c:
            c.request("ping", version=9)
    finally:
        q.send_signal(signal.SIGTERM)
        try:
            q.wait(timeout=60)
        except subprocess.TimeoutExpired:
            q.kill()
            q.wait(timeout=10)
        lab.sql("DROP DATABASE IF EXISTS ccq_memcheck", db=None)
    log = open(vlog).read()
    e, d, i = leaks_and_errors(log)
    assert q.returncode == 0, "queued under valgrind exited %d\n%s" % (q.returncode, log[-4000:])
    assert (e, d, i) == (0, 0, 0), "queued: %d errors, %d/%d bytes lost\n%s" % (e, d, i, log[-6000:])
