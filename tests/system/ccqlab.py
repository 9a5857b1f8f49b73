"""Helpers for the system tests: drive a private ccq lab (tools/ccq-lab),
talk to its components (ccqctl, kamcmd, the mariadb CLI, raw wire frames)
and place SIP calls with sipp.

Standard library only. Every wait is bounded.
"""

import contextlib
import errno
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
CCQREC = os.path.join(TOP, "tools", "ccqrec")
# sipp peers that honour Record-Route (sipp's built-in uac/uas do not, so
# their ACK and BYE never pass a record-routing proxy)
SCENARIOS = os.path.join(TOP, "tests", "scenarios")
SIPP_UAC = os.path.join(SCENARIOS, "carrier_uac.xml")
SIPP_UAS = os.path.join(SCENARIOS, "agent_uas.xml")

COMPONENTS = ("mysql", "rtpengine", "queued", "kamailio")

# The lab's callback settings for the tests (tools/ccq-lab --help): the
# ring timeout of a callback to an agent, attempts, the delay between two,
# the expiry of a request, the grace of a late schedule. Lab.callback has
# them by short name: ring_timeout, attempts, retry_delay, expiry,
# schedule_grace.
CALLBACK_SETTINGS = (("CCQ_CALLBACK_RING_TIMEOUT", "8"), ("CCQ_CALLBACK_ATTEMPTS", "2"),
                     ("CCQ_CALLBACK_RETRY_DELAY", "3"), ("CCQ_CALLBACK_EXPIRY", "3600"),
                     ("CCQ_SCHEDULE_GRACE", "3600"))


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
    """A port free on 127.0.0.1 right now, chosen by the kernel (ephemeral
    range). Not for SIP peers or sipp control ports: see PortPool."""
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _udp_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class PortPool:
    """UDP ports for sipp and baresip, outside the kernel's ephemeral range
    and never handed out twice in a session, in two separate ranges:

    - SIP peers (phones, unknown callers): a phone's port stays in
      Kamailio's location table after its test; Kamailio may still send it
      retransmissions or ring it. Not reusing the port means that traffic
      finds nobody, instead of a later test's sipp.
    - sipp control ports (-cp): sipp takes every datagram on it as key
      presses ('q' quits, 'p' pauses), so no SIP may ever reach one.

    Base: $CCQ_TEST_PORT_POOL (default 20000); peers base..base+2999,
    control ports base+3000..base+5999, baresip's RTP base+6000..base+6199."""

    def __init__(self, base=None):
        base = int(base or os.environ.get("CCQ_TEST_PORT_POOL") or 20000)
        self.base = base
        self.next = {"peer": base, "cp": base + 3000}
        self.end = {"peer": base + 3000, "cp": base + 6000}

    def take(self, kind):
        while self.next[kind] < self.end[kind]:
            port = self.next[kind]
            self.next[kind] += 1
            if _udp_free(port):
                return port
        raise AssertionError("no free %s port left in the pool" % kind)


PORTS = PortPool()


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
        # callbacks: short timings, so that retries and failures happen
        # within a test (CCQ_TEST_CALLBACK_RING_TIMEOUT etc. move them)
        self.callback = {}
        for name, default in CALLBACK_SETTINGS:
            v = os.environ.get("CCQ_TEST_" + name[4:], default)
            self.env[name] = v
            self.callback[name[13:].lower() if name.startswith("CCQ_CALLBACK_")
                          else name[4:].lower()] = int(v)
        self.callback_secret = os.path.join(root, "callback.secret")
        self.callback_prompt = os.path.join(root, "kamailio", "callback-prompt.wav")
        self.mysql_sock = os.path.join(root, "mysql", "mysql.sock")
        self.queued_sock = os.path.join(root, "queued", "queued.sock")
        self.queued_conf = os.path.join(root, "queued", "queued.conf")
        self.ctl_sock = os.path.join(root, "kamailio", "ctl.sock")
        self.env["CCQ_QUEUED_SOCK"] = self.queued_sock
        self.sipp_dir = os.path.join(root, "sipp")
        self.rtp_range = (rtp_min, rtp_max)
        self.ng_port = ng_port
        self.hold_music = os.path.join(root, "kamailio", "hold.wav")
        # rtpengine's recording dir (pcaps/, tmp/, metadata/; queued's indexed/)
        self.rec_dir = os.path.join(root, "rtpengine", "recordings")
        self._trunks = set()        # trunk ports provisioned (trunk_port)
        self._basic = None          # the directory of basic()
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

    def start(self, *components, timeout=120):
        """`ccq-lab up COMPONENT...`: only start what is not running (e.g.
        queued after stop_queued); the install and build checks find nothing
        to do after the session's first `up`."""
        r = self.lab("up", *components, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError("ccq-lab up %s failed (exit %d)\n%s%s" % (
                " ".join(components), r.returncode, r.stdout, r.stderr))
        return r

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

    def restart_queued(self):
        """Stop queued (SIGTERM), start it again, and wait until the proxy
        has reconnected (its reconnect interval is 1 s)."""
        off = self.log_size("kamailio")
        assert self.stop_queued(), "queued did not stop"
        self.up(timeout=300)
        wait_until(lambda: "connected to queued again" in self.log_since("kamailio", off), 5)

    @contextlib.contextmanager
    def queued_env(self, **settings):
        """queued run with these CCQ_* settings of ccq-lab (e.g.
        CCQ_MYSQL_WORKERS="1") for the with-block: restarted with them,
        and restarted as it was afterwards."""
        saved = {k: self.env.get(k) for k in settings}
        self.env.update(settings)
        try:
            self.restart_queued()
            yield self
        finally:
            for k, v in saved.items():
                if v is None:
                    self.env.pop(k, None)
                else:
                    self.env[k] = v
            self.restart_queued()

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

    def module_synced(self, timeout=5.0):
        """Wait (bounded) until the ccq module's snapshot of the database
        (compliance lists, recording policy) is current: the version
        ccq.compliance.stats reports reaches SUM(list_version.version)."""
        want = int(self.sql("SELECT SUM(version) FROM list_version")[0][0])
        seen = [None]

        def check():
            out = self.kamcmd("ccq.compliance.stats").stdout
            m = re.search(r"^\s*version:\s*(\d+)", out, re.M)
            seen[0] = int(m.group(1)) if m else None
            return seen[0] is not None and seen[0] >= want
        assert wait_until(check, timeout, interval=0.05), \
            "the module's snapshot is version %s after %.1f s (database: %d)" % (
                seen[0], timeout, want)

    # ---- rtpengine's ng control protocol (bencode over UDP)
    def ng(self, command, timeout=5.0):
        """Send one ng command (a dict) to the lab's rtpengine; its reply as
        a dict of strings (bencode decoded)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(timeout)
        cookie = uuid.uuid4().hex[:12].encode()
        try:
            sock.sendto(cookie + b" " + bencode(command), ("127.0.0.1", self.ng_port))
            data = sock.recv(65535)
        finally:
            sock.close()
        assert data.startswith(cookie + b" "), "bad ng reply %r" % data[:80]
        return bdecode(data[len(cookie) + 1:])

    # ---- ccqrec (doc/recording.md)
    def ccqrec(self, *args, as_=None, timeout=60):
        """tools/ccqrec against this lab's queued, as the local operator or
        as user AS_ ("EXT@ORG")."""
        pre = ["--as", as_] if as_ else []
        return subprocess.run([CCQREC, "-s", self.queued_sock] + pre + list(args), env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def recording_files(self, call_id):
        """Every file under the recording dir that rtpengine made for
        CALL_ID (its name holds the URL-encoded Call-ID)."""
        from urllib.parse import quote
        enc = quote(call_id, safe="")
        out = []
        for dirpath, _, names in os.walk(self.rec_dir):
            out += [os.path.join(dirpath, n) for n in names if enc in n or call_id in n]
        return sorted(out)

    def recording_rows(self, txn_id):
        """queued's index rows of a TXN's recordings (dicts), oldest first."""
        cols = ("id", "status", "call_id", "pcap_path", "meta_path", "size_bytes", "sha256",
                "caller_addr", "agent_addr", "codec", "rec_meta", "detail")
        rows = self.sql("SELECT %s FROM recording WHERE txn_id = %d ORDER BY id"
                        % (", ".join("COALESCE(%s, '')" % c for c in cols), int(txn_id)))
        return [dict(zip(cols, r)) for r in rows]

    def wait_recordings(self, txn_id, count=1, timeout=25):
        """The index rows of a TXN once it has COUNT of them (bounded: rtpengine
        writes the metadata delete-delay seconds after the BYE, queued scans
        every 2 s); what there is otherwise."""
        return wait_until(lambda: len(self.recording_rows(txn_id)) >= count and
                          self.recording_rows(txn_id), timeout, interval=0.3) \
            or self.recording_rows(txn_id)

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

    # ---- SIP with sipp
    def sipp(self, scenario, local_port, *args, remote=None, background=False, timeout=30,
             name=None, calls=1):
        """Run one sipp instance on 127.0.0.1:LOCAL_PORT with a scenario of
        tests/scenarios (or a path). Every instance gets its own control port,
        a message trace and an error trace in the lab's sipp dir. Returns a
        Sipp; unless background, it has already finished (bounded by timeout).
        CALLS: how many calls it handles before it exits (sipp -m)."""
        run = Sipp(self, scenario, local_port, list(args), remote=remote, timeout=timeout,
                   name=name, calls=calls)
        run.start()
        if not background:
            run.wait()
        return run

    def trunk_port(self, i=0):
        """The source port of carrier trunk number I (0: the lab's trunk
        address). Each one is provisioned once, as trunk 'carrier-PORT'."""
        ip, port = self.trunk_addr.rsplit(":", 1)
        port = int(port) + i
        if port not in self._trunks:
            r = self.ccqctl("trunk", "add", "carrier-%d" % port, ip, "--port", str(port))
            assert r.returncode == 0 or "conflict" in r.stderr, \
                "trunk add %s:%d: %s%s" % (ip, port, r.stdout, r.stderr)
            self._trunks.add(port)
        return port

    def carrier(self, did, scenario="carrier_uac.xml", trunk=0, duration_ms=1000,
                background=False, timeout=30, call_id=None, extra=()):
        """A call from carrier trunk TRUNK (see trunk_port) to DID (the
        request-URI user) through the proxy; returns the Sipp run, with
        .call_id set."""
        port = self.trunk_port(trunk) if trunk is not None else PORTS.take("peer")
        cid = call_id or "ccqtest-%s@127.0.0.1" % uuid.uuid4().hex[:16]
        run = self.sipp(scenario, port, "-s", str(did), "-d", str(duration_ms),
                        "-cid_str", cid, *extra, remote=self.sip_addr,
                        background=background, timeout=timeout, name="carrier")
        run.call_id = cid
        return run

    def basic(self):
        """A small directory shared by the tests that need 'a call that
        works' (issue 2 tests): org, inbox with a DID, an agent whose desk
        phone is registered at agent_addr, the customer Jane Tan and the
        trunk. Provisioned once per session."""
        if self._basic is None:
            org = Org(self, prefix="basic")
            org.user("100", "Basil Agent")
            inbox = org.inbox("Support", ring_timeout=5, max_wait=10)
            org.member(inbox, "100")
            org.customer("Jane Tan", "+6591234567")
            phone = org.device("100", port=int(self.agent_addr.rsplit(":", 1)[1]))
            phone.register(expires=3600)
            self.trunk_port(0)
            self._basic = {"org": org, "inbox": inbox, "phone": phone}
        return self._basic

    def call(self, duration_ms=1000, timeout=30):
        """One answered call to the basic inbox (see basic()): the agent's
        desk phone (a sipp UAS at agent_addr) answers the carrier's call.
        Returns a dict with call_id, uac/uas exit codes and output."""
        b = self.basic()
        assert not udp_bound(self.agent_addr), "agent port %s busy" % self.agent_addr
        uas = b["phone"].answer(timeout=timeout + 10)
        try:
            uac = self.carrier(b["inbox"].did, duration_ms=duration_ms, timeout=timeout)
            uas_rc = uas.wait(15)
        finally:
            uas.stop()
        return {
            "call_id": uac.call_id,
            "uac_rc": uac.rc,
            "uas_rc": uas_rc,
            "uac_out": uac.summary(),
            "uas_out": uas.summary(),
            "responses": uac.responses(),
        }

    def assert_call_ok(self, c):
        assert c["uac_rc"] == 0, "the call %s failed: carrier sipp exit %s\n%s\n--- agent:\n%s" % (
            c["call_id"], c["uac_rc"], c["uac_out"], c["uas_out"])
        assert c["uas_rc"] == 0, "the agent phone (sipp UAS) exit %s\n%s" % (
            c["uas_rc"], c["uas_out"])

    def queued_code(self):
        """What a caller waiting in a queue gets: 183 with early media (hold
        music from rtpengine) when the lab has hold music, else 182."""
        return 183 if os.path.exists(self.hold_music) else 182

    def txn_count(self):
        return int(self.sql("SELECT COUNT(*) FROM txn")[0][0])

    def txn(self, txn_id, *ctl):
        """ccqctl txn show as JSON (as the operator, or with ctl options)."""
        return self.ccqctl_json(*ctl, "txn", "show", str(txn_id))

    def wait_txn_state(self, call_id, pred, timeout=10):
        """The TXN of a call once pred(txn JSON) holds (bounded); the last
        state seen otherwise."""
        last = [None]

        def check():
            ids = self.txn_ids_for_call(call_id)
            if not ids:
                return False
            last[0] = self.txn(ids[-1])
            return pred(last[0])
        wait_until(check, timeout)
        return last[0]

    @staticmethod
    def _read(path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Sipp:
    """One sipp process (see Lab.sipp)."""

    def __init__(self, lab, scenario, port, args, remote=None, timeout=30, name=None, calls=1):
        self.lab = lab
        self.calls = calls
        self.scenario = scenario if os.path.isabs(scenario) else os.path.join(SCENARIOS, scenario)
        self.port = int(port)
        self.args = args
        self.remote = remote
        self.timeout = timeout
        self.name = "%s-%d-%s" % (name or os.path.basename(self.scenario)[:-4], self.port,
                                  uuid.uuid4().hex[:6])
        os.makedirs(lab.sipp_dir, exist_ok=True)
        base = os.path.join(lab.sipp_dir, self.name)
        self.msg_file, self.err_file, self.log_file = base + ".msg", base + ".err", base + ".log"
        self.proc = None
        self.rc = None
        self.call_id = None
        self.started = self.ended = None

    def command(self):
        """The sipp command line (a fresh control port each time)."""
        cmd = ["sipp", "-sf", self.scenario, "-i", "127.0.0.1", "-p", str(self.port),
               "-m", str(self.calls), "-timeout", "%ds" % self.timeout, "-timeout_error",
               "-nostdin", "-cp", str(PORTS.take("cp")), "-trace_msg", "-message_file",
               self.msg_file, "-trace_err", "-error_file", self.err_file] + self.args
        if self.remote:
            cmd.append(self.remote)
        return cmd

    def start(self):
        addr = "127.0.0.1:%d" % self.port
        assert not udp_bound(addr), "sipp %s: UDP %s is busy" % (self.name, addr)
        cmd = self.command()
        self.cmd = cmd
        self._log = open(self.log_file, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.lab.sipp_dir,
                                     env=self.lab.env)
        if not self.remote:
            # a UAS: wait until it listens (bounded)
            if not wait_until(lambda: udp_bound(addr) or self.proc.poll() is not None, 10):
                self.stop()
                raise AssertionError("sipp %s did not bind %s" % (self.name, addr))
            assert self.proc.poll() is None, "sipp %s exited at once:\n%s" % (
                self.name, self.summary())
        return self

    def wait(self, timeout=None):
        """The exit code, or None if it still runs after timeout seconds
        (default: its own -timeout plus a margin)."""
        if self.rc is not None:
            return self.rc
        try:
            self.rc = self.proc.wait(timeout=self.timeout + 15 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            return None
        self.ended = time.monotonic()
        self._log.close()
        return self.rc

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """Kill it if it still runs (a phone that got no call)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None and self.rc is None:
            self.rc = self.proc.returncode
            self.ended = time.monotonic()
        if hasattr(self, "_log") and not self._log.closed:
            self._log.close()

    def elapsed(self):
        return (self.ended or time.monotonic()) - self.started

    def messages(self):
        """[(direction, first line, full text)] from the message trace; for a
        call placed with a known Call-ID only that call's messages (a late
        retransmission for an earlier call on the same port is not ours)."""
        return [m[1:] for m in self.timed_messages()]

    def timed_messages(self):
        """[(unix time, direction, first line, full text)] (see messages)."""
        text = Lab._read(self.msg_file)
        out = []
        parts = re.split(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?).*$", text,
                         flags=re.M)
        for stamp, block in zip(parts[1::2], parts[2::2]):
            m = re.search(r"message (sent|received)[^\n]*\n\s*\n([^\r\n]+)", block)
            if not m:
                continue
            if self.call_id:
                cid = re.search(r"^(?:Call-ID|i):\s*(\S+)", block, re.M | re.I)
                if cid and cid.group(1) != self.call_id:
                    continue
            at = time.mktime(time.strptime(stamp[:19], "%Y-%m-%d %H:%M:%S"))
            at += float("0" + stamp[19:]) if len(stamp) > 19 else 0.0
            out.append((at, m.group(1), m.group(2).strip(), block))
        return out

    def first_time(self, direction, start):
        """Unix time of the first message DIRECTION ('sent'/'received') whose
        first line starts with START, or None."""
        return next((at for at, d, first, _ in self.timed_messages()
                     if d == direction and first.startswith(start)), None)

    def responses(self):
        """Status codes received, in order (retransmissions included)."""
        return [int(first.split()[1]) for d, first, _ in self.messages()
                if d == "received" and first.startswith("SIP/2.0 ")]

    def requests(self):
        """Methods received, in order."""
        return [first.split()[0] for d, first, _ in self.messages()
                if d == "received" and not first.startswith("SIP/2.0 ")]

    def received(self, start):
        """Full text of the messages received whose first line starts with START."""
        return [blk for d, first, blk in self.messages() if d == "received"
                and first.startswith(start)]

    def final(self):
        """The first final response (>= 200) received, or None."""
        return next((c for c in self.responses() if c >= 200), None)

    def final_for(self, cseq):
        """The first final response received to the request with CSeq
        CSEQ (e.g. "2 INVITE": the one sent again with credentials)."""
        for d, first, blk in self.messages():
            if d == "received" and first.startswith("SIP/2.0 ") \
                    and re.search(r"^CSeq:\s*%s\b" % re.escape(cseq), blk, re.M | re.I) \
                    and int(first.split()[1]) >= 200:
                return int(first.split()[1])
        return None

    def summary(self):
        out = Lab._read(self.log_file)
        err = Lab._read(self.err_file)
        return "%s (exit %s): %s\n%s\n--- unexpected messages:\n%s\n--- trace (last 3000):\n%s" % (
            self.name, self.rc, " ".join(self.cmd[:3]), out[-2000:], err[-2000:],
            Lab._read(self.msg_file)[-3000:])


# --------------------------------------------------------------- directory
_used_dids = set()


def new_did():
    """A Singapore fixed-line number no test has used in this session."""
    while True:
        did = "+656%07d" % (uuid.uuid4().int % 10 ** 7)
        if did not in _used_dids:
            _used_dids.add(did)
            return did


class Inbox:
    def __init__(self, org, name, did):
        self.org, self.name, self.did = org, name, did

    @property
    def id(self):
        for i in self.org.json("inbox", "list"):
            if i["name"] == self.name:
                return int(i["id"])
        raise AssertionError("inbox %s not listed" % self.name)


class Phone:
    """A device of an agent: SIP credentials, and the UDP port its sipp
    instances (REGISTER, then the answering scenario) use."""

    def __init__(self, org, ext, username, password, port, kind):
        self.org, self.lab = org, org.lab
        self.ext, self.username, self.password = ext, username, password
        self.port, self.kind = port, kind
        self.contact = "sip:%s@127.0.0.1:%d" % (username, port)

    def register(self, expires=300, password=None, expect_ok=True):
        scen = "device_register.xml" if expect_ok else "device_register_wrong.xml"
        run = self.lab.sipp(scen, self.port, "-key", "user", self.username, "-au",
                            self.username, "-ap", password or self.password,
                            "-key", "expires", str(expires), remote=self.lab.sip_addr,
                            timeout=15, name="register-%s" % self.username)
        if expect_ok:
            assert run.rc == 0, "REGISTER of %s failed:\n%s" % (self.username, run.summary())
        return run

    def unregister(self):
        return self.register(expires=0)

    def answer(self, timeout=40, ring_ms=0):
        """Answer the next call (180, 200 after 300 ms + ring_ms, wait for BYE)."""
        extra = ["-d", str(ring_ms)] if ring_ms else []
        return self.lab.sipp("agent_uas.xml", self.port, *extra, timeout=timeout,
                             background=True, name="answer-%s" % self.username)

    def ring(self, timeout=40):
        """Ring on the next call and never pick up (until CANCEL)."""
        return self.lab.sipp("agent_ring.xml", self.port, timeout=timeout, background=True,
                             name="ring-%s" % self.username)

    def registered(self):
        for d in self.org.json("device", "list"):
            if d["username"] == self.username:
                return int(d["registered"])
        raise AssertionError("device %s not listed" % self.username)


class Org:
    """A scratch organisation (a fresh name per test, so that tests sharing
    the lab's database never see each other's directory)."""

    def __init__(self, lab, prefix="t", country="SG"):
        self.lab = lab
        self.name = "%s-%s" % (prefix, uuid.uuid4().hex[:8])
        self.ok("org", "create", self.name, country, org=False)

    # ---- ccqctl as the local operator (-o ORG) or as a user (--as EXT@ORG)
    def ctl(self, *args, as_=None, org=True, timeout=20):
        pre = []
        if as_:
            pre += ["--as", "%s@%s" % (as_, self.name)]
        elif org:
            pre += ["-o", self.name]
        return self.lab.ccqctl(*(pre + list(args)), timeout=timeout)

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        assert r.returncode == 0, "ccqctl %s failed (%d): %s%s" % (
            " ".join(args), r.returncode, r.stdout, r.stderr)
        return r

    def agent_state(self, ext):
        """[last call end set, in wrap-up] of extension EXT from MySQL
        (agent_state, schema 9), as "1"/"0"; None: no row (never ended a
        call)."""
        rows = self.lab.sql(
            "SELECT s.last_call_end IS NOT NULL, COALESCE(s.wrapup_until > UTC_TIMESTAMP(3), 0) "
            "FROM agent_state s JOIN user u ON u.id = s.user_id JOIN org o ON o.id = u.org_id "
            "WHERE o.name = '%s' AND u.ext_key = '%s'" % (self.name, ext))
        return rows[0] if rows else None

    def json(self, *args, **kw):
        r = self.ctl("--json", *args, **kw)
        assert r.returncode == 0, "ccqctl --json %s failed (%d): %s%s" % (
            " ".join(args), r.returncode, r.stdout, r.stderr)
        return json.loads(r.stdout)

    def error(self, *args, **kw):
        """Run a command that must fail with queued's error; returns
        (error code name, message)."""
        r = self.ctl("--json", *args, **kw)
        assert r.returncode == 1, "ccqctl %s: expected an error reply, got exit %d: %s%s" % (
            " ".join(args), r.returncode, r.stdout, r.stderr)
        e = json.loads(r.stdout)
        return e["error"], e["message"]

    # ---- the directory
    def user(self, ext, name, role="member", addon=False, max_calls=None, wrapup=None):
        args = ["user", "create", ext, name, "--role", role]
        if addon:
            args.append("--addon")
        if max_calls is not None:
            args += ["--max-calls", str(max_calls)]
        if wrapup is not None:
            args += ["--wrapup", str(wrapup)]
        return self.json(*args)["id"]

    def device(self, ext, kind="desk_phone", port=None, label=None):
        username = "u%s-%s" % (ext, uuid.uuid4().hex[:8])
        password = "pw-%s" % uuid.uuid4().hex[:12]
        args = ["device", "add", ext, kind, username, password, "--domain", "127.0.0.1"]
        if label:
            args += ["--label", label]
        self.json(*args)
        return Phone(self, ext, username, password, port or PORTS.take("peer"), kind)

    def inbox(self, name, ring_timeout=5, max_wait=30, did=True):
        self.json("inbox", "create", name, "--ring-timeout", str(ring_timeout),
                  "--max-wait", str(max_wait))
        number = None
        if did:
            number = new_did()
            self.json("inbox", "did", "add", name, number)
        return Inbox(self, name, number)

    def member(self, inbox, ext):
        self.json("inbox", "member", "add", getattr(inbox, "name", inbox), ext)

    def customer(self, name, *numbers, verified=False):
        args = ["customer", "create", name]
        if numbers:
            args += ["--number", ",".join(numbers)]
        if verified:
            args.append("--verified")
        return self.json(*args)["id"]

    def agent(self, inbox, ext, name, **kw):
        """A user who is a member of INBOX with one desk phone."""
        self.user(ext, name, **kw)
        self.member(inbox, ext)
        return self.device(ext)

    def watch(self, ext, secs=10, count=None):
        return Watch(self, ext, secs, count)

    # ---- callbacks (doc/callbacks.md), as agent EXT
    def callback_args(self, txn=None, device=None, number=None, extra=()):
        args = ["callback", "request"]
        if txn is not None:
            args += ["--txn", str(txn)]
        if device is not None:
            args += ["--device", getattr(device, "username", device)]
        if number is not None:
            args += ["--number", number]
        return args + list(extra)

    def callback(self, ext, txn=None, device=None, number=None, extra=()):
        """`ccqctl --as EXT@ORG callback request ...`: the reply (JSON)."""
        return self.json(*self.callback_args(txn, device, number, extra), as_=ext)

    def callback_refused(self, ext, txn=None, device=None, number=None, extra=()):
        """A callback request that queued must refuse: (error code, message)."""
        return self.error(*self.callback_args(txn, device, number, extra), as_=ext)

    def callbacks(self, ext, *extra):
        """`ccqctl --as EXT@ORG callback list [...]` as JSON (a list)."""
        out = self.json("callback", "list", *extra, as_=ext)
        return out.get("callbacks", out.get("items", out)) if isinstance(out, dict) else out

    def chat(self, inbox, customer=None, as_=None):
        """A chat TXN in INBOX (from another channel); its id. Inbox names
        are per organisation: chat.create wants a user of this one (AS_, an
        extension who sees the inbox) once another organisation of the lab
        has an inbox of the same name."""
        args = ["chat", "create", getattr(inbox, "name", inbox)]
        if customer is not None:
            args += ["--customer", str(customer)]
        return int(self.json(*args, as_=as_)["id"])


class Watch:
    """`ccqctl --as EXT@ORG -j watch` in the background."""

    def __init__(self, org, ext, secs, count):
        lab = org.lab
        cmd = [CCQCTL, "-s", lab.queued_sock, "--as", "%s@%s" % (ext, org.name), "-j",
               "watch", "--for", str(secs)]
        if count:
            cmd += ["--count", str(count)]
        self.secs = secs
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=lab.env)
        # the subscription is made at once; give it a moment before the call
        time.sleep(0.7)
        assert self.proc.poll() is None, "ccqctl watch exited: %s" % (self.proc.stderr.read(),)

    def events(self):
        """Wait for the watcher to end (--for/--count) and return its events."""
        try:
            out, err = self.proc.communicate(timeout=self.secs + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, "ccqctl watch exit %s: %s" % (
            self.proc.returncode, err)
        evs = []
        for line in out.splitlines():
            line = line.strip()
            if line:
                evs.append(json.loads(line))
        return evs

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


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


class Baresip:
    """A baresip softphone as an agent's device, from the templates in
    tests/baresip (see its README): registers with the device's digest
    credentials through the proxy and answers every call at once
    (answermode=auto). Loopback only; stopped by its pid."""

    TEMPLATES = os.path.join(TOP, "tests", "baresip")

    def __init__(self, phone):
        self.phone, self.lab = phone, phone.lab
        self.dir = os.path.join(self.lab.sipp_dir, "baresip-%s" % phone.username)
        os.makedirs(self.dir, exist_ok=True)
        self.log_file = os.path.join(self.dir, "baresip.log")
        subs = {
            "@SIP_LISTEN@": "127.0.0.1:%d" % phone.port,
            "@CONS_LISTEN@": "127.0.0.1:%d" % PORTS.take("cp"),
            "@HEARD_WAV@": os.path.join(self.dir, "heard.wav"),
            "@USER@": phone.username,
            "@PASSWORD@": phone.password,
            "@DOMAIN@": "127.0.0.1",
            "@PROXY@": self.lab.sip_addr,
        }
        for name in ("config", "accounts"):
            with open(os.path.join(self.TEMPLATES, name + ".in")) as f:
                text = f.read()
            for k, v in subs.items():
                text = text.replace(k, v)
            left = [l for l in text.splitlines()
                    if not l.startswith("#") and re.search(r"@[A-Z_]+@", l)]
            assert not left, "unfilled placeholders in %s.in: %r" % (name, left)
            if name == "config":
                # media ports from the test pool too (not the kernel's range)
                text += "rtp_ports\t\t%d-%d\n" % (PORTS.base + 6000, PORTS.base + 6199)
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        open(os.path.join(self.dir, "contacts"), "w").close()
        self.proc = None

    def start(self, secs=60):
        self._log = open(self.log_file, "w")
        self.proc = subprocess.Popen(["baresip", "-f", self.dir, "-t", str(secs)],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.dir, env=self.lab.env)
        return self

    def log(self):
        return Lab._read(self.log_file)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if hasattr(self, "_log"):
            self._log.close()


# --------------------------------------------------------------- callbacks
# doc/callbacks.md: the system calls the agent's device (X-CCQ-Callback
# header), plays the prompt, REFERs the phone to sip:<digits>@proxy;ccqcb=...,
# the phone calls that through the proxy, the proxy relays it to the trunk.

def parse_token(tok):
    """A callback token (common/ccq_token.h) as a dict, without checking it:
    1.<purpose>.<txn>.<ext>.<digits>.<flags>.<exp>.<nonce>.<mac>."""
    parts = (tok or "").split(".")
    assert len(parts) == 9 and parts[0] == "1", "not a callback token: %r" % tok
    keys = ("version", "purpose", "txn", "ext", "digits", "flags", "exp", "nonce", "mac")
    return dict(zip(keys, parts))


def sign_token(secret, purpose, txn, ext, digits, exp, flags="-", nonce=None):
    """A token signed like queued signs them (HMAC-SHA256 with the lab's
    secret, the first 32 hex digits): to make an expired or a replayed
    marker that is otherwise genuine."""
    import hashlib
    import hmac
    nonce = nonce or uuid.uuid4().hex[:16]
    body = "1.%s.%s.%s.%s.%s.%d.%s" % (purpose, txn, ext, digits, flags, int(exp), nonce)
    mac = hmac.new(secret.encode() if isinstance(secret, str) else secret, body.encode(),
                   hashlib.sha256).hexdigest()[:32]
    return body + "." + mac


def header_value(msg, name):
    """The value of the first header NAME in a SIP message text, or None."""
    m = re.search(r"^%s\s*:\s*(.*?)\r?$" % re.escape(name), msg or "", re.M | re.I)
    return m.group(1) if m else None


class Follower(Sipp):
    """The agent phone's second call, the one that follows the REFER: sipp
    cannot open a new dialog itself, so the answering sipp (cb_agent.xml)
    runs SCRIPT with the Refer-To URI; the script writes the URI down and
    starts this sipp (SCENARIO, default cb_follow.xml) from another port of
    the pool, with the device's digest credentials, to the proxy. Its
    exit code lands in a file; stop() kills it by its pid."""

    def __init__(self, lab, phone, scenario="cb_follow.xml", timeout=40, extra=()):
        super().__init__(lab, scenario, PORTS.take("peer"),
                         ["-key", "user", phone.username, "-au", phone.username,
                          "-ap", phone.password] + list(extra),
                         remote=lab.sip_addr, timeout=timeout,
                         name="follow-%s" % phone.username)
        base = os.path.join(lab.sipp_dir, self.name)
        self.script = base + ".sh"
        self.uri_file, self.rc_file, self.pid_file = base + ".uri", base + ".rc", base + ".pid"
        cmd = self.command()
        # the target goes before the proxy address (the last argument)
        cmd = cmd[:-1] + ["-key", "target", "@TARGET@", cmd[-1]]
        line = " ".join("\"$1\"" if a == "@TARGET@" else shq(a) for a in cmd)
        self.cmd = cmd
        # sipp's sockets are not close-on-exec: without closing them here,
        # the follower (and this script's subshell) would keep the answering
        # phone's port bound after that sipp exited, and a test that listens
        # on the phone's port afterwards (udp_listen) could not bind it.
        with open(self.script, "w") as f:
            f.write("#!/bin/bash\n"
                    "# written by ccqlab.Follower: the phone follows a REFER to $1\n"
                    "for fd in /proc/$$/fd/*; do\n"
                    "  case \"$(readlink \"$fd\")\" in socket:*) eval \"exec ${fd##*/}>&-\";; esac\n"
                    "done\n"
                    "printf '%%s\\n' \"$1\" > %(uri)s.tmp; mv %(uri)s.tmp %(uri)s\n"
                    "(\n  %(line)s </dev/null > %(log)s 2>&1 &\n  echo $! > %(pid)s\n"
                    "  wait $!; echo $? > %(rc)s.tmp; mv %(rc)s.tmp %(rc)s\n) &\n"
                    % {"uri": shq(self.uri_file), "line": line, "log": shq(self.log_file),
                       "pid": shq(self.pid_file), "rc": shq(self.rc_file)})
        os.chmod(self.script, 0o755)

    def start(self):
        raise AssertionError("a Follower is started by the agent's sipp (cb_agent.xml)")

    def target(self):
        """The Refer-To URI it was started with, or None (not yet)."""
        t = Lab._read(self.uri_file).strip()
        return t or None

    def begun(self):
        return self.target() is not None

    def answer(self):
        """The final response to the call (the INVITE with credentials)."""
        return self.final_for("2 INVITE")

    def wait(self, timeout=None):
        if self.rc is not None:
            return self.rc
        t = self.timeout + 15 if timeout is None else timeout
        if not wait_until(lambda: os.path.exists(self.rc_file), t, interval=0.1):
            return None
        self.rc = int(Lab._read(self.rc_file).strip() or -1)
        return self.rc

    def running(self):
        return self.begun() and not os.path.exists(self.rc_file)

    def stop(self):
        try:
            pid = int(Lab._read(self.pid_file).strip())
        except ValueError:
            return
        if not os.path.exists(self.rc_file):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: os.path.exists(self.rc_file), 5, interval=0.1)
        if self.rc is None and os.path.exists(self.rc_file):
            self.rc = int(Lab._read(self.rc_file).strip() or -1)

    def summary(self):
        if not self.begun():
            return "%s: never started (no REFER followed)" % self.name
        return super().summary()


def shq(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


class CallbackPhone:
    """A sipp agent phone for one callback attempt (tests/scenarios/
    cb_agent.xml): it answers the system's call (which must carry
    X-CCQ-Callback), accepts the REFER and follows it with a Follower.
    RING_MS: extra ringing before the answer. FOLLOW: the Follower's
    scenario."""

    def __init__(self, phone, ring_ms=0, timeout=60, follow="cb_follow.xml"):
        self.phone, self.lab = phone, phone.lab
        self.follower = Follower(self.lab, phone, scenario=follow, timeout=timeout)
        args = ["-key", "follow", self.follower.script, "-default_behaviors", "all,-abortunexp"]
        if ring_ms:
            args += ["-d", str(ring_ms)]
        self.agent = self.lab.sipp("cb_agent.xml", phone.port, *args, timeout=timeout,
                                   background=True, name="cb-agent-%s" % phone.username)

    def invite(self):
        invs = self.agent.received("INVITE ")
        return invs[0] if invs else None

    def marker(self):
        """The X-CCQ-Callback header of the INVITE the phone got, or None."""
        return header_value(self.invite(), "X-CCQ-Callback")

    def refer(self):
        refs = self.agent.received("REFER ")
        return refs[0] if refs else None

    def refer_to(self, timeout=20):
        """The Refer-To URI the phone followed (waits, bounded)."""
        ok = wait_until(self.follower.begun, timeout, interval=0.1)
        assert ok, "the agent's phone got no REFER in %ds\n%s" % (timeout, self.summary())
        return self.follower.target()

    def wait(self, timeout=40):
        """(answering sipp's exit code, follower's exit code or None)."""
        rc = self.agent.wait(timeout)
        frc = self.follower.wait(timeout) if self.follower.begun() else None
        return rc, frc

    def stop(self):
        self.agent.stop()
        self.follower.stop()

    def summary(self):
        return "--- agent phone:\n%s\n--- its follow-up call:\n%s" % (
            self.agent.summary(), self.follower.summary())


def _try_bind(s, port):
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        return False


def udp_listen(port, secs):
    """Bind 127.0.0.1:PORT for SECS seconds and return the first lines of
    the datagrams that came (to show that nobody calls a port again)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # a phone's sipp that just exited may leave a child for a moment (its
    # exec'd helpers inherit its sockets): wait a little for the port
    if not wait_until(lambda: _try_bind(s, port), 5, interval=0.05):
        s.close()
        held = subprocess.run(["ss", "-uanp", "sport = :%d" % port], capture_output=True,
                              text=True).stdout
        raise AssertionError("127.0.0.1:%d stayed bound for 5 s:\n%s" % (port, held))
    s.settimeout(0.2)
    got = []
    deadline = time.monotonic() + secs
    try:
        while time.monotonic() < deadline:
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                continue
            got.append(data.decode("utf-8", "replace").split("\r\n", 1)[0])
    finally:
        s.close()
    return got


class RtpCapture:
    """Counts the RTP packets that reach a set of UDP ports on loopback,
    with a raw packet socket (root): [(unix time, src port, dst port,
    payload)] of every UDP datagram to DST_PORTS (a range) from SRC_PORTS
    (a range, e.g. rtpengine's), in a thread, for at most SECS seconds."""

    def __init__(self, dst_ports, src_ports, secs=60):
        import threading
        self.dst, self.src, self.secs = dst_ports, src_ports, secs
        self.packets = []
        self.error = None
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + self.secs
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    data, addr = self.sock.recvfrom(65535)
                except socket.timeout:
                    continue
                if addr[2] == socket.PACKET_OUTGOING:
                    continue        # loopback shows each packet twice
                ip = data[14:]
                if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
                    continue
                ihl = (ip[0] & 0x0f) * 4
                sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
                if self.dst[0] <= dport <= self.dst[1] and self.src[0] <= sport <= self.src[1]:
                    self.packets.append((time.time(), sport, dport, bytes(ip[ihl + 8:])))
        except Exception as e:          # reported by stop()
            self.error = e
        finally:
            self.sock.close()

    def stop(self):
        self._stop.set()
        self.thread.join(10)
        assert self.error is None, "the RTP capture failed: %r" % (self.error,)
        return self.packets


def audible(payload, codec_silence=(0xff, 0x7f, 0xd5, 0x55)):
    """Does an RTP packet (12-byte header, G.711 payload) carry sound,
    not just the codecs' silence bytes?"""
    body = payload[12:]
    return len(body) >= 80 and sum(1 for b in body if b not in codec_silence) > len(body) // 4


# --------------------------------------------------------------- bencode
def bencode(v):
    if isinstance(v, bool):
        v = int(v)
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, (list, tuple)):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError("cannot bencode %r" % type(v))


def bdecode(data):
    """A bencoded value (strings decoded as UTF-8)."""
    def dec(i):
        c = data[i:i + 1]
        if c == b"i":
            j = data.index(b"e", i)
            return int(data[i + 1:j]), j + 1
        if c in (b"l", b"d"):
            out, i = [], i + 1
            while data[i:i + 1] != b"e":
                x, i = dec(i)
                out.append(x)
            return (dict(zip(out[::2], out[1::2])) if c == b"d" else out), i + 1
        j = data.index(b":", i)
        n = int(data[i:j])
        return data[j + 1:j + 1 + n].decode("utf-8", "replace"), j + 1 + n
    return dec(0)[0]


# --------------------------------------------------------------- audio
# G.711 and WAV files in pure Python, for the recording tests (doc/recording.md):
# the audio the sipp peers of tests/scenarios/rec_*.xml send (raw G.711), and
# what `ccqrec fetch` gives back (WAV).

def _ulaw_byte(x):
    sign = 0x80 if x < 0 else 0
    x = min(abs(int(x)), 32635) + 0x84
    exp = min(max(x.bit_length() - 8, 0), 7)
    return ~(sign | (exp << 4) | ((x >> (exp + 3)) & 0x0f)) & 0xff


def _ulaw_value(b):
    b = ~b & 0xff
    v = ((((b & 0x0f) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84
    return -v if b & 0x80 else v


def _alaw_byte(x):
    x = int(x)
    sign = 0x80 if x >= 0 else 0
    x = min(x if x >= 0 else -x - 1, 32767)
    if x >= 256:
        exp = min(x.bit_length() - 8, 7)
        code = (exp << 4) | ((x >> (exp + 3)) & 0x0f)
    else:
        code = x >> 4
    return (sign | code) ^ 0x55


def _alaw_value(b):
    b ^= 0x55
    exp, man = (b >> 4) & 7, b & 0x0f
    v = (man << 4) + 8 if exp == 0 else ((man << 4) + 0x108) << (exp - 1)
    return v if b & 0x80 else -v


G711 = {
    # law: (RTP payload type, encoder, decoder)
    "ulaw": (0, _ulaw_byte, _ulaw_value),
    "alaw": (8, _alaw_byte, _alaw_value),
}


def g711_encode(samples, law):
    enc = G711[law][1]
    return bytes(enc(x) for x in samples)


def g711_decode(data, law):
    table = [G711[law][2](b) for b in range(256)]
    return [table[b] for b in data]


def tone_pattern(freqs, seg_ms, periods, amp=5000, noise=2500, seed=1, rate=8000):
    """PERIODS times the sequence of sine tones FREQS, SEG_MS each, with a
    little deterministic noise (so that the pattern matches itself at one
    alignment only), as 16-bit sample values."""
    import math
    import random
    rnd = random.Random(seed)
    n = rate * seg_ms // 1000
    one = []
    for f in freqs:
        one += [int(round(amp * math.sin(2 * math.pi * f * i / rate)
                          + rnd.uniform(-noise, noise))) for i in range(n)]
    return one * periods


def write_g711(path, samples, law):
    """A file of raw G.711 bytes (8 kHz mono), what sipp's rtp_stream plays
    (sipp 3.6.1 sends a WAV header as sound: no header). Returns the bytes."""
    data = g711_encode(samples, law)
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
    return data


class Wav:
    """A PCM WAV file read whole: rate, bits, and one list of sample
    values per channel."""

    def __init__(self, path):
        import array
        with open(path, "rb") as f:
            raw = f.read()
        assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE", "%s is not a WAV file" % path
        pos, fmt, data = 12, None, None
        while pos + 8 <= len(raw):
            cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
            body = raw[pos + 8:pos + 8 + size]
            if cid == b"fmt ":
                fmt = body
            elif cid == b"data":
                data = body
            pos += 8 + size + (size & 1)
        assert fmt and data is not None, "%s: no fmt or data chunk" % path
        self.tag, self.nch, self.rate, _, _, self.bits = struct.unpack("<HHIIHH", fmt[:16])
        assert self.tag in (1, 0xfffe) and self.bits == 16, \
            "%s: not 16-bit PCM (format tag %d, %d bits)" % (path, self.tag, self.bits)
        pcm = array.array("h")
        pcm.frombytes(data[:len(data) - len(data) % (2 * self.nch)])
        if struct.pack("=H", 1) != b"\x01\x00":
            pcm.byteswap()
        self.channels = [list(pcm[c::self.nch]) for c in range(self.nch)]
        self.frames = len(self.channels[0]) if self.nch else 0

    def seconds(self):
        return self.frames / float(self.rate)


def goertzel(x, f, rate=8000):
    """The power of frequency F in the samples X (per sample)."""
    import math
    c = 2 * math.cos(2 * math.pi * f / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + c * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - c * s1 * s2) / max(1, len(x))


def rms(x):
    return (sum(v * v for v in x) / max(1, len(x))) ** 0.5


def tone_labels(x, freqs, win=320, floor=300.0, rate=8000):
    """For each window of WIN samples: None when it is quiet (RMS below
    FLOOR), else the index in FREQS of the loudest of those frequencies."""
    out = []
    for i in range(0, len(x) - win + 1, win):
        w = x[i:i + win]
        if rms(w) < floor:
            out.append(None)
            continue
        p = [goertzel(w, f, rate) for f in freqs]
        out.append(p.index(max(p)))
    return out


def ncorr(a, b):
    """Normalised correlation of two equally long lists of samples (-1..1)."""
    num = sum(p * q for p, q in zip(a, b))
    den = (sum(p * p for p in a) * sum(q * q for q in b)) ** 0.5
    return num / den if den else 0.0


def best_match(x, src, probe=160, span=4000, floor=300.0, candidates=300):
    """Where the looped source SRC best explains the samples X (both lists
    of values): the normalised correlation (-1..1) of the best alignment
    and its offset in SRC. The alignments that best fit a probe of PROBE
    samples at the first loud part of X are checked over 800 samples, the
    best of those over SPAN. (0.0, None) when X is quiet."""
    start = next((i for i in range(0, len(x) - probe, probe // 4)
                  if rms(x[i:i + probe // 4]) >= floor), None)
    if start is None:
        return 0.0, None
    span = min(span, len(x) - start)
    n = len(src)
    loop = src * (2 + (probe + span) // n)
    head = x[start:start + probe]
    scored = sorted(((ncorr(head, loop[o:o + probe]), o) for o in range(n)),
                    reverse=True)[:candidates]
    mid = min(800, span)
    c, o = max((ncorr(x[start:start + mid], loop[o:o + mid]), o) for _, o in scored)
    return ncorr(x[start:start + span], loop[o:o + span]), (o - start) % n