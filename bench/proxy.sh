#!/usr/bin/env bash
# Pull-proxy benchmark (issue 11): GET of one large blob (a) through the TLS-intercepting
# pull proxy (`CONNECT example.hub:443`, TLS with the leaf the install wrote, then the
# installer's registry with `ns=example.hub`), (b) from the same registry over plain HTTP,
# (c) from Debian's docker-registry (distribution 2.8) filled with the same image by skopeo.
# All in one run; the target is proxy / plain <= 1.5 (ratio of median wall times). Also
# reports the CPU time of curl and of the server per GET (median), to show where TLS costs.
#
# The proxy and its CA come from a real `install --root R --mirror-for docker` (the CA and
# leaf files of `proxy_files`, the registry daemon started with `--intercept`), undone with
# `uninstall --root R` at the end.
#
# Knobs: AIRLOCK (the airlock binary; airlock-stub beside it), BENCH_WORK (default
# bench/work-proxy), BENCH_RUNS (median of N, default 5), BENCH_BLOB_MIB (default 512),
# BENCH_DIST_PORT / BENCH_AIR_PORT / BENCH_PROXY_PORT (default 5281 / 5282 / 5283),
# BENCH_STRICT (1: exit 1 when the target fails), BENCH_GO_RUNS (whole-image pulls by skopeo,
# a Go client like dockerd, through the proxy and plain; default 3, 0 skips them).
# Needs: docker-registry, skopeo, curl, python3, sha256sum; root is not required.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-$ROOT/bench/work-proxy}
AIRLOCK=${AIRLOCK:-$ROOT/target/x86_64-unknown-linux-gnu/release/airlock}
RUNS=${BENCH_RUNS:-5}
BIG_MIB=${BENCH_BLOB_MIB:-512}
DIST_PORT=${BENCH_DIST_PORT:-5281}
AIR_PORT=${BENCH_AIR_PORT:-5282}
PROXY_PORT=${BENCH_PROXY_PORT:-5283}
STRICT=${BENCH_STRICT:-0}
NAME=bench-proxy
HOST=example.hub

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] error: $*" >&2; exit 1; }
median() { python3 -c 'import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 4))' "$@"; }
calc() { python3 -c "import sys; print(eval(sys.argv[1]))" "$1"; }

for cmd in docker-registry skopeo curl python3 sha256sum; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (apt-get install docker-registry skopeo curl python3 coreutils)"
done
[[ -x $AIRLOCK ]] || (cd "$ROOT" && cargo build --release -p airlock -p airlock-stub)
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, not '$RUNS'"

mkdir -p "$WORK"
cd "$WORK"
R=$WORK/root
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ -x $R/var/lib/airlock/$NAME-1.run ]]; then
        "$R/var/lib/airlock/$NAME-1.run" uninstall -q --root "$R" >/dev/null 2>&1 \
            || log "uninstall --root $R failed; see $R/var/lib/airlock/"
    fi
    rm -f "$WORK/blob.out" "$WORK/wall.txt"
}
trap cleanup EXIT

# ---------------------------------------------------------------- inputs
if [[ ! -f layout/index.json || $(cat layout.stamp 2>/dev/null) != "$BIG_MIB" ]]; then
    log "writing images (big layer: $BIG_MIB MiB)"
    rm -rf layout
    python3 "$ROOT/bench/make_images.py" layout "$BIG_MIB" 1 > big.txt
    echo "$BIG_MIB" > layout.stamp
fi
read -r BIG_DIGEST BIG_SIZE < big.txt
cat > spec.yaml <<EOF
name: $NAME
version: "1"
images:
  - ref: $HOST/bench/big:1
    from: oci:layout:big
EOF
log "building the installer"
"$AIRLOCK" build -q -f spec.yaml -o bench.run

log "installing under $R (registry 127.0.0.1:$AIR_PORT, proxy 127.0.0.1:$PROXY_PORT)"
[[ -x $R/var/lib/airlock/$NAME-1.run ]] && "$R/var/lib/airlock/$NAME-1.run" uninstall -q --root "$R" >/dev/null 2>&1
rm -rf "$R"
./bench.run install -q -y --root "$R" --listen "127.0.0.1:$AIR_PORT" \
    --proxy-listen "127.0.0.1:$PROXY_PORT" --mirror-for docker > install.log 2>&1 \
    || { cat install.log >&2; die "install failed"; }
CA=$R/var/lib/airlock/proxy-$NAME/ca.crt
[[ -f $CA ]] || die "install wrote no CA at $CA"

log "starting distribution and pushing the same image"
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
skopeo copy -q --dest-tls-verify=false oci:layout:big "docker://127.0.0.1:$DIST_PORT/bench/big:1"

# ---------------------------------------------------------------- blob GETs
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
AIR_PID=$(cat "$R/var/lib/airlock/$NAME-registry.pid")
declare -A SERVER=([proxy]=$AIR_PID [plain]=$AIR_PID [distribution]=$DIST_PID)
PROXY_ARGS=(--proxy "http://127.0.0.1:$PROXY_PORT" --cacert "$CA")
declare -A URL=(
    [proxy]="https://$HOST/v2/bench/big/blobs/$BIG_DIGEST"
    [plain]="http://127.0.0.1:$AIR_PORT/v2/bench/big/blobs/$BIG_DIGEST?ns=$HOST"
    [distribution]="http://127.0.0.1:$DIST_PORT/v2/bench/big/blobs/$BIG_DIGEST"
)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of PID
TICK=$(getconf CLK_TCK)
blob_get() { # WHO OUT -> "wall_s curl_cpu_s server_cpu_s"
    local extra=() pid=${SERVER[$1]} t0 t1 out cpu
    [[ $1 == proxy ]] && extra=("${PROXY_ARGS[@]}")
    t0=$(cpu_ticks "$pid")
    { cpu=$( { TIMEFORMAT='%3U %3S'; time curl -sSf "${extra[@]}" -o "$2" -H "$ACCEPT" -w '%{time_total}' "${URL[$1]}" > "$WORK/wall.txt"; } 2>&1 ); } \
        || die "GET of the blob from $1 failed (${URL[$1]}): $cpu"
    t1=$(cpu_ticks "$pid")
    read -r u s <<< "$cpu"
    out="$(cat "$WORK/wall.txt") $(calc "round($u + $s, 3)") $(calc "round(($t1 - $t0) / $TICK, 2)")"
    echo "$out"
}
WHO=(proxy plain distribution)
declare -A T=() C=() SV=()
# The first GET of each (warms the page cache and the connection set-up) goes to a file
# whose sha256 must be the digest; the timed ones go to /dev/null.
for who in "${WHO[@]}"; do
    blob_get "$who" "$WORK/blob.out" >/dev/null
    got=sha256:$(sha256sum blob.out | cut -d' ' -f1)
    [[ $got == "$BIG_DIGEST" ]] || die "$who served $got, not $BIG_DIGEST"
    [[ $(stat -c %s blob.out) == "$BIG_SIZE" ]] || die "$who served $(stat -c %s blob.out) bytes, not $BIG_SIZE"
    log "$who: digest checked"
done
rm -f blob.out
# Interleaved rounds, so a burst of load from other processes hits every server alike.
for ((i = 0; i < RUNS; i++)); do
    for who in "${WHO[@]}"; do
        read -r w c sv <<< "$(blob_get "$who" /dev/null)"
        T[$who]+="$w "; C[$who]+="$c "; SV[$who]+="$sv "
    done
done

# ---------------------------------------------------------------- a Go client
# skopeo pulls the whole image with Go's TLS and HTTP stack (the one dockerd uses), checks
# every digest and writes a `dir:` copy under /dev/shm (no disk): through the proxy
# (HTTPS_PROXY, the install's CA), and from the plain registry (path-prefix name).
GO_RUNS=${BENCH_GO_RUNS:-3}
declare -A G=()
if [[ $GO_RUNS != 0 ]]; then
    CADIR=$WORK/cadir && mkdir -p "$CADIR" && cp "$CA" "$CADIR/ca.crt"
    SHM=$(mktemp -d /dev/shm/airlock-bench.XXXXXX)
    go_pull() { # WHO -> wall seconds
        local t0 t1
        rm -rf "$SHM/copy"
        t0=$(date +%s.%N)
        if [[ $1 == proxy ]]; then
            HTTPS_PROXY=http://127.0.0.1:$PROXY_PORT skopeo copy -q --src-cert-dir "$CADIR" \
                "docker://$HOST/bench/big:1" "dir:$SHM/copy" || die "skopeo through the proxy failed"
        else
            skopeo copy -q --src-tls-verify=false \
                "docker://127.0.0.1:$AIR_PORT/$HOST/bench/big:1" "dir:$SHM/copy" || die "skopeo from the plain registry failed"
        fi
        t1=$(date +%s.%N)
        [[ -f $SHM/copy/${BIG_DIGEST#sha256:} ]] || die "skopeo ($1) wrote no big layer"
        calc "round($t1 - $t0, 3)"
    }
    for ((i = 0; i < GO_RUNS; i++)); do
        for who in proxy plain; do G[$who]+="$(go_pull "$who") "; done
    done
    rm -rf "$SHM"
fi

# ---------------------------------------------------------------- report
declare -A S=()
for who in "${WHO[@]}"; do
    # shellcheck disable=SC2086 # the lists of times are meant to split
    S[$who]=$(median ${T[$who]}); S[$who.c]=$(median ${C[$who]}); S[$who.sv]=$(median ${SV[$who]})
    log "$who: ${T[$who]}s -> median ${S[$who]} s"
done
RATIO=$(calc "round(${S[proxy]} / ${S[plain]}, 2)")
VERDICT=$(calc "'PASS' if $RATIO <= 1.5 else 'FAIL'")
{
echo "## airlock pull-proxy benchmark"
echo
echo "- blob: $BIG_SIZE bytes ($BIG_MIB MiB), sha256 checked once per server; median of $RUNS interleaved runs; loopback; curl $(curl --version | head -1 | cut -d' ' -f2)"
echo "- host: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| path | median s | MB/s | curl CPU s | server CPU s | runs s |"
echo "|---|---|---|---|---|---|"
for who in "${WHO[@]}"; do
    case $who in
        proxy) label="airlock TLS proxy (CONNECT $HOST:443)" ;;
        plain) label="airlock registry, plain HTTP" ;;
        distribution) label="distribution 2.8, plain HTTP" ;;
    esac
    echo "| $label | ${S[$who]} | $(calc "round($BIG_SIZE / ${S[$who]} / 1e6)") | ${S[$who.c]} | ${S[$who.sv]} | ${T[$who]% } |"
done
echo
echo "| target | value | limit | result |"
echo "|---|---|---|---|"
echo "| proxy / plain (time) | $RATIO | <= 1.5 | $VERDICT |"
echo "| proxy / distribution (time) | $(calc "round(${S[proxy]} / ${S[distribution]}, 2)") | - | - |"
if [[ $GO_RUNS != 0 ]]; then
    # shellcheck disable=SC2086 # the lists of times are meant to split
    GP=$(median ${G[proxy]}) GL=$(median ${G[plain]})
    echo
    echo "Whole-image pull by a Go client (skopeo $(skopeo --version | cut -d' ' -f3), digests checked, dir: on /dev/shm), median of $GO_RUNS:"
    echo
    echo "| path | median s | runs s |"
    echo "|---|---|---|"
    echo "| skopeo through the TLS proxy | $GP | ${G[proxy]% } |"
    echo "| skopeo from the plain registry | $GL | ${G[plain]% } |"
    echo "| proxy / plain (time) | $(calc "round($GP / $GL, 2)") | |"
fi
} | tee results.md
[[ $STRICT == 1 && $VERDICT == FAIL ]] && exit 1
exit 0
