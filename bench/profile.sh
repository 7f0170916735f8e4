#!/usr/bin/env bash
# Where a kith node spends its time under the put workloads (b) and (c) of vs-etcd.sh.
#
#   bash bench/profile.sh        # ≈ 3 minutes; results under $OUT (default /tmp/kith-profile)
#
# Starts a fresh 3-node kith cluster (release build) on 127.0.0.1 and, for each workload:
#   - `perf record` (cpu-clock: VMs often have no hardware counters) on the leader, then on
#     a follower, while the workload runs; `perf report` tables of where CPU goes;
#   - `strace -f -c -w` on the leader while exactly $STRACE_OPS puts run, which counts the
#     syscalls per put (fsyncs above all) and the wall time spent in them.
# Debian's linux-perf and strace are installed if missing. Everything it starts it stops.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-${TMPDIR:-/tmp}/kith-profile}
PORT0=${PORT0:-17200}
PERF_S=${PERF_S:-10}
STRACE_OPS=${STRACE_OPS:-2000}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
need=()
command -v perf >/dev/null || need+=(linux-perf)
command -v strace >/dev/null || need+=(strace)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
fi
# Same features as vs-etcd.sh, so the two scripts share one release build.
cargo build --release --locked -q -p kith --features kith/etcd
KITH=$PWD/target/release/kith
rm -rf "$OUT"; mkdir -p "$OUT"

declare -A PID=()
stop_all() {
    for i in "${!PID[@]}"; do kill -TERM "${PID[$i]}" 2>/dev/null || true; done
    for i in "${!PID[@]}"; do wait "${PID[$i]}" 2>/dev/null || true; done
}
trap stop_all EXIT
trap 'exit 130' INT TERM

peers="1=127.0.0.1:$((PORT0 + 1)),2=127.0.0.1:$((PORT0 + 2)),3=127.0.0.1:$((PORT0 + 3))"
for i in 1 2 3; do
    RUST_LOG=warn "$KITH" serve --id "$i" --listen "127.0.0.1:$((PORT0 + i))" \
        --data "$OUT/data/n$i" --peers "$peers" >"$OUT/kith$i.log" 2>&1 &
    PID[$i]=$!
done
endpoints="http://127.0.0.1:$((PORT0 + 1)),http://127.0.0.1:$((PORT0 + 2)),http://127.0.0.1:$((PORT0 + 3))"
leader=
for _ in $(seq 300); do
    for i in 1 2 3; do
        curl -fsS -m 1 "http://127.0.0.1:$((PORT0 + i))/v1/health" 2>/dev/null \
            | grep -q '"role":"leader"' && leader=$i
    done
    [[ -n $leader ]] && break
    sleep 0.1
done
[[ -n $leader ]] || { log "no leader"; exit 1; }
follower=$((leader % 3 + 1))
log "leader is node $leader (pid ${PID[$leader]}), profiling follower node $follower too"

declare -A WL=(
    [b]="put --clients 16 --conns 16"
    [c]="put --clients 256 --conns 16"
)
for w in b c; do
    for role in leader follower; do
        node=${!role}
        log "workload ($w): perf on the $role for ${PERF_S}s"
        # shellcheck disable=SC2086
        "$KITH" bench ${WL[$w]} --total 1000000000 --timeout-ms 10000 --endpoints "$endpoints" \
            --quiet --json "$OUT/perf-$w-$role.json" >"$OUT/bench-perf-$w-$role.txt" 2>&1 &
        bpid=$!
        sleep 2
        perf record -q -e cpu-clock -F 499 --call-graph dwarf,8192 -p "${PID[$node]}" \
            -o "$OUT/perf-$w-$role.data" -- sleep "$PERF_S" 2>/dev/null
        # (TERM: a background job of a script ignores SIGINT)
        kill -TERM "$bpid" 2>/dev/null || true
        wait "$bpid" 2>/dev/null || true
        perf report -i "$OUT/perf-$w-$role.data" --no-children --sort dso,symbol --stdio -g none \
            --percent-limit 0.7 2>/dev/null | grep -v '^$' | grep -v '^#' | grep '%' \
            | head -60 >"$OUT/perf-$w-$role-self.txt" || true
        perf report -i "$OUT/perf-$w-$role.data" --children --sort symbol --stdio -g none \
            --percent-limit 4 2>/dev/null | grep -v '^$' | grep -v '^#' | grep '%' \
            | head -80 >"$OUT/perf-$w-$role-children.txt" || true
    done
    log "workload ($w): strace on the leader for $STRACE_OPS puts"
    strace -f -c -w -o "$OUT/strace-$w.txt" -p "${PID[$leader]}" &
    spid=$!
    sleep 1
    # shellcheck disable=SC2086
    "$KITH" bench ${WL[$w]} --total "$STRACE_OPS" --endpoints "$endpoints" --quiet \
        --json "$OUT/strace-$w.json" >"$OUT/bench-strace-$w.txt" 2>&1
    kill -TERM "$spid"
    wait "$spid" 2>/dev/null || true
done

{
    for w in b c; do
        echo "== workload ($w): syscalls on the leader per put ($STRACE_OPS puts)"
        awk -v n="$STRACE_OPS" '$NF ~ /^(fsync|fdatasync|sync_file_range|pwrite64|write|writev|sendto|recvfrom|read|futex|epoll_wait)$/ {
            printf "  %-16s %8.2f calls/put  %6.1f%% of syscall wall time\n", $NF, $4 / n, $1 }' \
            "$OUT/strace-$w.txt"
        for role in leader follower; do
            echo "== workload ($w): CPU self time on the $role (top entries)"
            head -25 "$OUT/perf-$w-$role-self.txt"
        done
        echo "== workload ($w): inclusive CPU on the leader (entries >= 4%)"
        head -40 "$OUT/perf-$w-leader-children.txt"
    done
} | tee "$OUT/summary.txt"
