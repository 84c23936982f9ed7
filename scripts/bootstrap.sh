#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind, and nothing twice:
# the Debian packages of the local servers, uv, and the locked Python environment in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

UV_VERSION=0.13.8
DEB_SERVERS=(redis-server clickhouse-server clickhouse-client)
# Tools the tests run, needed even with external servers: spin model-checks the campaign
# protocol and gcc compiles its verifier (services/promocodes/model).
DEB_TOOLS=(spin gcc)

python_ok() { python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
python_ok || die "Python 3.11 or newer is needed as 'python3' (found: $(python3 --version 2>&1 || echo none)). Install it, e.g. 'apt-get install python3.11', and run this again."

missing=()
for pkg in "${DEB_SERVERS[@]}" "${DEB_TOOLS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
# Redis and ClickHouse are external servers only when REDIS_HOST and CLICKHOUSE_HOST are set.
if ((${#missing[@]})) && [[ -n "${REDIS_HOST:-}" && -n "${CLICKHOUSE_HOST:-}" ]]; then
  say "REDIS_HOST and CLICKHOUSE_HOST are set: not installing the local servers"
  tools=()
  for pkg in "${missing[@]}"; do
    if [[ " ${DEB_TOOLS[*]} " == *" $pkg "* ]]; then tools+=("$pkg"); fi
  done
  missing=("${tools[@]}")
fi
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    die "Debian packages missing: ${missing[*]}. Install them with 'sudo apt-get install -y ${missing[*]}' (or set REDIS_HOST and CLICKHOUSE_HOST to servers you run), then run this again."
  else
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed: check the network access to Debian's package archive."
    # policy-rc.d may forbid starting the services: the local stack starts its own instances.
    apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed (see the output above)."
  fi
else
  say "Debian packages present: ${DEB_SERVERS[*]} ${DEB_TOOLS[*]}"
fi

if ! command -v uv >/dev/null 2>&1 || [[ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]]; then
  say "installing uv $UV_VERSION"
  python3 -m pip install --quiet "uv==$UV_VERSION" || die "could not install uv: 'python3 -m pip install uv==$UV_VERSION' failed."
fi
UV="$(command -v uv)"

stamp=.venv/.installed
if [[ -f $stamp && $stamp -nt requirements.lock && $stamp -nt pyproject.toml ]] && [[ -z "$(find libs services -name pyproject.toml -newer "$stamp" -print -quit)" ]]; then
  say "Python environment .venv is up to date"
else
  say "creating the Python environment in .venv from requirements.lock"
  [[ -x .venv/bin/python ]] || "$UV" venv --quiet --python "$(command -v python3)" .venv
  "$UV" pip sync --quiet --python .venv/bin/python --require-hashes requirements.lock \
    || die "installing the locked Python packages failed (see above)."
  local_packages=(-e . -e libs)
  for svc in services/*/; do local_packages+=(-e "${svc%/}"); done
  "$UV" pip install --quiet --python .venv/bin/python --no-deps --reinstall "${local_packages[@]}" \
    || die "installing the project's own packages failed (see above)."
  touch "$stamp"
fi
say "ready: .venv ($(.venv/bin/python --version))"
