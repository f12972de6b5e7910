#!/usr/bin/env bash
# The single test command: ./scripts/test.sh
#
# Installs what is missing (Debian packages, npm packages for the browser
# tests, a Python venv for the aiortc tests), then runs:
#   checks: cargo fmt --check, cargo clippy -D warnings, cargo build (clippy
#           lints during the build: one compilation, see clippy_in_build)
#   suites: cargo test --workspace; Chromium end-to-end (tests/browser,
#           coturn for its TURN tests, Firefox ESR for firefox.test.mjs,
#           tc for shaped_link.test.mjs: a subscriber's link limited);
#           aiortc end-to-end (tests/aiortc); a publisher behind 10 % loss
#           in network namespaces (tests/netem, needs root: skipped without);
#           bench (benches/ noom-load --quick: media flows through Noom and
#           the UDP+SRTP limit; noom-load cluster --quick: chat and media
#           cross nodes of a 2-node cluster over a real Redis; no figure is
#           judged)
# cargo test (as root) and the two end-to-end suites run in a fresh network
# namespace that has only loopback (unshare -n). Exits non-zero when anything fails; the last line is
# "N passed, N failed" over the suites.
#
# Optional arguments pick parts: lint build cargo browser aiortc netem bench fuzz (default:
# all but fuzz, and fuzz too when CI=true;
# the suites need build). Environment: NOOM_BIN, CHROMIUM_BIN, FIREFOX_BIN, NOOM_LOG_LEVEL,
# NOOM_SKIP_INSTALL=1 (use what is there).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
# abuse.rs holds ~2,100 files open in one process (1,000 WebSockets, both
# ends): lift the soft open-files limit to the hard one where that is lower.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
export NOOM_BIN=${NOOM_BIN:-$TARGET_DIR/debug/noom}
export NOOM_ARTIFACTS_DIR=${NOOM_ARTIFACTS_DIR:-$ROOT/target/test-artifacts}
export CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/lib/chromium/chromium}
export FIREFOX_BIN=${FIREFOX_BIN:-/usr/bin/firefox-esr}
VENV=$ROOT/target/py-venv
BROWSER_DIR=$ROOT/tests/browser
AIORTC_DIR=$ROOT/tests/aiortc
SUITE_TIMEOUT=${NOOM_SUITE_TIMEOUT:-1200} # seconds per end-to-end suite

PARTS=("$@")
if [ ${#PARTS[@]} -eq 0 ]; then
    PARTS=(lint build cargo browser aiortc netem bench)
    # Fuzzing takes minutes (build + 10 s per target): by default only in
    # CI; run `./scripts/test.sh fuzz` to include it locally.
    [ "${CI:-}" = "true" ] && PARTS+=(fuzz)
fi
want() {
    local p
    for p in "${PARTS[@]}"; do [ "$p" = "$1" ] && return 0; done
    return 1
}

CHECK_LINES=()
CHECKS_FAILED=()
SUITES_PASSED=0
SUITES_FAILED=0
SUITES_SKIPPED=0
SUITE_LINES=()

log() { printf '\n==> %s\n' "$*"; }
now() { date +%s; }

# run_check NAME CMD...: a check (lint, build). Failure fails the run.
run_check() {
    local name=$1 t0 rc
    shift
    log "$name: $*"
    t0=$(now)
    "$@"
    rc=$?
    if [ $rc -eq 0 ]; then
        CHECK_LINES+=("  ok      $name ($(($(now) - t0)) s)")
    else
        CHECK_LINES+=("  FAILED  $name (exit $rc, $(($(now) - t0)) s)")
        CHECKS_FAILED+=("$name")
    fi
    return $rc
}

# run_suite NAME CMD...: one of the suites. Exit status 77 means the suite
# could not run here and said why (counted as skipped, not passed).
run_suite() {
    local name=$1 t0 rc
    shift
    log "$name: $*"
    t0=$(now)
    "$@"
    rc=$?
    if [ $rc -eq 0 ]; then
        SUITES_PASSED=$((SUITES_PASSED + 1))
        SUITE_LINES+=("  passed  $name ($(($(now) - t0)) s)")
    elif [ $rc -eq 77 ]; then
        SUITES_SKIPPED=$((SUITES_SKIPPED + 1))
        SUITE_LINES+=("  skipped $name (it said why above)")
    else
        SUITES_FAILED=$((SUITES_FAILED + 1))
        SUITE_LINES+=("  FAILED  $name (exit $rc, $(($(now) - t0)) s)")
    fi
    return $rc
}

suite_not_run() { # NAME REASON
    SUITES_FAILED=$((SUITES_FAILED + 1))
    SUITE_LINES+=("  FAILED  $1 (not run: $2)")
}

suite_skipped() {
    SUITES_SKIPPED=$((SUITES_SKIPPED + 1))
    SUITE_LINES+=("  skipped $1")
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ----------------------------------------------------------------- install

APT_UPDATED=0
apt_install() {
    [ $# -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        echo "missing: $* (and no apt-get to install them)" >&2
        return 1
    fi
    if [ $APT_UPDATED -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

install_system_packages() {
    local missing=()
    want browser && [ ! -x "$CHROMIUM_BIN" ] && missing+=(chromium)
    # iproute2 also brings tc (tests/netem; tests/browser/shaped_link.test.mjs
    # limits one browser's downlink with it).
    { command -v ip >/dev/null && command -v tc >/dev/null; } || missing+=(iproute2)
    command -v unshare >/dev/null || missing+=(util-linux)
    # tests/netem falls back to nftables where the kernel has no sch_netem;
    # tests/browser/turn.test.mjs drops one browser's UDP with it.
    (want netem || want browser) && ! command -v nft >/dev/null && missing+=(nftables)
    # tests/browser/turn.test.mjs runs a real TURN server (issue #17).
    want browser && [ ! -x /usr/bin/turnserver ] && missing+=(coturn)
    # tests/browser/firefox.test.mjs calls Chromium from Firefox ESR (issue #17).
    want browser && [ ! -x "$FIREFOX_BIN" ] && missing+=(firefox-esr)
    # signaling/tests/integration/cluster_redis.rs runs a real Redis (issue #14).
    # ... and so does the cluster bench (noom-load cluster --quick).
    (want cargo || want bench) && [ ! -x /usr/bin/redis-server ] && missing+=(redis-server)
    want cargo && ! command -v openssl >/dev/null && missing+=(openssl)
    if want browser && ! command -v node >/dev/null; then missing+=(nodejs); fi
    if want browser && ! command -v npm >/dev/null; then missing+=(npm); fi
    if want aiortc || want netem; then
        if ! command -v python3 >/dev/null; then
            missing+=(python3 python3-venv)
        elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
            missing+=(python3-venv)
        fi
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        apt_install "${missing[@]}" || return 1
    fi
    return 0
}

install_browser_deps() {
    local major
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    if [ "$major" -lt 20 ]; then
        echo "tests/browser needs Node.js >= 20 (playwright-core); found $(node --version 2>/dev/null || echo none)" >&2
        return 1
    fi
    if [ ! -f "$BROWSER_DIR/node_modules/.package-lock.json" ] ||
        [ "$BROWSER_DIR/package-lock.json" -nt "$BROWSER_DIR/node_modules/.package-lock.json" ]; then
        log "npm ci in tests/browser"
        (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund) || return 1
    fi
}

install_python_deps() {
    local stamp=$VENV/.requirements-installed
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating Python venv $VENV"
        if ! python3 -m venv "$VENV"; then
            rm -rf "$VENV"
            apt_install python3-venv && python3 -m venv "$VENV" || return 1
        fi
    fi
    if [ ! -f "$stamp" ] || [ "$AIORTC_DIR/requirements.txt" -nt "$stamp" ]; then
        log "pip install -r tests/aiortc/requirements.txt"
        "$VENV/bin/python" -m pip install -q -r "$AIORTC_DIR/requirements.txt" || return 1
        touch "$stamp"
    fi
}

# Runs a command in a new network namespace with only loopback, up.
NETNS_OK=
# shellcheck disable=SC2317  # called indirectly, through run_suite
in_loopback_netns() {
    if [ -z "$NETNS_OK" ]; then
        if as_root unshare -n sh -c 'ip link set lo up' 2>/dev/null; then NETNS_OK=yes; else NETNS_OK=no; fi
        [ "$NETNS_OK" = no ] && echo "WARNING: unshare -n is not permitted here; running on the host network" >&2
    fi
    if [ "$NETNS_OK" = yes ]; then
        as_root unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
    else
        "$@"
    fi
}

SETUP_OK=1
SETUP_PID=
SETUP_LOG=$ROOT/target/setup.log
if [ "${NOOM_SKIP_INSTALL:-0}" != 1 ]; then
    install_system_packages || SETUP_OK=0
fi
BROWSER_SETUP=1
AIORTC_SETUP=1
if [ $SETUP_OK -eq 0 ]; then
    BROWSER_SETUP=0
    AIORTC_SETUP=0
elif [ "${NOOM_SKIP_INSTALL:-0}" != 1 ] && { want browser || want aiortc || want netem; }; then
    # npm and pip fetch and unpack while cargo compiles (they wait on the
    # network and the disk, the compiler on the CPU: about a minute of a
    # fresh clone's run); the suites wait for them in await_setup.
    mkdir -p "$ROOT/target"
    (
        rc=0
        if want browser; then install_browser_deps || rc=$((rc | 1)); fi
        if want aiortc || want netem; then install_python_deps || rc=$((rc | 2)); fi
        exit $rc
    ) >"$SETUP_LOG" 2>&1 &
    SETUP_PID=$!
fi

# Waits for the npm/pip installs started above and shows their output.
await_setup() {
    [ -n "$SETUP_PID" ] || return 0
    local rc=0
    wait "$SETUP_PID" || rc=$?
    SETUP_PID=
    log "test dependencies (npm, pip), installed beside the build:"
    cat "$SETUP_LOG"
    [ $((rc & 1)) -ne 0 ] && BROWSER_SETUP=0
    [ $((rc & 2)) -ne 0 ] && AIORTC_SETUP=0
    return 0
}

# ----------------------------------------------------------------- cargo

if ! command -v cargo >/dev/null; then
    echo "cargo not found: install the Rust toolchain (rustup) first" >&2
    CHECKS_FAILED+=("cargo missing")
    CHECK_LINES+=("  FAILED  cargo not found")
fi

# Clippy in the build itself: `cargo clippy` is `cargo check` with
# clippy-driver as the workspace's compiler, so a separate clippy pass
# compiles the workspace twice (about 170 s of a cold CI run). With
# clippy-driver as the wrapper of `cargo build`, one compilation lints and
# builds; the same environment stays set for `cargo test` so nothing is
# rebuilt. CLIPPY_ARGS is how cargo-clippy hands `-D warnings` to the driver;
# a probe checks the driver still honours it, else the two passes run.
clippy_in_build() {
    local driver probe
    driver=$(command -v clippy-driver) || return 1
    probe=$(mktemp -d) || return 1
    printf 'pub fn probe(v: &Vec<u8>) -> usize { v.len() }\n' >"$probe/lib.rs"
    if CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__" "$driver" rustc \
        --crate-type lib --edition 2021 --emit metadata -o "$probe/out" "$probe/lib.rs" 2>/dev/null; then
        rm -rf "$probe"
        return 1 # the lint did not fail the probe: not enforced
    fi
    rm -rf "$probe"
    export RUSTC_WORKSPACE_WRAPPER="$driver"
    export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
}

LINT_IN_BUILD=0
if want lint && command -v cargo >/dev/null; then
    run_check "cargo fmt" cargo fmt --all -- --check
    if clippy_in_build; then
        LINT_IN_BUILD=1
    else
        run_check "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
    fi
fi

BUILD_OK=1
if want build || want cargo || want browser || want aiortc || want netem || want bench; then
    if ! command -v cargo >/dev/null; then
        BUILD_OK=0
    elif [ $LINT_IN_BUILD -eq 1 ]; then
        run_check "cargo build + clippy -D warnings" cargo build --workspace --all-targets || BUILD_OK=0
    else
        run_check "cargo build" cargo build --workspace --all-targets || BUILD_OK=0
    fi
elif [ $LINT_IN_BUILD -eq 1 ]; then
    run_check "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
fi

# The fuzz targets build (release, sanitizer coverage: minutes of CPU) in
# the background at the lowest priority while the suites run: those mostly
# wait on the network and leave a core idle, and `nice` keeps the build from
# taking CPU they want.
FUZZ_BUILD_PID=
FUZZ_BUILD_LOG=$ROOT/target/fuzz-build.log
if want fuzz; then
    mkdir -p "$ROOT/target"
    setsid nice -n 19 "$ROOT/scripts/fuzz.sh" --build-only >"$FUZZ_BUILD_LOG" 2>&1 &
    FUZZ_BUILD_PID=$!
    # Its own process group (setsid), so the whole build stops with us.
    trap '[ -n "$FUZZ_BUILD_PID" ] && kill -CONT -- "-$FUZZ_BUILD_PID" 2>/dev/null && kill -- "-$FUZZ_BUILD_PID" 2>/dev/null' EXIT
fi

# Pauses (STOP) or resumes (CONT) the background fuzz build. The Chromium
# suite pauses it: browsers that render and encode video in real time were
# slowed by it even at the lowest priority (134 s -> 205 s), the other
# suites were not.
fuzz_build_signal() {
    [ -n "$FUZZ_BUILD_PID" ] && kill "-$1" -- "-$FUZZ_BUILD_PID" 2>/dev/null
    return 0
}

if want cargo; then
    if [ $BUILD_OK -eq 1 ]; then
        # In a namespace with only loopback too (as root: sudo would drop
        # the build's environment): the cluster tests' noom processes and
        # redis-server then cannot reach or be reached from anything else.
        if [ "$(id -u)" -eq 0 ]; then
            run_suite "cargo test" in_loopback_netns cargo test --workspace --no-fail-fast
        else
            run_suite "cargo test" cargo test --workspace --no-fail-fast
        fi
    else
        suite_not_run "cargo test" "build failed"
    fi
else
    suite_skipped "cargo test"
fi

# ----------------------------------------------------------------- end to end

mkdir -p "$NOOM_ARTIFACTS_DIR"
await_setup

if want browser; then
    if [ $BUILD_OK -ne 1 ]; then
        suite_not_run "browser (Chromium)" "build failed"
    elif [ $BROWSER_SETUP -ne 1 ]; then
        suite_not_run "browser (Chromium)" "setup failed"
    else
        fuzz_build_signal STOP
        run_suite "browser (Chromium)" in_loopback_netns \
            timeout --kill-after=30 "$SUITE_TIMEOUT" \
            node --test "$BROWSER_DIR"/*.test.mjs
        fuzz_build_signal CONT
    fi
else
    suite_skipped "browser (Chromium)"
fi

if want aiortc; then
    if [ $BUILD_OK -ne 1 ]; then
        suite_not_run "aiortc" "build failed"
    elif [ $AIORTC_SETUP -ne 1 ]; then
        suite_not_run "aiortc" "setup failed"
    else
        run_suite "aiortc" in_loopback_netns \
            timeout --kill-after=30 "$SUITE_TIMEOUT" \
            "$VENV/bin/python" -m pytest "$AIORTC_DIR" -v
    fi
else
    suite_skipped "aiortc"
fi

if want netem; then
    if [ $BUILD_OK -ne 1 ]; then
        suite_not_run "netem" "build failed"
    elif [ $AIORTC_SETUP -ne 1 ]; then
        suite_not_run "netem" "setup failed"
    else
        # Makes its own namespaces (ip netns), so not inside in_loopback_netns.
        run_suite "netem (10 % loss, namespaces)" \
            timeout --kill-after=30 300 env NOOM_PYTHON="$VENV/bin/python" \
            "$ROOT/tests/netem/run.sh"
        run_suite "netem (bandwidth estimate toward a 500 kbit/s subscriber)" \
            timeout --kill-after=30 180 env NOOM_PYTHON="$VENV/bin/python" \
            BOT_BIN="$TARGET_DIR/debug/examples/bot" "$ROOT/tests/netem/bwe.sh"
    fi
else
    suite_skipped "netem"
fi

if want bench; then
    if [ $BUILD_OK -ne 1 ]; then
        suite_not_run "bench (noom-load --quick)" "build failed"
    else
        run_suite "bench (noom-load --quick)" in_loopback_netns \
            env NOOM_BIN="$NOOM_BIN" timeout --kill-after=10 120 \
            "$TARGET_DIR/debug/noom-load" --quick
    fi
else
    suite_skipped "bench (noom-load --quick)"
fi

# Several nodes over one Redis: chat and media cross nodes (issue #14).
if want bench; then
    if [ $BUILD_OK -ne 1 ]; then
        suite_not_run "bench cluster (noom-load cluster --quick)" "build failed"
    else
        run_suite "bench cluster (noom-load cluster --quick)" in_loopback_netns \
            env NOOM_BIN="$NOOM_BIN" timeout --kill-after=10 120 \
            "$TARGET_DIR/debug/noom-load" cluster --quick
    fi
else
    suite_skipped "bench cluster (noom-load cluster --quick)"
fi

# Waits for the background build, then fuzzes each target for its budget.
fuzz_after_build() {
    local rc=0
    wait "$FUZZ_BUILD_PID" || rc=$?
    FUZZ_BUILD_PID=
    cat "$FUZZ_BUILD_LOG"
    if [ $rc -ne 0 ]; then
        echo "building the fuzz targets failed (exit $rc)" >&2
        return $rc
    fi
    timeout --kill-after=30 1800 "$ROOT/scripts/fuzz.sh" --no-build
}

if want fuzz; then
    run_suite "fuzz (libFuzzer, ${FUZZ_SECONDS:-10} s per target)" fuzz_after_build
fi

# ----------------------------------------------------------------- summary

printf '\n==> summary (artifacts: %s)\n' "$NOOM_ARTIFACTS_DIR"
[ ${#CHECK_LINES[@]} -gt 0 ] && printf '%s\n' "${CHECK_LINES[@]}"
[ $SETUP_OK -eq 1 ] || echo "  FAILED  installing Debian packages"
want browser && [ $BROWSER_SETUP -ne 1 ] && echo "  FAILED  browser test setup (npm ci / Node.js)"
want aiortc && [ $AIORTC_SETUP -ne 1 ] && echo "  FAILED  aiortc test setup (venv / pip)"
printf '%s\n' "${SUITE_LINES[@]}"

line="$SUITES_PASSED passed, $SUITES_FAILED failed"
[ $SUITES_SKIPPED -gt 0 ] && line="$line, $SUITES_SKIPPED skipped"
[ ${#CHECKS_FAILED[@]} -gt 0 ] && line="$line; checks failed: $(IFS=,; echo "${CHECKS_FAILED[*]}")"
echo "$line"

if [ $SUITES_FAILED -gt 0 ] || [ ${#CHECKS_FAILED[@]} -gt 0 ]; then
    exit 1
fi
exit 0
