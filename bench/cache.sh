#!/usr/bin/env bash
# Build-cache benchmark (issue 12, part 1): on bench/core.sh's 1 GiB mixed tree, a cold build
# (empty cache) against a rebuild after changing one 1 MiB file and a rebuild with nothing
# changed, medians of BENCH_RUNS, ratios against the cold build; `tar | zstd -3 -T0` in the
# same run as the peer. Every output is compared byte for byte with a --no-cache build.
# Prints a Markdown table and a PASS/FAIL line per target. See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
WORK=${BENCH_WORK:-$BENCH_DIR/work}
RUNS=${BENCH_RUNS:-3}
AIRLOCK=${AIRLOCK:-$REPO/target/x86_64-unknown-linux-gnu/release/airlock}
[[ -x $AIRLOCK ]] || AIRLOCK=$REPO/target/release/airlock
export SOURCE_DATE_EPOCH=1700000000

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
command -v zstd >/dev/null || die "zstd not found (apt-get install -y zstd)"
[[ -x $AIRLOCK ]] || die "airlock not built: cargo build --release -p airlock -p airlock-stub"
[[ -d $WORK/tree ]] || die "no tree in $WORK: run bench/core.sh once (it makes the 1 GiB mixed tree)"
cd "$WORK"
CHANGED=$(find tree/random -name 'part-*.bin' | sort | head -n 1)
[[ -n $CHANGED ]] || die "no 1 MiB file under $WORK/tree/random"
printf 'name: bench\nversion: "1"\nfiles:\n  - src: tree/\n    dest: /\n' > cache.yaml
CACHE=$WORK/cache-dir
export AIRLOCK_CACHE_DIR=$CACHE

median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
secs() { local t0 t1; t0=$(date +%s%N); "$@" >cmd.log 2>&1 || { cat cmd.log >&2; die "failed: $*"; }; t1=$(date +%s%N); python3 -c "print(($t1 - $t0) / 1e9)"; }
build() { "$AIRLOCK" -q build -f cache.yaml -o "$1" "${@:2}"; }
same() { cmp -s "$1" "$2" || die "$1 differs from the cold build $2"; }
# A fresh 1 MiB of random bytes in CHANGED (a new content every call).
change() { head -c $((1 << 20)) /dev/urandom > "$CHANGED"; }

cold=() edit=() none=() peer=()
for ((i = 0; i < RUNS; i++)); do
    rm -rf "$CACHE"; sync
    cold+=("$(secs build cold.run)")
done
# The stat cache trusts an entry only when the file is older than 2 s when recorded.
sleep 3; build warm.run
for ((i = 0; i < RUNS; i++)); do
    sync; none+=("$(secs build none.run)")
done
build ref.run --no-cache; same none.run ref.run; same warm.run ref.run
for ((i = 0; i < RUNS; i++)); do
    change; sync; edit+=("$(secs build edit.run)")
done
build ref.run --no-cache; same edit.run ref.run
for ((i = 0; i < RUNS; i++)); do
    sync; peer+=("$(secs sh -c 'tar -C tree -cf - . | zstd -3 -T0 -q -o peer.tar.zst -f')")
done

C=$(median "${cold[@]}") E=$(median "${edit[@]}") N=$(median "${none[@]}") P=$(median "${peer[@]}")
r() { python3 -c "print(round($1 / $C, 3))"; }
echo "| build ($(du -sh --apparent-size tree | cut -f1) tree, median of $RUNS) | s | vs cold |"
echo "|---|---:|---:|"
echo "| airlock cold (empty cache) | $C | 1 |"
echo "| airlock, one 1 MiB file changed | $E | $(r "$E") |"
echo "| airlock, nothing changed | $N | $(r "$N") |"
echo "| tar \| zstd -3 -T0 | $P | $(r "$P") |"
ok() { python3 -c "import sys; sys.exit(0 if $1 else 1)"; }
if ok "$E <= 0.1 * $C"; then echo "PASS one file changed <= 0.1x cold"; else echo "FAIL one file changed <= 0.1x cold"; fi
if ok "$N <= 0.05 * $C"; then echo "PASS nothing changed <= 0.05x cold"; else echo "FAIL nothing changed <= 0.05x cold"; fi
echo "outputs byte-identical to --no-cache builds: yes"
