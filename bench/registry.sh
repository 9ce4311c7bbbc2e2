#!/usr/bin/env bash
# Registry benchmark: an installer's built-in registry (`x.run registry serve`) against
# Debian's docker-registry (distribution 2.8) filled with the same images, in one run.
#
# Measures: GET throughput of one large blob (curl, with an Accept header, as NOTES.md
# advises), containerd pull time of the image set through hosts.toml, time from process
# start to the first 200 on /v2/ (airlock: with a >= 2 GiB installer), peak RSS while serving.
#
# Knobs: AIRLOCK (the airlock binary), BENCH_WORK (work folder, default bench/work-registry),
# BENCH_RUNS (median of N, default 5), BENCH_BLOB_MIB (default 512), BENCH_FILLER_MIB (extra
# file content so the installer is >= 2 GiB, default 1700).
# Needs: docker-registry, skopeo, containerd, runc, curl, python3, busybox-static; root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-$ROOT/bench/work-registry}
AIRLOCK=${AIRLOCK:-$ROOT/target/x86_64-unknown-linux-gnu/release/airlock}
RUNS=${BENCH_RUNS:-5}
BIG_MIB=${BENCH_BLOB_MIB:-512}
FILLER_MIB=${BENCH_FILLER_MIB:-1700}
DIST_PORT=${BENCH_DIST_PORT:-5181}
AIR_PORT=${BENCH_AIR_PORT:-5182}

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] error: $*" >&2; exit 1; }
median() { python3 -c 'import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 4))' "$@"; }
calc() { python3 -c "import sys; print(eval(sys.argv[1]))" "$1"; }

for cmd in docker-registry skopeo containerd ctr runc curl python3; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (apt-get install docker-registry skopeo containerd runc curl)"
done
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (apt-get install busybox-static)"
[[ $(id -u) == 0 ]] || die "containerd needs root"
[[ -x $AIRLOCK ]] || (cd "$ROOT" && cargo build --release)

mkdir -p "$WORK"
cd "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    grep -o " $WORK/ctd[^ ]*" /proc/mounts | xargs -r -n1 umount -l 2>/dev/null || true
}
trap cleanup EXIT

# ---------------------------------------------------------------- inputs
if [[ ! -f layout/index.json || $(cat layout.stamp 2>/dev/null) != "$BIG_MIB" ]]; then
    log "writing images (big layer: $BIG_MIB MiB)"
    rm -rf layout
    python3 "$ROOT/bench/make_images.py" layout "$BIG_MIB" > big.txt
    echo "$BIG_MIB" > layout.stamp
fi
read -r BIG_DIGEST BIG_SIZE < big.txt
if [[ ! -f filler/filler.bin || $(cat filler.stamp 2>/dev/null) != "$FILLER_MIB" ]]; then
    log "writing $FILLER_MIB MiB of filler content"
    mkdir -p filler
    head -c "${FILLER_MIB}M" /dev/urandom > filler/filler.bin
    echo "$FILLER_MIB" > filler.stamp
fi
cat > spec.yaml <<EOF
name: bench-registry
version: "1"
files:
  - src: filler/
    dest: /opt/filler
images:
  - ref: docker.io/library/bench-app:1
    from: oci:layout:app
  - ref: example.hub/bench/libs:1
    from: oci:layout:libs
  - ref: quay.io/bench/big:1
    from: oci:layout:big
EOF
log "building the installer"
"$AIRLOCK" build -q -f spec.yaml -o bench.run
INSTALLER_BYTES=$(stat -c %s bench.run)

log "starting distribution and pushing the same images"
rm -rf dist && mkdir -p dist/data
cat > dist/config.yml <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/dist/data}}
http: {addr: 127.0.0.1:$DIST_PORT}
EOF
docker-registry serve dist/config.yml > dist/log.txt 2>&1 &
PIDS+=($!)
DIST_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIST_PORT/v2/" >/dev/null && break; sleep 0.1; done
# distribution has no namespaces: each image goes under its repository path only.
for pair in app:library/bench-app libs:bench/libs big:bench/big; do
    skopeo copy -q --dest-tls-verify=false "oci:layout:${pair%%:*}" "docker://127.0.0.1:$DIST_PORT/${pair#*:}:1"
done

log "starting airlock's registry"
./bench.run registry serve --listen "127.0.0.1:$AIR_PORT" > air.log 2>&1 &
PIDS+=($!)
AIR_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AIR_PORT/v2/" >/dev/null && break; sleep 0.1; done

# ---------------------------------------------------------------- blob throughput
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
blob_get() { # URL -> seconds
    curl -sf -o /dev/null -H "$ACCEPT" -w '%{time_total}' "$1"
}
declare -A RES=()
for who in distribution airlock; do
    if [[ $who == distribution ]]; then url="http://127.0.0.1:$DIST_PORT/v2/bench/big/blobs/$BIG_DIGEST"
    else url="http://127.0.0.1:$AIR_PORT/v2/bench/big/blobs/$BIG_DIGEST?ns=quay.io"; fi
    blob_get "$url" >/dev/null # warm
    t=()
    for ((i = 0; i < RUNS; i++)); do t+=("$(blob_get "$url")"); done
    s=$(median "${t[@]}")
    RES[$who.get_s]=$s
    RES[$who.get_mbs]=$(calc "round($BIG_SIZE / $s / 1e6)")
    log "$who: GET $BIG_SIZE bytes in $s s"
done

# ---------------------------------------------------------------- containerd pulls
pull_set() { # HOSTS_DIR -> seconds for pulling the three images into a fresh containerd
    local hosts=$1 d
    d=$(mktemp -d "$WORK/ctdXXXX")
    cat > "$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
EOF
    containerd --config "$d/config.toml" > "$d/log" 2>&1 &
    local cpid=$!
    for _ in $(seq 100); do ctr --address "$d/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
    local t0 t1
    t0=$(date +%s%N)
    for ref in docker.io/library/bench-app:1 example.hub/bench/libs:1 quay.io/bench/big:1; do
        ctr --address "$d/c.sock" -n bench image pull --hosts-dir "$hosts" "$ref" >/dev/null \
            || die "containerd failed to pull $ref via $hosts"
    done
    t1=$(date +%s%N)
    kill "$cpid"; wait "$cpid" 2>/dev/null || true
    grep -o " $d[^ ]*" /proc/mounts | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$d"
    calc "round(($t1 - $t0) / 1e9, 3)"
}
for who in distribution airlock; do
    port=$DIST_PORT; [[ $who == airlock ]] && port=$AIR_PORT
    rm -rf "hosts-$who"
    for host in docker.io example.hub quay.io; do
        mkdir -p "hosts-$who/$host"
        printf '[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' "$port" > "hosts-$who/$host/hosts.toml"
    done
    t=()
    for ((i = 0; i < RUNS; i++)); do t+=("$(pull_set "$WORK/hosts-$who")"); done
    RES[$who.pull_s]=$(median "${t[@]}")
    log "$who: containerd pull of the set in ${RES[$who.pull_s]} s"
done

RES[airlock.rss]=$(calc "round($(awk '/VmHWM/ {print $2}' /proc/$AIR_PID/status) / 1024, 1)")
RES[distribution.rss]=$(calc "round($(awk '/VmHWM/ {print $2}' /proc/$DIST_PID/status) / 1024, 1)")
kill "$AIR_PID" "$DIST_PID"

# ---------------------------------------------------------------- time to ready
ready_ms() { # CMD... -> ms from spawn to the first 200 on /v2/ at READY_URL
    python3 - "$READY_URL" "$@" <<'EOF'
import socket, subprocess, sys, time
url, cmd = sys.argv[1], sys.argv[2:]
host, port = url.split("//")[1].split("/")[0].split(":")
t0 = time.perf_counter_ns()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    while True:
        try:
            s = socket.create_connection((host, int(port)), timeout=1)
            s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                break
        except OSError:
            time.sleep(0.0005)
    print(round((time.perf_counter_ns() - t0) / 1e6, 2))
finally:
    p.kill()
    p.wait()
EOF
}
for who in distribution airlock; do
    t=()
    for ((i = 0; i < RUNS; i++)); do
        if [[ $who == airlock ]]; then
            READY_URL="http://127.0.0.1:$AIR_PORT/v2/" t+=("$(ready_ms ./bench.run registry serve --listen "127.0.0.1:$AIR_PORT")")
        else
            READY_URL="http://127.0.0.1:$DIST_PORT/v2/" t+=("$(ready_ms docker-registry serve dist/config.yml)")
        fi
    done
    RES[$who.ready_ms]=$(median "${t[@]}")
done

# ---------------------------------------------------------------- report
get() { echo "${RES[$1]:--}"; }
{
echo "## airlock registry benchmark"
echo
echo "- installer: $(calc "round($INSTALLER_BYTES / 2**30, 2)") GiB; big blob: $BIG_SIZE bytes; image set: 3 images (busybox app, ~100 MiB libs layer, big layer)"
echo "- host: $(nproc) cores; median of $RUNS runs; loopback"
echo
echo "| registry | GET big blob s | MB/s | containerd pull of the set s | ready ms | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for who in airlock distribution; do
    echo "| $who | $(get $who.get_s) | $(get $who.get_mbs) | $(get $who.pull_s) | $(get $who.ready_ms) | $(get $who.rss) |"
done
echo
echo "| target | value | limit | result |"
echo "|---|---|---|---|"
verdict() { calc "'PASS' if $1 else 'FAIL'"; }
r=$(calc "round(${RES[airlock.get_mbs]} / ${RES[distribution.get_mbs]}, 2)")
echo "| throughput airlock / distribution | $r | >= 1.0 | $(verdict "$r >= 1.0") |"
r=$(calc "round(${RES[airlock.pull_s]} / ${RES[distribution.pull_s]}, 2)")
echo "| containerd pull time airlock / distribution | $r | <= 1.0 | $(verdict "$r <= 1.0") |"
echo "| airlock ready ms ($(calc "round($INSTALLER_BYTES / 2**30, 2)") GiB installer) | ${RES[airlock.ready_ms]} | < 50 | $(verdict "${RES[airlock.ready_ms]} < 50") |"
echo "| airlock registry peak RSS MiB | ${RES[airlock.rss]} | < 50 | $(verdict "${RES[airlock.rss]} < 50") |"
} | tee results.md
