#!/usr/bin/env bash
# Push benchmark: `x.run registry push` of an installer's images into Debian's docker-registry
# (distribution 2.8) on loopback, against `skopeo copy --all` of the same images (read from
# the installer's own `registry serve`), in one run.
#
# Measures: wall time of a full push into an empty registry (median of N, a fresh storage
# folder per run), the throughput it gives (image bytes / s), and the time of a second push
# with nothing new (everything HEADed and skipped).
#
# Knobs: AIRLOCK (the airlock binary), BENCH_WORK (work folder, default bench/work-push),
# BENCH_RUNS (median of N, default 3), BENCH_BLOB_MIB (the big layer, default 1800: with the
# 100 MiB libs layer the installer holds ~2 GiB of images), BENCH_JOBS (--jobs, default 4).
# Needs: docker-registry, skopeo, curl, python3, busybox-static.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-$ROOT/bench/work-push}
AIRLOCK=${AIRLOCK:-$ROOT/target/x86_64-unknown-linux-gnu/release/airlock}
RUNS=${BENCH_RUNS:-3}
BIG_MIB=${BENCH_BLOB_MIB:-1800}
JOBS=${BENCH_JOBS:-4}
DIST_PORT=${BENCH_DIST_PORT:-5191}
AIR_PORT=${BENCH_AIR_PORT:-5192}

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] error: $*" >&2; exit 1; }
median() { python3 -c 'import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 4))' "$@"; }
calc() { python3 -c "import sys; print(eval(sys.argv[1]))" "$1"; }
now() { date +%s.%N; }

for cmd in docker-registry skopeo curl python3; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (apt-get install docker-registry skopeo curl)"
done
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (apt-get install busybox-static)"
[[ -x $AIRLOCK ]] || (cd "$ROOT" && cargo build --release)

mkdir -p "$WORK"
cd "$WORK"
DIST_PID=
AIR_PID=
cleanup() {
    [[ -n $DIST_PID ]] && kill "$DIST_PID" 2>/dev/null || true
    [[ -n $AIR_PID ]] && kill "$AIR_PID" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

# ---------------------------------------------------------------- inputs
if [[ ! -f layout/index.json || $(cat layout.stamp 2>/dev/null) != "$BIG_MIB" ]]; then
    log "writing images (big layer: $BIG_MIB MiB)"
    rm -rf layout
    python3 "$ROOT/bench/make_images.py" layout "$BIG_MIB" > big.txt
    echo "$BIG_MIB" > layout.stamp
fi
cat > spec.yaml <<EOF
name: bench-push
version: "1"
images:
  - ref: docker.io/library/bench-app:1
    from: oci:layout:app
  - ref: example.hub/bench/libs:1
    from: oci:layout:libs
  - ref: quay.io/bench/big:1
    from: oci:layout:big
EOF
if [[ ! -f bench.run || spec.yaml -nt bench.run || layout.stamp -nt bench.run ]]; then
    log "building the installer"
    "$AIRLOCK" build -q -f spec.yaml -o bench.run
fi
INSTALLER_BYTES=$(stat -c %s bench.run)
IMAGE_BYTES=$(du -sb layout/blobs | cut -f1)

# A distribution registry with an empty storage folder (the previous one is removed).
start_dist() {
    [[ -n $DIST_PID ]] && { kill "$DIST_PID"; wait "$DIST_PID" 2>/dev/null || true; }
    rm -rf dist && mkdir -p dist/data
    cat > dist/config.yml <<EOF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/dist/data}}
http: {addr: 127.0.0.1:$DIST_PORT}
EOF
    docker-registry serve dist/config.yml > dist/log.txt 2>&1 &
    DIST_PID=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIST_PORT/v2/" >/dev/null && return; sleep 0.1; done
    die "docker-registry did not start"
}

log "starting the installer's registry (skopeo's source)"
./bench.run registry serve --listen "127.0.0.1:$AIR_PORT" > air.log 2>&1 &
AIR_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AIR_PORT/v2/" >/dev/null && break; sleep 0.1; done

airlock_push() {
    ./bench.run -q registry push --to "http://127.0.0.1:$DIST_PORT/site" --jobs "$JOBS" \
        --sessions "$WORK/sessions.json"
}
skopeo_push() {
    for ref in docker.io/library/bench-app:1 example.hub/bench/libs:1 quay.io/bench/big:1; do
        skopeo copy -q --all --src-tls-verify=false --dest-tls-verify=false \
            "docker://127.0.0.1:$AIR_PORT/$ref" "docker://127.0.0.1:$DIST_PORT/site/$ref"
    done
}

declare -A RES=()
for who in airlock skopeo; do
    t=()
    for ((i = 0; i < RUNS; i++)); do
        start_dist
        s=$(now); "${who}_push"; e=$(now)
        t+=("$(calc "round($e - $s, 3)")")
    done
    RES[$who.s]=$(median "${t[@]}")
    RES[$who.mbs]=$(calc "round($IMAGE_BYTES / ${RES[$who.s]} / 1e6)")
    log "$who: ${t[*]} s"
done
# The registry holds skopeo's copy now: push over it (same bytes, same names) twice and
# time the second, which has nothing new.
airlock_push
t=()
for ((i = 0; i < RUNS; i++)); do s=$(now); airlock_push; e=$(now); t+=("$(calc "round($e - $s, 3)")"); done
RES[again.s]=$(median "${t[@]}")

# ---------------------------------------------------------------- report
{
echo "## airlock push benchmark"
echo
echo "- installer: $(calc "round($INSTALLER_BYTES / 2**30, 2)") GiB; image blobs: $IMAGE_BYTES bytes in 3 images (busybox app, ~100 MiB libs layer, $BIG_MIB MiB layer)"
echo "- host: $(nproc) cores; median of $RUNS runs; loopback; plain HTTP; airlock --jobs $JOBS, 64 MiB chunks"
echo
echo "| pusher | full push s | MB/s | second push s |"
echo "|---|---|---|---|"
echo "| airlock registry push | ${RES[airlock.s]} | ${RES[airlock.mbs]} | ${RES[again.s]} |"
echo "| skopeo copy --all | ${RES[skopeo.s]} | ${RES[skopeo.mbs]} | - |"
echo
echo "| target | value | limit | result |"
echo "|---|---|---|---|"
verdict() { calc "'PASS' if $1 else 'FAIL'"; }
r=$(calc "round(${RES[airlock.mbs]} / ${RES[skopeo.mbs]}, 2)")
echo "| throughput airlock / skopeo | $r | >= 0.8 | $(verdict "$r >= 0.8") |"
echo "| second push s | ${RES[again.s]} | <= 2 | $(verdict "${RES[again.s]} <= 2") |"
} | tee results.md
