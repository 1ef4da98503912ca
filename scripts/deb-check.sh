#!/usr/bin/env bash
# A newcomer's path through the .deb, as CI proves it: install it, edit the one file, start the
# agent as its unit does, see it measure (`ipsla show summary`), read `man ipsla`, then purge and
# find nothing left behind. Root and dpkg only; a host that already has ipsla installed is left
# alone. Usage: bash scripts/deb-check.sh target/debian/ipsla_VERSION_ARCH.deb
set -euo pipefail
deb=${1:?usage: scripts/deb-check.sh PACKAGE.deb}
if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null 2>&1; then
  echo "skipped: installing a package needs root and dpkg"
  exit 0
fi
if dpkg -s ipsla >/dev/null 2>&1; then
  echo "skipped: ipsla is already installed on this host; not touching it"
  exit 0
fi

snapshot() { find /etc /usr/bin /usr/share/man /usr/share/doc /var/lib /run -xdev 2>/dev/null | grep -v -e '^/var/lib/dpkg' -e '^/var/lib/apt' -e '^/run/' -e '^/var/lib/systemd' -e '^/etc/ld.so.cache' -e '^/usr/share/man/index' -e '^/var/lib/man-db' | sort || true; }
before=$(mktemp) after=$(mktemp)
snapshot >"$before"
agent_pid=
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  dpkg --purge ipsla >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "install"
dpkg -i "$deb" >/dev/null
if [ "$(systemctl is-enabled ipsla-agent 2>/dev/null || true)" = enabled ]; then
  echo "the install enabled ipsla-agent.service: it must not start measuring on its own"
  exit 1
fi
man -w ipsla | grep -q '/usr/share/man/man1/ipsla.1.gz'
man -w 5 ipsla-agent.toml | grep -q '/usr/share/man/man5/ipsla-agent.toml.5.gz'
MANWIDTH=80 man ipsla-agent.toml 2>/dev/null | grep -q 'udp-jitter'

echo "edit /etc/ipsla/agent.toml: one operation to the agent's own responder"
cat >>/etc/ipsla/agent.toml <"$(dirname "$0")/check-operation.toml"
ipsla agent --check --config /etc/ipsla/agent.toml

echo "start the agent as ipsla-agent.service does"
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/ipsla-agent.service)
case "$exec_start" in /usr/bin/ipsla\ *) ;; *) echo "unexpected ExecStart: $exec_start"; exit 1 ;; esac
mkdir -p /var/lib/ipsla /run/ipsla
$exec_start >/tmp/ipsla-deb-check.log 2>&1 &
agent_pid=$!
ok=
for _ in $(seq 1 150); do
  if ipsla show summary 2>/dev/null | grep -q '^\*1 .*udp-echo .*127\.0\.0\.1 .*OK'; then ok=1; break; fi
  sleep 0.2
done
if [ -z "$ok" ]; then
  echo "the installed agent did not measure; its log:"
  cat /tmp/ipsla-deb-check.log
  exit 1
fi
ipsla show summary
kill "$agent_pid"
wait "$agent_pid" 2>/dev/null || true
agent_pid=

echo "purge"
dpkg --purge ipsla >/dev/null
rm -f /tmp/ipsla-deb-check.log
snapshot >"$after"
if ! diff "$before" "$after"; then
  echo "the purge left the paths above behind"
  exit 1
fi
echo "package check: installed, configured, measured, documented, purged without a trace"
