"""The parts of a pin's sdist that pin intake reads (the files the patch series touches, the CMake declarations,
the vendored commit, ggml's variant list and repack source), each sdist unpacked once per run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llama_wheels.config import Pin
from llama_wheels.core.cache import Cache
from llama_wheels.stages.fetch import fetch_sdist
from llama_wheels.stages.patching import unpack_sdist

GGML_CMAKE = "vendor/llama.cpp/ggml/src/CMakeLists.txt"


# Where ggml chooses a weight's repacked layout (repack.cpp since mid 2025, ggml-cpu-aarch64.cpp before).
GGML_REPACK = ("vendor/llama.cpp/ggml/src/ggml-cpu/repack.cpp",
               "vendor/llama.cpp/ggml/src/ggml-cpu/ggml-cpu-aarch64.cpp")


# The parts of an sdist the checks read (besides the files the patch series touches): CMake declarations,
# the vendored commit (submodule metadata, CHANGELOG), ggml's variant list.
_SUBMODULE_META = (".git/modules/vendor/llama.cpp/HEAD", ".git/modules/vendor/llama.cpp/packed-refs",
                   "vendor/llama.cpp/.git", "CHANGELOG.md")


def _extract(sdist: Path, version: str, dest: Path, touched: set[str]) -> Path:
    """The parts of the sdist the checks read, unpacked into ``dest``."""
    def wanted(rel: str) -> bool:
        return (rel in touched or rel in _SUBMODULE_META or rel in GGML_REPACK
                or rel.endswith(("CMakeLists.txt", ".cmake"))
                or rel.startswith(".git/modules/vendor/llama.cpp/refs/"))

    dest.mkdir(parents=True)
    unpack_sdist(sdist, version, dest, wanted)
    return dest


@dataclass
class Sources:
    """Each sdist unpacked (only what the checks read) once per run, in one temp directory."""

    cache: Cache
    root: Path
    trees: dict[tuple[str, str], Path] = field(default_factory=dict)

    def tree(self, pin: Pin, touched: set[str]) -> Path:
        key = (pin.sdist_sha256, ",".join(sorted(touched)))
        if key not in self.trees:
            self.trees[key] = _extract(fetch_sdist(pin, self.cache), pin.version,
                                       self.root / f"tree-{len(self.trees)}", touched)
        return self.trees[key]

    def copy(self, tree: Path) -> Path:
        dest = self.root / f"copy-{len(list(self.root.iterdir()))}"
        shutil.copytree(tree, dest, symlinks=True)
        return dest


@contextmanager
def open_sources(cache: Cache) -> Iterator[Sources]:
    with tempfile.TemporaryDirectory(prefix="llama-wheels-pin-") as tmp:
        yield Sources(cache, Path(tmp))
