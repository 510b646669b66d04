#!/usr/bin/env bash
# One command from a fresh clone to a tested wheel: bootstrap, then fetch -> prepare -> build ->
# repair -> verify (under qemu) the default target (or the targets given) into dist/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh
exec .venv/bin/llama-wheels build "$@"
