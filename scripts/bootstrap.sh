#!/usr/bin/env bash
# Install what llama-wheels needs on a fresh Debian/Ubuntu machine, idempotently:
#   Debian: qemu-user-static (emulated ARM test bed), ccache, git, python3-venv
#   PyPI:   this project and its pinned tools (zig, scikit-build-core, cmake, ninja, auditwheel, ...)
#           into .venv/ of this checkout.
# Sourced by scripts/build.sh and scripts/test.sh; prints where the venv is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v qemu-aarch64-static >/dev/null || need_apt+=(qemu-user-static)
command -v ccache >/dev/null || need_apt+=(ccache)
command -v git >/dev/null || need_apt+=(git)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
python3 -c "import ensurepip, venv" 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "bootstrap: apt-get install ${need_apt[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp=.venv/.llama-wheels-installed
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: creating .venv with the pinned tools from PyPI" >&2
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
