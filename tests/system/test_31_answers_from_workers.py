"""A decision answered before its batch commits (the claim held: ring that
agent) is written to the proxy's connection by the MySQL worker thread
that read the claim, while the event loop writes every other answer to
the same connection (queued(8), DESCRIPTION). Whatever the timing, the
stream the proxy reads stays whole: every answer exactly once, each frame
intact, never one frame inside another, whether the worker finds the
connection's buffer empty (it sends at once) or holding answers the
proxy has not read yet (it queues its own behind them).

The proxy's role is played over queued's socket (its requests are the
module's); MySQL is the lab's."""

import os
import signal
import socket
import struct
import threading
import time
import uuid

from ccqlab import WireClient, frame, mp_pack, mp_unpack


def route_args(lab, call_id, did):
    return {"call_id": call_id, "from": "<sip:+6591234567@127.0.0.1>",
            "caller": "+6591234567", "caller_name": "", "did": did,
            "source_ip": "127.0.0.1", "source_port": lab.trunk_port(0)}


def agents(org, name, n, calls):
    ib = org.inbox(name, ring_timeout=30, max_wait=60)
    for i in range(n):
        phone = org.agent(ib, "3%d%d" % (len(name) % 10, i), "Agent %d" % i, max_calls=calls)
        phone.register(expires=600)
    return ib


def read_all(w, want):
    """Frames until every id in want was seen once; the ids seen twice, the
    replies by id."""
    got, twice = {}, []
    while len(got) < len(want):
        r = w.read_frame()
        assert r is not None, "queued closed the connection"
        assert isinstance(r, list) and len(r) >= 4 and r[1] == 1, r
        if r[2] in got:
            twice.append(r[2])
        got[r[2]] = r
    return got, twice


def read_slowly(w, want, chunk=2048, pause=0.002, limit=120):
    """As read_all, reading at most chunk bytes every pause seconds."""
    buf, got, twice = b"", {}, []
    deadline = time.monotonic() + limit
    while len(got) < len(want):
        assert time.monotonic() < deadline, "%d of %d answers" % (len(got), len(want))
        data = w.sock.recv(chunk)
        assert data, "queued closed the connection"
        buf += data
        while len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            assert n < 65536, "not a frame: the stream is cut (length %d)" % n
            if len(buf) < 4 + n:
                break
            r = mp_unpack(buf[4:4 + n])
            buf = buf[4 + n:]
            assert isinstance(r, list) and len(r) >= 4 and r[1] == 1, r
            if r[2] in got:
                twice.append(r[2])
            got[r[2]] = r
        time.sleep(pause)
    return got, twice


def exchange(lab, reqs, reader):
    """Send reqs [(id, op, args)] in one stream from a thread while reader
    reads their answers; reader's result."""
    data = b"".join(frame(mp_pack([1, 0, rid, op, args])) for rid, op, args in reqs)
    with WireClient(lab.queued_sock, timeout=30) as w:
        sender = threading.Thread(target=w.send_raw, args=(data,))
        sender.start()
        try:
            return reader(w, [rid for rid, _, _ in reqs])
        finally:
            sender.join()


def check_routes(lab, replies, ids, cids):
    rings = 0
    for rid, cid in zip(ids, cids):
        r = replies[rid]
        assert r[3] == 0, r
        assert r[4]["action"] in ("ring", "queue"), r
        rings += r[4]["action"] == "ring"
        assert len(lab.wait_txn_for_call(cid)) == 1, cid
    return rings


def test_answers_of_workers_and_of_the_loop_share_one_stream_whole(running_lab, org):
    lab = running_lab
    ib = agents(org, "Stream", 4, 40)
    n = 60

    # 1. calls and pings sent together while the proxy reads along: the
    # workers find the buffer empty (most of the time) and send at once,
    # the loop answers the pings in between
    cids = ["ccqtest-stream-a-%s-%d@127.0.0.1" % (org.name, i) for i in range(n)]
    pings = [5000 + k for k in range(3 * n)]
    route_ids = [1000 + i for i in range(n)]
    reqs = []
    for i, (rid, cid) in enumerate(zip(route_ids, cids)):
        reqs.append((rid, "call.route", route_args(lab, cid, ib.did)))
        reqs += [(pid, "ping", {}) for pid in pings[3 * i:3 * i + 3]]
    replies, twice = exchange(lab, reqs, read_all)
    assert not twice, twice
    assert check_routes(lab, replies, route_ids, cids) > 0, "no decision was answered with a ring"

    # 2. the proxy reads slowly: thousands of pings' answers fill the
    # socket and queued's buffer, and the calls' answers come from the
    # workers while the proxy drains them, a little at a time, so the
    # socket often has room while queued still holds answers for it. A
    # worker's answer must then go behind those (sent past them, it would
    # land inside a half-sent frame and the stream would not parse)
    cids = ["ccqtest-stream-b-%s-%d@127.0.0.1" % (org.name, i) for i in range(n)]
    pings = [20000 + k for k in range(20000)]
    route_ids = [2000 + i for i in range(n)]
    reqs = [(pid, "ping", {}) for pid in pings]
    reqs += [(rid, "call.route", route_args(lab, cid, ib.did))
             for rid, cid in zip(route_ids, cids)]
    replies, twice = exchange(lab, reqs, read_slowly)
    assert not twice, twice
    assert check_routes(lab, replies, route_ids, cids) > 0, "no decision was answered with a ring"
    for pid in pings:
        assert replies[pid][3] == 0, replies[pid]


def test_requests_beyond_the_in_flight_cap_are_handled_when_workers_answer(running_lab, org):
    """More call decisions in one write than queued handles at once from
    one connection (256 in flight): the rest wait, read, in queued's input
    buffer, and are handled as answers leave, also when every answer that
    frees a place is sent whole by a worker (the loop's write watcher,
    which picks them up after an answer the loop sent, then never runs).
    Made so: one MySQL worker (the claims never meet a row another decision
    holds, so every decision is answered by the worker at its claim), and
    queued stopped (SIGSTOP) while the burst is written, so that its first
    read takes all of it and nothing more comes."""
    lab = running_lab
    ib = agents(org, "Burst", 3, 100)
    n = 300
    tag = uuid.uuid4().hex[:6]
    cids = ["b%s-%d" % (tag, i) for i in range(n)]
    route_ids = [3000 + i for i in range(n)]
    # short requests: all 300 fit in one read of queued's (64 KB)
    reqs = [(rid, "call.route", {"call_id": cid, "did": ib.did, "source_ip": "127.0.0.1",
                                 "source_port": lab.trunk_port(0)})
            for rid, cid in zip(route_ids, cids)]
    data = b"".join(frame(mp_pack([1, 0, rid, op, a])) for rid, op, a in reqs)
    assert len(data) < 60000, len(data)
    with lab.queued_env(CCQ_MYSQL_WORKERS="1", CCQ_DECISION_WORKERS="0"):
        with WireClient(lab.queued_sock, timeout=15) as w:
            w.ping()
            pid = lab.pid("queued")
            os.kill(pid, signal.SIGSTOP)
            try:
                w.send_raw(data)
            finally:
                os.kill(pid, signal.SIGCONT)
            # nothing more is sent: the proxy waits for these answers
            try:
                replies, twice = read_all(w, route_ids)
            except socket.timeout:
                raise AssertionError("the requests beyond the cap were never answered")
    assert not twice, twice
    assert check_routes(lab, replies, route_ids, cids) == n, \
        "not every decision was answered at its claim (by the worker)"
