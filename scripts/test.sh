#!/usr/bin/env bash
# The test suite, by tier (a test's folder under tests/ gives its markers: tests/conftest.py; extra arguments go
# to pytest):
#   scripts/test.sh          the full suite (what .ci/run runs): unit tests, real builds of the shipped
#                            targets from the pinned sdists, the emulated ARM runs
#   scripts/test.sh --fast   the offline tier: no build, no qemu, no download (run without a network
#                            where this machine can: `unshare -n`, as root), about a minute
#   scripts/test.sh --bench  the benchmarks: the x86_64 wheels built and run natively (not published), the
#                            instruction-counting qemu (built from Debian's source) and the ARM counts
#   scripts/test.sh --extended  `pin add` of the newest unpinned release, compiled from nothing, built,
#                            audited and run on every emulated CPU class; the musl wheel, the emulated
#                            musl Python and the musl wheel in it; the long fuzzing
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tier="full"
case "${1:-}" in
  --fast) tier="fast"; shift ;;
  --bench) tier="bench"; shift ;;
  --extended) tier="extended"; shift ;;
esac

scripts/bootstrap.sh || exit 1
case "$tier" in
  full) marks="not bench and not extended" ;;
  fast) marks="not build and not emulated and not network and not bench and not extended" ;;
  bench) marks="bench" ;;
  extended) marks="extended" ;;
esac
pytest=(.venv/bin/python -m pytest -m "$marks" "$@")
# The slowest tests of the tiers that build or emulate, in every log (the 60-minute budget of the full tier)
[ "$tier" = fast ] || pytest+=(--durations=30)
if [ "$tier" = fast ] && [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
  # Proof that the tier is offline: a network namespace with nothing but loopback.
  echo "test.sh: the fast tier runs without a network (unshare -n)" >&2
  unshare -n sh -c 'ip link set lo up 2>/dev/null || true; exec "$@"' sh "${pytest[@]}"
else
  "${pytest[@]}"
fi
status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
