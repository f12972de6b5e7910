#!/usr/bin/env bash
# Fuzzes the server's input paths with cargo-fuzz (libFuzzer), each target
# for FUZZ_SECONDS (default 60), starting from the committed seeds in
# fuzz/seeds/<target>. Installs cargo-fuzz when missing. Exits non-zero on a
# crash; the crashing input is left in fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [target ...]   (default: all targets)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT/fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(signaling_message data_frame datagram negotiation rtp_forwarding)
# cargo-fuzz needs unstable compiler flags (sanitizer coverage); the one
# toolchain here is stable, which accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz build -O
failed=0
for t in "${TARGETS[@]}"; do
    work="$ROOT/target/fuzz-corpus/$t"
    mkdir -p "$work"
    cp -n "seeds/$t/"* "$work/" 2>/dev/null || true
    echo "==> fuzzing $t for ${SECONDS_EACH} s"
    if cargo fuzz run -O "$t" "$work" -- -max_total_time="$SECONDS_EACH" -rss_limit_mb=3072 -print_final_stats=1 2>&1 | tail -n 4; then
        echo "    $t: no crash"
    else
        echo "    $t: CRASH (input in fuzz/artifacts/$t/)"
        failed=1
    fi
done
exit $failed
