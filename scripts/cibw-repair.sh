#!/bin/sh
# cibuildwheel repair-wheel-command (named by the generated cibuildwheel.toml): auditwheel (Linux) or
# delocate (macOS), then the checks a local build makes.  Usage: cibw-repair.sh WHEEL DEST_DIR PROJECT
set -eu
exec python -m llama_wheels --config "$3" --log "$3/.cibw/logs/repair.log" ci repair "$1" --dest "$2"
