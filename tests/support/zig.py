"""Binaries compiled here with the pinned zig (its cache shared with the builds): one-function Mach-O dylibs,
and the environment every zig call of the tests gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from llama_wheels.config.platforms import platform
from llama_wheels.core.cache import Cache

MACOS = platform("macos-arm64")
TAG = "py3-none-macosx_11_0_arm64"


def zig_env() -> dict[str, str]:
    zig_cache = str(Cache.from_env().zig)
    return {**os.environ, "ZIG_GLOBAL_CACHE_DIR": zig_cache, "ZIG_LOCAL_CACHE_DIR": zig_cache}


def zig_dylib(out: Path, *, target: str = "aarch64-macos.11.0", links: tuple[Path, ...] = (),
              install_name: str | None = None, rpath: str | None = "@loader_path", text: str = "") -> Path:
    """A one-function dylib (returning ``text`` if given) compiled with the pinned zig (cache shared).

    ``-g0``: no debug map, whose stabs would name the object files' (build) paths, as in the real build.
    """
    src = out.with_suffix(".c")
    body = f"return {json.dumps(text)};" if text else "return \"\";"
    src.write_text(f"const char *{out.stem.replace('-', '_')}(void) {{ {body} }}\n")
    args = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-g0", "-shared", "-o", str(out),
            str(src), f"-Wl,-install_name,{install_name or '@rpath/' + out.name}"]
    if rpath:
        args.append(f"-Wl,-rpath,{rpath}")
    for lib in links:
        args += [f"-L{lib.parent}", f"-l{lib.stem.removeprefix('lib')}"]
    subprocess.run(args, check=True, capture_output=True, env=zig_env(), timeout=600)
    return out


def wheel_of(tmp_path: Path, files: dict[str, Path], tag: str = TAG) -> Path:
    wheel = tmp_path / f"llama_cpp_python-0.0.1-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, path in files.items():
            archive.write(path, name)
        archive.writestr("llama_cpp_python-0.0.1.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return wheel
