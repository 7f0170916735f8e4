#!/usr/bin/env bash
# Compares kith builds against each other on the put workloads of vs-etcd.sh, alternating.
#
#   bash bench/ab.sh ROUNDS NAME=BINARY [NAME=BINARY …]
#   e.g. bash bench/ab.sh 3 before=/tmp/kith-before after=target/release/kith
#
# For each round and each build, in turn: a fresh 3-node cluster (`kith serve`, defaults,
# fsync on) on 127.0.0.1, then `kith bench put` for each workload, then the cluster stops.
# One line per build and round: ops/s, p99, and the cluster's CPU milliseconds per 1,000
# puts (all 3 nodes), the figure that moves least with the machine's other load.
#
# Workloads (WORKLOADS, default "a b c"), with 8-byte keys over 100,000 and 256-byte values:
#   a: 1 client          b: 16 clients, 16 connections
#   c: 256 clients over 16 HTTP/2 connections
# Knobs: TOTAL_A (1500), TOTAL_B (8000), TOTAL_C (20000), PORT0 (17500), OUT
# ($TMPDIR/kith-ab: each run's JSON), PREFILL (0; N > 0 first writes keys 0..N-1 with 64
# clients, then restarts the cluster over them, as vs-etcd.sh's rounds 2 and 3 run over
# the keys its first read workload loaded). The bench binary is the first build's.
set -uo pipefail

ROUNDS=${1:?usage: ab.sh ROUNDS NAME=BINARY …}
shift
(($# > 0)) || { echo "usage: ab.sh ROUNDS NAME=BINARY …" >&2; exit 2; }
WORKLOADS=${WORKLOADS:-"a b c"}
PORT0=${PORT0:-17500}
OUT=${OUT:-${TMPDIR:-/tmp}/kith-ab}
command -v jq >/dev/null || { echo "ab.sh needs jq" >&2; exit 2; }
mkdir -p "$OUT"
BENCH=${1#*=}

pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    pids=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

start_cluster() { # binary data
    local peers="1=127.0.0.1:$((PORT0 + 1)),2=127.0.0.1:$((PORT0 + 2)),3=127.0.0.1:$((PORT0 + 3))"
    for i in 1 2 3; do
        RUST_LOG=warn "$1" serve --id "$i" --listen "127.0.0.1:$((PORT0 + i))" \
            --data "$2/n$i" --peers "$peers" >>"$2/kith$i.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 100); do
        curl -fsS -m 1 "http://127.0.0.1:$((PORT0 + 1))/v1/health" 2>/dev/null \
            | grep -q '"leader_id":[0-9]' && break
        sleep 0.1
    done
}

run_one() { # name binary round
    local name=$1 bin=$2 round=$3 data=$OUT/data
    rm -rf "$data"
    mkdir -p "$data"
    local endpoints="http://127.0.0.1:$((PORT0 + 1)),http://127.0.0.1:$((PORT0 + 2)),http://127.0.0.1:$((PORT0 + 3))"
    start_cluster "$bin" "$data"
    if ((${PREFILL:-0} > 0)); then
        "$BENCH" bench put --sequential-keys --total "$PREFILL" --clients 64 --conns 64 \
            --key-size 8 --val-size 256 --key-space "$PREFILL" --endpoints "$endpoints" \
            --quiet >/dev/null 2>&1
        stop_all
        start_cluster "$bin" "$data"
    fi
    local line="round $round  $name"
    for w in $WORKLOADS; do
        local args
        case $w in
            a) args="--clients 1 --conns 1 --total ${TOTAL_A:-1500} --warmup 200" ;;
            b) args="--clients 16 --conns 16 --total ${TOTAL_B:-8000} --warmup 1000" ;;
            c) args="--clients 256 --conns 16 --http 2 --total ${TOTAL_C:-20000} --warmup 2000" ;;
            *) echo "unknown workload $w" >&2; exit 2 ;;
        esac
        local json=$OUT/$name-$w-$round.json
        # shellcheck disable=SC2086
        "$BENCH" bench put $args --key-size 8 --val-size 256 --key-space 100000 \
            --seed "$round" --endpoints "$endpoints" \
            --pids "$(IFS=,; echo "${pids[*]}")" --quiet --json "$json" >/dev/null 2>&1
        line+="  $w: $(jq -r '"\(.throughput_ops_s | floor) ops/s, p99 \(.latency.p99_us / 1000) ms, \(.target_cpu_ms_per_kop | floor) cpu-ms/kop, \(.errors) errors"' "$json" 2>/dev/null || echo failed)"
    done
    stop_all
    echo "$line  (load $(cut -d' ' -f1 /proc/loadavg))"
}

for round in $(seq "$ROUNDS"); do
    for build in "$@"; do
        run_one "${build%%=*}" "${build#*=}" "$round"
    done
done
