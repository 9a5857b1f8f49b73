"""Hostile frames on queued's unix socket: refused with an error reply or a
close, never a large allocation, and other clients keep being served."""

import socket
import struct

from ccqlab import (ERR_BAD_FRAME, ERR_BAD_REQUEST, ERR_BAD_VERSION, ERR_FRAME_TOO_LARGE,
                    WireClient, frame, mp_pack, proc_status)


def expect_error_or_close(w, code):
    """Read what queued answers: an error reply with `code` (then the
    connection may close), or a close. Anything else fails."""
    try:
        reply = w.read_frame()
    except socket.timeout:
        raise AssertionError("queued neither answered nor closed within 5 s")
    except ConnectionResetError:
        return None
    if reply is None:
        return None
    assert isinstance(reply, list) and len(reply) == 5 and reply[:2] == [1, 1], reply
    assert reply[3] == code, "expected error code %d, got %r" % (code, reply)
    assert isinstance(reply[4], str) and reply[4], reply
    return reply


def expect_closed(w):
    try:
        rest = w.read_frame()
    except ConnectionResetError:
        return
    except socket.timeout:
        raise AssertionError("the connection stayed open after a framing error")
    assert rest is None, "more data after a framing error: %r" % (rest,)


def test_oversized_frame_refused_others_served(running_lab):
    lab = running_lab
    pid = lab.pid("queued")
    with WireClient(lab.queued_sock) as other:
        other.ping()
        with WireClient(lab.queued_sock) as bad:
            bad.send_raw(struct.pack(">I", 0x7fffffff) + b"\x92\x01\x00" + b"A" * 64)
            other.ping()                                      # meanwhile
            reply = expect_error_or_close(bad, ERR_FRAME_TOO_LARGE)
            if reply is not None:
                expect_closed(bad)
        other.ping()                                          # after
    with WireClient(lab.queued_sock) as third:
        third.ping()
    assert lab.pid("queued") == pid and lab.alive(pid)


def test_frame_above_max_frame_refused(running_lab):
    # above the configured max_frame (1 MiB default), below the hard cap
    lab = running_lab
    with WireClient(lab.queued_sock) as w:
        w.send_raw(struct.pack(">I", 2 * 1024 * 1024))
        reply = expect_error_or_close(w, ERR_FRAME_TOO_LARGE)
        if reply is not None:
            expect_closed(w)
    with WireClient(lab.queued_sock) as w:
        w.ping()


def test_huge_array_claim_does_not_allocate(running_lab):
    lab = running_lab
    pid = lab.pid("queued")
    with WireClient(lab.queued_sock) as w:
        w.ping()                                              # warm up
        rss0, peak0 = proc_status(pid, "VmRSS"), proc_status(pid, "VmPeak")
        # one array header claiming 16M elements, in a 5-byte frame
        w.send_raw(frame(b"\xdd\x00\xff\xff\xff"))
        reply = w.read_frame()
        assert isinstance(reply, list) and len(reply) == 5 and reply[:2] == [1, 1], reply
        assert reply[3] == ERR_BAD_REQUEST, "expected bad_request, got %r" % (reply,)
        rss1, peak1 = proc_status(pid, "VmRSS"), proc_status(pid, "VmPeak")
        # a valid frame: the connection stays open after a bad payload
        w.ping()
    assert rss1 - rss0 < 4 * 1024, "VmRSS grew by %d kB" % (rss1 - rss0)
    # msgpack-c would reserve ~384 MB for the claim, even if never touched
    assert peak1 - peak0 < 128 * 1024, "VmPeak grew by %d kB" % (peak1 - peak0)
    assert lab.alive(pid)


def test_truncated_and_empty_frames(running_lab):
    lab = running_lab
    # a payload whose msgpack value is cut short inside a complete frame
    with WireClient(lab.queued_sock) as w:
        w.send_raw(frame(mp_pack([1, 0, 7, "ping", {}])[:-3]))
        reply = w.read_frame()
        assert reply is not None and reply[3] in (ERR_BAD_FRAME, ERR_BAD_REQUEST), reply
    # trailing bytes after the value
    with WireClient(lab.queued_sock) as w:
        w.send_raw(frame(mp_pack([1, 0, 8, "ping", {}]) + b"\xc0"))
        reply = w.read_frame()
        assert reply is not None and reply[3] in (ERR_BAD_FRAME, ERR_BAD_REQUEST), reply
    # a zero-length frame: bad_frame, then close
    with WireClient(lab.queued_sock) as w:
        w.send_raw(struct.pack(">I", 0))
        reply = expect_error_or_close(w, ERR_BAD_FRAME)
        if reply is not None:
            expect_closed(w)
    # a client that sends half a frame and goes away does not disturb others
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(lab.queued_sock)
    s.sendall(struct.pack(">I", 100) + b"\x95\x01")
    s.close()
    with WireClient(lab.queued_sock) as w:
        w.ping()


def test_wrong_version_gets_error_and_connection_stays(running_lab):
    lab = running_lab
    with WireClient(lab.queued_sock) as w:
        rid, reply = w.request("ping", version=2)
        assert reply is not None, "queued closed the connection on a wrong version"
        assert reply[3] == ERR_BAD_VERSION, reply
        w.ping()


def test_unknown_op(running_lab):
    with WireClient(running_lab.queued_sock) as w:
        rid, reply = w.request("no.such.op")
        assert reply[:3] == [1, 1, rid] and reply[3] == 5, reply   # unknown_op
        w.ping()
