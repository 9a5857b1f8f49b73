#!/usr/bin/env bash
# tests/bench/outbound.sh — the outbound compliance gate on the full stack, in
# one run on one machine:
#  1. the DNC registry from MySQL into Kamailio's shared memory at 1 M and
#     10 M numbers (ccqctl list import, then the ccq loader's snapshot): import
#     time, time until the snapshot holding every number is in use, the
#     loader's load_ms, shared memory bytes per number; then single-number
#     changes at that size (change -> snapshot in use);
#  2. outbound calls per second through Kamailio (sipp devices with digest
#     auth -> Kamailio -> sipp trunk) with the gate ON (the shipped
#     route[DEVICE_CALL], ccq_outbound() against the 10 M registry) and OFF
#     (the same Kamailio process, ccq_outbound() skipped, switched at run time),
#     at increasing rates, several times, plus the time ccq_outbound() itself
#     takes in Kamailio (benchmark module timer; perf profile of one run).
# Method and results: BENCHMARKS.md and tests/bench/README.md.
#
# Usage: tests/bench/outbound.sh [-r "RATE ..."] [-d SECONDS] [-l MS] [-n REPEATS]
#            [-N "SIZE ..."] [-m SHM_MB] [-B POOL_MB] [-X "RATE ..."] [-R] [-P RATE] [-k]
#            [-L LAB_DIR] [-O PORT_OFFSET] [-e "MODPARAM=VALUE ..."]
#   -r  call rates to try, calls per second  (default "20 40 80 120 160 240 320")
#   -d  seconds of traffic per rate                  (default 10)
#   -l  call length in ms (the device hangs up)       (default 500)
#   -n  repetitions of the whole rate ladder          (default 3)
#   -N  DNC registry sizes, ascending                  (default "1000000 10000000")
#   -m  Kamailio shared memory, MB (kamailio -m)       (default 512)
#   -B  MariaDB's innodb_buffer_pool_size, MB, set before the import; 0 keeps
#       the lab's (128 MB, too small for a 10 M table: see README) (default 1024)
#   -X  rates of the extra ladder with MySQL's relaxed flush
#       (innodb_flush_log_at_trx_commit=2), run once after the others
#                                                      (default "80 160 240 320")
#   -R  skip that extra ladder
#   -P  rate of one more gate-on run under 'perf record' (the share of
#       Kamailio's CPU spent in ccq_outbound()); 0 skips it  (default 80)
#   -k  keep the lab's MySQL data and the number files at the end
#   -L  the lab directory                      (default build/lab-bench2)
#   -O  added to every port the bench uses (SIP, trunk, queued, rtpengine ng,
#       sipp control and media; RTP ports move by 10 x the offset), so that two
#       runs can share the machine                            (default 0)
#   -e  ccq module parameters (integers) set in the bench's copy of the
#       script, e.g. -e "resume_processes=0"                  (default none)
# It runs its own lab (build/lab-bench2 and its own ports unless -L/-O), stops it at the end
# and removes the big files (MySQL data, number files) unless -k.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
rates="20 40 80 120 160 240 320"
xrates="80 160 240 320"
pool=1024
prof=80
dur=10
len=500
reps=3
sizes="1000000 10000000"
shm=512
relaxed=1
keep=0
devices=20
ndial=10000
lab_dir=$top/build/lab-bench2
off=0
modparams=
while getopts "r:d:l:n:N:m:B:X:P:RkL:O:e:h" o; do
    case $o in
        r) rates=$OPTARG ;;
        d) dur=$OPTARG ;;
        l) len=$OPTARG ;;
        n) reps=$OPTARG ;;
        N) sizes=$OPTARG ;;
        m) shm=$OPTARG ;;
        B) pool=$OPTARG ;;
        X) xrates=$OPTARG ;;
        P) prof=$OPTARG ;;
        R) relaxed=0 ;;
        k) keep=1 ;;
        L) lab_dir=$OPTARG ;;
        O) off=$OPTARG ;;
        e) modparams=$OPTARG ;;
        h) sed -n '2,42p' "$0"; exit 0 ;;
        *) exit 2 ;;
    esac
done

case $lab_dir in /*) ;; *) lab_dir=$PWD/$lab_dir ;; esac
export CCQ_LAB_DIR=$lab_dir CCQ_SIP_PORT=$((5960 + off)) CCQ_TRUNK_ADDR=127.0.0.1:$((5980 + off)) \
    CCQ_QUEUED_TCP=127.0.0.1:$((7960 + off)) CCQ_RTPENGINE_NG_PORT=$((22960 + off)) \
    CCQ_RTP_PORT_MIN=$((36000 + 10 * off)) CCQ_RTP_PORT_MAX=$((36999 + 10 * off))
# 1000 RTP ports are 250 calls at once: free them at the BYE (the lab's 2 s
# delete delay would hold them, and nothing is recorded here)
export CCQ_RTP_DELETE_DELAY=0
work=$CCQ_LAB_DIR/bench
kam_dir=$CCQ_LAB_DIR/kamailio
kam_cfg=$work/kamailio-bench.cfg
trunk_port=$((5980 + off))
device_port=$((5961 + off))
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$top/tools/ccq-lab" down >/dev/null 2>&1 || true
    if [ "$keep" = 0 ]; then
        rm -rf "$CCQ_LAB_DIR/mysql/data" "$work"/dnc-*.txt "$work/all.txt" "$work/dial.txt" \
            "$work/devices.csv" "$work/perf.data" "$CCQ_LAB_DIR/rtpengine/rtpengine.log"
    fi
}
trap cleanup EXIT

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
sql() { mariadb --no-defaults --socket="$CCQ_MYSQL_SOCK" -N -B "$@"; }
kam() { kamcmd -s "unix:$CCQ_CTL_SOCK" "$@"; }
status_var() { sql -e "SHOW GLOBAL STATUS LIKE '$1'" | cut -f2; }
db_version() { sql ccq -e "SELECT SUM(version) FROM list_version"; }
# comp_stat KEY: one field of ccq.compliance.stats ("" before any snapshot)
comp_stat() { kam ccq.compliance.stats 2>/dev/null | awk -v k="$1" -F': ' '$1 ~ "^[ \t]*"k"$" { print $2 }'; }

# wait_synced VERSION SECONDS: until the snapshot in use has VERSION (bounded)
wait_synced() {
    local want=$1 deadline=$((SECONDS + $2)) v
    while :; do
        v=$(comp_stat version)
        [ -n "$v" ] && [ "$v" -ge "$want" ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && { echo "snapshot still at version '$v' (want $want)" >&2; return 1; }
        sleep 0.02
    done
}

# cpu_ticks PID...: utime + stime of these processes and their children
cpu_ticks() {
    local p all=() t=0 f
    for p in "$@"; do
        [ -n "$p" ] || continue
        all+=("$p")
        while read -r f; do all+=("$f"); done < <(ps -o pid= --ppid "$p" 2>/dev/null)
    done
    for p in "${all[@]}"; do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }
        # fields 14 and 15 of stat, i.e. 12 and 13 after the command name
        t=$((t + $(echo "$f" | awk '{ print $12 + $13 }')))
    done
    echo "$t"
}

# proc_ticks: "pid ticks" (utime + stime) of every Kamailio process in procs.lst
proc_ticks() {
    local p d f
    while IFS=$'\t' read -r p d; do
        f=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        f=${f##*) }
        echo "$p $(echo "$f" | awk '{ print $12 + $13 }')"
    done < procs.lst
}
# proc_share BEFORE AFTER SECONDS: the share of Kamailio's CPU between two
# proc_ticks snapshots of the "ccq async" process, of all "ccq resume"
# processes, of the busiest resume process and of the busiest process of any
# kind; then how busy the async process and the busiest process were, in % of
# one CPU over SECONDS
proc_share() {
    awk -v secs="$3" -v hz="$(getconf CLK_TCK)" 'FNR == 1 { f++ }
        f == 1 { split($0, a, "\t"); dsc[a[1]] = a[2]; next }
        f == 2 { t0[$1] = $2; next }
        f == 3 { d = $2 - t0[$1]; tot += d
                 if (dsc[$1] == "ccq async") as += d
                 if (dsc[$1] ~ /^ccq resume/) { rs += d; if (d > rmax) rmax = d; nr++ }
                 if (d > pmax) { pmax = d; pname = dsc[$1] } }
        END { if (tot <= 0) tot = 1
              printf "%.1f\t%.1f\t%.1f\t%d\t%.1f\t%.1f\t%.1f\t%s\n", 100 * as / tot, 100 * rs / tot,
                  100 * rmax / tot, nr, 100 * pmax / tot, 100 * as / hz / secs,
                  100 * pmax / hz / secs, pname }' procs.lst "$1" "$2"
}

# drain: wait until queued's MySQL traffic has stopped (the reports of the
# last calls written), bounded
drain() {
    local q0 q1 i
    for ((i = 0; i < 60; i++)); do
        q0=$(status_var Questions); sleep 1; q1=$(status_var Questions)
        [ $((q1 - q0)) -le 10 ] && return 0
    done
}

# ---------------------------------------------------------------- the lab
# a fresh lab every run: same starting point, same MySQL state
"$top/tools/ccq-lab" down >/dev/null 2>&1 || true
rm -rf "$CCQ_LAB_DIR"
"$top/tools/ccq-lab" up
eval "$("$top/tools/ccq-lab" env)"
mkdir -p "$work"
cd "$work"

# The lab's Kamailio (cfg/kamailio.cfg, -m 64) makes way for the bench's:
# the shipped script plus a run-time switch, and enough shared memory for two
# 10 M snapshots during a swap. Same binary, module, environment and pid file
# (so 'ccq-lab down' stops it).
"$top/tools/ccq-lab" down kamailio >/dev/null

# gen_cfg: cfg/kamailio.cfg with
#  * a custom global parameter bench.gate (1 = on; kamcmd cfg.set_now_int bench gate 0|1),
#  * the benchmark module, and in route[DEVICE_CALL], just before
#    'if (!ccq_outbound()) {':
#      if ($sel(cfg_get.bench.gate) == 0) { route(BENCH_GATE_OFF); exit; }
#      bm_start_timer("gate");
#    and bm_log_timer("gate") just after that if block (allowed calls: the
#    wall time of ccq_outbound(), in microseconds),
#  * route[BENCH_GATE_OFF]: the shipped route's lines after the gate, word for
#    word, with $ccq(number) and $ccq(caller_id) (which only the gate sets)
#    replaced by "+65" + the dialled digits and a fixed caller ID.
gen_cfg() {
    awk -v cid="+6560009999" -v mps="$modparams" '
        # -e: after the shipped modparams (the last setting wins)
        /^####### Routing logic ########$/ {
            nmp = split(mps, mp, " ")
            for (i = 1; i <= nmp; i++) {
                eq = index(mp[i], "=")
                print "modparam(\"ccq\", \"" substr(mp[i], 1, eq - 1) "\", " substr(mp[i], eq + 1) ")"
            }
            if (nmp) print ""
        }
        /^####### Modules #########$/ {
            print "bench.gate = 1 desc \"1: route[DEVICE_CALL] runs ccq_outbound(); 0: it skips it (tests/bench/outbound.sh)\""
            print ""
        }
        $0 == "loadmodule CCQ_MODULE" {
            seenmod = 1
            print
            print "loadmodule \"benchmark.so\""
            print "modparam(\"benchmark\", \"enable\", 1)"
            print "modparam(\"benchmark\", \"granularity\", 100000000)"
            print "modparam(\"benchmark\", \"register\", \"gate\")"
            next
        }
        $0 == "route[DEVICE_CALL] {" { indc = 1 }
        indc && $0 == "\tif (!ccq_outbound()) {" {
            print "\tif ($sel(cfg_get.bench.gate) == 0) {"
            print "\t\troute(BENCH_GATE_OFF);"
            print "\t\texit;"
            print "\t}"
            print "\tbm_start_timer(\"gate\");"
            gate++; ingate = 1
        }
        indc && ingate == 2 && $0 == "}" { indc = 0; ingate = 3 }
        indc && ingate == 2 { tail[n++] = $0 }
        { print }
        indc && ingate == 1 && $0 == "\t}" { ingate = 2; print "\tbm_log_timer(\"gate\");" }
        END {
            if (gate != 1 || ingate != 3 || n < 5 || !seenmod) {
                print "gen_cfg: route[DEVICE_CALL] of cfg/kamailio.cfg no longer has the expected shape" > "/dev/stderr"
                exit 1
            }
            print ""
            print "# tests/bench/outbound.sh: route[DEVICE_CALL] with the gate switched off"
            print "route[BENCH_GATE_OFF] {"
            print "\t$var(bench_num) = \"+65\" + $rU;"
            print "\t$var(bench_cid) = \"" cid "\";"
            for (i = 0; i < n; i++) {
                l = tail[i]
                gsub(/\$ccq\(number\)/, "$var(bench_num)", l)
                gsub(/\$ccq\(caller_id\)/, "$var(bench_cid)", l)
                print l
            }
            print "}"
        }' "$top/cfg/kamailio.cfg"
}
gen_cfg > "$kam_cfg"

kam_env=(CCQ_MODULE="$top/kam_module/ccq.so" CCQ_SIP_LISTEN_UDP="udp:$CCQ_SIP_ADDR"
    CCQ_SIP_LISTEN_TCP="tcp:$CCQ_SIP_ADDR" CCQ_CTL_SOCK="unix:$CCQ_CTL_SOCK"
    CCQ_QUEUED_ADDR="unix:$CCQ_QUEUED_SOCK" CCQ_RTPENGINE_NG="$CCQ_RTPENGINE_NG"
    CCQ_TRUNK_ADDR="$CCQ_TRUNK_ADDR" CCQ_DB_URL="mysql://ccq:ccq@localhost/ccq"
    MYSQL_UNIX_PORT="$CCQ_MYSQL_SOCK" CCQ_HOLD_MUSIC="$kam_dir/hold.wav"
    CCQ_CALLBACK_SECRET_FILE="$CCQ_CALLBACK_SECRET_FILE"
    CCQ_CALLBACK_PROMPT="$kam_dir/callback-prompt.wav")
env "${kam_env[@]}" /usr/sbin/kamailio -c -f "$kam_cfg" > cfgcheck.log 2>&1 \
    || { cat cfgcheck.log; exit 1; }
echo "== Kamailio with the bench script ($kam_cfg), -m $shm"
env "${kam_env[@]}" setsid /usr/sbin/kamailio -DD -E -f "$kam_cfg" -m "$shm" -M 8 \
    -P "$kam_dir/kamailio.pid" -Y "$kam_dir" </dev/null >>"$kam_dir/kamailio.log" 2>&1 &
kam_pid=$!
for ((i = 0; i < 100; i++)); do kam ccq.status >/dev/null 2>&1 && break; sleep 0.2; done
kam ccq.status >/dev/null 2>&1 || { tail -n 40 "$kam_dir/kamailio.log"; exit 1; }
queued_pid=$(cat "$CCQ_LAB_DIR/queued/queued.pid")
mysqld_pid=$(cat "$CCQ_LAB_DIR/mysql/mysqld.pid")
loader_pid=$(kam core.psx | awk '/PID:/ { p = $2 } /DSC: ccq loader/ { print p; exit }')
# every Kamailio process and what it is: "pid<TAB>description" (core.psx)
kam core.psx | awk '/PID:/ { p = $2 } /DSC:/ { sub(/^[ \t]*DSC: */, ""); print p "\t" $0 }' > procs.lst

echo "== provisioning: organisation Bench (SG), $devices users with one desk phone each"
ccqctl org create Bench SG >/dev/null
ccqctl -o Bench inbox create Outbound --ring-timeout 20 --max-wait 30 >/dev/null
for i in $(seq 1 "$devices"); do
    ext=$((7000 + i))
    ccqctl -o Bench user create "$ext" "Bench $i" --caller-id "+656000$ext" >/dev/null
    ccqctl -o Bench device add "$ext" desk_phone "bench$i" "benchpass$i" --domain 127.0.0.1 >/dev/null
    ccqctl -o Bench inbox member add Outbound "$ext" >/dev/null
done
wait_synced "$(db_version)" 20

# ---------------------------------------------------------------- numbers
# Distinct random Singapore numbers (8 digits, first digit 6, 8 or 9: 30 M
# possible), national form, as a registry file has them: shuf draws without
# repetition (fixed seed: the same numbers every run). The first SIZE1 go in
# first, then up to SIZE2, ...; the last $ndial are never imported: the
# devices dial them (allowed calls that look up the whole registry).
maxn=0
for s in $sizes; do maxn=$s; done
echo "== generating $maxn + $ndial distinct numbers"
t0=$(now)
shuf -i 0-29999999 -n $((maxn + ndial)) \
    --random-source=<(openssl enc -aes-256-ctr -pass pass:ccq-bench -nosalt -pbkdf2 </dev/zero 2>/dev/null) |
    mawk '{ v = $1 + 0; printf "%s%07d\n", substr("689", int(v / 10000000) + 1, 1), v % 10000000 }' > all.txt
prev=0
for s in $sizes; do
    awk -v a="$prev" -v b="$s" 'NR > a && NR <= b' all.txt > "dnc-$s.txt"
    prev=$s
done
tail -n "$ndial" all.txt > dial.txt
rm -f all.txt
{
    echo SEQUENTIAL
    awk -v n="$devices" '{ u = (NR - 1) % n + 1; printf "bench%d;[authentication username=bench%d password=benchpass%d];%s\n", u, u, u, $1 }' dial.txt
} > devices.csv
echo "   $(since "$t0") s"

# ---------------------------------------------------------------- 1. loads
# The lab's MariaDB runs --no-defaults: a 128 MB buffer pool. The 10 M table
# (random keys, about 470 MB) does not fit, and every batch of the import
# then waits on page reads: 9 M numbers took 812 s alone (1233 s with
# Kamailio's loader reloading beside it) against 78 s with 1 GB. A server
# for a registry this size has a pool larger than the table; so has this one.
if [ "$pool" != 0 ]; then
    sql -e "SET GLOBAL innodb_buffer_pool_size = $((pool * 1024 * 1024))"
fi
echo "   innodb_buffer_pool_size: $(( $(sql -e 'SELECT @@innodb_buffer_pool_size') / 1048576 )) MB"
echo
echo "== 1. DNC registry: MySQL -> Kamailio shared memory (ccq loader, compliance_poll 500 ms)"
printf '%-9s %9s %9s %10s %9s %8s %7s %12s %7s %9s\n' SIZE IMPORTED "IMPORT s" "NUMBERS/s" \
    "SETTLE s" BASE_MS BASES "SHM BYTES" "B/NUM" "LOADER MB"
# base images of the DNC registry the loader built (full reads of dnc_number)
loads_log() { grep -c "DNC base image of version .* built in" "$kam_dir/kamailio.log" || true; }
: > loads.tsv
: > changes.tsv
for s in $sizes; do
    l0=$(loads_log)
    t0=$(now)
    ccqctl list import dnc "dnc-$s.txt" --country SG > "import-$s.log"
    t_imp=$(since "$t0")
    t1=$(now)
    wait_synced "$(db_version)" 300
    t_set=$(since "$t1")
    l1=$(loads_log)
    n=$(comp_stat dnc_entries)
    bytes=$(comp_stat bytes)
    lms=$(comp_stat dnc_base_load_ms)
    valid=$(tail -n 1 "import-$s.log" | awk '{ print $4 }')
    hwm=$(awk '/^VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$loader_pid/status" 2>/dev/null || echo "?")
    bpn=$(awk -v b="$bytes" -v n="$n" 'BEGIN { printf "%.2f", b / n }')
    rate=$(awk -v v="$valid" -v t="$t_imp" 'BEGIN { printf "%.0f", v / t }')
    printf '%-9s %9s %9s %10s %9s %8s %7s %12s %7s %9s\n' "$s" "$valid" "$t_imp" "$rate" "$t_set" \
        "$lms" $((l1 - l0)) "$bytes" "$bpn" "$hwm"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$n" "$valid" "$t_imp" "$t_set" "$lms" \
        $((l1 - l0)) "$bytes" "$hwm" >> loads.tsv
    # single changes at this size: one DNC number added or removed (4x), one
    # company blacklist entry added (a directory change), from the ccqctl
    # command to the snapshot holding it in use; the loader's own account of
    # each (ccq.compliance.stats: last_change_kind, last_change_ms = MySQL
    # change time -> snapshot published) and whether it rebuilt the base
    for k in 1 2 3 4 5; do
        if [ $((k % 2)) = 1 ]; then op=add; else op=remove; fi
        fb0=$(comp_stat full_builds)
        t0=$(now)
        if [ "$k" = 5 ]; then
            ccqctl -o Bench list add blacklist "+6530009$((s % 1000))" >/dev/null
        else
            ccqctl list "$op" dnc "+653000000$(((k + 1) / 2))" >/dev/null
        fi
        wait_synced "$(db_version)" 60
        t_chg=$(since "$t0")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$op" "$t_chg" "$(comp_stat load_ms)" \
            "$(comp_stat last_change_kind | tr ' ' _)" "$(comp_stat last_change_ms)" \
            $(($(comp_stat full_builds) - fb0)) >> changes.tsv
    done
    awk -v s="$s" '$1 == s { printf "%s%s s (%s, loader %s ms, %s base builds)", sep, $3, $5, $6, $7;
        sep = ", " } END { print "" }' changes.tsv \
        | sed "s/^/          one-entry changes, command to snapshot in use: /"
done
echo "   (IMPORT s: ccqctl list import, batches of 5000; SETTLE s: from the end of the import"
echo "    until the snapshot with every number is in use; BASE_MS: the loader's build of the"
echo "    DNC base image (read in a thread, sort, copy, check); BASES: base images it built"
echo "    during import + settle; B/NUM: the whole snapshot / DNC entries; LOADER MB: the"
echo "    loader process's peak resident memory)"

# ---------------------------------------------------------------- 2. calls
echo
echo "== 2. outbound calls/s, gate on vs off (registry: $(comp_stat dnc_entries) numbers)"
first=$(head -n 1 dial.txt)
v_allow=$(kam ccq.compliance.check "s:7001@Bench" "s:$first" | awk -F': ' '/verdict/ { print $2 }')
v_block=$(kam ccq.compliance.check "s:7001@Bench" "s:$(head -n 1 "dnc-${sizes%% *}.txt")" |
    awk -F': ' '/rule/ { print $2 }')
echo "   dry run: a dialled number -> $v_allow; a registry number -> $v_block"
[ "$v_allow" = allow ] && [ "$v_block" = dnc ] || { echo "the gate does not answer as expected"; exit 1; }

echo "== trunk (sipp UAS) on 127.0.0.1:$trunk_port"
sipp -sf "$top/tests/bench/agents.xml" -i 127.0.0.1 -p "$trunk_port" -cp $((8960 + off)) -mp $((46960 + off)) \
    -nostdin -max_socket 4096 -timeout $((60 * 60)) > trunk.log 2>&1 &
pids+=($!)
sleep 0.5

# run RATE: one sipp device run; prints "attempted successful failed"
run() {
    local rate=$1 n
    n=$((rate * dur))
    rm -f uac_*.csv
    sipp -sf "$top/tests/bench/device_uac.xml" -inf devices.csv -i 127.0.0.1 -p "$device_port" \
        -cp $((8961 + off)) -mp $((46970 + off)) "$CCQ_SIP_ADDR" -r "$rate" -m "$n" -d "$len" -l $((rate * 4 + 50)) \
        -timeout $((dur + 30)) -nostdin -trace_stat -stf uac.csv -fd 1 -max_socket 4096 \
        > uac.log 2>&1 || true
    python3 - "$(tail -n 1 uac.csv)" "$(head -n 1 uac.csv)" <<'PY'
import sys
d = dict(zip(sys.argv[2].split(';'), sys.argv[1].split(';')))
print(d.get('OutgoingCall(C)', '0'), d.get('SuccessfulCall(C)', '0'), d.get('FailedCall(C)', '0'))
PY
}

hz=$(getconf CLK_TCK)
txns() { sql ccq -e "SELECT COUNT(*) FROM txn WHERE direction = 'outbound'"; }
# gate_timer: "calls sum_us" of the benchmark timer around ccq_outbound()
gate_timer() {
    kam benchmark.timer_name_list gate | awk -F': ' '$1 ~ /^[ \t]*calls$/ { c = $2 }
        $1 ~ /^[ \t]*sum$/ { s = $2 } END { print c + 0, s + 0 }'
}
# The CPU columns are net of what the processes use when idle (timers, the
# loader's poll), measured here over 5 s: ticks per second of each.
k0=$(cpu_ticks "$kam_pid"); q0=$(cpu_ticks "$queued_pid"); m0=$(cpu_ticks "$mysqld_pid"); t0=$(now)
sleep 5
idle_k=$(awk -v a="$k0" -v b="$(cpu_ticks "$kam_pid")" -v t="$(since "$t0")" 'BEGIN { print (b - a) / t }')
idle_q=$(awk -v a="$q0" -v b="$(cpu_ticks "$queued_pid")" -v t="$(since "$t0")" 'BEGIN { print (b - a) / t }')
idle_m=$(awk -v a="$m0" -v b="$(cpu_ticks "$mysqld_pid")" -v t="$(since "$t0")" 'BEGIN { print (b - a) / t }')
echo "   idle CPU (ticks of 1/$hz s per second): Kamailio $idle_k, queued $idle_q, mysqld $idle_m"

# ladder LABEL MODE_ORDER: every rate once, the modes in the given order
ladder() {
    local label=$1 order=$2 r mode att ok fail c0 c1 x0 x1 k0 k1 q0 q1 m0 m1 t0 el g0 g1
    for r in $3; do
        for mode in $order; do
            kam cfg.set_now_int bench gate "$([ "$mode" = on ] && echo 1 || echo 0)" >/dev/null
            c0=$(status_var Com_commit); x0=$(txns); g0=$(gate_timer)
            k0=$(cpu_ticks "$kam_pid"); q0=$(cpu_ticks "$queued_pid"); m0=$(cpu_ticks "$mysqld_pid")
            proc_ticks > ticks0.txt
            t0=$(now)
            read -r att ok fail < <(run "$r")
            proc_ticks > ticks1.txt
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$r" "$mode" "$att" "$ok" \
                "$(proc_share ticks0.txt ticks1.txt "$(since "$t0")")" >> procs.tsv
            # after the drain: queued's and MySQL's work for these calls included
            drain
            k1=$(cpu_ticks "$kam_pid"); q1=$(cpu_ticks "$queued_pid"); m1=$(cpu_ticks "$mysqld_pid")
            el=$(since "$t0")
            c1=$(status_var Com_commit); x1=$(txns); g1=$(gate_timer)
            awk -v l="$label" -v r="$r" -v m="$mode" -v a="$att" -v o="$ok" -v f="$fail" \
                -v d="$dur" -v c="$((c1 - c0))" -v x="$((x1 - x0))" -v hz="$hz" -v el="$el" \
                -v k="$((k1 - k0))" -v q="$((q1 - q0))" -v y="$((m1 - m0))" \
                -v ik="$idle_k" -v iq="$idle_q" -v iy="$idle_m" -v g0="$g0" -v g1="$g1" 'BEGIN {
                n = a > 0 ? a : 1
                k = (k - ik * el) * 1e6 / hz / n; q = (q - iq * el) * 1e6 / hz / n
                y = (y - iy * el) * 1e6 / hz / n
                split(g0, G0); split(g1, G1)
                g = G1[1] > G0[1] ? sprintf("%.1f", (G1[2] - G0[2]) / (G1[1] - G0[1])) : "-"
                printf "%-8s %5s %-4s %9s %9s %7s %8.1f %7.1f%% %8.1f %6s %9.0f %9.0f %9.0f %7s\n",
                    l, r, m, a, o, f, o / d, 100 * o / (r * d), c / n, x, k, q, y, g
                printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l, r, m, a, o, f, c, x,
                    k, q, y, g >> "calls.tsv"
            }'
        done
    done
}

: > calls.tsv
: > procs.tsv
printf '%-8s %5s %-4s %9s %9s %7s %8s %8s %8s %6s %9s %9s %9s %7s\n' RUN RATE GATE ATTEMPTED OK FAILED \
    "OK/s" "OK %" "COMMITS" TXNS "KAM us" "QUEUED us" "MYSQL us" "GATE us"
for ((rep = 1; rep <= reps; rep++)); do
    if [ $((rep % 2)) = 1 ]; then order="off on"; else order="on off"; fi
    ladder "rep$rep" "$order" "$rates"
done
if [ "$relaxed" = 1 ]; then
    sql -e "SET GLOBAL innodb_flush_log_at_trx_commit = 2"
    ladder relaxed "off on" "$xrates"
    sql -e "SET GLOBAL innodb_flush_log_at_trx_commit = 1"
fi
echo "   (COMMITS: MySQL commits per call attempted; TXNS: outbound TXNs queued opened;"
echo "    KAM/QUEUED/MYSQL us: CPU time per call attempted of all Kamailio processes, of queued,"
echo "    of mysqld, from the start of the run until its reports are written, net of idle;"
echo "    GATE us: mean wall time of ccq_outbound() in Kamailio, allowed calls)"

echo
echo "== Kamailio's CPU by process, during the traffic of each run (% of all Kamailio processes)"
printf '%-8s %5s %-4s %9s %9s %8s %9s %10s %8s %9s %10s %12s %s\n' RUN RATE GATE ATTEMPTED OK \
    "ASYNC %" "RESUME %" "1 RESUME %" RESUMERS "BUSIEST %" "ASYNC CPU" "BUSIEST CPU" "BUSIEST PROCESS"
awk -F'\t' '{ printf "%-8s %5s %-4s %9s %9s %8s %9s %10s %8s %9s %9s%% %11s%% %s\n", $1, $2, $3, \
    $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 }' procs.tsv
echo "   (ASYNC: the \"ccq async\" process (queued's connection, the callback controller);"
echo "    RESUME: all \"ccq resume\" processes, 1 RESUME: the busiest of them; RESUMERS: how many"
echo "    there are (module parameter resume_processes); BUSIEST: the busiest Kamailio process;"
echo "    ASYNC CPU, BUSIEST CPU: how busy those two processes were, in % of one CPU, while"
echo "    the device sipp ran)"

echo
echo "== summary: per rate, over the repetitions (the relaxed-flush ladder apart)"
python3 - "$dur" <<'PY'
import sys, statistics as st
dur = float(sys.argv[1])
rows = [l.rstrip('\n').split('\t') for l in open('calls.tsv') if l.strip()]
def summary(sel):
    by = {}
    for l, r, m, a, o, f, c, x, k, q, y, g in rows:
        if sel(l):
            by.setdefault((int(r), m), []).append((int(o) / dur, 100.0 * int(o) / (int(r) * dur),
                                                   float(k), float(g) if g != '-' else None))
    best = {}
    print("%5s  %-26s %-26s %7s %14s %8s" % ("rate", "off: OK/s med (min-max)", "on: OK/s med (min-max)",
                                           "on/off", "KAM us off/on", "GATE us"))
    for r in sorted({k[0] for k in by}):
        cells, med = [], {}
        for m in ("off", "on"):
            v = by.get((r, m), [])
            if not v:
                cells.append("-"); continue
            cps = [e[0] for e in v]
            med[m] = st.median(cps)
            cells.append("%6.1f (%5.1f-%5.1f) x%d" % (med[m], min(cps), max(cps), len(v)))
            if min(e[1] for e in v) >= 99.0:
                best[m] = max(best.get(m, 0), r)
        ratio = "%6.1f%%" % (100 * med["on"] / med["off"]) if med.get("off") and "on" in med else "-"
        ku = "/".join("%.0f" % st.median(e[2] for e in by.get((r, m), [(0, 0, 0, None)]))
                      for m in ("off", "on"))
        gs = [e[3] for e in by.get((r, "on"), []) if e[3] is not None]
        print("%5d  %-26s %-26s %7s %14s %8s" % (r, cells[0], cells[1], ratio, ku,
                                              "%.1f" % st.median(gs) if gs else "-"))
    b_off, b_on = best.get("off", 0), best.get("on", 0)
    print("highest rate with >= 99 %% of the calls completed in every run: off %s, on %s calls/s%s"
          % (b_off or "none", b_on or "none",
             " (on/off %.0f %%)" % (100.0 * b_on / b_off) if b_off and b_on else ""))
print("-- shipped MySQL settings (innodb_flush_log_at_trx_commit=1)")
summary(lambda l: l.startswith("rep"))
if any(r[0] == "relaxed" for r in rows):
    print("-- innodb_flush_log_at_trx_commit=2 (one ladder)")
    summary(lambda l: l == "relaxed")
PY

if [ "$prof" != 0 ] && command -v perf >/dev/null; then
    echo
    echo "== where Kamailio's CPU goes with the gate on: perf record, $prof calls/s for $dur s"
    kam cfg.set_now_int bench gate 1 >/dev/null
    kpids=$(ps -o pid= --ppid "$kam_pid" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
    perf record -q -F 1999 --call-graph dwarf,16384 -o perf.data -p "$kam_pid,$kpids" \
        > perf-record.log 2>&1 &
    perf_pid=$!
    sleep 1
    read -r att ok fail < <(run "$prof")
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    drain
    echo "   $ok of $att calls completed"
    perf report -i perf.data --children --stdio --sort sym -g none --percent-limit 0.1 2>/dev/null \
        > perf-report.txt || true
    # Children %: samples in the function and everything it calls, of all
    # of Kamailio's samples during the run
    awk '/^ *[0-9.]+% +[0-9.]+% / && /w_ccq_outbound|ccq_comp_check|ccq_gate_eval|ccq_numset|ccq_e164_normalize|ccq_async_report|chan_send|auth_check|t_relay|rtpengine_offer|w_ccq_route_call|receive_msg$/ {
        printf "   %7s of the Kamailio CPU samples in %s\n", $1, $NF }' perf-report.txt
    echo "   (perf report: $work/perf-report.txt)"
fi

echo
echo "== decision latency (all ccq decisions of the run)"
kam ccq.stats
echo
echo "== Kamailio's log: loader failures $(grep -c 'ccq loader: load failed' "$kam_dir/kamailio.log" || true)," \
    "leaked snapshots $(grep -c 'retired snapshots in use' "$kam_dir/kamailio.log" || true)," \
    "media not anchored $(grep -c 'media not anchored' "$kam_dir/kamailio.log" || true)," \
    "503 fallbacks $(grep -c 'no decision from queued' "$kam_dir/kamailio.log" || true)"
echo "machine: $(nproc) vCPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
