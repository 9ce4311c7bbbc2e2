#!/usr/bin/env bash
# Truncated-installer benchmark: how fast a cut-short copy says what is wrong. airlock's
# `info` and `verify` against makeself's `--check` on copies of one tree, each cut at the
# same seeded fractions of its file. Prints a Markdown table (median, p99, max wall ms, how
# many runs gave the expected answer) and a PASS/FAIL line for the 50 ms target.
# See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
WORK=${BENCH_WORK:-$BENCH_DIR/work-truncation}
CUTS=${BENCH_CUTS:-100}
SEED=${BENCH_SEED:-1}
MIB=${BENCH_MIB:-32}
STRICT=${BENCH_STRICT:-0}
AIRLOCK=${AIRLOCK:-$REPO/target/x86_64-unknown-linux-gnu/release/airlock}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install -y ${2:-$1})"; }
need python3
need makeself
need zstd
[[ $CUTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CUTS must be a positive integer"
if [[ ! -x $AIRLOCK ]]; then
    log "building airlock (release)"
    (cd "$REPO" && cargo build --release -p airlock -p airlock-stub >&2)
fi
STUB=$(dirname "$AIRLOCK")/airlock-stub
[[ -x $STUB ]] || die "the stub is missing beside $AIRLOCK"

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
cd "$WORK"

# ---------------------------------------------------------------- inputs
if [[ ! -f tree.done || $(cat tree.done) != "$SEED-$MIB" ]]; then
    log "writing a $MIB MiB tree (seed $SEED)"
    rm -rf tree && mkdir -p tree
    python3 - tree "$SEED" "$MIB" <<'EOF'
import os, random, sys
root, seed, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
# One large random file (half), 1 MiB random files, and compressible text.
os.makedirs(f"{root}/bin"); os.makedirs(f"{root}/data"); os.makedirs(f"{root}/doc")
with open(f"{root}/bin/large.bin", "wb") as f:
    f.write(rng.randbytes(mib // 2 << 20))
for i in range(mib // 4):
    with open(f"{root}/data/{i:03}.bin", "wb") as f:
        f.write(rng.randbytes(1 << 20))
words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(500)]
for i in range(64):
    with open(f"{root}/doc/{i:02}.txt", "wb") as f:
        f.write(b" ".join(rng.choice(words) for _ in range((mib << 20) // 4 // 64 // 6)))
EOF
    echo "$SEED-$MIB" > tree.done
fi
cat > spec.yaml <<EOF
name: trunc
version: "1.0"
files:
  - src: $WORK/tree/
    dest: /opt/trunc
EOF
log "building bench.run and mk.run"
"$AIRLOCK" -q build -f spec.yaml -o bench.run
rm -f mk.run
makeself --quiet --zstd --complevel 3 tree mk.run label true >/dev/null 2>&1

# ---------------------------------------------------------------- cuts
# The same CUTS seeded fractions of each file's length (strictly inside it).
python3 - "$SEED" "$CUTS" > fractions <<'EOF'
import random, sys
rng = random.Random(int(sys.argv[1]) * 7919)
for _ in range(int(sys.argv[2])):
    print(f"{rng.uniform(0.0001, 0.9999):.6f}")
EOF

# time_ms EXPECT CMD...: runs CMD once, prints "<ms> <1 if the exit code matched EXPECT>".
# EXPECT is a number, or "nonzero".
time_ms() {
    local expect=$1 t0 t1 rc=0 ok=0
    shift
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || rc=$?
    t1=$(date +%s%N)
    if [[ $expect == nonzero ]]; then ((rc != 0)) && ok=1; else ((rc == expect)) && ok=1; fi
    echo "$(( (t1 - t0) / 1000 )) $ok"
}

elf_end=$(stat -c %s "$STUB")
: > samples
for kind in airlock makeself; do
    file=bench.run; [[ $kind == makeself ]] && file=mk.run
    len=$(stat -c %s "$file")
    log "$kind: $CUTS cuts of $file ($len bytes)"
    while read -r frac; do
        cut=$(python3 -c "print(max(1, min($len - 1, int($len * $frac))))")
        head -c "$cut" "$file" > cut.run
        chmod 755 cut.run
        # Written back first, so the timed run does not share the disk with writeback.
        sync cut.run
        if [[ $kind == airlock ]]; then
            # Cut inside the program, the file cannot run itself: the intact stub reads it.
            if ((cut < elf_end)); then run=(env AIRLOCK_INSTALLER="$WORK/cut.run" "$STUB"); else run=(./cut.run); fi
            echo "airlock-info $(time_ms 3 "${run[@]}" info)" >> samples
            echo "airlock-verify $(time_ms 3 "${run[@]}" verify)" >> samples
        else
            echo "makeself-check $(time_ms nonzero ./cut.run --check)" >> samples
        fi
    done < fractions
done
rm -f cut.run

# ---------------------------------------------------------------- table
python3 - samples "$CUTS" "$STRICT" <<'EOF'
import sys
from collections import defaultdict
path, cuts, strict = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rows = defaultdict(list)
ok = defaultdict(int)
for line in open(path):
    name, us, good = line.split()
    rows[name].append(int(us) / 1000)
    ok[name] += int(good)
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]
print(f"\n{cuts} cuts per file, wall time per run (fork + exec included)\n")
print("| command | median ms | p99 ms | max ms | expected answer |")
print("|---|---|---|---|---|")
labels = {"airlock-info": "airlock `info` (exit 3)", "airlock-verify": "airlock `verify` (exit 3)",
          "makeself-check": "makeself `--check` (non-zero exit)"}
for name in ["airlock-info", "airlock-verify", "makeself-check"]:
    v = rows[name]
    print(f"| {labels[name]} | {pct(v, 50):.1f} | {pct(v, 99):.1f} | {max(v):.1f} | {ok[name]}/{len(v)} |")
worst = max(pct(rows[n], 99) for n in ["airlock-info", "airlock-verify"])
right = ok["airlock-info"] + ok["airlock-verify"] == 2 * cuts
verdict = "PASS" if worst < 50 and right else "FAIL"
print(f"\n{verdict}: airlock p99 {worst:.1f} ms (< 50 ms), every run exit 3: {right}")
if strict and verdict == "FAIL":
    sys.exit(1)
EOF
