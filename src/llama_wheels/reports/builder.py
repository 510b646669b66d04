"""What every report generator does the same way: build its wheels through the pipeline (each into its own
directory: wheels of one release share a file name), run the emulated matrix on them, describe the wheels and
CPUs it judged, and write its files atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_wheels.config import Config
from llama_wheels.config.cpus import Cpu
from llama_wheels.core.cache import Cache, atomic_path, sha256_file
from llama_wheels.judges.matrix import Cell, Report, run_matrix, wheel_labels
from llama_wheels.pipeline import build_targets


@dataclass(frozen=True)
class Build:
    """One wheel a report compares: its role in the report, the pin and target it is built from."""

    role: str
    pin: str
    target: str
    what: str


def build_wheels(config: Config, cache: Cache, dist: Path, builds: Sequence[Build]) -> dict[str, Path]:
    """Each build's wheel (built, repaired; cached builds are reused), in ``dist/<role>/``."""
    return {b.role: build_targets(config, [b.target], b.pin, dist=dist / b.role, cache=cache,
                                  verifier=None)[0].wheel
            for b in builds}


def run_by_role(config: Config, cache: Cache, cpus: Sequence[Cpu], wheels: Mapping[str, Path], *,
                jobs: int | None = None) -> tuple[Report, dict[str, dict[str, Cell]]]:
    """The matrix on every wheel and CPU, and its cells by the wheel's role and the CPU's name."""
    labels = wheel_labels(list(wheels.values()))
    roles = {labels[w]: role for role, w in wheels.items()}
    report = run_matrix(list(wheels.values()), cpus, root=config.root, cache=cache, jobs=jobs)
    cells: dict[str, dict[str, Cell]] = {role: {} for role in wheels}
    for cell in report.cells:
        cells[roles[cell.wheel]][cell.cpu] = cell
    return report, cells


def describe_wheels(builds: Sequence[Build], wheels: Mapping[str, Path], *, sizes: bool = False
                    ) -> dict[str, dict[str, Any]]:
    """What each built wheel is, for the report's data (``sizes``: with its size in bytes)."""
    return {b.role: {"pin": b.pin, "target": b.target, "what": b.what, "wheel": wheels[b.role].name,
                     **({"bytes": wheels[b.role].stat().st_size} if sizes else {}),
                     "sha256": sha256_file(wheels[b.role])}
            for b in builds if b.role in wheels}


def describe_cpus(cpus: Sequence[Cpu]) -> dict[str, dict[str, str]]:
    return {c.name: {"description": c.description, "features": c.features.summary()} for c in cpus}


def write_texts(texts: Sequence[tuple[Path, str]]) -> None:
    """Each text to its path, atomically, world-readable (a report is a committed file)."""
    for path, text in texts:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text)
            tmp.chmod(0o644)
