#!/usr/bin/env bash
# The test suite: unit tests, a real build of the default target from the pinned sdist, and the
# emulated ARM runs. Extra arguments go to pytest (e.g. -m "not build" for the fast part only).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh || exit 1
.venv/bin/python -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
