#!/usr/bin/env bash
# Builds the Debian package from the release binary and checks it with lintian.
# Usage: bash scripts/deb.sh        (after `cargo build --release -p ipsla`; builds it if missing)
# Writes target/debian/ipsla_VERSION_ARCH.deb. Needs cargo-deb (installed here when missing) and,
# for the check, lintian (apt); the tags lintian may still print are justified in docs/install.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0

[ -x target/release/ipsla ] || cargo build --release -p ipsla
if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install --locked cargo-deb
fi

# what the package installs besides the binary: manual pages and completions from the binary's
# own definitions, and the units pointing at the packaged binary instead of /usr/local/bin
assets=target/release/deb-assets
rm -rf "$assets"
target/release/ipsla generate "$assets"
gzip -9n "$assets"/man/*  # Debian policy 12.1: manual pages compressed, no timestamp
mkdir -p "$assets/units"
for unit in ipsla-agent ipsla-responder; do
  sed 's#/usr/local/bin/ipsla#/usr/bin/ipsla#g' "dist/$unit.service" >"$assets/units/$unit.service"
done

# --no-build: the release build above is the one shipped (stripped by cargo-deb)
deb=$(cargo deb -p ipsla --no-build --strip | tail -n 1)
echo "package: $deb"

if command -v lintian >/dev/null 2>&1; then
  # the tags that remain are expected and justified in docs/install.md ("What lintian says")
  lintian --fail-on error,warning --suppress-tags-from-file dist/deb/lintian-accepted "$deb"
else
  echo "lintian not installed (apt-get install lintian): package not checked"
fi
