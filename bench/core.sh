#!/usr/bin/env bash
# Installer-core benchmark: airlock against makeself and `tar | zstd` on one mixed tree.
# Prints a Markdown table and a PASS/FAIL line per target. See bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")
WORK=${BENCH_WORK:-$BENCH_DIR/work}
RUNS=${BENCH_RUNS:-3}
INFO_RUNS=${BENCH_INFO_RUNS:-20}
SMALL=${BENCH_SMALL:-0}
SKIP_AIRLOCK=${BENCH_SKIP_AIRLOCK:-0}
SKIP_PEERS=${BENCH_SKIP_PEERS:-0}
REBUILD_TREE=${BENCH_REBUILD_TREE:-0}
STRICT=${BENCH_STRICT:-0}
SEED=${BENCH_SEED:-1}
AIRLOCK=${AIRLOCK:-$REPO/target/x86_64-unknown-linux-gnu/release/airlock}
GNU_TIME=${GNU_TIME:-/usr/bin/time}

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (apt-get install -y ${2:-$1})"; }
need python3
need tar
need diff diffutils
[[ -x $GNU_TIME ]] || die "GNU time not found at $GNU_TIME (apt-get install -y time)"
if [[ $SKIP_PEERS != 1 ]]; then
    need makeself
    need zstd
fi
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $INFO_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_INFO_RUNS must be a positive integer"

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
cd "$WORK"

# ---------------------------------------------------------------- the tree
# Copies `budget` bytes' worth of top-level entries of SRC (sorted by name; 0 = all) into DST.
copy_subset() {
    local src=$1 dst=$2 budget=$3
    mkdir -p "$dst"
    if [[ $budget == 0 ]]; then
        cp -a "$src/." "$dst/"
        return
    fi
    python3 - "$src" "$budget" <<'EOF' | while IFS= read -r -d '' name; do cp -a "$src/$name" "$dst/"; done
import os, sys
src, budget = sys.argv[1], int(sys.argv[2])
def size(p):
    st = os.lstat(p)
    if not os.path.isdir(p) or os.path.islink(p):
        return st.st_size
    total = 0
    for root, dirs, files in os.walk(p):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total
used = 0
for name in sorted(os.listdir(src)):
    s = size(os.path.join(src, name))
    if used + s > budget:
        continue
    used += s
    sys.stdout.write(name + "\0")
    if used >= budget * 0.98:
        break
EOF
}

# Writes `count` files of seeded random bytes totalling `mib` MiB into DIR (one large file
# holding about two thirds, the rest 1 MiB each).
write_random() {
    local dir=$1 mib=$2
    mkdir -p "$dir"
    python3 - "$dir" "$mib" "$SEED" <<'EOF'
import os, random, sys
d, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
big = mib * 2 // 3
def write(path, n):
    with open(path, "wb") as f:
        for _ in range(n):
            f.write(rng.randbytes(1 << 20))
write(os.path.join(d, "big.bin"), big)
for i in range(mib - big):
    write(os.path.join(d, "part-%03d.bin" % i), 1)
EOF
}

if [[ $SMALL == 1 ]]; then
    VARIANT="small: lib subset 50 MiB, doc subset 20 MiB, random 30 MiB, seed $SEED"
else
    VARIANT="full: /usr/lib/x86_64-linux-gnu, /usr/share/doc, random 200 MiB, seed $SEED"
fi
if [[ $REBUILD_TREE == 1 || ! -f tree.stamp || $(cat tree.stamp) != "$VARIANT" ]]; then
    log "creating tree ($VARIANT)"
    rm -rf tree tree.stamp
    mkdir tree
    if [[ $SMALL == 1 ]]; then
        copy_subset /usr/lib/x86_64-linux-gnu tree/lib $((50 << 20))
        copy_subset /usr/share/doc tree/doc $((20 << 20))
        write_random tree/random 30
    else
        copy_subset /usr/lib/x86_64-linux-gnu tree/lib 0
        copy_subset /usr/share/doc tree/doc 0
        write_random tree/random 200
    fi
    echo "$VARIANT" > tree.stamp
else
    log "reusing tree ($VARIANT); BENCH_REBUILD_TREE=1 makes a new one"
fi
TREE_BYTES=$(du -sb --apparent-size tree | cut -f1)
TREE_FILES=$(find tree -type f | wc -l)
TREE_LINKS=$(find tree -type l | wc -l)
TREE_DIRS=$(find tree -type d | wc -l)
log "tree: $TREE_BYTES bytes, $TREE_FILES files, $TREE_LINKS symlinks, $TREE_DIRS dirs"

log "warming the page cache"
tar -C tree -cf - . | cat >/dev/null

# ---------------------------------------------------------------- measuring
calc() { python3 -c "import sys; print(eval(sys.argv[1]))" "$1"; }
median() { python3 -c 'import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

declare -A RES=()
LAST_S="" LAST_RSS_KIB=""

# measure PREP CMD...: runs PREP then CMD, RUNS times, under GNU time; sets LAST_S and
# LAST_RSS_KIB to the medians. CMD's output goes to $WORK/cmd.log; a failure aborts the bench.
measure() {
    local prep=$1; shift
    local times=() rss=() i
    for ((i = 0; i < RUNS; i++)); do
        $prep
        # Start every run with no dirty pages: otherwise a run pays for the writeback of the
        # one before it, and whichever tool runs later looks slower.
        sync
        if ! "$GNU_TIME" -f '%e %M' -o time.out "$@" >cmd.log 2>&1; then
            cat cmd.log >&2
            die "command failed: $*"
        fi
        read -r t m < <(tail -n 1 time.out)
        times+=("$t")
        rss+=("$m")
    done
    LAST_S=$(median "${times[@]}")
    LAST_RSS_KIB=$(median "${rss[@]}")
}

# info_ms CMD...: median wall time of INFO_RUNS runs in milliseconds. EXPECT_RC (default 0)
# is the exit code the command must return.
info_ms() {
    local samples=() i t0 t1 rc
    for ((i = 0; i < INFO_RUNS; i++)); do
        t0=$(date +%s%N)
        rc=0
        "$@" >/dev/null 2>&1 || rc=$?
        t1=$(date +%s%N)
        [[ $rc == "${EXPECT_RC:-0}" ]] || die "command exited $rc, expected ${EXPECT_RC:-0}: $*"
        samples+=("$(( (t1 - t0) / 1000 ))")
    done
    calc "round($(median "${samples[@]}") / 1000, 2)"
}

reset_out() { rm -rf out; mkdir out; }
noprep() { :; }

# check_tree DIR LABEL: DIR must equal the source tree (contents, types, modes, symlink targets).
check_tree() {
    local dir=$1 label=$2
    if ! diff -r --no-dereference -q tree "$dir" >diff.log 2>&1; then
        head -n 20 diff.log >&2
        die "$label: extracted tree differs from the source (see $WORK/diff.log)"
    fi
    if ! python3 - tree "$dir" >>diff.log 2>&1 <<'EOF'
import os, stat, sys
a, b = sys.argv[1], sys.argv[2]
def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            mode = None if link is not None else stat.S_IMODE(st.st_mode)
            out[rel] = (stat.S_IFMT(st.st_mode), mode, link)
    return out
wa, wb = walk(a), walk(b)
bad = [k for k in sorted(set(wa) | set(wb)) if wa.get(k) != wb.get(k)]
for k in bad[:20]:
    print("metadata differs: %s: %s vs %s" % (k, wa.get(k), wb.get(k)))
sys.exit(1 if bad else 0)
EOF
    then
        head -n 20 diff.log >&2
        die "$label: extracted tree's types, modes or symlink targets differ (see $WORK/diff.log)"
    fi
    log "$label: extracted tree matches the source"
}

mib() { calc "round($1 / 1024, 1)"; }
mb() { calc "round($1 / 1e6, 1)"; }

# ---------------------------------------------------------------- airlock
if [[ $SKIP_AIRLOCK != 1 ]]; then
    if [[ ! -x $AIRLOCK ]]; then
        log "building airlock (cargo build --release)"
        (cd "$REPO" && cargo build --release) >&2
        [[ -x $AIRLOCK ]] || die "no airlock binary at $AIRLOCK after the build"
    fi
    cat > spec.yaml <<'EOF'
name: bench
version: "1"
files:
  - src: tree/
    dest: /
EOF
    log "airlock: build"
    rm_airlock() { rm -f bench.run; }
    measure rm_airlock "$AIRLOCK" build -q -f spec.yaml -o bench.run
    RES[airlock.build]=$LAST_S RES[airlock.build_rss]=$(mib "$LAST_RSS_KIB")
    RES[airlock.size]=$(mb "$(stat -c %s bench.run)")
    log "airlock: extract"
    measure reset_out ./bench.run extract --target out
    RES[airlock.extract]=$LAST_S RES[airlock.extract_rss]=$(mib "$LAST_RSS_KIB")
    check_tree out airlock
    log "airlock: verify"
    measure noprep ./bench.run verify
    RES[airlock.verify]=$LAST_S RES[airlock.verify_rss]=$(mib "$LAST_RSS_KIB")
    log "airlock: info x$INFO_RUNS"
    RES[airlock.info]=$(info_ms ./bench.run info)
    log "airlock: info of a copy truncated to half its size x$INFO_RUNS (must exit 3)"
    head -c "$(( $(stat -c %s bench.run) / 2 ))" bench.run > truncated.run
    chmod 755 truncated.run
    RES[airlock.truncated]=$(EXPECT_RC=3 info_ms ./truncated.run info)
    rm -f truncated.run
    rm -rf out
fi

# ---------------------------------------------------------------- peers
if [[ $SKIP_PEERS != 1 ]]; then
    log "makeself: build"
    rm_mk() { rm -f mk.run; }
    measure rm_mk makeself --zstd --complevel 3 tree mk.run label true
    RES[makeself.build]=$LAST_S RES[makeself.build_rss]=$(mib "$LAST_RSS_KIB")
    RES[makeself.size]=$(mb "$(stat -c %s mk.run)")
    log "makeself: extract"
    measure reset_out ./mk.run --noexec --target out
    RES[makeself.extract]=$LAST_S RES[makeself.extract_rss]=$(mib "$LAST_RSS_KIB")
    check_tree out makeself
    log "makeself: check"
    measure noprep ./mk.run --check
    RES[makeself.verify]=$LAST_S
    log "makeself: info (--info) x$INFO_RUNS"
    RES[makeself.info]=$(info_ms ./mk.run --info)

    log "tar | zstd: build"
    rm_tz() { rm -f t.tar.zst; }
    measure rm_tz bash -c 'tar -C tree -cf - . | zstd -T0 -3 -q -o t.tar.zst'
    RES[tarzstd.build]=$LAST_S
    RES[tarzstd.size]=$(mb "$(stat -c %s t.tar.zst)")
    log "zstd -dc | tar -x: extract"
    measure reset_out bash -c 'zstd -dc t.tar.zst | tar -C out -xf -'
    RES[tarzstd.extract]=$LAST_S
    check_tree out tar-zstd
    log "zstd -t: frame checksums"
    measure noprep zstd -tq t.tar.zst
    RES[tarzstd.verify]=$LAST_S
    rm -rf out
fi

# ---------------------------------------------------------------- report
get() { echo "${RES[$1]:--}"; }
report() {
    echo "## airlock installer-core benchmark"
    echo
    echo "- tree: $VARIANT"
    echo "- tree size: $(mb "$TREE_BYTES") MB ($TREE_BYTES bytes), $TREE_FILES files, $TREE_LINKS symlinks, $TREE_DIRS dirs"
    echo "- host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -r)"
    echo "- runs: median of $RUNS (info: median of $INFO_RUNS), warm page cache"
    echo
    echo "| tool | build s | size MB | extract s | verify s | info ms | build RSS MiB | extract RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|"
    local t
    for t in airlock makeself tarzstd; do
        [[ -n ${RES[$t.build]:-} ]] || continue
        local name=$t
        [[ $t == tarzstd ]] && name="tar \\| zstd -3"
        echo "| $name | $(get "$t.build") | $(get "$t.size") | $(get "$t.extract") | $(get "$t.verify") | $(get "$t.info") | $(get "$t.build_rss") | $(get "$t.extract_rss") |"
    done
    echo
    echo "Notes: makeself verify is \`--check\` (CRC + MD5), its info is \`--info\`; tar | zstd verify is"
    echo "\`zstd -t\` (xxhash64 frame checksums, not SHA-256). RSS of pipelines is not reported."
    echo
    echo "## targets"
    echo
    echo "| target | value | limit | result |"
    echo "|---|---|---|---|"
    target "airlock build / tar-zstd build" airlock.build tarzstd.build 1.0
    target "airlock size / makeself size" airlock.size makeself.size 1.0
    target "airlock extract / zstd-tar extract" airlock.extract tarzstd.extract 0.6
    target "airlock verify / makeself check" airlock.verify makeself.verify 0.3
    target_abs "airlock info ms" airlock.info 10
    target_abs "airlock truncated-file error ms" airlock.truncated 50
    local peak=-
    if [[ -n ${RES[airlock.build_rss]:-} ]]; then
        peak=$(calc "max(${RES[airlock.build_rss]}, ${RES[airlock.extract_rss]}, ${RES[airlock.verify_rss]})")
        RES[airlock.peak_rss]=$peak
    fi
    target_abs "airlock peak RSS MiB (build, extract, verify)" airlock.peak_rss 100
}
FAILS=0
target() {
    local label=$1 num=$2 den=$3 limit=$4
    if [[ -z ${RES[$num]:-} || -z ${RES[$den]:-} ]]; then
        echo "| $label | - | ≤ $limit | SKIP |"
        return
    fi
    local ratio verdict
    ratio=$(calc "round(${RES[$num]} / max(${RES[$den]}, 0.01), 3)")
    verdict=$(calc "'PASS' if $ratio <= $limit else 'FAIL'")
    [[ $verdict == FAIL ]] && FAILS=$((FAILS + 1))
    echo "| $label | $ratio | ≤ $limit | $verdict |"
}
target_abs() {
    local label=$1 key=$2 limit=$3
    if [[ -z ${RES[$key]:-} ]]; then
        echo "| $label | - | < $limit | SKIP |"
        return
    fi
    local verdict
    verdict=$(calc "'PASS' if ${RES[$key]} < $limit else 'FAIL'")
    [[ $verdict == FAIL ]] && FAILS=$((FAILS + 1))
    echo "| $label | ${RES[$key]} | < $limit | $verdict |"
}

report > results.md
cat results.md
log "results saved to $WORK/results.md"
if [[ $STRICT == 1 && $FAILS -gt 0 ]]; then
    die "$FAILS target(s) failed"
fi
