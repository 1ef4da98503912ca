#!/usr/bin/env bash
# The .deb's units started by a real systemd, as on a newcomer's host: this machine's own root
# file system is booted read-only in a container (systemd-nspawn --volatile=overlay: writes go to
# a tmpfs, the host is not changed) with only a loopback network; inside it the package is
# installed, /etc/ipsla/agent.toml edited, `systemctl start ipsla-agent` run, and the agent must
# measure as the unit's dynamic user with the unit's sandbox; then ipsla-responder.service the same
# way; then the package is purged and the container powered off.
# Usage: bash scripts/unit-check.sh target/debian/ipsla_VERSION_ARCH.deb   (root, systemd-container)
set -euo pipefail
deb=$(realpath "${1:?usage: scripts/unit-check.sh PACKAGE.deb}")
if [ "$(id -u)" != 0 ] || ! command -v systemd-nspawn >/dev/null 2>&1 || [ ! -x /lib/systemd/systemd ]; then
  echo "skipped: booting the units needs root, systemd-nspawn (apt systemd-container) and systemd"
  exit 0
fi

work=$(mktemp -d /tmp/ipsla-unit-check.XXXXXX)
root="$work/root"
log="$work/boot.log"
mkdir -p "$root"
nspawn_pid=
cleanup() {
  set +e
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    kill -TERM "$nspawn_pid"  # nspawn asks the container's systemd to power off
    for _ in $(seq 1 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
  fi
  umount "$root" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# the host's root, read-only, without the file systems mounted on it (nspawn mounts its own)
mount --bind / "$root"
mount -o remount,bind,ro "$root"

# Booted to basic.target: the host's own services (databases, exporters) stay off in the
# container; the units under test are started by hand, as an admin would.
systemd-nspawn --quiet --directory="$root" --volatile=overlay --private-network \
  --link-journal=no --register=no --keep-unit --machine=ipsla-unit-check \
  --bind-ro="$deb:/opt/ipsla-unit-check.deb" \
  --boot -- systemd.unit=basic.target >"$log" 2>&1 &
nspawn_pid=$!

# the container's init is the nspawn child running systemd
init=
for _ in $(seq 1 100); do
  for c in $(pgrep -P "$nspawn_pid" || true) $(pgrep -P "$(pgrep -P "$nspawn_pid" | head -n 1)" 2>/dev/null || true); do
    if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ]; then init=$c; break 2; fi
  done
  kill -0 "$nspawn_pid" 2>/dev/null || break
  sleep 0.1
done
# A host that cannot boot a container at all (no cgroup access, nested sandbox) is not a defect of
# the package: say so loudly and stop; every failure after the boot is one.
if [ -z "$init" ]; then
  echo "skipped: this host cannot boot a systemd container; systemd-nspawn said:"
  cat "$log"
  exit 0
fi
inside() { nsenter --target "$init" --mount --uts --ipc --net --pid -- "$@"; }

# systemd answers once its manager is up; "degraded" is fine (host units that need hardware)
state=
for _ in $(seq 1 300); do
  state=$(inside systemctl is-system-running 2>/dev/null || true)
  case "$state" in running | degraded) break ;; esac
  sleep 0.2
done
case "$state" in running | degraded) ;; *) echo "skipped: the container's systemd is '$state' after 60 s:"; cat "$log"; exit 0 ;; esac
echo "container booted (systemd: $state)"

echo "install"
inside dpkg -i /opt/ipsla-unit-check.deb >/dev/null
if [ "$(inside systemctl is-active ipsla-agent || true)" = active ]; then
  echo "installing started ipsla-agent.service: it must not measure anything on its own"
  exit 1
fi

echo "edit /etc/ipsla/agent.toml: one operation to the agent's own responder"
inside sh -c 'cat >>/etc/ipsla/agent.toml' <"$(dirname "$0")/check-operation.toml"
inside ipsla agent --check --config /etc/ipsla/agent.toml

echo "systemctl start ipsla-agent"
if ! inside systemctl start ipsla-agent; then
  inside systemctl status --no-pager ipsla-agent || true
  inside journalctl --no-pager -u ipsla-agent || true
  exit 1
fi
ok=
for _ in $(seq 1 150); do
  if inside ipsla show summary 2>/dev/null | grep -q '^\*1 .*udp-echo .*127\.0\.0\.1 .*OK'; then ok=1; break; fi
  sleep 0.2
done
if [ -z "$ok" ]; then
  echo "the agent started by systemd did not measure; its journal:"
  inside journalctl --no-pager -u ipsla-agent || true
  exit 1
fi
inside ipsla show summary
# the unit's promises: Type=notify reached READY, a dynamic non-root user, state where it says
pid=$(inside systemctl show -P MainPID ipsla-agent)
user=$(inside ps -o user= -p "$pid")
if [ "$user" = root ] || [ -z "$user" ]; then echo "the agent runs as '$user', not as the unit's dynamic user"; exit 1; fi
inside test -s /var/lib/ipsla/agent.db || { echo "no store at /var/lib/ipsla/agent.db"; exit 1; }
inside bash -c 'exec 3<>/dev/tcp/127.0.0.1/9167 && printf "GET /-/healthy HTTP/1.0\r\n\r\n" >&3 && head -n 1 <&3' | grep -q ' 200 ' \
  || { echo "/-/healthy did not answer 200"; exit 1; }
echo "ipsla-agent.service: active, as $user, store in /var/lib/ipsla, /-/healthy 200"
echo "systemctl reload ipsla-agent"
inside systemctl reload ipsla-agent
[ "$(inside systemctl show -P MainPID ipsla-agent)" = "$pid" ] || { echo "a reload restarted the agent"; exit 1; }
inside systemctl stop ipsla-agent

# a host whose sandbox forbids capset (an older copy of the unit) gets the failure named, with the fix
echo "a unit that forbids capset: the error names the filter and the line that allows it"
inside mkdir -p /run/systemd/system/ipsla-agent.service.d
inside sh -c 'printf "[Service]\nSystemCallFilter=~capset\nRestart=no\n" >/run/systemd/system/ipsla-agent.service.d/deny-capset.conf'
inside systemctl daemon-reload
if inside systemctl start ipsla-agent 2>/dev/null; then echo "the agent started although capset is forbidden"; exit 1; fi
inside journalctl --no-pager -o cat -u ipsla-agent | grep -F 'allow it with `SystemCallFilter=capset`' \
  || { echo "the journal does not name the seccomp filter:"; inside journalctl --no-pager -u ipsla-agent | tail -n 5; exit 1; }
inside rm -r /run/systemd/system/ipsla-agent.service.d
inside systemctl daemon-reload
inside systemctl reset-failed ipsla-agent

echo "systemctl start ipsla-responder"
if ! inside systemctl start ipsla-responder; then
  inside journalctl --no-pager -u ipsla-responder || true
  exit 1
fi
inside ipsla responder --status --status-socket /run/ipsla-responder/status.sock | grep -q 'Responder is: Enabled' \
  || { echo "the responder started by systemd has no status at /run/ipsla-responder/status.sock"; inside journalctl --no-pager -u ipsla-responder; exit 1; }
inside ipsla probe udp-echo 127.0.0.1 -q --timeout 1s >/dev/null \
  || { echo "the responder started by systemd did not answer a probe"; exit 1; }
echo "ipsla-responder.service: active, status socket answers, a probe is answered"
inside systemctl stop ipsla-responder

echo "purge"
inside dpkg --purge ipsla >/dev/null
if inside test -e /usr/bin/ipsla || inside test -e /etc/ipsla; then echo "the purge left files behind"; exit 1; fi
echo "unit check: installed, started by systemd, measured, reloaded, stopped, purged"
