"""``llama-wheels test``: every wheel on every emulated CPU, judged against what the CPU should get.

For each (wheel, CPU) cell the wheel is imported under qemu (a fixed-ISA wheel on a CPU without its
features must refuse with ImportError: verdict ``unsupported``; a signal is a ``crash``), then the
wheel test suite (``wheel_tests/``) runs in the emulated Python with the Q4_0 layout this CPU must
get. That expectation is derived, not tabulated: the CPU's features (build_config/cpus.toml, checked
against qemu) and the wheel's build (its fixed ISA, or the CPU variants the pinned source declares)
go through ggml's selection rules (``llama_wheels.oracle``, the module every judge shares). The variant
scores the wheel itself reports must be the oracle's. Across CPUs, greedy tokens must be identical.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shlex
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llama_wheels import oracle
from llama_wheels.binaries.record import BuiltAs, built_as, read_record
from llama_wheels.binaries.wheel import cpu_variants, fixed_isa, open_wheel, wheel_name
from llama_wheels.config.cpus import Cpu
from llama_wheels.core.cache import Cache, atomic_path
from llama_wheels.core.errors import CommandTimedOut, UserError
from llama_wheels.core.runner import commands_stopped, current_log, telling_line
from llama_wheels.emulation.beds import ensure_bed
from llama_wheels.emulation.guest import reported
from llama_wheels.emulation.qemu import Sysroot, install_wheel, libc_of_wheel, measure_features, run_python

_IMPORT_PROBE = """\
import importlib.util, json
try:
    import llama_cpp
except ImportError as exc:
    print("IMPORT " + json.dumps({"error": str(exc)}))
else:
    if importlib.util.find_spec("llama_cpp.diagnostics") is None:  # a wheel without our patches
        print("IMPORT " + json.dumps({"variant": None, "layout": None, "scores": {}, "fixed_isa": None}))
    else:
        from llama_cpp import diagnostics
        info = diagnostics.collect()
        print("IMPORT " + json.dumps({"variant": info["variant"], "layout": info["q4_0_repack_layout"],
                                      "scores": info["variant_scores"], "fixed_isa": info["fixed_isa"]}))
"""


# Seconds one cell (the import probe, then the wheel suite) may take under emulation; a cell that takes longer
# ends as ``timeout`` and the matrix goes on (``llama-wheels test --cell-timeout``).
CELL_TIMEOUT = 1200.0


@dataclass(frozen=True, kw_only=True)
class WheelBuild:
    """What a wheel is: its version, what its record says it was built to be (``built``; None without a
    record), and what it contains (the variant libraries it ships, lib/cpu-isa.txt)."""

    path: Path
    version: str
    fixed_isa: str | None  # lib/cpu-isa.txt, as the wheel's own import check reads it
    variants: tuple[str, ...]  # CPU variant libraries shipped (runtime dispatch)
    built: BuiltAs | None = None  # the record's answer (binaries.record.built_as)

    @classmethod
    def read(cls, wheel: Path) -> WheelBuild:
        with open_wheel(wheel) as archive:
            isa = fixed_isa(archive)
            variants = tuple(cpu_variants(archive.namelist()))
        record = read_record(wheel)
        build = cls(path=wheel, version=str(wheel_name(wheel).version), fixed_isa=isa, variants=variants,
                    built=None if record is None else built_as(record))
        recorded = build.built.fixed_isa if build.built is not None else None
        if build.fixed_isa is not None and recorded is not None and build.fixed_isa != recorded:
            raise UserError(f"{wheel.name}: lib/cpu-isa.txt says {build.fixed_isa} but its provenance record says "
                            f"arm_arch {recorded}: the wheel's import check would judge another ISA; rebuild it")
        return build

    @property
    def declared(self) -> Mapping[str, frozenset[str]]:
        """The CPU variants its record says it was built to hold, with their features ({}: none or no record)."""
        return self.built.variants if self.built is not None else {}

    def intended(self) -> oracle.Build:
        """What the wheel must behave as: its record's (every declared variant, so a wheel that lost variant
        libraries fails, or its fixed ISA); without a record, what it contains."""
        if self.built is not None:
            return self.built.build
        return oracle.Build(variants=self.variants, fixed_isa=self.fixed_isa)


def oracle_cpu(cpu: Cpu) -> oracle.Cpu:
    return oracle.Cpu.from_flags(asdict(cpu.features))


def expect(build: WheelBuild, cpu: Cpu, variants: Mapping[str, frozenset[str]]) -> oracle.Expectation:
    """What ``build`` must show on ``cpu``: what its record says it is, through ``oracle.expect``."""
    return expectation_for(build.intended(), cpu, variants, label=build.path.name)


def expectation_for(build: oracle.Build, cpu: Cpu, variants: Mapping[str, frozenset[str]], *,
                    label: str) -> oracle.Expectation:
    """``oracle.expect`` for a configured CPU; a wheel it cannot judge is a UserError naming ``label``."""
    try:
        return oracle.expect(build, oracle_cpu(cpu), variants)
    except oracle.OracleError as exc:
        raise UserError(f"{label} on {cpu.name}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class Cell:
    wheel: str
    cpu: str
    verdict: str  # pass | fail | crash | unsupported | timeout
    detail: str
    variant: str | None = None
    expected_variant: str | None = None
    layout: str | None = None
    expected_layout: str | None = None
    layouts: dict[str, str] = field(default_factory=dict)  # ggml type -> layouts seen over every model
    repacked: int = 0
    seconds: float = 0.0
    tokens: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict in ("pass", "unsupported")


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the wheel suite saw in one cell, from its result file."""

    layout: str | None  # Q4_0 layout(s) of the plain q4_0 model; None if it did not run
    layouts: dict[str, str]  # ggml type -> its layouts over every model (the wheel suite checks each tensor)
    repacked: int  # repacked tensors over every model
    tokens: dict[str, list[int]]  # greedy tokens per model
    crashes: tuple[str, ...]  # "q4_0 probe died of SIGILL": a model's probe child killed by a signal


def _observed(result: Mapping[str, Any]) -> Observed:
    # wheel_tests/conftest.py records each model as {"probe": <wheel_probe result> | None, "failure": ...,
    # "signal": ...}
    runs = {name: (m.get("probe") or {}).get("llama") for name, m in result.get("models", {}).items()}
    by_type: dict[str, set[str]] = {}
    for run in runs.values():
        for layout in (run or {}).get("repacked", {}).values():
            by_type.setdefault(oracle.layout_type(layout), set()).add(layout)
    q4 = runs.get("q4_0") or {}
    return Observed(layout=oracle.layout_summary(q4.get("repacked", {})) if q4 else None,
                    layouts={t: ", ".join(sorted(ls)) for t, ls in sorted(by_type.items())},
                    repacked=sum(len(run["repacked"]) for run in runs.values() if run),
                    tokens={name: run["tokens"] for name, run in runs.items() if run},
                    crashes=tuple(f"{name} probe died of {m['signal']}" for name, m in result.get("models", {}).items()
                                  if m.get("signal")))


def score_mismatch(observed: Mapping[str, int], expectation: oracle.Expectation) -> str:
    """"" when the wheel's own variant scores (``ggml_backend_score`` of each variant library, as the
    import probe reads them) are the oracle's, else what differs."""
    if dict(observed) == dict(expectation.scores):
        return ""
    names = sorted(set(observed) | set(expectation.scores))
    differ = [f"{n} {observed.get(n, 'absent')} (oracle {expectation.scores.get(n, 'absent')})"
              for n in names if observed.get(n) != expectation.scores.get(n)]
    return "variant scores differ from ggml's rule: " + ", ".join(differ)


# The standalone modules the wheel suite imports by file in a guest (wheel_probe.standalone), by variable.
STANDALONE = {"LLAMA_WHEELS_MODELS_PY": "llama_wheels.standalone.models",
              "LLAMA_WHEELS_ORACLE_PY": "llama_wheels.oracle",
              "LLAMA_WHEELS_HOSTCPU_PY": "llama_wheels.standalone.hostcpu"}


def module_file(name: str) -> Path:
    """Where module ``name`` of this package is, found by import (without running it)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, name  # a module of this package
    return Path(spec.origin)


def standalone_env(models: Path | None = None) -> dict[str, str]:
    """Where the wheel suite in a guest finds this package's standalone modules (wheel_probe.standalone), and
    the directory its quantized models are shared in (``models``; None: each session makes its own)."""
    env = {variable: str(module_file(module)) for variable, module in STANDALONE.items()}
    if models is not None:
        env["LLAMA_WHEELS_MODEL_CACHE"] = str(models)
    return env


@dataclass(frozen=True, kw_only=True)
class Bed:
    """Where cells run: the emulated root, the checkout (wheel_tests/ and the standalone modules), and the
    directory every cell shares the quantized test models in (by content: see wheel_tests/conftest.py)."""

    sysroot: Sysroot
    root: Path
    models: Path


def import_info(output: str) -> dict[str, Any] | None:
    """What the import probe printed (its last ``IMPORT`` line), searched in the whole output: ggml's log or a
    warning may follow it by any number of lines."""
    found = reported(output.splitlines(), "IMPORT")
    return found[-1] if found else None


def probe_python(sysroot: Sysroot, cpu: Cpu) -> str:
    """LLAMA_WHEELS_PROBE_PYTHON for a wheel suite run in ``sysroot`` on ``cpu``: its per-model probes run on the
    same qemu, CPU and root (a child left to binfmt_misc would run on qemu's default CPU, and without it could
    not run at all)."""
    return shlex.join([os.fspath(sysroot.qemu), "-cpu", cpu.qemu_cpu, "-L", os.fspath(sysroot.root),
                       os.fspath(sysroot.python)])


def suite_env(bed: Bed, cpu: Cpu, result_file: Path, expectation: oracle.Expectation) -> dict[str, str]:
    """The wheel suite's environment in a cell: where its result goes, the standalone modules, the layout this CPU
    must get, and the interpreter of its per-model probes, always explicit: the same qemu, CPU and root as the
    cell (a child left to binfmt_misc would run on qemu's default CPU)."""
    sysroot = bed.sysroot
    env = {"LLAMA_WHEELS_RESULT": str(result_file), "LLAMA_WHEELS_PROBE_PYTHON": probe_python(sysroot, cpu),
           **standalone_env(bed.models)}
    if expectation.q4_0_layout is not None:
        env["LLAMA_WHEELS_EXPECT_LAYOUT"] = expectation.q4_0_layout
    return env


def run_cell(build: WheelBuild, site: Path, cpu: Cpu, expectation: oracle.Expectation, bed: Bed,
             workdir: Path, timeout: float = CELL_TIMEOUT) -> Cell:
    """One wheel on one CPU. A guest that outlives its time limit ends this cell as ``timeout``; the other
    cells go on."""
    started = time.monotonic()
    base = Cell(wheel=build.path.name, cpu=cpu.name, verdict="fail", detail="",
                expected_variant=expectation.variant, expected_layout=expectation.q4_0_layout)
    try:
        return _run_cell(build, site, cpu, expectation, bed, workdir, base, started + timeout)
    except CommandTimedOut as exc:
        return replace(base, verdict="timeout", detail=str(exc), seconds=time.monotonic() - started)


def _run_cell(build: WheelBuild, site: Path, cpu: Cpu, expectation: oracle.Expectation, bed: Bed,
              workdir: Path, base: Cell, deadline: float) -> Cell:
    started = time.monotonic()
    sysroot, root = bed.sysroot, bed.root

    imported = run_python(sysroot, cpu, ["-c", _IMPORT_PROBE], pythonpath=[site], timeout=deadline - time.monotonic())
    if imported.signal_name:
        return replace(base, verdict="crash", detail=f"import died of {imported.signal_name}",
                       seconds=time.monotonic() - started)
    info = import_info(imported.output)
    if info is None:
        return replace(base, detail=f"import failed: {telling_line(imported.tail)}",
                       seconds=time.monotonic() - started)
    if "error" in info:
        refused = "lacks" in info["error"] and not expectation.supported
        return replace(base, verdict="unsupported" if refused else "fail",
                       detail=("unsupported CPU, refused at import: " if refused else "ImportError: ")
                       + info["error"], seconds=time.monotonic() - started)
    if not expectation.supported:
        # Imported on a CPU it cannot run on: a failure whatever happens next (a crash shows as such).
        base = replace(base, detail=f"imported on a CPU lacking {', '.join(expectation.missing)}; ")
    base = replace(base, variant=info["variant"])
    mismatch = score_mismatch(info["scores"], expectation)
    if mismatch:
        return replace(base, detail=mismatch, seconds=time.monotonic() - started)

    result_file = workdir / f"{cpu.name}.json"
    env = suite_env(bed, cpu, result_file, expectation)
    suite = run_python(sysroot, cpu, ["-m", "pytest", "-q", "-x", str(root / "wheel_tests"),
                                      "--basetemp", str(workdir / f"tmp-{cpu.name}")],
                       pythonpath=[site], env=env, cwd=workdir, timeout=max(deadline - time.monotonic(), 1.0))
    seconds = time.monotonic() - started
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    seen = _observed(result)
    cell = replace(base, layout=seen.layout, layouts=seen.layouts, repacked=seen.repacked, tokens=seen.tokens,
                   seconds=seconds)
    if suite.signal_name:
        return replace(cell, verdict="crash", detail=base.detail + f"died of {suite.signal_name}")
    if seen.crashes:  # a model's probe child died of a signal: the suite failed that model, the cell crashed
        return replace(cell, verdict="crash", detail=base.detail + "; ".join(seen.crashes))
    if suite.returncode != 0:
        failed = [line for line in suite.output.splitlines() if line.startswith(("FAILED", "ERROR"))]
        return replace(cell, detail=base.detail + (failed[0] if failed else telling_line(suite.tail)))
    if not expectation.supported:
        return replace(cell, detail=f"ran on a CPU lacking {', '.join(expectation.missing) or 'every variant'}: "
                                    "the wheel must refuse it at import")
    if expectation.variant is not None and info["variant"] != expectation.variant:
        return replace(cell, detail=f"loaded variant {info['variant']}, expected {expectation.variant}")
    return replace(cell, verdict="pass", detail="")


def check_consistency(cells: Sequence[Cell]) -> list[Cell]:
    """Greedy tokens must be identical on every CPU that ran a wheel; mark the cells that differ."""
    out = list(cells)
    for wheel in {c.wheel for c in cells}:
        ran = [c for c in cells if c.wheel == wheel and c.verdict == "pass"]
        if not ran:
            continue
        reference = ran[0]
        for cell in ran[1:]:
            differing = [m for m in reference.tokens if cell.tokens.get(m) != reference.tokens[m]]
            if differing:
                out[out.index(cell)] = replace(cell, verdict="fail", detail=(
                    f"greedy tokens differ from {reference.cpu} for {', '.join(differing)}"))
    return out


@dataclass(frozen=True, kw_only=True)
class Report:
    cells: tuple[Cell, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cells)

    def table(self) -> str:
        head = f"{'wheel':<48} {'cpu':<12} {'verdict':<11} {'variant':<10} {'Q4_0 layout':<12} " \
               f"{'expected':<10} {'repacked':>8} {'s':>6}  layouts by type; detail"
        rows = [head, "-" * len(head)]
        for c in self.cells:
            layouts = " ".join(f"{t}:{'/'.join(x.rsplit('_', 1)[1] for x in ls.split(', '))}"
                               for t, ls in c.layouts.items()) or "-"
            rows.append(f"{c.wheel[:48]:<48} {c.cpu:<12} {c.verdict:<11} {c.variant or '-':<10} "
                        f"{c.layout or '-':<12} {c.expected_layout or '-':<10} {c.repacked:>8} "
                        f"{c.seconds:>6.1f}  {layouts}{'; ' + c.detail if c.detail else ''}")
        rows.append(f"{sum(c.ok for c in self.cells)}/{len(self.cells)} cells ok in {self.seconds:.0f}s")
        return "\n".join(rows)

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, table_path = out_dir / "matrix.json", out_dir / "matrix.txt"
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps({"seconds": self.seconds, "ok": self.ok,
                                       "cells": [asdict(c) for c in self.cells]}, indent=1))
        with atomic_path(table_path) as tmp:
            tmp.write_text(self.table() + "\n")
        return json_path, table_path


def wheel_labels(wheels: Sequence[Path]) -> dict[Path, str]:
    """How the report names each wheel: its file name, or DIR/name where several share a file name
    (builds of one release from different pins or targets are all called llama_cpp_python-X-py3-...)."""
    names = [w.name for w in wheels]
    return {w: w.name if names.count(w.name) == 1 else f"{w.parent.name}/{w.name}" for w in wheels}


def check_cpus(sysroot: Sysroot, cpus: Sequence[Cpu], *, jobs: int | None = None,
               source: str = "build_config/cpus.toml") -> None:
    """Measure each CPU's features under the pinned qemu and refuse a run judged against stale ``source``
    data (another qemu, as qemu.toml moves on, may give a model other features)."""
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2) as pool:
        measured = list(pool.map(lambda cpu: measure_features(sysroot, cpu), cpus))
    stale = [f"{cpu.name}: {source.rsplit('/', 1)[-1]} says {cpu.features.summary()}, qemu gives {got.summary()}"
             for cpu, got in zip(cpus, measured, strict=True) if got != cpu.features]
    if stale:
        raise UserError(f"{source} does not match the pinned qemu ({sysroot.qemu}): "
                        + "; ".join(stale) + f"; measure again and update {source} (tests/unit/test_emulation.py)")


def run_matrix(wheels: Sequence[Path], cpus: Sequence[Cpu], *, root: Path, cache: Cache, jobs: int | None = None,
               cell_timeout: float = CELL_TIMEOUT) -> Report:
    """Run every wheel on every CPU (``jobs`` cells at a time), each judged by what its record says it was
    built to be (a dispatch wheel: the CPU variants the record lists, with their features)."""
    started = time.monotonic()
    log = current_log()
    builds = [WheelBuild.read(w) for w in wheels]  # bad input first, before any emulation
    libcs = {b.path: libc_of_wheel(b.path) for b in builds}  # a musllinux wheel runs in the musl bed
    beds: dict[str, Bed] = {}
    for libc in sorted(set(libcs.values())):
        sysroot = ensure_bed(cache, libc)
        check_cpus(sysroot, cpus, jobs=jobs)
        beds[libc] = Bed(sysroot=sysroot, root=root, models=cache.dir("models"))
    with tempfile.TemporaryDirectory(prefix="llama-wheels-matrix-") as scratch:
        work = Path(scratch)
        sites = {b.path: install_wheel(b.path, work / f"site-{i}") for i, b in enumerate(builds)}
        tasks: list[tuple[int, WheelBuild, Cpu, oracle.Expectation, Path]] = []
        for i, build in enumerate(builds):
            for cpu in cpus:
                expectation = expect(build, cpu, build.declared)
                workdir = work / f"cell-{i}-{cpu.name}"
                workdir.mkdir()
                tasks.append((len(tasks) + 1, build, cpu, expectation, workdir))

        done = itertools.count(1)

        def one(task: tuple[int, WheelBuild, Cpu, oracle.Expectation, Path]) -> Cell:
            number, build, cpu, expectation, workdir = task
            log.progress(f"test     cell {number}/{len(tasks)}: {build.path.name} on {cpu.name} ...")
            cell = run_cell(build, sites[build.path], cpu, expectation, beds[libcs[build.path]], workdir,
                            cell_timeout)
            log.progress(f"test     cell {number}/{len(tasks)}: {build.path.name} on {cpu.name}: {cell.verdict} "
                         f"({cell.seconds:.0f}s; {next(done)}/{len(tasks)} done) {cell.detail}")
            return cell

        labels = wheel_labels([b.path for b in builds])
        pool = ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2)
        try:
            cells = [replace(cell, wheel=labels[task[1].path])
                     for task, cell in zip(tasks, pool.map(one, tasks), strict=True)]
        except BaseException:
            # Ctrl-C (or a failed cell): no cell starts any more, and the running ones are stopped.
            pool.shutdown(wait=False, cancel_futures=True)
            with commands_stopped():
                pool.shutdown()
            raise
        pool.shutdown()
    return Report(cells=tuple(check_consistency(cells)), seconds=time.monotonic() - started)
