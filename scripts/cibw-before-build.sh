#!/bin/sh
# cibuildwheel before-build hook (named by the generated cibuildwheel.toml). Runs with the build Python
# on PATH -- inside the manylinux2014 container on Linux. Installs llama-wheels with its locked tools
# (ziglang, scikit-build-core, cmake, ninja) into that Python, then writes the job's CMake settings
# ($LLAMA_WHEELS_TARGET; see src/llama_wheels/release/hooks.py).  Usage: cibw-before-build.sh PROJECT PACKAGE
set -eu
project=$1
package=$2
# the dependencies by hash from the lock (llama-wheels lock), binary wheels only (a source build of a locked tool
# in the container would compile with whatever it finds), then the project without resolving anything
python -m pip install --require-hashes --only-binary :all: -r "$project/requirements/ci.txt"
python -m pip install --no-deps --no-build-isolation "$project"
exec python -m llama_wheels --config "$project" --log "$project/.cibw/logs/before-build.log" \
  ci before-build --project "$project" --package "$package"
