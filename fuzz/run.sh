#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20), starting from its corpus in
# fuzz/corpus/<target> (the committed seed-* files plus whatever earlier local runs added; only
# seed-* files are tracked). Exits non-zero if any target crashes or fails to build; a crashing
# input is left in fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh [SECONDS]
#   bash fuzz/run.sh --runs N [TARGET ...]   the long run: each target (default all) until it has
#                                            executed N inputs (at most 12 h each)
#
# Needs the nightly toolchain (fuzz/rust-toolchain.toml selects it); installs cargo-fuzz when it
# is missing.
set -uo pipefail

usage() {
    echo "usage: bash fuzz/run.sh [SECONDS] | --runs N [TARGET ...]   (positive integers; SECONDS default 20)" >&2
    exit 2
}
runs=
if [[ "${1:-}" == "--runs" ]]; then
    runs="${2:-}"
    [[ "$runs" =~ ^[1-9][0-9]*$ ]] || usage
    shift 2
    limits=(-runs="$runs" -max_total_time=43200)
    label="$runs runs"
else
    secs="${1:-20}"
    [[ "$secs" =~ ^[1-9][0-9]*$ ]] || usage
    shift $(($# > 0 ? 1 : 0))
    limits=(-max_total_time="$secs")
    label="${secs}s"
fi

cd "$(dirname "${BASH_SOURCE[0]}")" || exit 2

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked || exit 2
fi

targets=(control_v1 control_v2 probe responder icmp icmp_error twamp_control twamp_test twamp_client twamp_server twamp_reflector stamp stamp_reflector config source_ops dns_answer agentx)
if [[ -n "$runs" && $# -gt 0 ]]; then
    targets=("$@")
fi

echo "fuzz/run.sh: building ${targets[*]}"
cargo fuzz build || { echo "fuzz/run.sh: build failed" >&2; exit 1; }

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="target/fuzz-$t.log"
    before="$(ls -1 "artifacts/$t" 2>/dev/null)"
    echo "=== $t: $label"
    if cargo fuzz run "$t" -- "${limits[@]}" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log"
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log"
    else
        failed+=("$t")
        echo "!!! $t FAILED (full log: fuzz/$log)"
        if ! grep -m 3 -A 3 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$log"; then
            tail -n 40 "$log"
        fi
        while read -r a; do
            [[ -n "$a" ]] || continue
            grep -qxF "$a" <<<"$before" && continue
            echo "    artifact: fuzz/artifacts/$t/$a"
            echo "    hex: $(od -An -v -tx1 "artifacts/$t/$a" | tr -d ' \n' | cut -c1-2048)"
        done < <(ls -1 "artifacts/$t" 2>/dev/null)
    fi
done

if ((${#failed[@]})); then
    echo "fuzz/run.sh: crashes or failures in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} targets ran $label each without a crash"
