#!/usr/bin/env bash
# THE test command (README, "Tests"; .ci/run runs exactly this). As root on a
# fresh Debian 12: installs what is missing, builds, checks format and lints,
# runs every test including the NAT lab end-to-end tests, removes leftover labs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
START=$(date +%s)

step() { printf '\n==> %s (+%ss)\n' "$*" "$(($(date +%s) - START))"; }

# Leftover labs of crashed runs go first; ours go at the end, whatever happens.
finish() {
    local rc=$?
    if [[ $(id -u) == 0 ]]; then ./tests/lab/lab.sh gc || true; fi
    printf '\n==> run-all.sh: %s after %ss\n' "$( ((rc == 0)) && echo PASSED || echo "FAILED (exit $rc)")" \
        "$(($(date +%s) - START))"
    exit $rc
}
trap finish EXIT

if [[ $(id -u) == 0 ]]; then
    step "system packages"
    ./tests/lab/install-deps.sh
    ./tests/lab/lab.sh gc || true
else
    echo "run-all.sh: not root: cannot install packages, and the NAT lab tests will SKIP" >&2
    echo "            (sudo ./tests/run-all.sh runs everything)" >&2
fi

if ! command -v cargo >/dev/null; then
    [[ -f $HOME/.cargo/env ]] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "run-all.sh: cargo not found: install Rust stable (rustup) first" >&2; exit 1; }

step "build"
cargo build --workspace --all-targets
step "format"
cargo fmt --all --check
step "lint"
cargo clippy --workspace --all-targets -- -D warnings
step "the library's dependency tree has no command-line crates"
if cargo tree -p plexus -e normal --prefix none | grep -E '^(clap|clap_mangen|clap_complete|fern) '; then
    echo "run-all.sh: the plexus library depends on a command-line crate (above); only plexus-cli may" >&2
    exit 1
fi
step "docs (the library crates, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p plexus -p plexus-plugin-abi -p plexus-plugin-sdk
step "tests (unit, and end-to-end in the NAT lab)"
# Plain cargo test: the e2e binary starts one lab for all its tests.
TEST_LOG=$(mktemp)
cargo test --workspace 2>&1 | tee "$TEST_LOG"
# cargo's last summary is often a doc-test run with nothing in it: say the total.
awk '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed\n", p, f }' "$TEST_LOG"
rm -f "$TEST_LOG"
