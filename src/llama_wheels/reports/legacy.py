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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llama_wheels.config import Config
from llama_wheels.config.cpus import SMOKE_CPU, Cpu
from llama_wheels.core.cache import Cache
from llama_wheels.core.runner import current_log, telling_line
from llama_wheels.emulation.guest import reported
from llama_wheels.emulation.qemu import install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.matrix import Cell
from llama_wheels.reports import builder
from llama_wheels.reports.builder import Build
from llama_wheels.standalone.models import UNUSED_TENSOR, write_t5_model

BUILDS = (
    Build("before", "legacy-unpatched", "linux-aarch64-armv8.2-dotprod",
          "armv8.2-a+dotprod, packaging patch only: the code a `CMAKE_ARGS` build of 0.3.4 compiles"),
    Build("after", "legacy", "linux-aarch64-armv8.2-dotprod", "armv8.2-a+dotprod, the full patch series"),
    Build("fallback", "legacy", "linux-aarch64-armv8.0", "armv8-a, the full patch series (the wheel the "
          "ImportError points to)"),
)

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
import json
import sys
import llama_cpp as lc
lc.llama_backend_init()
load = getattr(lc, "llama_model_load_from_file", None) or lc.llama_load_model_from_file
model = load(sys.argv[1].encode(), lc.llama_model_default_params())
print("LOAD " + json.dumps(bool(model)))
"""


def _probe_dotprod(sysroot: Any, cpu: Cpu, site: Path) -> dict[str, Any]:
    outcome = run_python(sysroot, cpu, ["-c", _DOTPROD_PROBE, str(site)], timeout=300)
    found = reported(outcome.tail, "DOTPROD")
    if outcome.signal_name or not found:
        return {"ggml": None, "hwcap": None, "error": outcome.signal_name or telling_line(outcome.tail)}
    data: dict[str, Any] = found[-1]
    data["ggml"] = bool(data["ggml"])
    return data


def _probe_unused_tensor_model(sysroot: Any, cpu: Cpu, site: Path, model: Path) -> str:
    outcome = run_python(sysroot, cpu, ["-c", _LOAD_PROBE, str(model)], pythonpath=[site], timeout=600)
    if outcome.signal_name:
        return f"died of {outcome.signal_name} while loading"
    found = reported(outcome.tail, "LOAD")
    if not found:
        return f"failed: {telling_line(outcome.tail)}"
    return "loads" if found[-1] else "load failed (no crash)"


def build_wheels(config: Config, cache: Cache, dist: Path, builds: Sequence[Build] = BUILDS) -> dict[str, Path]:
    """Each build's wheel in ``dist/legacy-0.3.4/<role>/`` (roles: before, after, fallback)."""
    return builder.build_wheels(config, cache, dist / "legacy-0.3.4", builds)


def run(config: Config, cache: Cache, cpus: Sequence[Cpu], wheels: dict[str, Path], *,
        jobs: int | None = None) -> dict[str, Any]:
    """The report's data: the matrix on every wheel and CPU plus the two probes."""
    log = current_log()
    report, cells = builder.run_by_role(config, cache, cpus, wheels, jobs=jobs)
    sysroot = ensure_sysroot(cache)
    dotprod: dict[str, dict[str, Any]] = {}
    unused_tensor: dict[str, str] = {}
    t5_cpu = next((c for c in cpus if c.name == SMOKE_CPU), cpus[0])
    with tempfile.TemporaryDirectory(prefix="llama-wheels-legacy-") as scratch:
        model = write_t5_model(Path(scratch) / "t5.gguf")
        for role, wheel in wheels.items():
            site = install_wheel(wheel, Path(scratch) / f"site-{role}")
            dotprod[role] = {cpu.name: _probe_dotprod(sysroot, cpu, site) for cpu in cpus}
            unused_tensor[role] = _probe_unused_tensor_model(sysroot, t5_cpu, site, model)
            log.progress(f"legacy   {role}: T5 model on {t5_cpu.name}: {unused_tensor[role]}")
    return {
        "generated_by": "llama-wheels legacy-report",
        "wheels": builder.describe_wheels(BUILDS, wheels),
        "cpus": builder.describe_cpus(cpus),
        "cells": {role: {cpu: _cell_json(cell) for cpu, cell in by_cpu.items()} for role, by_cpu in cells.items()},
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
    json_path, md_path = out_dir / "legacy-0.3.4.json", out_dir / "legacy-0.3.4.md"
    builder.write_texts([(json_path, json.dumps(data, indent=1, sort_keys=False) + "\n"),
                         (md_path, markdown(data, config))])
    return json_path, md_path
