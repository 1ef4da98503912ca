#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20), starting from its corpus in
# fuzz/corpus/<target> (the committed seed-* files plus whatever earlier local runs added; only
# seed-* files are tracked). Exits non-zero if any target crashes or fails to build; a crashing
# input is left in fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh [SECONDS]
#
# Needs the nightly toolchain (fuzz/rust-toolchain.toml selects it); installs cargo-fuzz when it
# is missing.
set -uo pipefail

secs="${1:-20}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bash fuzz/run.sh [SECONDS]   (SECONDS: a positive integer, default 20)" >&2
    exit 2
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

targets=(control_v1 control_v2 probe responder icmp twamp_control twamp_test twamp_client twamp_server twamp_reflector stamp stamp_reflector config source_ops)

echo "fuzz/run.sh: building ${targets[*]}"
cargo fuzz build || { echo "fuzz/run.sh: build failed" >&2; exit 1; }

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="target/fuzz-$t.log"
    before="$(ls -1 "artifacts/$t" 2>/dev/null)"
    echo "=== $t: ${secs}s"
    if cargo fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
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
echo "fuzz/run.sh: ${#targets[@]} targets ran ${secs}s each without a crash"
