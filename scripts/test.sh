#!/usr/bin/env bash
# The whole test suite, with its own set-up. Usage: bash scripts/test.sh
#   FUZZ_SECONDS=N   seconds per fuzz target in the short fuzz run (default 20; 0 skips it)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain (pinned in rust-toolchain.toml)"
rustc --version
cargo --version
# a one-off build gains nothing from incremental state, which is a large share of target/
export CARGO_INCREMENTAL=0
df -h . | tail -n 1 | awk '{print "disk: " $4 " free of " $2}'

# The lab tests (network namespaces, TUN) need root, iproute2 and taskset; the probe tests use
# ping-free ICMP; the anchors smoke run uses irtt when present; the Prometheus test runs its own
# prometheus process (and promtool), the remote-write tests a prometheus and a victoria-metrics; the
# unit files are checked with systemd-analyze and started by systemd in a container (systemd-nspawn); the TWAMP captures are decoded with tshark's
# dissectors; the web pages are loaded in headless Chromium; the dns and http operations ask a local
# dnsmasq; the SNMP subagent is read through a real net-snmp master (snmpd) with snmpwalk/snmpget
# (snmp) and its traps received by snmptrapd. Install
# what is missing when we can (root with apt); without root those tests report themselves skipped.
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
command -v irtt >/dev/null 2>&1 || need+=(irtt)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v tshark >/dev/null 2>&1 || need+=(tshark)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v lintian >/dev/null 2>&1 || need+=(lintian)
[ -x /usr/sbin/dnsmasq ] || command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
# the completions are loaded by the shells they are for
command -v zsh >/dev/null 2>&1 || need+=(zsh)
command -v fish >/dev/null 2>&1 || need+=(fish)
command -v snmpd >/dev/null 2>&1 || [ -x /usr/sbin/snmpd ] || need+=(snmpd)
command -v snmpwalk >/dev/null 2>&1 || need+=(snmp)
command -v snmptrapd >/dev/null 2>&1 || [ -x /usr/sbin/snmptrapd ] || need+=(snmptrapd)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  step "installing ${need[*]}"
  # packages such as prometheus start their service on install; the tests run their own process,
  # so deny service starts for the duration (unless a policy is already in place)
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1) || echo "could not install ${need[*]}; continuing"
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# The STAMP interop tests run against stamp-suite (crates.io); they skip when it is missing.
if ! command -v stamp-suite >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/stamp-suite" ]; then
  step "installing stamp-suite"
  cargo install --locked stamp-suite >/dev/null 2>&1 || echo "could not install stamp-suite; its interop tests will skip"
fi

step "format"
cargo fmt --all --check

step "lint"
cargo clippy --workspace --all-targets -- -D warnings

step "unit, property and loopback tests"
cargo test --workspace

# On a small disk, drop each build once its step is done (the debug tests, the release harnesses
# and the fuzz build each take about 1 GiB): keeps the peak near the largest single build.
low_disk() { [ "$(df --output=avail -k . | tail -n 1)" -lt $((5 * 1024 * 1024)) ]; }
if low_disk; then
  echo "less than 5 GiB free: removing target/debug before the release build"
  rm -rf target/debug
fi

step "benchmark harnesses: build and a short smoke run (no timing assertions)"
cargo build --release -p ipsla -p ipsla-bench
./target/release/schedule 0.2 >/dev/null
./target/release/echo_capacity 0.3 64 1 4 >/dev/null
./target/release/workers 0.3 32 1 >/dev/null
./target/release/anchors 1 >/dev/null
./target/release/agent_scale 200 10 >/dev/null
GROWTH_OUT=$(mktemp -d) ./target/release/growth responder 0.2 >/dev/null
./target/release/remote_write_scale 200 5 >/dev/null
./target/release/lab_error 30 >/dev/null # a few seconds as root; says "skipped" without

# the .deb from the release binary just built (cargo-deb is installed once, then reused), checked
# with lintian; docs/install.md justifies the tags dist/deb/lintian-accepted suppresses
step "Debian package (scripts/deb.sh) and lintian"
if command -v cargo-deb >/dev/null 2>&1 || cargo install --locked cargo-deb >/dev/null 2>&1; then
  bash scripts/deb.sh
  # install, edit the one file, run the agent as its unit does, read the manual, purge: as root
  bash scripts/deb-check.sh "$(ls -t target/debian/ipsla_*.deb | head -n 1)"
  # the same package in a booted container: the units started by a real systemd (scripts/unit-check.sh)
  bash scripts/unit-check.sh "$(ls -t target/debian/ipsla_*.deb | head -n 1)"
else
  echo "could not install cargo-deb; the package is not built"
fi

if [ "${FUZZ_SECONDS:-20}" != "0" ] && low_disk; then
  echo "less than 5 GiB free: removing target/release before the fuzz build"
  rm -rf target/release
fi

if [ "${FUZZ_SECONDS:-20}" != "0" ]; then
  step "fuzz every parser briefly (fuzz/run.sh)"
  bash fuzz/run.sh "${FUZZ_SECONDS:-20}"
fi

step "all tests passed"
