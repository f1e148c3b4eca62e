#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS_PER_TARGET seconds (default 30), one after
# the other, and ends with `fuzz: N passed, M failed` (one count per target). Exits non-zero
# when a target found a crash; its reproducer's path is printed (fuzz/artifacts/<target>/...).
#
# Works from nothing: cargo-fuzz is installed with `cargo install --locked` into
# $LS_TEST_CACHE/cargo-bin (default /var/cache/lightningstream-tests), so later runs skip that.
# Only a stable toolchain is needed: cargo fuzz builds with -Zsanitizer=address, which stable
# rustc accepts under RUSTC_BOOTSTRAP=1. The first build of the targets takes several minutes.
#
# Each target starts from its committed seeds (fuzz/corpus/<target>, read only) plus what earlier
# runs on this machine found (fuzz/target/corpus/<target>, where new inputs are written), so the
# work tree stays clean and repeated runs keep going deeper.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

secs=${1:-30}
if ! [[ $secs =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

CACHE=${LS_TEST_CACHE:-/var/cache/lightningstream-tests}
export PATH="$CACHE/cargo-bin/bin:$PATH"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz into $CACHE/cargo-bin"
    mkdir -p "$CACHE/cargo-bin"
    cargo install cargo-fuzz --debug --locked --root "$CACHE/cargo-bin"
fi

# LS_FUZZ_TARGETS="a b" limits the run to those targets.
targets=${LS_FUZZ_TARGETS:-$(cargo fuzz list)}
echo "== cargo fuzz build ($(echo $targets))"
cargo fuzz build

logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
passed=0
failed=0
for t in $targets; do
    work="$root/fuzz/target/corpus/$t"
    mkdir -p "$work"
    log="$logdir/$t.log"
    echo "== fuzzing $t for ${secs}s"
    status=0
    # The outer timeout only guards against a fuzzer that does not stop by itself.
    timeout --signal=INT --kill-after=30 $((secs + 300)) \
        cargo fuzz run "$t" "$work" "$root/fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=60 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    if [ "$status" = 0 ]; then
        passed=$((passed + 1))
        echo "fuzz target $t: ok  ${summary:-"(no DONE line)"}"
    else
        failed=$((failed + 1))
        echo "fuzz target $t: FAILED (exit $status)"
        # The panic or sanitizer report, then where the input was saved.
        grep -E -A12 "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | head -n 40 || true
        grep -E "Test unit written to|Reproduce with|^Minimize test case with" "$log" || tail -n 30 "$log"
        grep -oE "Test unit written to .*" "$log" | sed "s|^Test unit written to |fuzz: crash artifact: |"
    fi
done

echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
