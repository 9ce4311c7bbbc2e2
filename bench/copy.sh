#!/usr/bin/env bash
# Copy benchmark (issue 15): `x.run copy --to DIR` (write, fsync, drop pages, read back and
# verify every frame) against what a careful person does by hand, `cp` + `sync` +
# `sha256sum` of the copy, onto a tmpfs and onto a FAT32 image mounted with fusefat, in one run.
#
# Knobs: AIRLOCK (the airlock binary), BENCH_WORK (work folder, default bench/work-copy),
# BENCH_RUNS (median of N, default 3), BENCH_MIB (random file content, default 150: fusefat
# writes about 18 MB/s).
# Needs: root, dosfstools, fusefat, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${BENCH_WORK:-$ROOT/bench/work-copy}
AIRLOCK=${AIRLOCK:-$ROOT/target/x86_64-unknown-linux-gnu/release/airlock}
RUNS=${BENCH_RUNS:-3}
MIB=${BENCH_MIB:-150}

log() { echo "[bench] $*" >&2; }
die() { echo "[bench] error: $*" >&2; exit 1; }
median() { python3 -c 'import statistics, sys; print(round(statistics.median(float(x) for x in sys.argv[1:]), 3))' "$@"; }
calc() { python3 -c "import sys; print(round(eval(sys.argv[1]), 2))" "$1"; }
now() { date +%s.%N; }

for cmd in mkfs.vfat fusefat fusermount python3 sha256sum; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (apt-get install dosfstools fusefat)"
done
[ "$(id -u)" = 0 ] || die "needs root (mounts)"

rm -rf "$WORK" && mkdir -p "$WORK/src/src" "$WORK/tmpfs" "$WORK/fat"
cleanup() {
    fusermount -u "$WORK/fat" 2>/dev/null || true
    umount "$WORK/tmpfs" 2>/dev/null || true
}
trap cleanup EXIT
head -c $((MIB << 20)) /dev/urandom >"$WORK/src/src/data.bin"
printf 'name: bench\nversion: "1.0"\nfiles:\n  - src: src/\n    dest: /\n' >"$WORK/src/airlock.yaml"
"$AIRLOCK" -q build -f "$WORK/src/airlock.yaml" -o "$WORK/bench.run"
SIZE=$(stat -c %s "$WORK/bench.run")
mount -t tmpfs -o size=$((SIZE * 3)) tmpfs "$WORK/tmpfs"

fresh_fat() {
    fusermount -u "$WORK/fat" 2>/dev/null || true
    rm -f "$WORK/fat.img"
    truncate -s $((SIZE * 2 + (64 << 20))) "$WORK/fat.img"
    mkfs.vfat -F 32 "$WORK/fat.img" >/dev/null
    fusefat -o rw+ "$WORK/fat.img" "$WORK/fat" >/dev/null 2>&1
}

declare -A T
for target in tmpfs fat; do
    for tool in airlock cp; do
        times=()
        for _ in $(seq "$RUNS"); do
            if [ "$target" = fat ]; then fresh_fat; else rm -rf "${WORK:?}/tmpfs/"*; fi
            t0=$(now)
            if [ "$tool" = airlock ]; then
                "$WORK/bench.run" -q copy --to "$WORK/$target" >/dev/null
            else
                cp "$WORK/bench.run" "$WORK/$target/" && sync "$WORK/$target/bench.run" &&
                    sha256sum "$WORK/$target/bench.run" >/dev/null
            fi
            t1=$(now)
            times+=("$(calc "$t1 - $t0")")
        done
        T[$target.$tool]=$(median "${times[@]}")
        log "$target $tool: ${times[*]} s"
    done
done

echo "| copy of a $(calc "$SIZE / 1e6") MB installer (median of $RUNS) | airlock copy --to (s) | cp + sync + sha256sum (s) | ratio |"
echo "|---|---:|---:|---:|"
for target in tmpfs fat; do
    a=${T[$target.airlock]} c=${T[$target.cp]}
    echo "| $target | $a | $c | $(calc "$a / $c")x |"
done
