"""Helpers for the system tests: drive a private ccq lab (tools/ccq-lab),
talk to its components (ccqctl, kamcmd, the mariadb CLI, raw wire frames)
and place SIP calls with sipp.

Standard library only. Every wait is bounded.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CCQ_LAB = os.path.join(TOP, "tools", "ccq-lab")
QUEUED = os.path.join(TOP, "queued", "queued")
CCQCTL = os.path.join(TOP, "tools", "ccqctl")
# sipp peers that honour Record-Route (sipp's built-in uac/uas do not, so
# their ACK and BYE never pass a record-routing proxy)
SIPP_UAC = os.path.join(TOP, "tests", "scenarios", "carrier_uac.xml")
SIPP_UAS = os.path.join(TOP, "tests", "scenarios", "agent_uas.xml")

COMPONENTS = ("mysql", "rtpengine", "queued", "kamailio")


# --------------------------------------------------------------- msgpack
# A small msgpack codec, enough for the wire protocol's values.

def mp_pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 0x80:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            for fmt, tag, lim in ((">B", 0xcc, 1 << 8), (">H", 0xcd, 1 << 16),
                                  (">I", 0xce, 1 << 32), (">Q", 0xcf, 1 << 64)):
                if v < lim:
                    return bytes([tag]) + struct.pack(fmt, v)
            raise ValueError("int too large")
        for fmt, tag, lim in ((">b", 0xd0, 1 << 7), (">h", 0xd1, 1 << 15),
                              (">i", 0xd2, 1 << 31), (">q", 0xd3, 1 << 63)):
            if v >= -lim:
                return bytes([tag]) + struct.pack(fmt, v)
        raise ValueError("int too small")
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xa0 | n]) + b
        if n < 1 << 8:
            return b"\xd9" + struct.pack(">B", n) + b
        if n < 1 << 16:
            return b"\xda" + struct.pack(">H", n) + b
        return b"\xdb" + struct.pack(">I", n) + b
    if isinstance(v, (bytes, bytearray)):
        n = len(v)
        if n < 1 << 8:
            return b"\xc4" + struct.pack(">B", n) + bytes(v)
        if n < 1 << 16:
            return b"\xc5" + struct.pack(">H", n) + bytes(v)
        return b"\xc6" + struct.pack(">I", n) + bytes(v)
    if isinstance(v, (list, tuple)):
        n = len(v)
        if n < 16:
            head = bytes([0x90 | n])
        elif n < 1 << 16:
            head = b"\xdc" + struct.pack(">H", n)
        else:
            head = b"\xdd" + struct.pack(">I", n)
        return head + b"".join(mp_pack(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        if n < 16:
            head = bytes([0x80 | n])
        elif n < 1 << 16:
            head = b"\xde" + struct.pack(">H", n)
        else:
            head = b"\xdf" + struct.pack(">I", n)
        return head + b"".join(mp_pack(k) + mp_pack(x) for k, x in v.items())
    raise TypeError("cannot pack %r" % type(v))


class MpError(ValueError):
    pass


def mp_unpack(data):
    """Decode exactly one msgpack value; trailing bytes are an error."""
    v, pos = _mp_dec(memoryview(data), 0, 0)
    if pos != len(data):
        raise MpError("%d trailing bytes" % (len(data) - pos))
    return v


def _need(buf, pos, n):
    if pos + n > len(buf):
        raise MpError("truncated at %d" % pos)


def _mp_dec(buf, pos, depth):
    if depth > 64:
        raise MpError("too deep")
    _need(buf, pos, 1)
    t = buf[pos]
    pos += 1

    def take(n):
        nonlocal pos
        _need(buf, pos, n)
        b = bytes(buf[pos:pos + n])
        pos += n
        return b

    def seq(n):
        nonlocal pos
        out = []
        for _ in range(n):
            x, pos = _mp_dec(buf, pos, depth + 1)
            out.append(x)
        return out

    def mapping(n):
        nonlocal pos
        out = {}
        for _ in range(n):
            k, pos = _mp_dec(buf, pos, depth + 1)
            x, pos = _mp_dec(buf, pos, depth + 1)
            out[k if not isinstance(k, list) else tuple(k)] = x
        return out

    if t < 0x80:
        return t, pos
    if t >= 0xe0:
        return t - 0x100, pos
    if 0x80 <= t <= 0x8f:
        return mapping(t & 0x0f), pos
    if 0x90 <= t <= 0x9f:
        return seq(t & 0x0f), pos
    if 0xa0 <= t <= 0xbf:
        return take(t & 0x1f).decode("utf-8", "replace"), pos
    if t == 0xc0:
        return None, pos
    if t == 0xc2:
        return False, pos
    if t == 0xc3:
        return True, pos
    fixed = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
             0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q",
             0xca: ">f", 0xcb: ">d"}
    if t in fixed:
        fmt = fixed[t]
        return struct.unpack(fmt, take(struct.calcsize(fmt)))[0], pos
    lens = {0xc4: (">B", "bin"), 0xc5: (">H", "bin"), 0xc6: (">I", "bin"),
            0xd9: (">B", "str"), 0xda: (">H", "str"), 0xdb: (">I", "str"),
            0xdc: (">H", "arr"), 0xdd: (">I", "arr"),
            0xde: (">H", "map"), 0xdf: (">I", "map"),
            0xc7: (">B", "ext"), 0xc8: (">H", "ext"), 0xc9: (">I", "ext")}
    if t in lens:
        fmt, kind = lens[t]
        n = struct.unpack(fmt, take(struct.calcsize(fmt)))[0]
        if kind == "bin":
            return take(n), pos
        if kind == "str":
            return take(n).decode("utf-8", "replace"), pos
        if kind == "arr":
            return seq(n), pos
        if kind == "map":
            return mapping(n), pos
        take(1)
        return ("ext", take(n)), pos
    fixext = {0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16}
    if t in fixext:
        take(1)
        return ("ext", take(fixext[t])), pos
    raise MpError("bad type byte 0x%02x at %d" % (t, pos - 1))


# --------------------------------------------------------------- wire
ERR_BAD_FRAME = 1
ERR_FRAME_TOO_LARGE = 2
ERR_BAD_VERSION = 3
ERR_BAD_REQUEST = 4


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


class WireClient:
    """A raw client of queued's wire protocol (one connection)."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.next_id = 1

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def read_frame(self):
        """The next message decoded, or None when the peer closed.
        Raises socket.timeout when nothing comes in time."""
        head = self._recv_exact(4)
        if head is None:
            return None
        (n,) = struct.unpack(">I", head)
        if n > 64 * 1024 * 1024:
            raise MpError("reply frame claims %d bytes" % n)
        body = self._recv_exact(n)
        if body is None:
            raise MpError("connection closed inside a frame")
        return mp_unpack(body)

    def request(self, op, args=None, version=1):
        rid = self.next_id
        self.next_id += 1
        self.send_raw(frame(mp_pack([version, 0, rid, op, args or {}])))
        return rid, self.read_frame()

    def ping(self):
        rid, reply = self.request("ping")
        assert isinstance(reply, list) and len(reply) == 5, "bad ping reply %r" % (reply,)
        assert reply[:4] == [1, 1, rid, 0], "ping failed: %r" % (reply,)
        return reply[4]


def free_port(kind=socket.SOCK_DGRAM):
    """A port free on 127.0.0.1 right now (for sipp's control port)."""
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def udp_bound(addr):
    out = subprocess.run(["ss", "-Hlun"], capture_output=True, text=True, timeout=10).stdout
    return any(line.split()[3] == addr for line in out.splitlines() if len(line.split()) > 3)


def proc_status(pid, field):
    """A field of /proc/PID/status in kB (VmRSS, VmPeak, ...)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def wait_until(pred, timeout, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------- the lab
class Lab:
    """One lab dir with its own ports, driven through tools/ccq-lab."""

    def __init__(self, root, sip_port=5070, trunk_port=5085, queued_tcp_port=7071,
                 ng_port=22223, rtp_min=31000, rtp_max=31999, agent_port=5091):
        self.root = root
        self.sip_addr = "127.0.0.1:%d" % sip_port
        self.trunk_addr = "127.0.0.1:%d" % trunk_port
        self.agent_addr = "127.0.0.1:%d" % agent_port
        self.queued_tcp = "127.0.0.1:%d" % queued_tcp_port
        self.env = dict(os.environ)
        self.env.update({
            "CCQ_LAB_DIR": root,
            "CCQ_SIP_IP": "127.0.0.1",
            "CCQ_SIP_PORT": str(sip_port),
            "CCQ_TRUNK_ADDR": self.trunk_addr,
            "CCQ_QUEUED_TCP": self.queued_tcp,
            "CCQ_RTPENGINE_NG_PORT": str(ng_port),
            "CCQ_RTP_PORT_MIN": str(rtp_min),
            "CCQ_RTP_PORT_MAX": str(rtp_max),
        })
        self.mysql_sock = os.path.join(root, "mysql", "mysql.sock")
        self.queued_sock = os.path.join(root, "queued", "queued.sock")
        self.queued_conf = os.path.join(root, "queued", "queued.conf")
        self.ctl_sock = os.path.join(root, "kamailio", "ctl.sock")
        self.env["CCQ_QUEUED_SOCK"] = self.queued_sock
        self.sipp_dir = os.path.join(root, "sipp")
        self.logs = {
            "mysql": os.path.join(root, "mysql", "mysqld.log"),
            "rtpengine": os.path.join(root, "rtpengine", "rtpengine.log"),
            "queued": os.path.join(root, "queued", "queued.log"),
            "kamailio": os.path.join(root, "kamailio", "kamailio.log"),
        }
        self.pidfiles = {
            "mysql": os.path.join(root, "mysql", "mysqld.pid"),
            "rtpengine": os.path.join(root, "rtpengine", "rtpengine.pid"),
            "queued": os.path.join(root, "queued", "queued.pid"),
            "kamailio": os.path.join(root, "kamailio", "kamailio.pid"),
        }

    # ---- tools/ccq-lab
    def lab(self, *args, timeout=120):
        return subprocess.run([CCQ_LAB] + list(args), env=self.env, cwd=TOP,
                              capture_output=True, text=True, timeout=timeout)

    def up(self, timeout=1200):
        r = self.lab("up", timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("ccq-lab up failed (exit %d)\n--- stdout\n%s\n--- stderr\n%s"
                                 % (r.returncode, r.stdout, r.stderr))
        return r

    def down(self):
        return self.lab("down", timeout=180)

    def status(self):
        return self.lab("status", timeout=30)

    def wipe(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def pid(self, comp):
        try:
            with open(self.pidfiles[comp]) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def alive(self, pid):
        if not pid:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # a zombie is not alive
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def stop_queued(self, sig=signal.SIGTERM, timeout=20):
        """Signal queued and wait (bounded) for it to exit. Returns True if it did."""
        pid = self.pid("queued")
        assert pid and self.alive(pid), "queued is not running"
        os.kill(pid, sig)
        return bool(wait_until(lambda: not self.alive(pid), timeout))

    # ---- logs
    def log_size(self, comp):
        try:
            return os.path.getsize(self.logs[comp])
        except OSError:
            return 0

    def log_since(self, comp, offset=0):
        try:
            with open(self.logs[comp], "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, comp, lines=60):
        text = self.log_since(comp)
        return "\n".join(text.splitlines()[-lines:])

    # ---- ccqctl
    def ccqctl(self, *args, timeout=20):
        return subprocess.run([CCQCTL, "-s", self.queued_sock] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def ccqctl_json(self, *args, timeout=20):
        r = self.ccqctl("--json", *args, timeout=timeout)
        assert r.returncode == 0, "ccqctl --json %s failed (%d): %s%s" % (
            " ".join(args), r.returncode, r.stdout, r.stderr)
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError("ccqctl --json %s printed no JSON (%s): %r"
                                 % (" ".join(args), e, r.stdout))

    # ---- kamcmd
    def kamcmd(self, *args, timeout=20):
        return subprocess.run(["kamcmd", "-s", "unix:" + self.ctl_sock] + list(args),
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    # ---- MariaDB (as root over the socket)
    def sql(self, query, db="ccq", timeout=30):
        cmd = ["mariadb", "--no-defaults", "--socket=" + self.mysql_sock, "-N", "-B"]
        if db:
            cmd.append(db)
        r = subprocess.run(cmd + ["-e", query], capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, "SQL failed: %s\n%s" % (query, r.stderr)
        return [line.split("\t") for line in r.stdout.splitlines()]

    def txn_ids_for_call(self, call_id):
        q = "SELECT id FROM txn WHERE sip_call_id = '%s' ORDER BY id" % call_id.replace("'", "")
        return [int(row[0]) for row in self.sql(q)]

    def wait_txn_for_call(self, call_id, timeout=10):
        return wait_until(lambda: self.txn_ids_for_call(call_id), timeout) or []

    # ---- SIP calls with sipp
    def call(self, callee="6001", duration_ms=1000, timeout=30):
        """One call: a sipp UAS as the agent phone at agent_addr, a sipp UAC
        as the carrier at trunk_addr, sending sip:CALLEE@agent_addr through
        the proxy. Returns a dict with call_id, uac/uas exit codes and output."""
        os.makedirs(self.sipp_dir, exist_ok=True)
        call_id = "ccqtest-%s@127.0.0.1" % uuid.uuid4().hex[:16]
        a_ip, a_port = self.agent_addr.rsplit(":", 1)
        t_ip, t_port = self.trunk_addr.rsplit(":", 1)
        assert not udp_bound(self.agent_addr), "agent port %s busy" % self.agent_addr
        uas_log = open(os.path.join(self.sipp_dir, "uas.log"), "w")
        uas = subprocess.Popen(
            ["sipp", "-sf", SIPP_UAS, "-i", a_ip, "-p", a_port, "-m", "1",
             "-timeout", str(timeout + 10), "-timeout_error", "-nostdin",
             "-cp", str(free_port())],
            stdin=subprocess.DEVNULL, stdout=uas_log, stderr=subprocess.STDOUT,
            cwd=self.sipp_dir, env=self.env)
        try:
            if not wait_until(lambda: udp_bound(self.agent_addr) or uas.poll() is not None, 10):
                raise AssertionError("sipp UAS did not bind %s" % self.agent_addr)
            assert uas.poll() is None, "sipp UAS exited at once: %s" % self._read(uas_log.name)
            uac = subprocess.run(
                ["sipp", "-sf", SIPP_UAC, "-i", t_ip, "-p", t_port, "-s", callee,
                 self.agent_addr, "-rsa", self.sip_addr, "-m", "1", "-d", str(duration_ms),
                 "-timeout", str(timeout), "-timeout_error", "-cid_str", call_id,
                 "-nostdin", "-cp", str(free_port())],
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                cwd=self.sipp_dir, env=self.env, timeout=timeout + 15)
            try:
                uas_rc = uas.wait(timeout=15)
            except subprocess.TimeoutExpired:
                uas.kill()
                uas.wait(timeout=10)
                uas_rc = None
        finally:
            if uas.poll() is None:
                uas.kill()
                uas.wait(timeout=10)
            uas_log.close()
        return {
            "call_id": call_id,
            "uac_rc": uac.returncode,
            "uas_rc": uas_rc,
            "uac_out": uac.stdout[-3000:] + uac.stderr[-2000:],
            "uas_out": self._read(uas_log.name)[-3000:],
        }

    def assert_call_ok(self, c):
        assert c["uac_rc"] == 0, "the call %s failed: carrier sipp exit %s\n%s\n--- agent:\n%s" % (
            c["call_id"], c["uac_rc"], c["uac_out"], c["uas_out"])
        assert c["uas_rc"] == 0, "the agent phone (sipp UAS) exit %s\n%s" % (
            c["uas_rc"], c["uas_out"])

    @staticmethod
    def _read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def write_queued_conf(path, **kv):
    """A queued.conf from key=value pairs (None drops the key)."""
    with open(path, "w") as f:
        for k, v in kv.items():
            if v is not None:
                f.write("%s = %s\n" % (k, v))


def read_conf(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def pick(rx, text):
    m = re.search(rx, text)
    return m.group(0) if m else None
