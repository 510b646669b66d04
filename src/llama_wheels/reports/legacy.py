"""``llama-wheels legacy-report``: llama-cpp-python 0.3.4 with and without its patch series, per CPU.

One command builds (or takes from the cache) the wheels of the ``legacy`` pin and of
``legacy-unpatched`` (the same sdist with only the packaging patch), runs the emulated matrix on them,
adds two probes the matrix cannot show, and writes ``docs/legacy-0.3.4.json`` and ``.md``:

- **dotprod probe**: ``ggml_cpu_has_dotprod()`` of the wheel's libggml-cpu on each CPU against the
  kernel's HWCAP_ASIMDDP bit (patch 0002), read by loading the library directly, so it works even where
  the patched package refuses to import;
- **unused-tensor model**: a tiny T5 model, which carries a tensor no op uses, loaded on one CPU that
  runs both wheels (patch 0003).

Nothing here decides what is built: the wheels come from the pins and targets in build_config/.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llama_wheels.config import Config
from llama_wheels.config.cpus import Cpu
from llama_wheels.core.cache import Cache, atomic_path, sha256_file
from llama_wheels.core.runner import current_log, telling_line
from llama_wheels.emulation.qemu import install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.matrix import Cell, run_matrix, wheel_labels
from llama_wheels.standalone.models import UNUSED_TENSOR, write_t5_model


@dataclass(frozen=True)
class Build:
    role: str  # "before" | "after" | "fallback"
    pin: str
    target: str
    what: str


BUILDS = (
    Build("before", "legacy-unpatched", "linux-aarch64-armv8.2-dotprod",
          "armv8.2-a+dotprod, packaging patch only: the code a `CMAKE_ARGS` build of 0.3.4 compiles"),
    Build("after", "legacy", "linux-aarch64-armv8.2-dotprod", "armv8.2-a+dotprod, the full patch series"),
    Build("fallback", "legacy", "linux-aarch64-armv8.0", "armv8-a, the full patch series (the wheel the "
          "ImportError points to)"),
)
T5_CPU = "neoverse-n1"

_DOTPROD_PROBE = """\
import ctypes, json, sys
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
libc.getauxval.argtypes = [ctypes.c_ulong]
lib = ctypes.CDLL(sys.argv[1] + "/llama_cpp/lib/libggml-cpu.so")
lib.ggml_cpu_init()
hwcap = bool(libc.getauxval(16) & (1 << 20))  # HWCAP_ASIMDDP
print("DOTPROD " + json.dumps({"ggml": lib.ggml_cpu_has_dotprod(), "hwcap": hwcap}))
"""

_LOAD_PROBE = """\
import sys
import llama_cpp as lc
lc.llama_backend_init()
load = getattr(lc, "llama_model_load_from_file", None) or lc.llama_load_model_from_file
model = load(sys.argv[1].encode(), lc.llama_model_default_params())
print("LOAD " + ("ok" if model else "failed"))
"""


def _probe_dotprod(sysroot: Any, cpu: Cpu, site: Path) -> dict[str, Any]:
    outcome = run_python(sysroot, cpu, ["-c", _DOTPROD_PROBE, str(site)], timeout=300)
    lines = [line for line in outcome.tail if line.startswith("DOTPROD ")]
    if outcome.signal_name or not lines:
        return {"ggml": None, "hwcap": None, "error": outcome.signal_name or telling_line(outcome.tail)}
    data: dict[str, Any] = json.loads(lines[-1].removeprefix("DOTPROD "))
    data["ggml"] = bool(data["ggml"])
    return data


def _probe_unused_tensor_model(sysroot: Any, cpu: Cpu, site: Path, model: Path) -> str:
    outcome = run_python(sysroot, cpu, ["-c", _LOAD_PROBE, str(model)], pythonpath=[site], timeout=600)
    if outcome.signal_name:
        return f"died of {outcome.signal_name} while loading"
    lines = [line for line in outcome.tail if line.startswith("LOAD ")]
    if not lines:
        return f"failed: {telling_line(outcome.tail)}"
    return "loads" if lines[-1] == "LOAD ok" else "load failed (no crash)"


def build_wheels(config: Config, cache: Cache, dist: Path,
                 builds: Sequence[Build] = BUILDS) -> dict[str, Path]:
    """Each build's wheel (built, repaired; cached builds are reused), in ``dist/legacy-0.3.4/<role>/``:
    the wheels of one release share a file name whatever the pin or target."""
    from llama_wheels.pipeline import build_targets

    return {b.role: build_targets(config, [b.target], b.pin, dist=dist / "legacy-0.3.4" / b.role, cache=cache,
                                  verifier=None)[0].wheel
            for b in builds}


def run(config: Config, cache: Cache, cpus: Sequence[Cpu], wheels: dict[str, Path], *,
        jobs: int | None = None) -> dict[str, Any]:
    """The report's data: the matrix on every wheel and CPU plus the two probes."""
    log = current_log()
    labels = wheel_labels(list(wheels.values()))
    roles = {labels[w]: role for role, w in wheels.items()}
    report = run_matrix(list(wheels.values()), cpus, root=config.root, cache=cache,
                        variants_for={}, jobs=jobs)  # fixed-ISA wheels: no variants to declare
    sysroot = ensure_sysroot(cache)
    dotprod: dict[str, dict[str, Any]] = {}
    unused_tensor: dict[str, str] = {}
    t5_cpu = next((c for c in cpus if c.name == T5_CPU), cpus[0])
    with tempfile.TemporaryDirectory(prefix="llama-wheels-legacy-") as scratch:
        model = write_t5_model(Path(scratch) / "t5.gguf")
        for role, wheel in wheels.items():
            site = install_wheel(wheel, Path(scratch) / f"site-{role}")
            dotprod[role] = {cpu.name: _probe_dotprod(sysroot, cpu, site) for cpu in cpus}
            unused_tensor[role] = _probe_unused_tensor_model(sysroot, t5_cpu, site, model)
            log.progress(f"legacy   {role}: T5 model on {t5_cpu.name}: {unused_tensor[role]}")
    by_role: dict[str, dict[str, dict[str, Any]]] = {role: {} for role in wheels}
    for cell in report.cells:
        by_role[roles[cell.wheel]][cell.cpu] = _cell_json(cell)
    return {
        "generated_by": "llama-wheels legacy-report",
        "wheels": {b.role: {"pin": b.pin, "target": b.target, "what": b.what, "wheel": wheels[b.role].name,
                            "sha256": sha256_file(wheels[b.role])}
                   for b in BUILDS if b.role in wheels},
        "cpus": {c.name: {"description": c.description, "features": c.features.summary()} for c in cpus},
        "cells": by_role,
        "dotprod_probe": dotprod,
        "unused_tensor_model": {"tensor": UNUSED_TENSOR, "cpu": t5_cpu.name, "result": unused_tensor},
        "matrix_seconds": round(report.seconds),
    }


def _cell_json(cell: Cell) -> dict[str, Any]:
    data = asdict(cell)
    data.pop("tokens")
    data["seconds"] = round(cell.seconds)
    return data


def _layout(cell: dict[str, Any]) -> str:
    if cell["verdict"] in ("crash", "unsupported") or cell["layout"] is None:
        return "-"
    return str(cell["layout"])


def _cpus_where(data: dict[str, Any], role: str, verdicts: tuple[str, ...]) -> list[str]:
    return [cpu for cpu, cell in data["cells"].get(role, {}).items() if cell["verdict"] in verdicts]


def _summary(data: dict[str, Any]) -> list[str]:
    """Bullet points derived from the data (nothing here is typed in by hand)."""
    cells = data["cells"]
    out = []
    for role in cells:
        crashed = _cpus_where(data, role, ("crash",))
        refused = _cpus_where(data, role, ("unsupported",))
        passed = _cpus_where(data, role, ("pass",))
        failed = _cpus_where(data, role, ("fail", "timeout"))
        parts = []
        if crashed:
            signals = sorted({cells[role][c]["detail"].rsplit(" ", 1)[-1] for c in crashed})
            parts.append(f"dies of {'/'.join(signals)} on {', '.join(crashed)}")
        if refused:
            parts.append(f"refuses to import on {', '.join(refused)} (an ImportError naming what is missing)")
        if passed:
            layouts = sorted({_layout(cells[role][c]) for c in passed})
            parts.append(f"passes on {', '.join(passed)} (Q4_0 layout {', '.join(layouts)})")
        if failed:
            parts.append(f"FAILS on {', '.join(failed)}")
        out.append(f"- **{role}** " + "; ".join(parts) + ".")
    if "before" in cells and "after" in cells:
        both = [c for c in cells["before"]
                if cells["before"][c]["verdict"] == cells["after"].get(c, {}).get("verdict") == "pass"]
        same = [c for c in both if (cells["before"][c]["layout"], cells["before"][c]["repacked"])
                == (cells["after"][c]["layout"], cells["after"][c]["repacked"])]
        if both:
            out.append(f"- Where both armv8.2-a+dotprod wheels run ({', '.join(both)}), the layout and the "
                       f"number of repacked tensors are {'the same' if same == both else 'NOT the same'}: "
                       "the series changes what happens on CPUs that cannot run the build, not the repacking "
                       "on those that can.")
    return out


def markdown(data: dict[str, Any], config: Config) -> str:
    """The human-readable report (docs/legacy-0.3.4.md)."""
    roles = list(data["cells"])
    pin = config.pin("legacy")
    lines = [
        "# llama-cpp-python 0.3.4: what the legacy patch series changes, per CPU",
        "",
        "<!-- generated by `llama-wheels legacy-report`; do not edit. Data: legacy-0.3.4.json -->",
        "",
        f"llama-cpp-python {pin.version} vendors llama.cpp `{pin.llama_cpp_commit[:9]}`, the release that",
        "dropped Q4_0_4_4/Q4_0_4_8/Q4_0_8_8 in favour of repacking plain Q4_0 at load time",
        "(`GGML_CPU_AARCH64`). Each wheel below ran the wheel test suite under",
        "`qemu-aarch64-static -cpu CPU` (`llama-wheels test`).",
        "",
        "| wheel | pin | target | what |",
        "|---|---|---|---|",
    ]
    for role, w in data["wheels"].items():
        lines.append(f"| {role} | `{w['pin']}` | `{w['target']}` | {w['what']} |")
    lines += ["", "## Summary", "", *_summary(data), "", "## Verdict and Q4_0 repack layout per CPU", "",
              "| CPU | features | " + " | ".join(f"{r}: verdict | {r}: layout" for r in roles) + " |",
              "|---|---|" + "---|---|" * len(roles)]
    for cpu, info in data["cpus"].items():
        cols = []
        for role in roles:
            cell = data["cells"][role].get(cpu)
            cols += [cell["verdict"], _layout(cell)] if cell else ["-", "-"]
        lines.append(f"| {cpu} | {info['features']} | " + " | ".join(cols) + " |")
    lines += ["", "Verdicts: `pass` = the wheel test suite passed, with the layout the selection rules give",
              "for the CPU where the wheel says what it was built for; `unsupported` = refused at import",
              "with an ImportError naming the missing feature; `crash` = killed by a signal; `fail` = a",
              "test failed.",
              "", "### Details", ""]
    for role in roles:
        for cpu, cell in data["cells"][role].items():
            if cell["detail"]:
                lines.append(f"- {role} on {cpu}: {cell['detail']}")
    lines += ["", "## What ggml believes about dotprod (patch 0002)", "",
              "`ggml_cpu_has_dotprod()` of each wheel's libggml-cpu (loaded directly, without the package's",
              "import check) against the kernel's `HWCAP_ASIMDDP` bit. 1 on a CPU without the bit is the",
              "`hwcap && HWCAP_ASIMDDP` bug: the repack selection and kernels then take their sdot paths.",
              "An armv8-a build says 0 everywhere: ggml_cpu_has_dotprod() also requires compiling with it.",
              "",
              "| CPU | hwcap asimddp | " + " | ".join(f"{r}: ggml" for r in roles) + " |",
              "|---|---|" + "---|" * len(roles)]
    for cpu in data["cpus"]:
        probes = [data["dotprod_probe"][r].get(cpu, {}) for r in roles]
        hwcap = next((p["hwcap"] for p in probes if p.get("hwcap") is not None), None)
        cols = [("error: " + p["error"]) if p.get("error") else str(int(p["ggml"])) for p in probes]
        lines.append(f"| {cpu} | {'-' if hwcap is None else int(hwcap)} | " + " | ".join(cols) + " |")
    t5 = data["unused_tensor_model"]
    lines += ["", "## A model with a tensor no op uses (patch 0003)", "",
              f"A tiny T5 model carrying `{t5['tensor']}` (as t5-small does), loaded on {t5['cpu']}:", ""]
    lines += [f"- {role}: {result}" for role, result in t5["result"].items()]
    lines += ["", "## The patch series (build_config/pins.toml, patches/0.3.4/)", ""]
    lines += [f"- `{p}`" for p in pin.patches]
    lines += ["", "Regenerate: `llama-wheels legacy-report` (it builds the wheels first unless they are",
              "cached).", ""]
    return "\n".join(lines)


def write(data: dict[str, Any], config: Config, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "legacy-0.3.4.json", out_dir / "legacy-0.3.4.md"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        tmp.chmod(0o644)
    with atomic_path(md_path) as tmp:
        tmp.write_text(markdown(data, config))
        tmp.chmod(0o644)
    return json_path, md_path
