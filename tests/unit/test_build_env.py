"""The build's environment is an allowlist: nothing of the caller's environment but ``build.INHERITED``
reaches the compiler. Variables such as CPATH change the object code without reaching the provenance
record (the finished-wheel cache key), and zig's own compile cache does not key on them either.

The proof compiles a tiny file with the real zig toolchain shim, through the same environment builder the
build stage uses, while CPATH points at a directory whose header the file includes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llama_wheels.config.platforms import platform
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache
from llama_wheels.stages.build import INHERITED, build_environment
from llama_wheels.stages.toolchain import Toolchain, zig_toolchain

POISON = {
    # each of these changes what the compiler or scikit-build-core does, and none is in the record
    "SKBUILD_CMAKE_DEFINE": "GGML_NATIVE=ON",
    "SKBUILD_CMAKE_BUILD_TYPE": "Debug",
    "SKBUILD_INSTALL_STRIP": "false",
    "CMAKE_ARGS": "-DGGML_NATIVE=ON",
    "CMAKE_PREFIX_PATH": "/nonexistent-poison",
    "CFLAGS": "-O0",
    "C_INCLUDE_PATH": "/nonexistent-poison",
    "CPLUS_INCLUDE_PATH": "/nonexistent-poison",
    "LIBRARY_PATH": "/nonexistent-poison",
    "CCACHE_SLOPPINESS": "include_file_mtime",
    "CCACHE_PREFIX": "/nonexistent-poison/wrapper",
}


def compile_with(toolchain: Toolchain, env: dict[str, str], *, inherit_env: bool, work: Path) -> runner.Outcome:
    source = work / "uses_poison.c"
    source.write_text('#include "poison.h"\nint answer(void) { return POISONED; }\n')
    return runner.probe([toolchain.toolchain_file.parent / "cc", "-c", source, "-o", work / "out.o"],
                        env=env, inherit_env=inherit_env, cwd=work)


def test_the_compiler_does_not_see_cpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poison = tmp_path / "poison-include"
    poison.mkdir()
    (poison / "poison.h").write_text("#define POISONED 42\n")
    monkeypatch.setenv("CPATH", str(poison))
    for name, value in POISON.items():
        monkeypatch.setenv(name, value)
    target = platform("linux-aarch64")
    # each compile with its own zig cache: zig caches a compile without keying on CPATH
    for run in ("allowlisted", "inherited"):
        (tmp_path / run).mkdir()
    toolchain = zig_toolchain(target, Cache(tmp_path / "allowlisted" / "cache"))
    env = build_environment(toolchain, Cache(tmp_path / "allowlisted" / "cache"), tmp_path / "src" / "tree", 1)
    assert not set(env) & {"CPATH", *POISON}
    clean = compile_with(toolchain, env, inherit_env=False, work=tmp_path / "allowlisted")
    assert clean.returncode != 0 and "'poison.h' file not found" in clean.output, clean.output

    # The same compile with the caller's environment inherited (as before the allowlist) sees CPATH: the
    # poison is real and the check above can fail.
    toolchain = zig_toolchain(target, Cache(tmp_path / "inherited" / "cache"))
    leaky = compile_with(toolchain, dict(toolchain.env), inherit_env=True, work=tmp_path / "inherited")
    assert leaky.returncode == 0, leaky.output


def test_only_the_allowlist_and_our_own_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CPATH", "/nonexistent-poison")
    monkeypatch.setenv("CCACHE_BASEDIR", "/nonexistent-poison")  # ours wins
    monkeypatch.setenv("CCACHE_DISABLE", "1")  # allowed: same bytes without ccache (test_reproducible)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")  # the build gets the record's value, not this one
    for name, value in POISON.items():
        monkeypatch.setenv(name, value)
    cache = Cache(tmp_path / "cache")
    toolchain = zig_toolchain(platform("linux-aarch64"), cache)
    env = build_environment(toolchain, cache, tmp_path / "src" / "tree", 1700000000)
    ours = {"_PYTHON_HOST_PLATFORM", "CMAKE_BUILD_PARALLEL_LEVEL", "CCACHE_BASEDIR", "GIT_CEILING_DIRECTORIES",
            "SOURCE_DATE_EPOCH", *toolchain.env}
    assert set(env) <= set(INHERITED) | ours
    assert {name for name in INHERITED if name in os.environ} <= set(env)
    assert env["CCACHE_BASEDIR"] == str(cache.root) and env["SOURCE_DATE_EPOCH"] == "1700000000"
    assert env["CCACHE_DISABLE"] == "1"
    assert "CPATH" not in env and not set(env) & set(POISON)

