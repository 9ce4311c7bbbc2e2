#!/usr/bin/env bash
# Registry under load: an installer's `registry serve` and Debian's docker-registry
# (distribution 2.8, filled with the same images by skopeo), one after the other in one run.
# CLIENTS pullers fetch every image again and again for LOAD_SECONDS (HEAD + GET of each
# manifest with an Accept header, every blob, one Range GET and one HEAD of a random blob per
# pull), next to a stream of malformed requests and slow-loris connections
# (bench/loadgen). Every answer to a valid request is checked byte for byte.
#
# Knobs: AIRLOCK, LOADGEN (binaries), BENCH_WORK (default bench/work-load), CLIENTS (64),
# LOAD_SECONDS (60), LOAD_BLOB_MIB (big layer, 16), LOAD_LIBS_MIB (libs layer, 8),
# MALFORMED_WORKERS (2), SLOWLORIS (16), BENCH_DIST_PORT / BENCH_AIR_PORT (5191 / 5192).
# Needs: docker-registry, skopeo, curl, python3, busybox-static.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-$ROOT/bench/work-load}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/release
AIRLOCK=${AIRLOCK:-$BIN/airlock}
LOADGEN=${LOADGEN:-$BIN/airlock-loadgen}
CLIENTS=${CLIENTS:-64}
LOAD_SECONDS=${LOAD_SECONDS:-60}
BIG_MIB=${LOAD_BLOB_MIB:-16}
LIBS_MIB=${LOAD_LIBS_MIB:-8}
MALFORMED_WORKERS=${MALFORMED_WORKERS:-2}
SLOWLORIS=${SLOWLORIS:-16}
DIST_PORT=${BENCH_DIST_PORT:-5191}
AIR_PORT=${BENCH_AIR_PORT:-5192}

log() { echo "[load] $*" >&2; }
die() { echo "[load] error: $*" >&2; exit 1; }

for cmd in docker-registry skopeo curl python3; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (apt-get install docker-registry skopeo curl python3)"
done
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (apt-get install busybox-static)"
if [[ ! -x $AIRLOCK || ! -x $LOADGEN ]]; then
    (cd "$ROOT" && cargo build --release -p airlock -p airlock-loadgen)
fi

mkdir -p "$WORK"
cd "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# ---------------------------------------------------------------- inputs
stamp="$BIG_MIB $LIBS_MIB"
if [[ ! -f layout/index.json || $(cat layout.stamp 2>/dev/null) != "$stamp" ]]; then
    log "writing images (big layer $BIG_MIB MiB, libs layer $LIBS_MIB MiB)"
    rm -rf layout
    python3 "$ROOT/bench/make_images.py" layout "$BIG_MIB" "$LIBS_MIB" > big.txt
    echo "$stamp" > layout.stamp
fi
cat > spec.yaml <<YAML
name: bench-load
version: "1"
images:
  - ref: docker.io/library/bench-app:1
    from: oci:layout:app
  - ref: example.hub/bench/libs:1
    from: oci:layout:libs
  - ref: quay.io/bench/big:1
    from: oci:layout:big
YAML
log "building the installer"
"$AIRLOCK" build -q -f spec.yaml -o load.run

log "starting distribution and pushing the same images"
rm -rf dist && mkdir -p dist/data
cat > dist/config.yml <<YAML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/dist/data}}
http: {addr: 127.0.0.1:$DIST_PORT}
YAML
docker-registry serve dist/config.yml > dist/log.txt 2>&1 &
DIST_PID=$!
PIDS+=("$DIST_PID")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$DIST_PORT/v2/" >/dev/null && break; sleep 0.1; done
for pair in app:library/bench-app libs:bench/libs big:bench/big; do
    skopeo copy -q --dest-tls-verify=false "oci:layout:${pair%%:*}" "docker://127.0.0.1:$DIST_PORT/${pair#*:}:1"
done

log "starting airlock's registry"
./load.run registry serve --listen "127.0.0.1:$AIR_PORT" > air.log 2>&1 &
AIR_PID=$!
PIDS+=("$AIR_PID")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$AIR_PORT/v2/" >/dev/null && break; sleep 0.1; done

# ---------------------------------------------------------------- load
load() { # NAME PORT PID IMAGE... : runs the load generator, JSON report to NAME.json
    local name=$1 port=$2 pid=$3
    shift 3
    local args=()
    for i in "$@"; do args+=(--image "$i"); done
    log "$name: $CLIENTS clients for $LOAD_SECONDS s + malformed stream"
    "$LOADGEN" --addr "127.0.0.1:$port" --pid "$pid" --clients "$CLIENTS" --seconds "$LOAD_SECONDS" \
        --malformed-workers "$MALFORMED_WORKERS" --slowloris "$SLOWLORIS" --json "${args[@]}" \
        > "$name.json" || true
    [[ -s $name.json ]] || die "the load generator failed against $name"
}
load airlock "$AIR_PORT" "$AIR_PID" \
    'library/bench-app:1?ns=docker.io' 'bench/libs:1?ns=example.hub' 'bench/big:1?ns=quay.io'
load distribution "$DIST_PORT" "$DIST_PID" library/bench-app:1 bench/libs:1 bench/big:1

# ---------------------------------------------------------------- report
python3 - "$CLIENTS" "$LOAD_SECONDS" "$(nproc)" <<'PY' | tee results.md
import json, sys
clients, secs, cores = sys.argv[1:]
r = {n: json.load(open(f"{n}.json")) for n in ("airlock", "distribution")}
mib = lambda k: "-" if k is None else f"{k / 1024:.1f}"
print("## registry under load\n")
print(f"- {clients} clients, {secs} s per registry, one after the other; {cores} cores shared by the")
print("  registry and the load generator; loopback; images: busybox app, libs layer, big layer")
print()
print("| registry | valid requests | errors | req/s | MB/s | pulls | p50 ms | p99 ms | malformed | unexpected | slow-loris closed | peak RSS MiB | alive |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for n, x in r.items():
    print(f"| {n} | {x['valid_requests']} | {x['valid_errors']} | {x['valid_requests'] / x['seconds']:.0f} | "
          f"{x['bytes'] / x['seconds'] / 1e6:.0f} | {x['pulls']} | {x['latency']['p50_ms']:.2f} | {x['latency']['p99_ms']:.2f} | "
          f"{x['malformed']} | {x['malformed_unexpected']} | {x['slowloris_closed']} | {mib(x['peak_rss_kib'])} | "
          f"{'yes' if x['alive'] else 'NO'} |")
print("\nLatency by kind (p50 / p99 ms):\n")
kinds = sorted({k for x in r.values() for k in x["latency_by_kind"]})
print("| registry | " + " | ".join(kinds) + " |")
print("|---|" + "---|" * len(kinds))
for n, x in r.items():
    cells = [f"{x['latency_by_kind'][k]['p50_ms']:.2f} / {x['latency_by_kind'][k]['p99_ms']:.2f}" if k in x["latency_by_kind"] else "-" for k in kinds]
    print(f"| {n} | " + " | ".join(cells) + " |")
print("\nMalformed requests: outcome counts (status code, `closed` = closed without an answer, `held` = slow-loris still open at the end):\n")
kinds = sorted({k for x in r.values() for k in x["malformed_outcomes"]})
print("| kind | airlock | distribution |")
print("|---|---|---|")
fmt = lambda m: " ".join(f"{o}×{c}" for o, c in sorted(m.items())) if m else "-"
for k in kinds:
    print(f"| {k} | {fmt(r['airlock']['malformed_outcomes'].get(k))} | {fmt(r['distribution']['malformed_outcomes'].get(k))} |")
for n, x in r.items():
    for s in x["error_samples"] + x["unexpected_samples"]:
        print(f"\n- {n}: {s}")
a = r["airlock"]
ok = a["valid_errors"] == 0 and a["alive"] and a["malformed_unexpected"] == 0
print(f"\n{'PASS' if ok else 'FAIL'}: airlock: {a['valid_errors']} errors on valid requests, "
      f"{a['malformed_unexpected']} unexpected answers to malformed ones, alive: {a['alive']}, "
      f"peak RSS {mib(a['peak_rss_kib'])} MiB")
sys.exit(0 if ok else 1)
PY
