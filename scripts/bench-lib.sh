# Shared by the load-benchmark scripts (source it; do not run it).
#
# Provides: tool installation, CPU pinning, a private redis-server, and
#   measure FRAMEWORK MODE LABEL [miss|stopped]
# which starts "$BIN FRAMEWORK MODE PORT", warms it up, runs wrk REPEAT times on
# "$URL_PATH" and prints a Markdown table row with the median run.
# Besides wrk's figures, each run reads the server's CPU time (user + system, all
# threads, from /proc/PID/stat) before and after, giving the server's CPU cost per
# request and how busy it was (100 % = one core for the whole run). The cost per
# request does not depend on whether wrk or the server was the limit, so ratios of
# it compare cases even in runs where the load generator saturates first.
# Callers set BIN, URL_PATH, and optionally WRK_SCRIPT (used for "miss" runs) and
# LOGIN_PATH (POSTed once after start; the session cookie it sets goes on every
# request of the run).
# Tunables: DUR (seconds per run, default 8), CONN (default 32), REPEAT (default 3),
# CASES (only these modes).
# With 2+ cores the server is pinned to core 0 and wrk and Redis to core 1, so they
# do not take turns on one core (which made single runs vary by 20 %).

for tool in redis-server wrk curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server wrk curl
        break
    fi
done

DUR=${DUR:-8}
CONN=${CONN:-32}
REPEAT=${REPEAT:-3}
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    PIN_SERVER=(taskset -c 0)
    PIN_LOAD=(taskset -c 1)
else
    PIN_SERVER=()
    PIN_LOAD=()
fi
WORK=$(mktemp -d)
trap 'git worktree remove --force "$WORK/base" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# build_base REV CARGO_ARGS...: builds revision REV in a worktree (removed on exit),
# for a before/after pair; the built files are copied under
# "$WORK/base-target/release". The build itself goes to target/bench-base, kept
# between runs, so a second run against a nearby revision rebuilds little.
build_base() {
    local rev=$1
    shift
    git worktree add -f -q "$WORK/base" "$rev"
    (cd "$WORK/base" && CARGO_TARGET_DIR="$OLDPWD/target/bench-base" cargo build --release -q "$@")
    mkdir -p "$WORK/base-target/release/examples"
    find target/bench-base/release/examples -maxdepth 1 -type f -perm -u+x \( -name bench -o -name bench_server \) \
        -exec cp {} "$WORK/base-target/release/examples/" \;
}

# build_servers COMPONENT: builds COMPONENT's examples/bench_server (cache, ratelimit
# or session), copied to "$WORK/server", and with BASE=<git rev> that revision's too;
# sets SERVERS to the base build (if any) then this one.
build_servers() {
    local build
    case "$1" in
        cache) build=(-p larder-cache --example bench_server) ;;
        ratelimit | session) build=(-p "larder-$1" --features _bench --example bench_server) ;;
        *) echo "unknown component $1 (cache, ratelimit or session)" >&2; exit 2 ;;
    esac
    cargo build --release -q "${build[@]}"
    cp target/release/examples/bench_server "$WORK/server"
    SERVERS=("$WORK/server")
    if [ -n "${BASE:-}" ]; then
        build_base "$BASE" "${build[@]}"
        SERVERS=("$WORK/base-target/release/examples/bench_server" "${SERVERS[@]}")
    fi
}

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: user + system CPU time of the whole process (all threads), in ticks.
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }

# miss_script FILE: writes a wrk script whose every request misses the cache (a query
# that changes per request: `/data?n=...`, tenant 1).
miss_script() {
    cat > "$1" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/data?n=" .. counter .. "-" .. math.random(1000000000), {["X-Tenant-Id"] = "1"})
end
LUA
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# TOPOLOGY=cluster: a Redis Cluster of three primaries (no replicas) on
# REDIS_PORT..REDIS_PORT+2 instead of one node; the servers get REDIS_CLUSTER_NODES.
# TOPOLOGY=replicated: one primary (REDIS_URL) with a replica on REDIS_PORT+1.
TOPOLOGY=${TOPOLOGY:-single}
if [ "$TOPOLOGY" = cluster ]; then
    # Three ports in a row, each with its bus port (+10000) free too.
    REDIS_PORT=$(python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randint(20000, 45000)
    if all(free(q) and free(q + 10000) for q in (p, p + 1, p + 2)):
        print(p); break')
    REDIS_PORTS=("$REDIS_PORT" $((REDIS_PORT + 1)) $((REDIS_PORT + 2)))
elif [ "$TOPOLOGY" = replicated ]; then
    REDIS_PORT=$(free_port)
    REDIS_PORTS=("$REDIS_PORT" "$(free_port)")
else
    REDIS_PORT=$(free_port)
    REDIS_PORTS=("$REDIS_PORT")
fi
start_redis() {
    local p
    for p in "${REDIS_PORTS[@]}"; do
        local extra=()
        if [ "$TOPOLOGY" = cluster ]; then
            rm -f "$WORK/nodes-$p.conf"
            extra=(--cluster-enabled yes --cluster-config-file "$WORK/nodes-$p.conf")
        elif [ "$p" != "$REDIS_PORT" ]; then
            extra=(--replicaof 127.0.0.1 "$REDIS_PORT")
        fi
        "${PIN_LOAD[@]}" redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$WORK" --logfile "$WORK/redis-$p.log" --daemonize yes "${extra[@]}"
        local up=""
        for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && up=1 && break; sleep 0.05; done
        [ -n "$up" ] || { echo "redis did not start" >&2; exit 1; }
    done
    if [ "$TOPOLOGY" = cluster ]; then
        redis-cli --cluster create $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") \
            --cluster-replicas 0 --cluster-yes >/dev/null
        for _ in $(seq 200); do
            redis-cli -p "$REDIS_PORT" cluster info | grep -q cluster_state:ok && return
            sleep 0.05
        done
        echo "the cluster did not form" >&2; exit 1
    fi
    if [ "$TOPOLOGY" = replicated ]; then
        for _ in $(seq 200); do
            redis-cli -p "${REDIS_PORTS[1]}" info replication | grep -q master_link_status:up && return
            sleep 0.05
        done
        echo "the replica did not sync" >&2; exit 1
    fi
}
stop_redis() {
    local p
    for p in "${REDIS_PORTS[@]}"; do
        redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
    done
    sleep 0.2
}
if [ "$TOPOLOGY" = cluster ]; then
    unset REDIS_URL
    export REDIS_CLUSTER_NODES="redis://127.0.0.1:$REDIS_PORT"
else
    export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
fi

measure() {
    local fw=$1 mode=$2 label=$3 extra=${4:-}
    # CASES (optional): run only these modes, e.g. CASES="plain reject".
    if [ -n "${CASES:-}" ] && [[ " $CASES " != *" $mode "* ]]; then return; fi
    start_redis
    local port; port=$(free_port)
    "${PIN_SERVER[@]}" "$BIN" "$fw" "$mode" "$port" >"$WORK/server.log" 2>&1 &
    local pid=$!
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port$URL_PATH" -H 'X-Tenant-Id: 1' && break; sleep 0.05; done
    local headers=(-H 'X-Tenant-Id: 1')
    if [ -n "${LOGIN_PATH:-}" ]; then
        local cookie
        cookie=$(curl -s -D - -o /dev/null -X POST "http://127.0.0.1:$port$LOGIN_PATH" \
            | awk 'tolower($1)=="set-cookie:" {sub(/;.*/, "", $2); print $2; exit}')
        [ -n "$cookie" ] && headers+=(-H "Cookie: $cookie")
    fi
    [ "$extra" = stopped ] && stop_redis
    local args=(-t1 -c"$CONN" -d"${DUR}s" --latency "${headers[@]}")
    [ "$extra" = miss ] && args+=(-s "$WRK_SCRIPT")
    # Warm up (fills caches, opens the breaker when Redis is stopped), then measure
    # REPEAT times and report the run with the median throughput.
    "${PIN_LOAD[@]}" wrk -t1 -c"$CONN" -d2s "${headers[@]}" "http://127.0.0.1:$port$URL_PATH" >/dev/null
    local runs=() costs=()
    for _ in $(seq "$REPEAT"); do
        local before after out
        before=$(cpu_ticks "$pid")
        out=$("${PIN_LOAD[@]}" wrk "${args[@]}" "http://127.0.0.1:$port$URL_PATH")
        after=$(cpu_ticks "$pid")
        runs+=("$(awk '/Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2} /Non-2xx/ {err=$5} END {printf "%s %s %s %s", rps, p50, p99, (err==""?0:err)}' <<<"$out")")
        # CPU µs per request and busy % of this run.
        costs+=("$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v dur="$DUR" \
            '/requests in/ {printf "%.2f %.0f", t * 1e6 / hz / $1, t * 100 / hz / dur}' <<<"$out")")
    done
    local median; median=$(printf '%s\n' "${runs[@]}" | sort -n -k1,1 | sed -n "$(( (REPEAT + 1) / 2 ))p")
    local rps p50 p99 errors
    read -r rps p50 p99 errors <<<"$median"
    local all; all=$(printf '%s\n' "${runs[@]}" | awk '{printf "%s%.0f", (NR>1?" / ":""), $1}')
    local cost busy
    read -r cost busy <<<"$(printf '%s\n' "${costs[@]}" | sort -n -k1,1 | sed -n "$(( (REPEAT + 1) / 2 ))p")"
    local all_costs; all_costs=$(printf '%s\n' "${costs[@]}" | awk '{printf "%s%s", (NR>1?" / ":""), $1}')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s%% | %s |\n' "$fw" "$label" "$rps" "$p50" "$p99" "$errors" "$all" "$cost" "$busy" "$all_costs"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    stop_redis
}

print_header() {
    echo "wrk -t1 -c$CONN -d${DUR}s x$REPEAT (median shown), server on 1 worker thread${PIN_SERVER:+ pinned to core 0, wrk and Redis on core 1}, Redis $(redis-server --version | awk '{print $3}'), $(nproc) cores"
    echo
    echo "| framework | case | req/s (median) | p50 | p99 | non-2xx | all runs, req/s | server CPU µs/req (median) | server busy | all runs, µs/req |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
}
