#!/usr/bin/env bash
# Fuzzes the server's input paths with libFuzzer, each target for a fixed
# budget, starting from the committed corpus fuzz/corpus/<target> (grown by
# longer runs and minimized, so a short run starts deep) plus the hand-made
# seeds in fuzz/seeds/<target>. New inputs go to target/fuzz-corpus/<target>,
# never into the repository. Exits non-zero on a crash; the crashing input is
# left in fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [--long] [--merge] [--build-only|--no-build] [target ...]
#   (default: all targets)
#   FUZZ_SECONDS=N  seconds per target (default 10: CI's budget)
#   --long          300 s per target (unless FUZZ_SECONDS is set), built
#                   with the address sanitizer and full optimization (see
#                   below)
#   --merge         afterwards, minimize corpus + new inputs back into
#                   fuzz/corpus/<target> (to refresh the committed corpora)
#   --build-only    build the targets and stop (scripts/test.sh builds them
#                   in the background, at low priority, while suites run)
#   --no-build      fuzz what an earlier --build-only built
#
# The targets are built with plain `cargo build` and the flags cargo-fuzz
# would pass (libfuzzer-sys compiles libFuzzer itself), so nothing has to be
# installed: `cargo install cargo-fuzz` from source was a third of the CI
# fuzz time. Unlike `cargo fuzz build -O` it keeps the default codegen units
# (cargo-fuzz forces one, which costs minutes of build on two cores for a
# run of seconds per target).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/fuzz"
long=0 merge=0 build=1 run=1
TARGETS=()
for arg in "$@"; do
    case "$arg" in
        --long) long=1 ;;
        --merge) merge=1 ;;
        --build-only) run=0 ;;
        --no-build) build=0 ;;
        -*) echo "unknown option $arg" >&2; exit 2 ;;
        *) TARGETS+=("$arg") ;;
    esac
done
if [ "$long" = 1 ]; then SECONDS_EACH=${FUZZ_SECONDS:-300}; else SECONDS_EACH=${FUZZ_SECONDS:-10}; fi
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(signaling_message data_frame datagram negotiation rtp_forwarding)

# Sanitizer coverage needs unstable compiler flags; the one toolchain
# guaranteed here is stable, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# What cargo-fuzz 0.13 passes for `build -O` on Linux (trace-compares,
# --cfg fuzzing, address sanitizer), minus `-Ccodegen-units=1`. `--target`
# keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth"
# Short runs (CI) leave the address sanitizer out, as `cargo fuzz
# --sanitizer none` does: Noom's crates have no `unsafe` (what it checks),
# the bugs short runs catch are panics. Long runs keep it, with full
# optimization (opt-level 3, more runs per second). Short runs use
# opt-level 1: with the sanitizer off, a cold build took 224 s here against
# about 340 s for cargo-fuzz's flags. The two builds share fuzz/target:
# switching rebuilds.
if [ "$long" = 1 ]; then
    OPT_LEVEL=3
    RUSTFLAGS="$RUSTFLAGS -Zsanitizer=address"
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}
else
    OPT_LEVEL=1
fi
if [ "$build" = 1 ]; then
    echo "==> building fuzz targets (opt-level $OPT_LEVEL)"
    cargo build --release --target "$TRIPLE" --config 'profile.release.debug="line-tables-only"' \
        --config "profile.release.opt-level=$OPT_LEVEL" $(printf -- '--bin %s ' "${TARGETS[@]}")
fi
[ "$run" = 1 ] || exit 0
BIN="$ROOT/fuzz/target/$TRIPLE/release"
for t in "${TARGETS[@]}"; do
    [ -x "$BIN/$t" ] || { echo "fuzz target $t is not built ($BIN/$t): run without --no-build" >&2; exit 2; }
done

# One target: fuzz it, then (--merge) minimize into its committed corpus.
# Output goes to a log printed when the target is done, so targets run in
# parallel do not interleave.
fuzz_one() {
    local t=$1 work="$ROOT/target/fuzz-corpus/$1" corpus="$ROOT/fuzz/corpus/$1"
    mkdir -p "$work" "$corpus" "$ROOT/fuzz/artifacts/$t"
    # The first directory receives new inputs; the others are read only.
    if ! "$BIN/$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=3072 -print_final_stats=1 \
        -artifact_prefix="$ROOT/fuzz/artifacts/$t/" "$work" "$corpus" "seeds/$t" >"$work.log" 2>&1; then
        return 1
    fi
    if [ "$merge" = 1 ]; then
        local fresh
        fresh=$(mktemp -d)
        "$BIN/$t" -merge=1 -rss_limit_mb=3072 "$fresh" "$corpus" "$work" "seeds/$t" >>"$work.log" 2>&1
        rm -rf "$corpus" && mv "$fresh" "$corpus" && chmod 755 "$corpus"
        echo "#merge: corpus now $(ls "$corpus" | wc -l) inputs, $(du -sh "$corpus" | cut -f1)" >>"$work.log"
    fi
}

# Targets run FUZZ_JOBS at a time (default: one per core), each on one core.
JOBS=${FUZZ_JOBS:-$(nproc)}
echo "==> fuzzing ${TARGETS[*]} for ${SECONDS_EACH} s each, $JOBS at a time"
mkdir -p "$ROOT/target/fuzz-corpus"
failed=0
pids=() names=()
report() { # pid name
    if wait "$1"; then
        echo "    $2: no crash"
    else
        echo "    $2: CRASH (input in fuzz/artifacts/$2/); end of its log:"
        tail -n 40 "$ROOT/target/fuzz-corpus/$2.log" | sed 's/^/      /'
        failed=1
    fi
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#merge|==[0-9]+==ERROR)|panicked' \
        "$ROOT/target/fuzz-corpus/$2.log" | sed 's/^/      /' || true
}
for t in "${TARGETS[@]}"; do
    if [ ${#pids[@]} -ge "$JOBS" ]; then
        report "${pids[0]}" "${names[0]}"
        pids=("${pids[@]:1}") names=("${names[@]:1}")
    fi
    fuzz_one "$t" &
    pids+=($!) names+=("$t")
done
for i in "${!pids[@]}"; do report "${pids[$i]}" "${names[$i]}"; done
exit $failed
