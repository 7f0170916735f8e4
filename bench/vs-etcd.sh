#!/usr/bin/env bash
# kith against etcd, side by side on this machine, with `kith bench` driving both.
#
#   bash bench/vs-etcd.sh                 # the full comparison (≈ 20 minutes on 2 cores)
#   ROUNDS=1 SCALE=0.1 bash bench/vs-etcd.sh   # a quick look (figures not comparable)
#   WORKLOADS="b c" FAILOVER_TRIALS=0 bash bench/vs-etcd.sh   # only some workloads
#   KITH_HTTP=2 bash bench/vs-etcd.sh     # kith's clients over HTTP/2 (h2c), like etcd's gRPC
#   KITH_BIN=/tmp/kith-old bash bench/vs-etcd.sh   # another kith build (needs --features etcd)
#   TLS=1 bash bench/vs-etcd.sh           # both systems with TLS throughout (see below)
#   TLS=both bash bench/vs-etcd.sh        # plain, then TLS: what TLS costs each system
#   TLS=1 AUTH=0 bash bench/vs-etcd.sh    # TLS without etcd's auth (kith: its admin token)
#
# What it does, in order:
#   1. installs what is missing from Debian: etcd-server, etcd-client (etcdctl),
#      protobuf-compiler (to build `kith bench --target etcd`), jq; builds kith --release;
#   2. ROUNDS times, alternating which system goes first: starts a fresh 3-node cluster of
#      one system on 127.0.0.1 (data under $DATA, one disk), records idle RSS, runs the
#      workloads below, stops it; then the same for the other system. Only one system runs
#      at a time, so they never compete for the cores;
#   3. FAILOVER_TRIALS times per system: SIGKILLs the leader under a steady write load and
#      measures the longest time without a successful write; restarts the killed member;
#   4. prints one table of medians (and writes every run's JSON under $OUT).
# With TLS=both, steps 2–4 run twice, plain then with TLS (under $OUT/plain and $OUT/tls),
# and a last table sets each system's TLS figures against its plain ones.
#
# Where writes go: each system as its own client sends them. kith's client (and `kith bench
# --route leader`) writes to the leader that every write's answer names (`kith-leader`);
# etcd's client sends each request to the member its connection reached, which forwards
# writes to its leader (`--route any`). Each etcd round also runs the put workloads with
# etcd's writes pinned to its leader (`--route leader`), and the report prints that table
# too, so the difference routing makes is on record for both. The failover trials use
# `--route any` for both: they measure the cluster's recovery, not a client's rediscovery.
#
# Durability: both systems run with their defaults. kith fsyncs each Raft log append
# (fdatasync of its log segment) before a node acknowledges it; etcd fsyncs its WAL before
# acknowledging (no --unsafe-no-fsync). A write is acknowledged once 2 of 3 nodes have it
# on disk, in both.
#
# TLS (TLS=1, or the second pass of TLS=both): `kith init` creates one CA and a certificate
# per node (ECDSA P-256, HOST 127.0.0.1). kith node i serves with `--tls DIR/node-i` (peers
# over mutual TLS); etcd member i serves with the same node-i certificate, clients and peers
# over https with certificates required (`--client-cert-auth`, `--peer-client-cert-auth`).
# `kith bench` trusts the CA and presents node 1's certificate to both systems, over TLS 1.3
# with session resumption; kith's HTTP/2 is negotiated by ALPN, etcd's gRPC is HTTP/2 too.
#
# Authentication (AUTH=1, the default, in TLS passes): both systems check every request
# against an identity limited to the bench's keys (all start with "0"). kith: a `write`
# token with `--prefix kv:0`, created with the admin token after each fresh start (kith
# with TLS always asks for a token). etcd: `auth enable` after a `root` user, and a user
# whose role `bench` may read and write the prefix "0". How the bench proves it is that
# user (ETCD_AUTH): `cert` (the default), etcd's certificate-based auth, where the user is
# the common name of the client certificate the bench presents anyway ("kith node 1");
# `password`, `kith bench --user bench:…`, where each connection authenticates once (a
# bcrypt check on the server) and presents etcd's simple token on every request: 256
# connections doing that at once cost etcd seconds of CPU, at the start of every run and
# after a failover. AUTH=0 leaves etcd's auth off (kith then presents its admin token).
#
# Everything it starts it stops (trap on EXIT), including after Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-1}                 # multiplies every --total (and the prefill)
FAILOVER_TRIALS=${FAILOVER_TRIALS:-5}
WORKLOADS=${WORKLOADS:-a b c d e} # which of the workloads below to run
KITH_HTTP=${KITH_HTTP:-1}         # kith bench --http for kith's (c), (d) and (e): 1 or 2
KEY_SPACE=${KEY_SPACE:-100000}
OUT=${OUT:-${TMPDIR:-/tmp}/kith-vs-etcd}
DATA=${DATA:-$OUT/data}
KITH_PORT0=${KITH_PORT0:-17000}   # kith nodes listen on KITH_PORT0 + 1..3
ETCD_PORT0=${ETCD_PORT0:-17100}   # etcd member i: client ETCD_PORT0 + 10i, peer + 10i + 1
TLS=${TLS:-0}                     # 0: plain; 1: TLS; both: plain, then TLS
AUTH=${AUTH:-1}                   # with TLS: 1, both systems authenticate clients (above)
ETCD_AUTH=${ETCD_AUTH:-cert}      # how the bench authenticates to etcd: cert or password
case $ETCD_AUTH in cert | password) ;; *) echo "ETCD_AUTH must be cert or password" >&2; exit 2 ;; esac
case $TLS in
    0) PASSES=(0) ;;
    1) PASSES=(1) ;;
    both) PASSES=(0 1) ;;
    *) echo "TLS must be 0, 1 or both" >&2; exit 2 ;;
esac
CERTS=$OUT/certs                  # kith init's CA and node certificates (TLS passes)
SECURE=0                          # whether the current pass runs with TLS
ETCD_AUTH_ON=0                    # whether the running etcd has auth enabled
BENCH_TOKEN=                      # kith's bench token (AUTH=1), made after each fresh start
ROOT_PW=root-$RANDOM$RANDOM BENCH_PW=bench-$RANDOM$RANDOM   # etcd's users (AUTH=1)
RUN=$OUT                          # where the current pass writes its runs and summary

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s); print (v < 100 ? 100 : v) }'; }

# ---- 1. tools ---------------------------------------------------------------------------
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v jq >/dev/null || need+=(jq)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${need[@]}" >/dev/null
fi
if [[ -n ${KITH_BIN:-} ]]; then # a kith binary built elsewhere (e.g. an older commit)
    KITH=$KITH_BIN
else
    log "building kith (release, with the etcd target)"
    cargo build --release --locked -q -p kith --features kith/etcd
    KITH=$PWD/target/release/kith
fi
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.txt "$OUT"/*-idle-rss-r* "$OUT"/*.log
rm -rf "${OUT:?}/plain" "${OUT:?}/tls" "${CERTS:?}"
if [[ $TLS != 0 ]]; then
    nodes="1=127.0.0.1:$((KITH_PORT0 + 1)),2=127.0.0.1:$((KITH_PORT0 + 2)),3=127.0.0.1:$((KITH_PORT0 + 3))"
    # Not the user's profile (older builds have no --no-profile, and write none).
    "$KITH" init --no-profile --out "$CERTS" --nodes "$nodes" >"$OUT/init.log" 2>&1 \
        || "$KITH" init --out "$CERTS" --nodes "$nodes" >"$OUT/init.log"
fi

# ---- cluster control --------------------------------------------------------------------
declare -A PID=()   # "kith1" / "etcd2" → pid of a running member
stop_member() {
    local name=$1 sig=${2:-TERM} pid=${PID[$1]:-}
    [[ -n $pid ]] || return 0
    { # (bash reports a job killed by a signal on stderr; that is expected here)
        kill "-$sig" "$pid" || true
        for _ in $(seq 100); do kill -0 "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" || true
        wait "$pid" || true
    } 2>/dev/null
    unset "PID[$name]"
}
stop_all() { for name in "${!PID[@]}"; do stop_member "$name"; done; }
trap stop_all EXIT
trap 'exit 130' INT TERM

scheme() { if ((SECURE)); then echo https; else echo http; fi; }
kith_url() { echo "$(scheme)://127.0.0.1:$((KITH_PORT0 + $1))"; }
etcd_url() { echo "$(scheme)://127.0.0.1:$((ETCD_PORT0 + 10 * $1))"; }
etcd_peer() { echo "$(scheme)://127.0.0.1:$((ETCD_PORT0 + 10 * $1 + 1))"; }
# The client side of TLS for each tool: trust the CA, present node 1's certificate.
tls_curl() { if ((SECURE)); then curl --cacert "$CERTS/ca.crt" "$@"; else curl "$@"; fi; }
tls_etcdctl() { # (as root once auth is on)
    local user=()
    if ((ETCD_AUTH_ON)); then user=(--user "root:$ROOT_PW"); fi
    if ((SECURE)); then
        etcdctl --cacert "$CERTS/ca.crt" --cert "$CERTS/node-1/node.crt" --key "$CERTS/node-1/node.key" "${user[@]}" "$@"
    else
        etcdctl "$@"
    fi
}
bench_tls() { # system → kith bench's TLS and authentication arguments for the current pass
    ((SECURE)) || return 0
    echo "--ca $CERTS/ca.crt --cert $CERTS/node-1/node.crt --key $CERTS/node-1/node.key"
    if [[ $1 == kith ]]; then
        # A cluster with TLS asks every request for a token: the bench's, or the admin's.
        echo "--token ${BENCH_TOKEN:-$(cat "$CERTS/admin.token")}"
    elif ((ETCD_AUTH_ON)) && [[ $ETCD_AUTH == password ]]; then
        echo "--user bench:$BENCH_PW"
    fi
}
setup_auth() { # system → after a fresh start: the bench's limited identity (AUTH=1)
    ((SECURE && AUTH)) || return 0
    if [[ $1 == kith ]]; then
        BENCH_TOKEN=$("$KITH" token create --role write --prefix kv:0 --name bench \
            --endpoints "$(endpoints kith)" --ca "$CERTS/ca.crt" --token "$(cat "$CERTS/admin.token")")
    else
        # The user: named by the password, or the common name kith init gives node 1's
        # certificate, which the bench presents.
        local e=(--endpoints "$(etcd_url 1)") user=bench
        if [[ $ETCD_AUTH == cert ]]; then user="kith node 1"; fi
        {
            tls_etcdctl "${e[@]}" user add root --new-user-password "$ROOT_PW" --interactive=false
            tls_etcdctl "${e[@]}" role add bench
            tls_etcdctl "${e[@]}" role grant-permission bench readwrite 0 --prefix=true
            tls_etcdctl "${e[@]}" user add "$user" --new-user-password "$BENCH_PW" --interactive=false
            tls_etcdctl "${e[@]}" user grant-role "$user" bench
            tls_etcdctl "${e[@]}" auth enable
        } >>"$RUN/etcd-auth.log" 2>&1 || { log "etcd auth setup failed; see $RUN/etcd-auth.log"; exit 1; }
        ETCD_AUTH_ON=1
    fi
}
endpoints() { # system → comma-separated client URLs
    local f=${1}_url; echo "$($f 1),$($f 2),$($f 3)"
}

start_kith_member() {
    local i=$1 peers="1=127.0.0.1:$((KITH_PORT0 + 1)),2=127.0.0.1:$((KITH_PORT0 + 2)),3=127.0.0.1:$((KITH_PORT0 + 3))"
    local tls=()
    if ((SECURE)); then tls=(--tls "$CERTS/node-$i"); fi
    RUST_LOG=warn "$KITH" serve --id "$i" --listen "127.0.0.1:$((KITH_PORT0 + i))" \
        --data "$DATA/kith/n$i" --peers "$peers" "${tls[@]}" >>"$RUN/kith$i.log" 2>&1 &
    PID[kith$i]=$!
}
start_etcd_member() {
    local i=$1
    local cluster="e1=$(etcd_peer 1),e2=$(etcd_peer 2),e3=$(etcd_peer 3)"
    local tls=() node=$CERTS/node-$i
    if ((SECURE)); then
        tls=(--cert-file "$node/node.crt" --key-file "$node/node.key"
            --trusted-ca-file "$CERTS/ca.crt" --client-cert-auth
            --peer-cert-file "$node/node.crt" --peer-key-file "$node/node.key"
            --peer-trusted-ca-file "$CERTS/ca.crt" --peer-client-cert-auth)
    fi
    etcd --name "e$i" --data-dir "$DATA/etcd/e$i" \
        --listen-client-urls "$(etcd_url "$i")" --advertise-client-urls "$(etcd_url "$i")" \
        --listen-peer-urls "$(etcd_peer "$i")" --initial-advertise-peer-urls "$(etcd_peer "$i")" \
        --initial-cluster "$cluster" --initial-cluster-token kith-bench "${tls[@]}" \
        --initial-cluster-state new --logger zap --log-level error >>"$RUN/etcd$i.log" 2>&1 &
    PID[etcd$i]=$!
}
healthy() { # system member → 0 when it serves and knows a leader
    if [[ $1 == kith ]]; then
        tls_curl -fsS -m 1 "$(kith_url "$2")/v1/health" 2>/dev/null | grep -q '"leader_id":[0-9]'
    else
        tls_etcdctl --endpoints "$(etcd_url "$2")" --command-timeout=1s endpoint health >/dev/null 2>&1
    fi
}
wait_healthy() { # system members…
    local sys=$1; shift
    for i in "$@"; do
        for _ in $(seq 300); do healthy "$sys" "$i" && continue 2; sleep 0.1; done
        log "$sys member $i did not become healthy; see $RUN/$sys$i.log"; exit 1
    done
}
start_cluster() { # system [fresh]
    local sys=$1
    if [[ ${2:-} == fresh ]]; then
        rm -rf "${DATA:?}/$sys"; mkdir -p "$DATA/$sys"
        if [[ $sys == kith ]]; then BENCH_TOKEN=; else ETCD_AUTH_ON=0; fi
    fi
    for i in 1 2 3; do "start_${sys}_member" "$i"; done
    wait_healthy "$sys" 1 2 3
    if [[ ${2:-} == fresh ]]; then setup_auth "$sys"; fi
}
stop_cluster() { for i in 1 2 3; do stop_member "$1$i"; done; }
pids_of() { echo "${PID[${1}1]},${PID[${1}2]},${PID[${1}3]}"; }
leader_of() { # system → member number of the current leader (empty if none within 10 s)
    local i _
    for _ in $(seq 20); do
    for i in 1 2 3; do
        [[ -n ${PID[$1$i]:-} ]] || continue
        if [[ $1 == kith ]]; then
            tls_curl -fsS -m 1 "$(kith_url "$i")/v1/health" 2>/dev/null | grep -q '"role":"leader"' \
                && { echo "$i"; return; }
        else
            tls_etcdctl --endpoints "$(etcd_url "$i")" --command-timeout=1s endpoint status \
                -w simple 2>/dev/null | awk -F', ' '$5 == "true" { found = 1 } END { exit !found }' \
                && { echo "$i"; return; }
        fi
    done
    sleep 0.5
    done
    return 0
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

bench() { # system json-name args… → runs kith bench against the running cluster
    local sys=$1 name=$2; shift 2
    # shellcheck disable=SC2046
    "$KITH" bench "$@" --target "$sys" --endpoints "$(endpoints "$sys")" $(bench_tls "$sys") \
        --pids "$(pids_of "$sys")" --quiet --json "$RUN/$name.json" >"$RUN/$name.txt" 2>&1 \
        || { log "bench $name failed:"; cat "$RUN/$name.txt" >&2; exit 1; }
}

# ---- 2. workloads -----------------------------------------------------------------------
COMMON=(--key-size 8 --val-size 256 --key-space "$KEY_SPACE")
declare -A WL=(
    [a]="put --clients 1 --conns 1 --total $(scaled 5000) --warmup 200"
    [b]="put --clients 16 --conns 16 --total $(scaled 15000) --warmup 1000"
    [c]="put --clients 256 --conns 16 --total $(scaled 30000) --warmup 2000"
    [d]="get --consistency linearizable --clients 256 --conns 16 --total $(scaled 60000) --warmup 5000"
    [e]="get --consistency stale --clients 256 --conns 16 --total $(scaled 300000) --warmup 10000"
)
declare -A TITLE=(
    [a]="(a) put, 1 client"
    [b]="(b) put, 16 clients"
    [c]="(c) put, 256 clients / 16 conns"
    [d]="(d) linearizable get, 256 clients"
    [e]="(e) stale get, 256 clients"
)

wanted() { [[ " $WORKLOADS " == *" $1 "* ]]; }
# (c)–(e) multiplex 256 clients over 16 connections; with KITH_HTTP=2 kith's do it over
# HTTP/2 as etcd's do over gRPC. (a) and (b) have one client per connection either way.
http_for() { # system workload → extra bench arguments
    if [[ $1 == kith && $KITH_HTTP == 2 && $2 == [cde] ]]; then echo "--http 2"; fi
}
route_for() { # system → where its writes go: as its own client sends them
    if [[ $1 == kith ]]; then echo "--route leader"; else echo "--route any"; fi
}

run_round() { # system round
    local sys=$1 r=$2 w
    log "round $r: $sys$( ((SECURE)) && echo ' (TLS)')"
    # Round 1 starts from empty data directories; later rounds restart the same members
    # over their data, so the (slow, unmeasured) prefill of the key space happens once.
    if ((r == 1)); then start_cluster "$sys" fresh; else start_cluster "$sys"; fi
    sleep 2
    for i in 1 2 3; do rss_kb "${PID[$sys$i]}"; done | sort -n | tail -1 >"$RUN/$sys-idle-rss-r$r"
    for w in a b c; do
        wanted "$w" || continue
        # shellcheck disable=SC2086
        bench "$sys" "$sys-$w-r$r" ${WL[$w]} $(http_for "$sys" "$w") $(route_for "$sys") \
            "${COMMON[@]}" --seed "$r"
        if [[ $sys == etcd ]]; then
            # shellcheck disable=SC2086
            bench etcd "etcd-$w-leader-r$r" ${WL[$w]} --route leader "${COMMON[@]}" --seed "$r"
        fi
    done
    # Reads need the key space filled (unmeasured, once per system).
    if ((r == 1)) && { wanted d || wanted e; }; then
        bench "$sys" "$sys-prefill" put --sequential-keys --total "$KEY_SPACE" \
            --clients 64 --conns 64 "${COMMON[@]}"
    fi
    for w in d e; do
        wanted "$w" || continue
        # shellcheck disable=SC2086
        bench "$sys" "$sys-$w-r$r" ${WL[$w]} $(http_for "$sys" "$w") "${COMMON[@]}" --seed "$r"
    done
    stop_cluster "$sys"
}

# ---- 3. failover ------------------------------------------------------------------------
# A steady 100 writes/s (below both systems' capacity) from 256 clients on their own
# connections, so requests that hang on the dead leader or in the election never starve
# new ones; 3 s in, SIGKILL the leader. The longest stretch without a successful write is
# the failover time (detection + election + first commit).
failover() { # system
    local sys=$1 t leader bpid
    log "failover: $sys$( ((SECURE)) && echo ' (TLS)')"
    start_cluster "$sys" fresh
    for t in $(seq "$FAILOVER_TRIALS"); do
        # shellcheck disable=SC2046
        "$KITH" bench put --target "$sys" --endpoints "$(endpoints "$sys")" $(bench_tls "$sys") --clients 256 \
            --conns 256 --rate 100 --total 1000 --timeout-ms 5000 --route any "${COMMON[@]}" --seed "$t" \
            --quiet --json "$RUN/$sys-failover-t$t.json" >"$RUN/$sys-failover-t$t.txt" 2>&1 &
        bpid=$!
        sleep 3
        leader=$(leader_of "$sys")
        [[ -n $leader ]] || { log "$sys has no leader before trial $t"; exit 1; }
        log "  trial $t: SIGKILL $sys member $leader"
        stop_member "$sys$leader" KILL
        wait "$bpid" || { log "failover bench failed:"; cat "$RUN/$sys-failover-t$t.txt" >&2; exit 1; }
        "start_${sys}_member" "$leader"
        wait_healthy "$sys" 1 2 3
        sleep 2 # let the restarted member catch up before the next trial
    done
    stop_cluster "$sys"
}

# ---- run --------------------------------------------------------------------------------
started=$(date +%s)
# How long one synchronous 4 KiB write takes on the disk holding the data: the floor under
# any fsync-per-write design.
mkdir -p "$DATA"
DISK=$(dd if=/dev/zero of="$DATA/dsync-probe" bs=4k count=500 oflag=dsync 2>&1 \
    | awk '/copied/ { printf "%.0f", $(NF-3) / 500 * 1e6 }')
rm -f "$DATA/dsync-probe"
log "disk: ${DISK} µs per synchronous 4 KiB write"
measure() { # → the current pass: rounds, then failover trials
    local r sys order
    for r in $(seq "$ROUNDS"); do
        if ((r % 2)); then order=(kith etcd); else order=(etcd kith); fi
        for sys in "${order[@]}"; do run_round "$sys" "$r"; done
    done
    if ((FAILOVER_TRIALS > 0)); then for sys in kith etcd; do failover "$sys"; done; fi
}

# ---- 4. report --------------------------------------------------------------------------
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { # jq-filter files… → one value per file
    local f=$1; shift
    for file in "$@"; do jq -r "$f" "$file"; done
}
med() { field "$1" "${@:2}" | median; }

separator() { # column widths… → a table's separator line
    local w line="|"
    for w in "$@"; do line+="$(printf -- '-%.0s' $(seq $((w + 2))))|"; done
    echo "$line"
}
tls_line() {
    if ((SECURE)); then
        echo "TLS: on, for clients and between nodes (one kith init CA; kith --tls; etcd --client-cert-auth, --peer-client-cert-auth; the bench presents a certificate of that CA to both)"
        if ((AUTH)); then
            echo "auth: on for both (kith: a write token for kv:0; etcd: auth enabled, a user with readwrite on prefix 0, proven by $( [[ $ETCD_AUTH == cert ]] && echo "the client certificate's common name" || echo "password and simple tokens"))"
        else
            echo "auth: kith presents its admin token (it always asks for one with TLS); etcd's auth is off"
        fi
    else
        echo "TLS: off (plain TCP for clients and between nodes)"
    fi
}

report() { # → the current pass's tables, from $RUN
    echo
    echo "kith vs etcd $(etcd --version | awk '/etcd Version/ { print $3 }'), 3 nodes each on 127.0.0.1, TLS $( ((SECURE)) && echo on || echo off); medians of $ROUNDS alternating rounds"
    tls_line
    echo "durability: both fsync every acknowledged write on a quorum (kith: fdatasync of the log segment per append group; etcd: WAL fsync, its default)"
    echo "8-byte keys, ${KEY_SPACE} key space, 256-byte values; kith over HTTP/$KITH_HTTP for (c)–(e) (HTTP/1.1 for (a), (b)), etcd over gRPC; totals scaled by $SCALE"
    echo "writes: kith's to the leader its nodes name (--route leader, as kith's client does); etcd's to the member each connection reached (--route any, as etcd's client does)"
    echo "disk under \$DATA: ${DISK} µs per synchronous (O_DSYNC) 4 KiB write; $(nproc) cores, shared with whatever else runs"
    echo
    printf '| %-34s | %10s | %10s | %6s | %10s | %10s |\n' workload "kith ops/s" "etcd ops/s" ratio "kith p99" "etcd p99"
    printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "$(printf -- '-%.0s' {1..12})" \
        "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..12})"
    for w in $WORKLOADS; do
        k=$(med .throughput_ops_s "$RUN"/kith-"$w"-r*.json)
        e=$(med .throughput_ops_s "$RUN"/etcd-"$w"-r*.json)
        kp=$(med .latency.p99_us "$RUN"/kith-"$w"-r*.json)
        ep=$(med .latency.p99_us "$RUN"/etcd-"$w"-r*.json)
        awk -v t="${TITLE[$w]}" -v k="$k" -v e="$e" -v kp="$kp" -v ep="$ep" 'BEGIN {
            printf "| %-34s | %10.0f | %10.0f | %5.2fx | %7.2f ms | %7.2f ms |\n", t, k, e, k / e, kp / 1000, ep / 1000 }'
    done
    echo
    echo "the same put workloads with etcd's writes pinned to its leader (--route leader; etcd's own client does not do this):"
    printf '| %-34s | %10s | %10s | %6s | %10s | %10s |\n' workload "kith ops/s" "etcd ops/s" ratio "kith p99" "etcd p99"
    printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "$(printf -- '-%.0s' {1..12})" \
        "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..8})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..12})"
    for w in $WORKLOADS; do
        [[ $w == [abc] ]] || continue
        k=$(med .throughput_ops_s "$RUN"/kith-"$w"-r*.json)
        e=$(med .throughput_ops_s "$RUN"/etcd-"$w"-leader-r*.json)
        kp=$(med .latency.p99_us "$RUN"/kith-"$w"-r*.json)
        ep=$(med .latency.p99_us "$RUN"/etcd-"$w"-leader-r*.json)
        awk -v t="${TITLE[$w]}" -v k="$k" -v e="$e" -v kp="$kp" -v ep="$ep" 'BEGIN {
            printf "| %-34s | %10.0f | %10.0f | %5.2fx | %7.2f ms | %7.2f ms |\n", t, k, e, k / e, kp / 1000, ep / 1000 }'
    done
    echo
    echo "CPU ms per 1,000 ops (medians): the target's 3 nodes together, and the load generator"
    printf '| %-34s | %10s | %10s | %12s | %12s |\n' workload "kith" "etcd" "bench (kith)" "bench (etcd)"
    printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "$(printf -- '-%.0s' {1..12})" \
        "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})"
    for w in $WORKLOADS; do
        awk -v t="${TITLE[$w]}" -v k="$(med .target_cpu_ms_per_kop "$RUN"/kith-"$w"-r*.json)" \
            -v e="$(med .target_cpu_ms_per_kop "$RUN"/etcd-"$w"-r*.json)" \
            -v bk="$(med .client_cpu_ms_per_kop "$RUN"/kith-"$w"-r*.json)" \
            -v be="$(med .client_cpu_ms_per_kop "$RUN"/etcd-"$w"-r*.json)" 'BEGIN {
            printf "| %-34s | %10.0f | %10.0f | %12.0f | %12.0f |\n", t, k, e, bk, be }'
    done
    echo
    if ((FAILOVER_TRIALS > 0)); then
        kf=$(med .success_gap_ms_max "$RUN"/kith-failover-t*.json)
        ef=$(med .success_gap_ms_max "$RUN"/etcd-failover-t*.json)
        echo "leader failover (SIGKILL under 100 writes/s; no successful write for …), median of $FAILOVER_TRIALS:"
        echo "  kith $(printf '%.0f' "$kf") ms (trials: $(field .success_gap_ms_max "$RUN"/kith-failover-t*.json | awk '{ printf "%.0f ", $1 }')ms)"
        echo "  etcd $(printf '%.0f' "$ef") ms (trials: $(field .success_gap_ms_max "$RUN"/etcd-failover-t*.json | awk '{ printf "%.0f ", $1 }')ms)"
        echo
    fi
    echo "resident memory per node (largest of the 3 nodes; median over rounds):"
    for sys in kith etcd; do
        idle=$(cat "$RUN"/$sys-idle-rss-r* | median)
        loaded=$(for r in $(seq "$ROUNDS"); do
            field .target_rss_peak_kb_max "$RUN"/$sys-?-r"$r".json | sort -n | tail -1
        done | median)
        awk -v s="$sys" -v i="$idle" -v l="$loaded" 'BEGIN { printf "  %s idle %.0f MiB, peak under load %.0f MiB\n", s, i / 1024, l / 1024 }'
    done
    echo
    echo "time $(( $(date +%s) - pass_started )) s; every run's JSON and summary are in $RUN"
}

tls_cost() { # → each measure with TLS against the same without, per system (TLS=both)
    local m label filter fmt div w
    echo
    echo "the cost of TLS: each system with TLS against itself without (medians of $ROUNDS rounds; ratio = TLS ÷ plain)"
    for m in "ops/s|.throughput_ops_s|%.0f|1" "p99 ms|.latency.p99_us|%.2f|1000" \
        "CPU ms per 1,000 ops (3 nodes)|.target_cpu_ms_per_kop|%.0f|1"; do
        IFS='|' read -r label filter fmt div <<<"$m"
        echo
        printf '| %-34s | %10s | %10s | %6s | %10s | %10s | %6s |\n' \
            "$label" "kith plain" "kith TLS" ratio "etcd plain" "etcd TLS" ratio
        separator 34 10 10 6 10 10 6
        for w in $WORKLOADS; do
            awk -v t="${TITLE[$w]}" -v f="$fmt" -v d="$div" \
                -v kp="$(med "$filter" "$OUT"/plain/kith-"$w"-r*.json)" \
                -v kt="$(med "$filter" "$OUT"/tls/kith-"$w"-r*.json)" \
                -v ep="$(med "$filter" "$OUT"/plain/etcd-"$w"-r*.json)" \
                -v et="$(med "$filter" "$OUT"/tls/etcd-"$w"-r*.json)" 'BEGIN {
                c = "%10s"; fmt = "| %-34s | " c " | " c " | %5.2fx | " c " | " c " | %5.2fx |\n"
                printf fmt, t, sprintf(f, kp / d), sprintf(f, kt / d), kt / kp,
                    sprintf(f, ep / d), sprintf(f, et / d), et / ep }'
        done
    done
    echo
    if ((FAILOVER_TRIALS > 0)); then
        echo "leader failover, median ms: kith $(med .success_gap_ms_max "$OUT"/plain/kith-failover-t*.json | xargs printf '%.0f') plain, $(med .success_gap_ms_max "$OUT"/tls/kith-failover-t*.json | xargs printf '%.0f') TLS; etcd $(med .success_gap_ms_max "$OUT"/plain/etcd-failover-t*.json | xargs printf '%.0f') plain, $(med .success_gap_ms_max "$OUT"/tls/etcd-failover-t*.json | xargs printf '%.0f') TLS"
    fi
    for sys in kith etcd; do
        awk -v s="$sys" -v p="$(cat "$OUT"/plain/$sys-idle-rss-r* | median)" \
            -v t="$(cat "$OUT"/tls/$sys-idle-rss-r* | median)" 'BEGIN {
            printf "idle resident memory per node, %s: %.0f MiB plain, %.0f MiB TLS\n", s, p / 1024, t / 1024 }'
    done
    echo
    echo "total time $(( $(date +%s) - started )) s; the two passes are in $OUT/plain and $OUT/tls"
}

for SECURE in "${PASSES[@]}"; do
    if [[ $TLS == both ]]; then
        RUN=$OUT/$( ((SECURE)) && echo tls || echo plain)
        mkdir -p "$RUN"
    fi
    pass_started=$(date +%s)
    measure
    report | tee "$RUN/summary.txt"
done
if [[ $TLS == both ]]; then tls_cost | tee "$OUT/tls-cost.txt"; fi
