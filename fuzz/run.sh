#!/bin/sh
# Runs every fuzz target (or the ones named) for SECONDS each and prints a table of
# executions and crashes; exits 1 if any target crashed.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# Needs nightly Rust and cargo-fuzz (cargo install cargo-fuzz). New corpus entries go to
# fuzz/scratch/corpus/<target>/ (git-ignored); the committed seeds in
# fuzz/corpus/<target>/ are only read. Crash, timeout and out-of-memory inputs go to
# fuzz/artifacts/<target>/: commit a minimized one (cargo +nightly fuzz tmin) as a
# regression input once the defect is fixed. Logs: fuzz/scratch/logs/<target>.log.
# SANITIZER=none skips AddressSanitizer (faster; the Rust code is memory-safe, the C
# code it calls is not).
set -eu

usage() {
    echo "usage: $0 SECONDS [TARGET...]" >&2
    exit 2
}
[ $# -ge 1 ] || usage
secs=$1
shift
case $secs in '' | *[!0-9]*) usage ;; esac

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz_dir")
cd "$root"
sanitizer=${SANITIZER:-address}

if [ $# -eq 0 ]; then
    set -- $(cargo +nightly fuzz list --fuzz-dir "$fuzz_dir")
fi

# One build of every target first, so the timed runs do not include compiling.
cargo +nightly fuzz build --fuzz-dir "$fuzz_dir" -s "$sanitizer" >&2

mkdir -p "$fuzz_dir/scratch/logs"
table=$(mktemp)
trap 'rm -f "$table"' EXIT
failed=0
for t in "$@"; do
    scratch=$fuzz_dir/scratch/corpus/$t
    artifacts=$fuzz_dir/artifacts/$t
    log=$fuzz_dir/scratch/logs/$t.log
    mkdir -p "$scratch" "$artifacts"
    before=$(ls "$artifacts" | grep -cE '^(crash|timeout|oom|leak)-' || true)
    echo "fuzzing $t for ${secs}s (log: ${log#"$root"/})" >&2
    rc=0
    # The first corpus directory is the one libFuzzer writes to; cargo-fuzz sends crash
    # inputs to $artifacts.
    cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" -s "$sanitizer" "$t" \
        "$scratch" "$fuzz_dir/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || rc=$?
    after=$(ls "$artifacts" | grep -cE '^(crash|timeout|oom|leak)-' || true)
    crashes=$((after - before))
    # libFuzzer stops at the first crash; a failure that left no file still counts.
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
    [ "$crashes" -eq 0 ] || failed=1
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=?
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    printf '%-20s %14s %10s %8s\n' "$t" "$execs" "${rate:-?}" "$crashes" >>"$table"
done

printf '%-20s %14s %10s %8s\n' target executions exec/s crashes
cat "$table"
if [ "$failed" -ne 0 ]; then
    echo "some target crashed: see fuzz/artifacts/<target>/ and fuzz/scratch/logs/" >&2
    exit 1
fi
