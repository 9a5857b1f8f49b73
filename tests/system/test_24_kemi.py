"""The module from a KEMI script: a second Kamailio whose routing is
JavaScript (app_jsdt) calls KSR.ccq.ccq_outbound() and reads $ccq(...), on
the lab's MySQL and queued; the verdicts are the gate's (allow with the
E.164 number and caller ID, DNC block, unknown device)."""

import os
import signal
import socket
import subprocess
import time
import uuid

from ccqlab import PORTS, TOP, wait_until
from test_20_compliance import fresh_number, national, outbound_org

HERE = os.path.dirname(os.path.abspath(__file__))


def options(port, user, domain, ruser, timeout=3.0):
    """One OPTIONS from a device's identity; returns the status line."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(timeout)
    me = s.getsockname()[1]
    cid = uuid.uuid4().hex
    msg = ("OPTIONS sip:%s@127.0.0.1:%d SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s\r\n"
           "Max-Forwards: 70\r\n"
           "From: <sip:%s@%s>;tag=%s\r\n"
           "To: <sip:%s@127.0.0.1>\r\n"
           "Call-ID: %s@127.0.0.1\r\n"
           "CSeq: 1 OPTIONS\r\n"
           "Content-Length: 0\r\n\r\n") % (ruser, port, me, cid[:12], user, domain, cid[:8],
                                           ruser, cid)
    try:
        s.sendto(msg.encode(), ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
    finally:
        s.close()
    return data.decode(errors="replace").split("\r\n", 1)[0]


def test_gate_from_a_kemi_script(running_lab, tmp_path):
    lab = running_lab
    org, phone, cid = outbound_org(lab)
    dnc = fresh_number()
    lab.ccqctl("list", "add", "dnc", dnc)
    port = PORTS.take("peer")
    env = dict(os.environ,
               CCQ_MODULE=os.path.join(TOP, "kam_module", "ccq.so"),
               CCQ_QUEUED_ADDR="unix:" + lab.queued_sock,
               CCQ_DB_URL="mysql://ccq:ccq@localhost/ccq",
               MYSQL_UNIX_PORT=lab.mysql_sock,
               KEMI_LISTEN="udp:127.0.0.1:%d" % port,
               KEMI_SCRIPT=os.path.join(HERE, "kemi", "gate.js"),
               KEMI_CTL="unix:" + str(tmp_path / "ctl.sock"))
    log = open(tmp_path / "kamailio.log", "w")
    k = subprocess.Popen(["/usr/sbin/kamailio", "-f", os.path.join(HERE, "kemi", "kemi.cfg"),
                          "-DD", "-E", "-m", "64", "-M", "8", "-w", str(tmp_path)],
                         env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers():
            try:
                return options(port, phone.username, "127.0.0.1", national(fresh_number()), 0.3)
            except OSError:
                return None
        assert wait_until(lambda: (answers() or "").startswith("SIP/2.0 "), 15), \
            open(tmp_path / "kamailio.log").read()[-3000:]
        # the snapshot (with the DNC entry) is loaded by the second instance too
        number = fresh_number()
        line = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = options(port, phone.username, "127.0.0.1", national(dnc))
            if "rule=dnc" in line:
                break
            time.sleep(0.2)
        assert line.startswith("SIP/2.0 403") and "verdict=block rule=dnc" in line, line
        line = options(port, phone.username, "127.0.0.1", national(number))
        assert line.startswith("SIP/2.0 200"), line
        assert "verdict=allow" in line and ("number=%s" % number) in line, line
        assert ("caller_id=%s" % cid) in line, line
        line = options(port, "nobody-" + uuid.uuid4().hex[:6], "127.0.0.1", national(number))
        assert line.startswith("SIP/2.0 403") and "rule=unknown_device" in line, line
    finally:
        os.killpg(k.pid, signal.SIGTERM)
        try:
            k.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(k.pid, signal.SIGKILL)
        log.close()
