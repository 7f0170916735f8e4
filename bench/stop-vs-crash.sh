#!/usr/bin/env bash
# How long writes pause when the leader goes away: stopped (SIGTERM, which hands
# leadership over first) against crashed (SIGKILL, which leaves the others to wait out an
# election timeout). A 3-node kith on 127.0.0.1 under 100 writes/s; each trial stops or
# kills the leader 3 s in and reads the longest gap between successful writes from
# `kith bench`. The killed or stopped member is restarted before the next trial.
#
#   TRIALS=5 bash bench/stop-vs-crash.sh          # builds kith --release first
#   KITH_BIN=target/debug/kith bash bench/stop-vs-crash.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-3}
PORT0=${PORT0:-17400}
OUT=${OUT:-${TMPDIR:-/tmp}/kith-stop-vs-crash}
if [[ -n ${KITH_BIN:-} ]]; then KITH=$KITH_BIN; else
    cargo build --release --locked -q -p kith
    KITH=$PWD/target/release/kith
fi
rm -rf "$OUT"; mkdir -p "$OUT"
peers="1=127.0.0.1:$((PORT0 + 1)),2=127.0.0.1:$((PORT0 + 2)),3=127.0.0.1:$((PORT0 + 3))"
endpoints="http://127.0.0.1:$((PORT0 + 1)),http://127.0.0.1:$((PORT0 + 2)),http://127.0.0.1:$((PORT0 + 3))"
declare -A PID=()
start() { RUST_LOG=warn "$KITH" serve --id "$1" --listen "127.0.0.1:$((PORT0 + $1))" \
    --data "$OUT/n$1" --peers "$peers" >>"$OUT/n$1.log" 2>&1 & PID[$1]=$!; }
stop_all() { for p in "${PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap stop_all EXIT
leader() { # → the member that says it leads (waits up to 10 s)
    for _ in $(seq 100); do
        for i in 1 2 3; do
            curl -fsS -m 1 "http://127.0.0.1:$((PORT0 + i))/v1/health" 2>/dev/null \
                | grep -q '"role":"leader"' && { echo "$i"; return; }
        done
        sleep 0.1
    done
    echo "no leader" >&2; exit 1
}
for i in 1 2 3; do start "$i"; done
leader >/dev/null
for signal in TERM KILL; do
    for t in $(seq "$TRIALS"); do
        "$KITH" bench put --endpoints "$endpoints" --clients 64 --conns 64 --rate 100 \
            --total 800 --timeout-ms 5000 --route any --quiet --json "$OUT/$signal-$t.json" \
            >"$OUT/$signal-$t.txt" 2>&1 &
        bench=$!
        sleep 3
        l=$(leader)
        kill "-$signal" "${PID[$l]}"
        wait "${PID[$l]}" 2>/dev/null || true
        wait "$bench"
        start "$l"
        sleep 3 # the restarted member catches up before the next trial
        printf '%s trial %s: leader %s, longest pause %.0f ms\n' "$signal" "$t" "$l" \
            "$(jq .success_gap_ms_max "$OUT/$signal-$t.json")"
    done
done
