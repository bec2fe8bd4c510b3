#!/usr/bin/env bash
# Installs what a fresh machine lacks, into caches OUTSIDE the checkout, and prints the path of the
# project's virtualenv. Safe to run again: every step is skipped when already done.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${SKILLWARDEN_CACHE:-$HOME/.cache/skillwarden}
mkdir -p "$cache/logs"
say() { echo "[bootstrap] $*" >&2; }

need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v prometheus >/dev/null || need_apt+=(prometheus)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v wrk >/dev/null || need_apt+=(wrk)  # the load generator of bench/ (and its CI ratio check)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing Debian packages: ${need_apt[*]} (log: $cache/logs/apt.log)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"; } \
    >"$cache/logs/apt.log" 2>&1 || { say "apt-get failed; see $cache/logs/apt.log"; exit 1; }
  # The Debian package starts a system-wide Prometheus on :9090; the stack runs its own.
  (systemctl stop prometheus 2>/dev/null || service prometheus stop 2>/dev/null || pkill -x prometheus) >/dev/null 2>&1 || true
fi
command -v go >/dev/null || { say "the Go toolchain is required to build kube-apiserver, opa and helm"; exit 1; }

python=${PYTHON:-python3}
key=$(cat "$here/pyproject.toml" | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -x "$venv/bin/pytest" ]; then
  say "creating virtualenv $venv (log: $cache/logs/pip.log)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools wheel >"$cache/logs/pip.log" 2>&1
  "$venv/bin/pip" install -q -e "$here[dev]" >>"$cache/logs/pip.log" 2>&1 \
    || { say "pip install failed; see $cache/logs/pip.log"; rm -rf "$venv"; exit 1; }
fi
# The venv is shared by checkouts with the same dependencies: point it at this one.
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e "$here" >>"$cache/logs/pip.log" 2>&1 \
  || { say "pip install -e failed; see $cache/logs/pip.log"; exit 1; }
"$venv/bin/python" -c "from skillwarden_devstack.tools import ensure_all; ensure_all()" \
  || { say "building the stack's binaries failed (see the log named above)"; exit 1; }
echo "$venv"
