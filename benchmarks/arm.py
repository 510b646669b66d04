"""``benchmarks/run.py --arm``: guest instructions per prompt token and per generated token on every emulated
ARM CPU class (build_config/cpus.toml), counted exactly by the insn_count qemu plugin (issue #16).

Per CPU class, from the project's own wheels (built or reused by the pipeline, unpacked for the guest):

- repack on vs off (``use_extra_bufts``) per repackable type, with the dispatch wheel and ggml's own choice
  of CPU variant;
- every CPU variant the class can run (ggml's score > 0), forced one at a time (a ``lib/`` copy with only
  that variant, ``LLAMA_CPP_LIB_PATH``): is ggml's choice the one with the fewest instructions?
- the dispatch wheel vs the fixed-ISA wheel of the same variant (targets.toml ``variant``): for ggml's
  choice where such a target exists, and for every runnable variant that has one.

Classes whose features (cpus.toml) are identical run the same code: ggml's variant scores and its repack
choices read only those features (and the SVE vector length). The forced-variant and fixed-ISA runs are
made once per feature set, on its first class, and stand for its other classes; the repack runs are made
on every class, and a class's counts that differ from its feature set's first class are reported.

Counts are deterministic (one thread, OpenBLAS too, ASLR off, fixed guest seed: ``benchmarks/counting/insn_count.py``;
the worker keeps no log text whose length varies): ``--repeat 2`` runs every guest process twice and reports
any difference (the full run repeats two classes' repack processes; the smoke run every process). The
guest sees only paths that do not change between runs: everything it reads is staged in the cache dir
``arm-stage/<key>/`` (key: the content), it runs there and is given relative paths, its plan on the
command line. (A path's length and bytes move stack and heap layouts, and memcpy and dict costs with them:
0.15% of a prompt's instructions, measured, when only the plan file's name changed.) An instruction count
is not time: see README.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import arm_tables, machine, perf, wheels
from benchmarks.arm_worker import PHASES, region_of
from benchmarks.counting import insn_count, mca, validate
from benchmarks.counting.insn_count import Counts
from benchmarks.counting.qemu_plugin import CountingQemu, ensure_counting_qemu
from llama_wheels.config import Config, load
from llama_wheels.config.cpus import Cpu, load_cpus
from llama_wheels.config.mca_spec import McaSpec, load_mca_spec, own_classes
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, atomic_path, hash_key, locked, sha256_file
from llama_wheels.core.errors import CommandFailed, UserError
from llama_wheels.emulation.guest import reported
from llama_wheels.emulation.qemu import Sysroot, install_wheel, run_python
from llama_wheels.emulation.sysroot import ensure_sysroot
from llama_wheels.judges.matrix import check_cpus, standalone_env
from llama_wheels.standalone import models
from llama_wheels.standalone.models import ModelSpec

REPO = Path(__file__).resolve().parent.parent
DISPATCH_TARGET = "linux-aarch64"
OFFICIAL_TARGET = "linux-aarch64-official"  # llama-cpp-python's own release build (targets.toml), not published
QUANTIZED = {"Q4_K": "Q4_K_M"}  # type -> the llama.cpp file type the wheel's quantizer makes it with
MATMUL = ("gemm", "gemv", "vec_dot", "mul_mat", "quantize_row", "quantize_mat", "sgemm", "tinyblas")
MAX_CASES = (insn_count.MAX_REGIONS - 2) // len(PHASES)


@dataclass(frozen=True, kw_only=True)
class Settings:
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_prompt: int
    n_gen: int
    types: tuple[str, ...]
    variant_types: tuple[str, ...]  # the types the forced-variant and fixed-ISA runs use
    cpus: tuple[str, ...] | None  # None: every class of cpus.toml
    repeat: int  # counts of each class's repack process (ggml's choice): the determinism check
    repeat_classes: tuple[str, ...] | None  # the classes whose repack process is repeated (None: all)
    repeat_variants: int  # counts of each forced-variant and fixed-ISA process
    threads_check: bool  # also count one class with 2 threads, twice (shows the thread pool's noise)
    # llvm-mca model -> the class whose blocks it prices; None: build_config/mca.toml's (the real cores)
    price_models: dict[str, str] | None = None
    variant_classes: tuple[str, ...] | None = None  # feature sets whose variants are forced (None: every one)
    exact: bool = True  # the fixed-ISA wheels against the dispatch wheel's same variant

    def model(self, weight_type: str) -> ModelSpec:
        quantize = QUANTIZED.get(weight_type)
        return ModelSpec(f"arm-{weight_type.lower()}-{self.n_embd}x{self.n_layer}", n_vocab=self.n_vocab,
                         n_embd=self.n_embd, n_ff=self.n_ff, n_layer=self.n_layer, n_head=self.n_head,
                         n_head_kv=self.n_head, weight_type="F32" if quantize else weight_type,
                         output_tensor=False, seed=16, quantize=quantize)


# K-quants need rows of whole 256-wide super-blocks (n_embd, n_ff); every row count is a multiple of 8.
FULL = Settings(n_vocab=4096, n_embd=1024, n_ff=2816, n_layer=2, n_head=16, n_prompt=32, n_gen=8,
                types=("Q4_0", "Q8_0", "Q4_K"), variant_types=("Q4_0", "Q4_K"), cpus=None, repeat=2,
                repeat_classes=("neoverse-n1", "neoverse-n2"), repeat_variants=1, threads_check=True)
SMOKE = Settings(n_vocab=512, n_embd=256, n_ff=512, n_layer=1, n_head=4, n_prompt=8, n_gen=2,
                 types=("Q4_0", "Q8_0"), variant_types=("Q4_0",), cpus=("neoverse-n1", "cortex-a76"), repeat=2,
                 repeat_classes=None, repeat_variants=2, threads_check=False,
                 # the smoke's classes have no trustworthy model: N2's prices neoverse-n1's blocks, which
                 # checks the pricing (deterministic, covered), not a core
                 price_models={"neoverse-n2": "neoverse-n1"})


@dataclass(frozen=True, kw_only=True)
class Process:
    """One guest process: its cases (model type, repack) under one library set."""

    key: str  # "auto", "variant:armv8.2_1", "exact:linux-aarch64-armv8.2-dotprod"
    cpu: Cpu
    site: Path
    cases: tuple[tuple[str, bool], ...]
    lib_path: Path | None = None
    expect_variant: str | None = None
    threads: int = 1


@dataclass(frozen=True, kw_only=True)
class Bench:
    counting: CountingQemu
    sysroot: Sysroot
    stage: Path  # the guest's working directory (``stage``); every path it is given is relative to it
    settings: Settings
    workdir: Path  # where the counts go


def feature_groups(cpus: Sequence[Cpu], alone: Collection[str] = ()) -> dict[str, list[str]]:
    """First class of each feature set -> every class with exactly those features, in cpus.toml order; a
    class in ``alone`` (counted for a pricing model: a different core) is a set of its own."""
    groups: dict[Any, list[str]] = {}
    for cpu in cpus:
        groups.setdefault((cpu.features, cpu.name if cpu.name in alone else None), []).append(cpu.name)
    return {names[0]: names for names in groups.values()}


def ensure_models(settings: Settings, cache: Cache, sysroot: Sysroot, dispatch_site: Path,
                  cpu: Cpu) -> dict[str, Path]:
    """Each type's model, cached by its spec, the generator's code, gguf-py's version and (for a quantized
    type) the quantizing wheel's files: gguf-py writes Q4_0/Q8_0, the wheel's own quantizer makes K-quants
    from an F32 file (under the static qemu, on ``cpu``)."""
    generator = hashlib.sha256(Path(models.__file__).read_bytes()).hexdigest()
    gguf_version = importlib.metadata.version("gguf")
    out: dict[str, Path] = {}
    for weight_type in settings.types:
        spec = settings.model(weight_type)
        parts = [repr(dataclasses.astuple(spec)), generator, gguf_version]
        if spec.quantize:
            parts += sorted(sha256_file(p) for p in wheels.lib_dir(dispatch_site).iterdir() if p.is_file())
        path = cache.dir("benchmark-models") / f"{spec.name}-{hash_key(parts)}.gguf"
        if not path.is_file():
            with runner.current_log().stage("model", f"{spec.name} ({weight_type})"):
                if spec.quantize is None:
                    models.write_model(spec, path)
                else:
                    _quantize(spec, path, sysroot, dispatch_site, cpu)
        out[weight_type] = path
    return out


def _quantize(spec: ModelSpec, path: Path, sysroot: Sysroot, site: Path, cpu: Cpu) -> None:
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=path.parent) as tmp:
        source = Path(tmp) / "f32.gguf"
        models.write_model(spec, source)
        with atomic_path(path) as out:
            outcome = run_python(sysroot, cpu, [str(REPO / "wheel_tests" / "wheel_probe.py"), "--quantize",
                                                str(source), str(out), str(spec.quantize)],
                                 pythonpath=[site], timeout=3600)
            if outcome.returncode != 0 or not out.is_file():
                raise CommandFailed(f"quantizing {spec.name} to {spec.quantize} in the guest failed: "
                                    f"{runner.telling_line(outcome.tail)}", tail=outcome.tail)


def stage(cache: Cache, sites: dict[str, Path], wheel_sha256: dict[str, str], model_files: dict[str, Path]) -> Path:
    """Everything a guest reads, under one path that depends only on the content: the unpacked wheels
    (``site-<target>``), a ``lib-<variant>`` per CPU variant of the dispatch wheel (only that variant's
    library: ``LLAMA_CPP_LIB_PATH``), the models (``models/<type>.gguf``, hard links), and the guest-side
    modules (``py/``). Built once, atomically, under a lock."""
    modules = {"arm_worker.py": REPO / "benchmarks" / "arm_worker.py", "worker.py": REPO / "benchmarks" / "worker.py",
               "wheel_probe.py": REPO / "wheel_tests" / "wheel_probe.py",
               **{Path(p).name: Path(p) for p in standalone_env().values()}}
    parts = [f"{t}={w}" for t, w in sorted(wheel_sha256.items())]
    parts += [f"{n}={sha256_file(p)}" for n, p in sorted(modules.items())]
    parts += [f"{t}={p.name}" for t, p in sorted(model_files.items())]  # the name holds the content key
    final = cache.dir("arm-stage") / hash_key(parts)
    if (final / "ready").is_file():
        return final
    with locked(cache.dir("arm-stage") / f".{final.name}.lock"):
        if (final / "ready").is_file():
            return final
        if final.exists():
            runner.run(["rm", "-rf", str(final)])
        with atomic_path(final, directory=True) as tmp:
            for target, site in sites.items():
                shutil.copytree(site, tmp / f"site-{target}", symlinks=True)
            for variant in wheels.variants(sites[DISPATCH_TARGET]):
                wheels.single_variant_lib(sites[DISPATCH_TARGET], variant, tmp / f"lib-{variant}")
            (tmp / "models").mkdir()
            for weight_type, path in model_files.items():
                os.link(path, tmp / "models" / f"{weight_type.lower()}.gguf")
            (tmp / "py").mkdir()
            for name, path in modules.items():
                shutil.copy2(path, tmp / "py" / name)
            (tmp / "ready").write_text("\n".join(parts) + "\n")
    return final


def run_process(bench: Bench, proc: Process, attempt: int) -> dict[str, Any]:
    """Count one guest process; per case its regions' instructions, and what ggml did."""
    if len(proc.cases) > MAX_CASES:
        raise UserError(f"{len(proc.cases)} cases in one guest process; the plugin counts {MAX_CASES} at most")
    name = f"{proc.cpu.name}-{proc.key.replace(':', '-')}-t{proc.threads}-{attempt}"
    plan = json.dumps({
        "n_prompt": bench.settings.n_prompt, "n_gen": bench.settings.n_gen, "threads": proc.threads,
        "cases": [{"model": f"models/{t.lower()}.gguf", "repack": on} for t, on in proc.cases]})
    env = {key: f"py/{Path(path).name}" for key, path in standalone_env().items()}
    env["OPENBLAS_NUM_THREADS"] = "1"  # numpy's OpenBLAS starts a thread per core at import otherwise
    if proc.lib_path is not None:
        env["LLAMA_CPP_LIB_PATH"] = str(proc.lib_path)
    regions = [region_of(i, phase) for i in range(len(proc.cases)) for phase in PHASES]
    started = time.monotonic()
    outcome, counts = insn_count.run_counted(
        bench.counting, bench.sysroot, proc.cpu,
        ["py/arm_worker.py", plan, "--probe-dir", "py", "--magic", str(insn_count.MARKER_MAGIC)],
        out=bench.workdir / f"{name}.counts.json", regions=regions, env=env, pythonpath=[proc.site],
        cwd=bench.stage)
    found = reported(outcome.output.splitlines(), "ARM")
    if not found:
        raise CommandFailed(f"{name}: the guest printed no ARM line: {runner.telling_line(outcome.tail)}",
                            tail=outcome.tail)
    info = found[-1]
    if proc.expect_variant is not None and info["variant"] != proc.expect_variant:
        raise CommandFailed(f"{name}: ggml loaded {info['variant']}, not the forced {proc.expect_variant}")
    cases = {}
    for i, (weight_type, on) in enumerate(proc.cases):
        per = {phase: counts.region(region_of(i, phase)) for phase in PHASES}
        cases[f"{weight_type}:{'on' if on else 'off'}"] = {
            **per,
            "per_prompt_token": round(per["prompt"] / bench.settings.n_prompt),
            "per_generated_token": round(per["generation"] / bench.settings.n_gen),
            **info["cases"][i],
        }
    runner.current_log().progress(f"arm: {name} {time.monotonic() - started:.0f}s, {counts.total / 1e9:.2f} G insns")
    return {"cases": cases, "variant": info["variant"], "scores": info["variant_scores"],
            "fixed_isa": info["fixed_isa"], "total": counts.total, "vcpus": counts.vcpus,
            "seconds": round(time.monotonic() - started, 1), "_counts": counts}


def matmul_class(path: str, symbol: str | None) -> str:
    """What a counted block is, for the matmul share: the named matrix kernels (gemm/gemv/vec_dot/mul_mat/
    activation quantizing), other code of the CPU backend (unnamed: static functions, e.g. llamafile's
    sgemm, which ggml-cpu does not export), or everything else (Python, numpy, libc, libllama, ggml-base)."""
    name = Path(path).name
    if name.startswith("libggml-cpu"):
        if symbol is None:
            return "ggml-cpu unnamed (static: llamafile sgemm, inlined helpers)"
        return "matmul kernels" if any(k in symbol.lower() for k in MATMUL) else "ggml-cpu other"
    return "other (libllama, ggml-base, Python, libc)"


def _spread(a: int, b: int) -> float:
    """|a - b| relative to a, rounded to 1e-7 (0: identical)."""
    return round(abs(a - b) / max(a, 1), 7)


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else float("nan")


def summarize(settings: Settings, cpus: dict[str, Cpu], groups: dict[str, list[str]],
              results: dict[tuple[str, str], list[dict[str, Any]]], exact_targets: dict[str, str]) -> dict[str, Any]:
    """The report: per class repack ratios, the variant ranking and dispatch vs exact; determinism."""
    representative = {name: first for first, names in groups.items() for name in names}
    classes: dict[str, Any] = {}
    differing: dict[str, float] = {}
    load_spread = 0.0
    for (cpu_name, key), runs in results.items():
        for case in runs[0]["cases"]:
            for r in runs[1:]:
                a, b = runs[0]["cases"][case], r["cases"][case]
                spread = max(_spread(a[p], b[p]) for p in ("prompt", "generation"))
                if spread:
                    differing[f"{cpu_name} {key} {case}"] = spread
                load_spread = max(load_spread, _spread(a["load"], b["load"]))
    for name in cpus:
        if (name, "auto") not in results:
            continue
        auto = results[(name, "auto")][0]
        rep = representative[name]
        entry: dict[str, Any] = {
            "features": dataclasses.asdict(cpus[name].features),
            "feature_set_of": rep,
            "auto_variant": auto["variant"],
            "scores": auto["scores"],
            "auto": auto["cases"],
            "repack": {},
        }
        for t in settings.types:
            on, off = auto["cases"][f"{t}:on"], auto["cases"][f"{t}:off"]
            entry["repack"][t] = {
                "layouts": on["layouts"], "repacked": on["repacked"],
                "off_over_on": {"prompt": _ratio(off["prompt"], on["prompt"]),
                                "generation": _ratio(off["generation"], on["generation"])}}
        if rep != name:
            first = results[(rep, "auto")][0]["cases"]
            entry["feature_set_max_relative_difference"] = max(
                _spread(case[p], first[k][p]) for k, case in auto["cases"].items() for p in ("prompt", "generation"))
        # variants: ggml's choice plus every forced runnable one (measured on the feature set's first class)
        by_variant: dict[str, Any] = {auto["variant"]: auto["cases"]}
        by_variant.update({k.removeprefix("variant:"): r[0]["cases"] for (c, k), r in results.items()
                           if c == rep and k.startswith("variant:")})
        ranking: dict[str, Any] = {}
        for t in settings.variant_types:
            for phase in ("prompt", "generation"):
                value = {v: cases[f"{t}:on"][phase] for v, cases in by_variant.items() if f"{t}:on" in cases}
                fewest = min(value, key=lambda v: value[v])
                ranking[f"{t}:{phase}"] = {
                    "order": sorted(value, key=lambda v: value[v]),
                    "instructions": value,
                    "fewest": fewest,
                    "auto_is_fewest": fewest == auto["variant"],
                    "auto_over_fewest": _ratio(value[auto["variant"]], value[fewest]),
                }
        entry["variants"] = ranking
        exact: dict[str, Any] = {}
        for (c, k), fixed in results.items():
            if c != rep or not k.startswith("exact:"):
                continue
            variant = fixed[0]["fixed_isa_variant"]
            fixed_cases = fixed[0]["cases"]
            dispatch_cases = by_variant.get(variant)
            if dispatch_cases is None:
                continue
            exact[variant] = {
                "target": k.removeprefix("exact:"),
                "chosen_by_ggml": variant == auto["variant"],
                "dispatch_over_exact": {f"{t}:{p}": _ratio(dispatch_cases[f"{t}:on"][p], fixed_cases[f"{t}:on"][p])
                                        for t in settings.variant_types for p in ("prompt", "generation")},
            }
        entry["exact"] = exact
        entry["exact_of_choice"] = exact_targets.get(auto["variant"])
        if (rep, "official") in results:
            entry["official"] = official_comparison(settings, auto["cases"], results[(rep, "official")][0])
        classes[name] = entry
    return {"classes": classes, "determinism": {
        "repeat": settings.repeat,
        "repeated": sorted(f"{c} {k}" for (c, k), runs in results.items() if len(runs) > 1),
        "processes": len(results),
        "prompt_and_generation_identical": not differing if any(len(r) > 1 for r in results.values()) else None,
        "differing": differing,  # case -> relative difference of its prompt or generation count, the larger
        "max_relative_difference": max(differing.values(), default=0.0),
        "load_max_relative_difference": round(load_spread, 7),
    }}



def official_comparison(settings: Settings, ours: dict[str, Any], official: dict[str, Any]) -> dict[str, Any]:
    """Our wheel (ggml's choice, repacking on: what a user gets) against the official build, per type: its
    instructions per prompt and generated token, and official / ours (how many times fewer ours needs).
    The official build's counts are made on the feature set's first class, like the forced variants."""
    out: dict[str, Any] = {"fixed_isa": official["fixed_isa"], "variant": official["variant"]}
    for t in settings.types:
        mine, theirs = ours[f"{t}:on"], official["cases"][f"{t}:on"]
        out[t] = {"repacked": theirs["repacked"], "layouts": theirs["layouts"]}
        for per in ("per_prompt_token", "per_generated_token"):
            out[t][per] = {"ours": mine[per], "official": theirs[per],
                           "official_over_ours": _ratio(theirs[per], mine[per])}
    return out


def matmul_shares(settings: Settings, results: dict[tuple[str, str], list[dict[str, Any]]],
                  cpu_name: str) -> dict[str, Any]:
    """Share of each phase's instructions in the matrix kernels, per type and repack, on ``cpu_name``."""
    auto = results[(cpu_name, "auto")][0]
    counts: Counts = auto["_counts"]
    out: dict[str, Any] = {"cpu": cpu_name, "variant": auto["variant"]}
    cases = list(auto["cases"])
    for i, case in enumerate(cases):
        out[case] = {phase: insn_count.shares(counts, region_of(i, phase), matmul_class)
                     for phase in ("prompt", "generation")}
        out[case]["top_prompt"] = insn_count.top_symbols(counts, region_of(i, "prompt"), 5)
        out[case]["top_generation"] = insn_count.top_symbols(counts, region_of(i, "generation"), 5)
    return out


def run(args: Any, settings: Settings) -> dict[str, Any]:
    log = runner.current_log()
    config = load(REPO)
    cache = Cache.from_env()
    matrix_cpus = load_cpus(REPO)
    spec = load_mca_spec(REPO, tuple(matrix_cpus))
    own = own_classes(spec, matrix_cpus)  # counted only for their pricing model (build_config/mca.toml)
    all_cpus = {**matrix_cpus, **own}
    chosen = settings.cpus or tuple(all_cpus)
    unknown = [c for c in chosen if c not in all_cpus]
    if unknown:
        raise UserError(f"unknown CPU class {unknown[0]!r}; build_config/cpus.toml has {', '.join(matrix_cpus)} "
                        f"and build_config/mca.toml counts {', '.join(own)}")
    cpus = {name: all_cpus[name] for name in chosen}
    groups = feature_groups(list(cpus.values()), alone=tuple(own))
    exact_targets = fixed_isa_targets(config)
    head, dirty = machine.commit(REPO)
    started = time.monotonic()
    with log.stage("arm", "the counting qemu (built once per source and plugin)"):
        counting = ensure_counting_qemu(cache)
    sysroot = ensure_sysroot(cache)
    counted_alone = [cpus[name] for name in own if name in cpus]
    if counted_alone:  # a class of mca.toml's must give ggml the features it claims, like cpus.toml's
        check_cpus(sysroot, counted_alone, source=str(spec.source.relative_to(REPO)))
    with tempfile.TemporaryDirectory(prefix="llama-wheels-arm-") as tmp:
        scratch = Path(tmp)
        targets = [DISPATCH_TARGET, *(sorted(set(exact_targets.values())) if settings.exact else []), OFFICIAL_TARGET]
        if args.smoke:  # the suite builds these two anyway; armv8.0 and the official build are compiles of their own
            targets = [t for t in targets if t in (DISPATCH_TARGET, "linux-aarch64-armv8.2-dotprod")]
        with log.stage("wheel", ", ".join(targets) + " (pipeline; cached when unchanged)"):
            built = wheels.build(config, targets, cache, scratch / "dist")
        sites = {t: install_wheel(w, scratch / f"site-{t}") for t, w in built.items()}
        models_ = ensure_models(settings, cache, sysroot, sites[DISPATCH_TARGET], next(iter(cpus.values())))
        staged = stage(cache, sites, {t: sha256_file(w) for t, w in built.items()}, models_)
        sites = {t: Path(f"site-{t}") for t in sites}  # as the guest sees them, from the stage
        bench = Bench(counting=counting, sysroot=sysroot, stage=staged, settings=settings, workdir=scratch)
        auto_cases = tuple((t, on) for t in settings.types for on in (True, False))
        variant_cases = tuple((t, True) for t in settings.variant_types)
        procs = [Process(key="auto", cpu=cpus[name], site=sites[DISPATCH_TARGET], cases=auto_cases)
                 for name in cpus]
        again = [p for p in procs if settings.repeat_classes is None or p.cpu.name in settings.repeat_classes]
        results = _run_all(bench, procs, 1, args.jobs)
        for key, runs in _run_all(bench, again, settings.repeat - 1, args.jobs, first_attempt=1).items():
            results[key].extend(runs)
        for first in groups:  # forced variants and fixed-ISA wheels, once per feature set
            scores = results[(first, "auto")][0]["scores"]
            auto = results[(first, "auto")][0]["variant"]
            more = []
            forced = settings.variant_classes is None or any(c in settings.variant_classes for c in groups[first])
            for variant in sorted(v for v, score in scores.items() if score > 0 and v != auto and forced):
                more.append(Process(key=f"variant:{variant}", cpu=cpus[first], site=sites[DISPATCH_TARGET],
                                    cases=variant_cases, lib_path=Path(f"lib-{variant}"), expect_variant=variant))
            for variant, target in sorted(exact_targets.items()):
                if target in sites and scores.get(variant, 0) > 0:
                    more.append(Process(key=f"exact:{target}", cpu=cpus[first], site=sites[target],
                                        cases=variant_cases))
            if OFFICIAL_TARGET in sites:  # the official wheel: every type, with its default (repacking on)
                more.append(Process(key="official", cpu=cpus[first], site=sites[OFFICIAL_TARGET],
                                    cases=tuple((t, True) for t in settings.types)))
            results.update(_run_all(bench, more, settings.repeat_variants, args.jobs))
        for (_, proc_key), runs in results.items():
            if proc_key.startswith("exact:"):
                target = proc_key.removeprefix("exact:")
                for r in runs:
                    r["fixed_isa_variant"] = config.target(target).variant
        pricing = settings.price_models or {m.name: m.cpu for m in spec.models}
        validation = _validate_pricing(spec, counting, sysroot, all_cpus[validate.CPU])
        price_runs(spec, pricing, settings, results)
        report = summarize(settings, cpus, groups, results, exact_targets)
        report["cycles"] = cycle_summary(settings, pricing, groups, results)
        share_cpu = next((n for n in cpus if cpus[n].features.dotprod and not cpus[n].features.sve), chosen[0])
        shares = matmul_shares(settings, results, share_cpu)
        threads = _threads_check(bench, cpus[share_cpu], sites[DISPATCH_TARGET]) if settings.threads_check else None
    return {
        **machine.report_header(head, dirty, args.smoke),
        "seconds": round(time.monotonic() - started),
        "machine": machine.machine(),
        "settings": {k: v for k, v in dataclasses.asdict(settings).items()},
        "qemu": {"version": counting.manifest["qemu"]["qemu_version"], "build": counting.manifest["qemu_build"],
                 "plugin_source_sha256": counting.source_sha256,
                 "build_seconds": counting.manifest["qemu"]["seconds"]},
        "models": {t: {"file": p.name, "size_mb": round(p.stat().st_size / 1e6, 1),
                       "parameters": sum(w.ne0 * w.ne1 for w in models.weight_tensors(settings.model(t)))}
                   for t, p in models_.items()},
        "wheels": {t: w.name for t, w in built.items()},
        "exact_targets": exact_targets,
        "feature_sets": groups,
        **report,
        "matmul_share": shares,
        "threads_check": threads,
        "mca": {"llvm": f"{spec.package} {spec.version}", "iterations": spec.iterations, "coverage": mca.COVERAGE,
                "models": pricing, "leaves_out": list(mca.LIMITS), "validation": validation},
    }


def _validate_pricing(spec: McaSpec, counting: CountingQemu, sysroot: Sysroot, cpu: Cpu) -> dict[str, Any]:
    """The hand-written kernels first (benchmarks/counting/validate.py): no estimate of ggml's code from a
    method that misses a known cycle count by more than 5%."""
    mca.check_llvm(spec)
    with runner.current_log().stage("mca", "validating estimated cycles on hand-written SDOT/SMMLA kernels"):
        checks = validate.validate(spec, counting, sysroot, cpu)
    validate.require(checks)
    return validate.report(checks)


def price_runs(spec: McaSpec, models: dict[str, str], settings: Settings,
               results: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
    """Estimated cycles of every counted prompt and generation on a class a model prices: each run gets
    ``cycles[model][case][phase]`` (an mca.Estimate). Every distinct block is priced once per model."""
    regions: list[tuple[dict[str, Any], str, str, str, dict[Any, int]]] = []
    for (cpu_name, _), runs in results.items():
        priced_by = [m for m, c in models.items() if c == cpu_name]
        if not priced_by:
            continue
        for r in runs:
            counts: Counts = r["_counts"]
            for i, case in enumerate(r["cases"]):
                for phase in ("prompt", "generation"):
                    blocks = counts.blocks(region_of(i, phase))
                    regions.extend((r, m, case, phase, blocks) for m in priced_by)
    if not regions:
        return
    with runner.current_log().stage("mca", f"pricing the hot blocks of {len(regions)} regions under "
                                           f"{', '.join(sorted(models))}"):
        prices = mca.Pricer(spec=spec, models=tuple(sorted(models))).prepare(b for *_, b in regions)
    for r, model, case, phase, blocks in regions:
        r.setdefault("cycles", {}).setdefault(model, {}).setdefault(case, {})[phase] = \
            mca.Pricer.estimate(blocks, prices[model])


def cycle_summary(settings: Settings, models: dict[str, str], groups: dict[str, list[str]],
                  results: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[str, Any]:
    """Per model: estimated cycles per prompt and generated token of every variant its class can run (ggml's
    choice, the forced ones, the official build), the ranking, and how far the repeated runs' estimates
    differ (the determinism of the pricing)."""
    out: dict[str, Any] = {}
    for model, cpu_name in sorted(models.items()):
        if (cpu_name, "auto") not in results:
            continue
        auto = results[(cpu_name, "auto")][0]
        per: dict[str, dict[str, Any]] = {}
        covered = 1.0
        spread = 0.0
        for (c, key), runs in results.items():
            if c != cpu_name or "cycles" not in runs[0] or key == "threads":
                continue
            name = auto["variant"] if key == "auto" else key.removeprefix("variant:")
            row = {}
            for case, phases in runs[0]["cycles"][model].items():
                if key == "auto" and not case.endswith(":on"):
                    continue
                for phase, est in phases.items():
                    tokens = settings.n_prompt if phase == "prompt" else settings.n_gen
                    row[f"{case.removesuffix(':on')}:{phase}"] = round(est.cycles / tokens)
                    covered = min(covered, est.covered)
                    for other in runs[1:]:
                        spread = max(spread, _spread(est.cycles, other["cycles"][model][case][phase].cycles))
            per[name] = row
        ranking: dict[str, Any] = {}
        for t in settings.variant_types:
            for phase in ("prompt", "generation"):
                k = f"{t}:{phase}"
                value = {v: row[k] for v, row in per.items() if k in row and not v.startswith(("exact:", "official"))}
                cheapest = min(value, key=lambda v: value[v])
                ranking[k] = {"order": sorted(value, key=lambda v: value[v]), "cheapest": cheapest,
                              "auto_is_cheapest": cheapest == auto["variant"],
                              "auto_over_cheapest": round(value[auto["variant"]] / value[cheapest], 4)}
        out[model] = {"cpu": cpu_name, "feature_set": groups.get(cpu_name, [cpu_name]), "auto_variant": auto["variant"],
                      "per_token": per, "ranking": ranking, "min_covered": covered,
                      "repeat_max_relative_difference": spread}
    return out


def fixed_isa_targets(config: Config) -> dict[str, str]:
    """ggml CPU variant -> the fixed-ISA target of the dispatch target's platform compiled for it."""
    platform_name = config.target(DISPATCH_TARGET).platform
    return {t.variant: name for name, t in sorted(config.targets.items())
            if t.platform == platform_name and t.variant}


def _run_all(bench: Bench, procs: Sequence[Process], repeat: int, jobs: int,
             first_attempt: int = 0) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every process ``repeat`` times, ``jobs`` at a time; results in submission order."""
    work = [(p, first_attempt + attempt) for attempt in range(repeat) for p in procs]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        done = list(pool.map(lambda item: run_process(bench, *item), work))
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (proc, _), result in zip(work, done, strict=True):
        out.setdefault((proc.cpu.name, proc.key), []).append(result)
    return out


def _threads_check(bench: Bench, cpu: Cpu, site: Path) -> dict[str, Any]:
    """Q4_0 repack on with 2 threads, counted twice: how far apart (ggml's workers spin while they wait)."""
    proc = Process(key="threads", cpu=cpu, site=site, cases=((bench.settings.types[0], True),), threads=2)
    runs = [run_process(bench, proc, attempt) for attempt in range(2)]
    case = f"{bench.settings.types[0]}:on"
    values = [{p: r["cases"][case][p] for p in ("prompt", "generation")} for r in runs]
    return {"cpu": cpu.name, "threads": 2, "vcpus": runs[0]["vcpus"], "runs": values,
            "relative_difference": {p: round(abs(values[0][p] - values[1][p]) / max(values[0][p], 1), 5)
                                    for p in ("prompt", "generation")}}


def table(data: dict[str, Any]) -> str:
    """The console summary: per class, instructions per token (Q4_0 repack on), repack ratios, ranking."""
    s = data["settings"]
    lines = [f"guest instructions per token ({s['n_prompt']}-token prompt, {s['n_gen']} generated, 1 thread)"]
    header = f"{'class':<12} {'auto':<10} " + " ".join(
        f"{t + ' pp/tok':>12} {'off/on pp':>9} {'off/on tg':>9}" for t in s["types"])
    lines.append(header)
    for name, c in data["classes"].items():
        row = f"{name:<12} {c['auto_variant']:<10} "
        for t in s["types"]:
            on = c["auto"][f"{t}:on"]
            r = c["repack"][t]["off_over_on"]
            row += f" {on['per_prompt_token']:>11,} {r['prompt']:>9.2f} {r['generation']:>9.2f}"
        lines.append(row)
    for name, c in data["classes"].items():
        for key, rank in c["variants"].items():
            if not rank["auto_is_fewest"]:
                lines.append(f"{name}: {key}: fewest {rank['fewest']}, ggml's {c['auto_variant']} "
                             f"x{rank['auto_over_fewest']:.3f}")
    for name, c in data["classes"].items():
        if "official" in c:
            lines.append(f"{name}: official build / ours, instructions per token: " + ", ".join(
                f"{t} pp x{c['official'][t]['per_prompt_token']['official_over_ours']:.2f} "
                f"tg x{c['official'][t]['per_generated_token']['official_over_ours']:.2f}" for t in s["types"]))
    for model, m in (data.get("cycles") or {}).items():
        for key, rank in m["ranking"].items():
            lines.append(f"est. cycles on {model} ({m['cpu']}'s blocks): {key}: cheapest {rank['cheapest']}"
                         + ("" if rank["auto_is_cheapest"] else
                            f", ggml's {m['auto_variant']} x{rank['auto_over_cheapest']:.3f}"))
    d = data["determinism"]
    same = d["prompt_and_generation_identical"]
    lines.append(f"determinism: {len(d['repeated'])} of {d['processes']} processes counted again: "
                 + "prompt and generation "
                 + ("identical" if same else f"within {d['max_relative_difference']:.1e}" if same is False
                    else "not repeated")
                 + f"; load within {d['load_max_relative_difference']:.1e}")
    spread = [c["feature_set_max_relative_difference"] for c in data["classes"].values()
              if "feature_set_max_relative_difference" in c]
    if spread:
        lines.append(f"classes of one feature set: prompt and generation within {max(spread):.1e} of each other")
    return "\n".join(lines)


def main_arm(args: Any) -> dict[str, Any]:
    settings = SMOKE if args.smoke else FULL
    if args.arm_cpus:
        settings = dataclasses.replace(settings, cpus=tuple(args.arm_cpus.split(",")))
    if args.arm_variants:
        settings = dataclasses.replace(settings, variant_classes=tuple(args.arm_variants.split(",")))
    if args.arm_no_exact:
        settings = dataclasses.replace(settings, exact=False)
    if args.arm_no_threads_check:
        settings = dataclasses.replace(settings, threads_check=False)
    if args.repeat is not None:
        if args.repeat < 1:
            raise UserError("--repeat must be at least 1")
        settings = dataclasses.replace(settings, repeat=args.repeat, repeat_classes=None, repeat_variants=args.repeat)
    data = run(args, settings)
    out = args.out.resolve()
    perf.write_json(out / "arm.json", data, default=_no_counts)
    with atomic_path(out / "arm.md") as tmp:  # the markdown of the committed reference run (docs/arm.md)
        tmp.write_text(arm_tables.markdown(json.loads((out / "arm.json").read_text())))
    from benchmarks.chart import write_arm_chart  # matplotlib only once there is something to draw

    write_arm_chart(data, out / "arm.png")
    return data


def _no_counts(value: Any) -> Any:
    if isinstance(value, Counts):
        return None
    raise TypeError(type(value).__name__)

