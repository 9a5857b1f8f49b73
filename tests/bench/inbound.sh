#!/usr/bin/env bash
# tests/bench/inbound.sh — inbound calls per second through the full stack
# (carrier sipp -> Kamailio with ccq -> queued with MySQL -> answering sipp
# agents) against the same packaged Kamailio as a plain stateful relay of the
# same calls, in one run on the same machine. Method and results: BENCHMARKS.md.
#
# Usage: tests/bench/inbound.sh [-r "RATE ..."] [-d SECONDS] [-a AGENTS] [-l MS] [-w WORKERS]
#                               [-k KEPT] [-b BATCH] [-L MS] [-n] [-p]
#   -r  call rates to try, calls per second      (default "10 20 40 80")
#   -d  seconds of traffic per rate               (default 10)
#   -a  agents (users with one device each)       (default 20)
#   -l  call length in ms (caller hangs up)        (default 1000)
#   -w  queued's MySQL workers (mysql_workers)    (default: queued's, 3)
#   -k  of them, kept for decisions (decision_workers) (default: queued's, 2)
#   -b  call reports run in one transaction at most (report_batch)
#       (default: queued's, 16; 1: each report alone)
#   -L  ms a report may wait for others to share its transaction
#       (report_linger) (default: queued's)
#   -n  run the sipps (carrier, agents) at nice 19, for both targets: on a
#       real site they are other machines; this shows how much of the
#       latency is theirs
#   -p  pin the database side (MariaDB, queued) to CPU 1 and the SIP side
#       (both Kamailios, rtpengine, the sipps) to CPU 0, as if the database
#       had a machine of its own (needs two CPUs)
# It runs its own lab (build/lab-bench, its own ports) and stops it at the end.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
rates="10 20 40 80"
dur=10
agents=20
len=1000
gen=()   # how the load generators are started (-n: nice 19, -p: on CPU 0)
pin=0
while getopts "r:d:a:l:w:k:b:L:nph" o; do
    case $o in
        r) rates=$OPTARG ;;
        d) dur=$OPTARG ;;
        a) agents=$OPTARG ;;
        l) len=$OPTARG ;;
        w) export CCQ_MYSQL_WORKERS=$OPTARG ;;
        k) export CCQ_DECISION_WORKERS=$OPTARG ;;
        b) export CCQ_REPORT_BATCH=$OPTARG ;;
        L) export CCQ_REPORT_LINGER=$OPTARG ;;
        n) gen=(nice -n 19) ;;
        p) pin=1 ;;
        h) sed -n '2,25p' "$0"; exit 0 ;;
        *) exit 2 ;;
    esac
done

export CCQ_LAB_DIR=$top/build/lab-bench CCQ_SIP_PORT=5260 CCQ_TRUNK_ADDR=127.0.0.1:5280 \
    CCQ_QUEUED_TCP=127.0.0.1:7270 CCQ_RTPENGINE_NG_PORT=22260 \
    CCQ_RTP_PORT_MIN=34000 CCQ_RTP_PORT_MAX=39999
work=$CCQ_LAB_DIR/bench
relay_port=5265
agent_port=5291
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/relay.pid" ] && kill "$(cat "$work/relay.pid")" 2>/dev/null || true
    "$top/tools/ccq-lab" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# a fresh lab every run: same starting point, same MySQL state
"$top/tools/ccq-lab" down >/dev/null 2>&1 || true
rm -rf "$CCQ_LAB_DIR"
"$top/tools/ccq-lab" up
eval "$("$top/tools/ccq-lab" env)"
mkdir -p "$work"
cd "$work"

echo "== provisioning $agents agents"
ccqctl org create Bench SG >/dev/null 2>&1 || true
ccqctl -o Bench inbox create Bench --ring-timeout 20 --max-wait 30 >/dev/null 2>&1 || true
ccqctl -o Bench inbox did add Bench +6560000001 >/dev/null 2>&1 || true
ccqctl trunk add bench 127.0.0.1 --port 5280 >/dev/null 2>&1 || true
for i in $(seq 1 "$agents"); do
    ext=$((5000 + i))
    ccqctl -o Bench user create "$ext" "Agent $i" --max-calls 50 >/dev/null 2>&1 || true
    ccqctl -o Bench device add "$ext" desk_phone "bench$i" "benchpass$i" --domain 127.0.0.1 \
        >/dev/null 2>&1 || true
    ccqctl -o Bench inbox member add Bench "$ext" >/dev/null 2>&1 || true
done

echo "== agents answer on 127.0.0.1:$agent_port"
"${gen[@]}" sipp -sf "$top/tests/bench/agents.xml" -i 127.0.0.1 -p "$agent_port" -cp 8990 \
    -nostdin -max_socket 4096 -timeout $((60 * 60)) > agents.log 2>&1 &
pids+=($!)
sleep 0.5
for i in $(seq 1 "$agents"); do
    sipp -sf "$top/tests/bench/register_many.xml" -key user "bench$i" -au "bench$i" \
        -ap "benchpass$i" -key contact_port "$agent_port" -i 127.0.0.1 -p 5292 -cp 8991 \
        127.0.0.1:5260 -m 1 -timeout 10 -nostdin > register.log 2>&1 \
        || { echo "registration of bench$i failed"; tail register.log; exit 1; }
done

echo "== plain relay Kamailio on 127.0.0.1:$relay_port"
BENCH_RELAY_LISTEN=udp:127.0.0.1:$relay_port BENCH_RELAY_CTL=unix:$work/relay-ctl.sock \
BENCH_AGENT_URI=sip:bench@127.0.0.1:$agent_port BENCH_RTPENGINE_NG=$CCQ_RTPENGINE_NG \
    /usr/sbin/kamailio -DD -E -f "$top/tests/bench/relay.cfg" -m 256 -M 16 \
    -P "$work/relay.pid" -Y "$work" > relay.log 2>&1 &
sleep 2

if [ "$pin" = 1 ]; then
    # the database side (MariaDB, queued) on CPU 1, the SIP side (both
    # Kamailios, rtpengine, the sipps) on CPU 0: as if the database had a
    # machine of its own
    # (this lab's processes only, by their pid files: not another lab's)
    [ "$(nproc)" -ge 2 ] || { echo "-p needs two CPUs"; exit 2; }
    kam_procs() { local m; m=$(cat "$1"); echo "$m"; pgrep -P "$m" || true; }
    for p in $(cat "$CCQ_LAB_DIR/mysql/mysqld.pid" "$CCQ_LAB_DIR/queued/queued.pid"); do
        taskset -a -p -c 1 "$p" >/dev/null
    done
    for p in $(kam_procs "$CCQ_LAB_DIR/kamailio/kamailio.pid") $(kam_procs "$work/relay.pid") \
             $(cat "$CCQ_LAB_DIR/rtpengine/rtpengine.pid") "${pids[@]}"; do
        taskset -a -p -c 0 "$p" >/dev/null
    done
    gen=(taskset -c 0 "${gen[@]}")
    echo "== pinned: mariadbd and queued on CPU 1, Kamailio, rtpengine and the sipps on CPU 0"
fi

# MariaDB's counters: commits, row lock waits, ms spent waiting for row locks
counters() {
    mariadb --socket="$CCQ_MYSQL_SOCK" -N -B -e "SHOW GLOBAL STATUS WHERE Variable_name IN
        ('Com_commit', 'Innodb_row_lock_waits', 'Innodb_row_lock_time')" |
        awk '{ v[$1] = $2 } END { print v["Com_commit"], v["Innodb_row_lock_waits"],
        v["Innodb_row_lock_time"] }'
}

# run TARGET RATE: prints "attempted successful failed"
run() {
    local target=$1 rate=$2 n stat
    n=$((rate * dur))
    rm -f carrier_*.csv
    "${gen[@]}" sipp -sf "$top/tests/scenarios/carrier_uac.xml" -i 127.0.0.1 -p 5280 -cp 8992 \
        -s 6560000001 "$target" -r "$rate" -m "$n" -d "$len" -l $((rate * 4 + 50)) \
        -timeout $((dur + 30)) -nostdin -trace_stat -stf carrier.csv -fd 1 \
        -max_socket 4096 > carrier.log 2>&1 || true
    stat=$(tail -n 1 carrier.csv)
    python3 - "$stat" "$(head -n 1 carrier.csv)" <<'PY'
import sys
vals = sys.argv[1].split(';'); names = sys.argv[2].split(';')
d = dict(zip(names, vals))
print(d.get('OutgoingCall(C)', '0'), d.get('SuccessfulCall(C)', '0'), d.get('FailedCall(C)', '0'))
PY
}

# queued's view of the decisions since the last call: call.route's time
# from arrival to answer (queued's decision latency) p50/p90/p99, its wait
# for a MySQL worker and run time on it, p50/p99 (ms; upper bounds of
# buckets 4 % apart), the run time of the two other reports of a call, and
# the reports run in groups since the last call (report_batch) with their
# mean size
route_ms() {
    ccqctl --json stats --reset | python3 -c '
import json, sys
d = json.load(sys.stdin)
prev = sys.argv[1]
try:
    g0, n0 = (int(x) for x in open(prev).read().split())
except (OSError, ValueError):
    g0 = n0 = 0
g, n = d.get("groups", 0), d.get("grouped", 0)
open(prev, "w").write("%d %d" % (g, n))
ops = {i["op"]: i for i in d["items"]}
r = ops.get("call.route")
if r:
    print("queued call.route total p50/p90/p99/max %.2f/%.2f/%.2f/%.1f ms (wait p50/p99 %.2f/%.2f"
          " run p50/p99 %.2f/%.2f, %d workers)" % (
        r["total_p50_ms"], r["total_p90_ms"], r["total_p99_ms"], r["total_max_ms"],
        r["wait_p50_ms"], r["wait_p99_ms"], r["run_p50_ms"], r["run_p99_ms"], d["workers"]),
        end="")
    for name in ("call.answered", "call.ended"):
        o = ops.get(name)
        if o:
            print("; %s run p50/p99 %.2f/%.2f" % (name, o["run_p50_ms"], o["run_p99_ms"]), end="")
    if g > g0:
        print("; %d reports in %d groups (%.1f each)" % (n - n0, g - g0, (n - n0) / (g - g0)),
              end="")
    rp = d.get("route")
    if rp:
        print("; claims held %d, refused %d, nobody free %d, retried %d" % (
            rp["claimed"], rp["refused"], rp["no_candidate"], rp["retried"]), end="")
    print()' "$work/groups.prev"
}

printf '\n%-6s %-8s %10s %10s %8s %10s\n' RATE TARGET ATTEMPTED SUCCESS FAILED "CALLS/S"
results=()
for r in $rates; do
    for target in relay ccq; do
        if [ "$target" = relay ]; then addr=127.0.0.1:$relay_port; else addr=127.0.0.1:5260; fi
        [ "$target" = ccq ] && route_ms > /dev/null
        read -r c0 w0 l0 < <(counters)
        read -r att ok fail < <(run "$addr" "$r")
        read -r c1 w1 l1 < <(counters)
        cps=$(awk -v ok="$ok" -v d="$dur" 'BEGIN { printf "%.1f", ok / d }')
        printf '%-6s %-8s %10s %10s %8s %10s' "$r" "$target" "$att" "$ok" "$fail" "$cps"
        [ "$target" = ccq ] && printf '   mysql commits/s %s, row lock waits %s (%s ms)   %s' \
            "$(awk -v a="$c0" -v b="$c1" -v d="$dur" 'BEGIN { printf "%.1f", (b - a) / d }')" \
            "$((w1 - w0))" "$((l1 - l0))" "$(route_ms)"
        printf '\n'
        results+=("$r $target $ok")
        sleep 3
    done
done

echo
echo "== decision latency (ccq async process, all ccq calls above)"
kamcmd -s "unix:$CCQ_CTL_SOCK" ccq.stats
