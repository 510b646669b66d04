"""``llama-wheels``: the command line. Parses arguments, runs a command, maps errors to exit codes.

Exit codes: 0 ok, 1 the work failed (also an operating-system error: a full disk, a read-only or
unwritable directory), 2 bad input (configuration, checksum, patch, missing tool), 130 interrupted.
Errors print one line (no traceback unless --debug).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from llama_wheels.config import Config, load
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, remove
from llama_wheels.core.errors import ConfigError, Interrupted, LlamaWheelsError
from llama_wheels.plan import describe, plan


def find_root(explicit: Path | None) -> Path:
    """The checkout holding build_config/: --config, else the current directory or a parent."""
    if explicit is not None:
        return explicit.resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "build_config" / "pins.toml").is_file():
            return candidate
    raise ConfigError("no build_config/pins.toml here or above; run inside the llama-wheels checkout or pass --config")


def _config(args: argparse.Namespace) -> Config:
    return load(find_root(args.config))


def cmd_plan(args: argparse.Namespace, cache: Cache) -> int:
    print(describe(plan(_config(args), args.targets, args.pin)))
    return 0


def cmd_fetch(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.pipeline import prepare_job

    for job in plan(_config(args), args.targets, args.pin):
        source = prepare_job(job, _config(args), cache)
        print(f"{job.name}: {source.tree}")
    return 0


def cmd_build(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.config.cpus import SMOKE_CPU, load_cpus
    from llama_wheels.config.platforms import platform
    from llama_wheels.judges.isa_audit import IsaAuditor
    from llama_wheels.judges.verify import SmokeVerifier
    from llama_wheels.pipeline import build_targets

    config = _config(args)
    verifier = None if args.no_verify else SmokeVerifier(load_cpus(config.root)[SMOKE_CPU], cache)
    built = build_targets(config, args.targets, args.pin, dist=args.dist.resolve(), cache=cache,
                          verifier=verifier, auditor=IsaAuditor())
    for item in built:
        libc = ("musl, no versioned symbol" if platform(item.job.platform).libc == "musl"
                else "GLIBC <= " + ".".join(map(str, item.facts.glibc_max)))
        print(f"{item.wheel}  ({item.facts.size / 1e6:.1f} MB, {len(item.facts.libraries)} libraries, "
              f"{libc}, {item.seconds:.0f}s{', cache hit' if item.cache_hit else ''})")
    return 0


def cmd_repair(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.config.platforms import platform
    from llama_wheels.core.cache import publish_file
    from llama_wheels.stages.repair import repair_wheel

    target = _config(args).target(args.target)
    with repair_wheel(args.wheel.resolve(), platform(target.platform)) as repaired:
        print(publish_file(repaired, args.dist.resolve()))
    return 0


def cmd_test(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.binaries.record import require_record
    from llama_wheels.config.cpus import choose_cpus, load_cpus
    from llama_wheels.judges.matrix import run_matrix

    config = _config(args)
    chosen = choose_cpus(load_cpus(config.root), args.cpu)
    wheels = [w.resolve() for w in args.wheels]
    for wheel in wheels:  # what each wheel must show comes from its record (no source tree is prepared)
        if wheel.is_file():
            require_record(wheel, "what it was built to be")
    report = run_matrix(wheels, chosen, root=config.root, cache=cache, jobs=args.jobs,
                        **({"cell_timeout": args.cell_timeout} if args.cell_timeout else {}))
    json_path, table_path = report.write(args.out.resolve())
    print(report.table())
    print(f"report: {json_path} and {table_path}")
    return 0 if report.ok else 1


def cmd_bed(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.config.musl_bed_spec import load_musl_bed_spec
    from llama_wheels.config.sysroot_spec import load_sysroot_spec
    from llama_wheels.emulation.musl_bed import describe, ensure_musl_sysroot
    from llama_wheels.emulation.sysroot import ensure_sysroot

    root = find_root(args.config)
    if args.libc == "musl":
        sysroot = ensure_musl_sysroot(cache, load_musl_bed_spec(root), root=root)
        print(describe(sysroot.manifest))
    else:
        sysroot = ensure_sysroot(cache, load_sysroot_spec(root))
    print(f"{args.libc} bed: {sysroot.root} (python {sysroot.python.relative_to(sysroot.root)})")
    return 0


def cmd_audit(args: argparse.Namespace, cache: Cache) -> int:
    import json

    from llama_wheels.judges.isa_audit import audit

    config = _config(args)
    reports = [audit(wheel.resolve(), config, cache) for wheel in args.wheels]
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in reports], indent=2))
    else:
        print("\n".join(r.render() for r in reports))
    failed = [r for r in reports if r.violations]
    for report in failed[1:]:
        print(f"llama-wheels: error: ISA audit of {report.wheel} failed", file=sys.stderr)
    if failed:
        failed[0].check()
    return 0


def cmd_inspect(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.release.inspection import inspect, render, to_json

    facts = inspect(args.wheel)
    print(to_json(facts) if args.json else render(facts))
    return 0


def cmd_index(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.release.index import build_index, install_command

    out = args.out.resolve()
    families = build_index(args.dist.resolve(), out)
    for family, wheels in families.items():
        url = (out / family / "simple").as_uri()
        print(f"{family}: {len(wheels)} wheel(s) -> {install_command(url, sorted({w.project for w in wheels}))}")
    return 0


def cmd_ci(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.ci import workflows

    config = _config(args)
    if args.ci_command == "generate":
        changed = workflows.generate(config)
        for rel in workflows.generated_files(config):
            print(f"{rel}: {'written' if rel in changed else 'up to date'}")
        return 0
    if args.ci_command == "check":
        drifted = workflows.drift(config)
        for diff in drifted.values():
            print(diff, end="")
        if drifted:
            raise ConfigError(f"{', '.join(map(str, drifted))}: differ from what build_config/ gives; "
                              "run `llama-wheels ci generate` and commit the result")
        print("generated CI files match build_config/")
        return 0
    from llama_wheels.ci import hooks  # the generator above needs none of the build stages

    job = hooks.job_from_env(config, getattr(args, "target", None), getattr(args, "pin", None))
    if args.ci_command == "prepare":
        print(hooks.prepare_into(job, config, cache, args.out.resolve()))
    elif args.ci_command == "before-build":
        print(hooks.before_build(job, args.project.resolve(), args.package.resolve(), cache))
    else:
        print(hooks.repair_into(job, args.wheel.resolve(), args.dest.resolve(), config, cache, config.root))
    return 0


def cmd_lock(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.ci import lock

    root = find_root(args.config)
    if args.check:
        lock.require_current(root)
        print(f"{', '.join(str(lk.path) for lk in lock.LOCKS)}: match pyproject.toml")
        return 0
    written = lock.generate(root)
    for item in lock.LOCKS:
        print(f"{item.path}: {'written' if item.path in written else 'up to date'}")
    return 0


def cmd_pin(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.pins import intake

    config = _config(args)
    if args.pin_command == "add":
        added = intake.add_pin(config, args.version, from_pin=args.from_pin, name=args.name, cache=cache,
                               overrides=intake.parse_overrides(args.switch))
        print(added.report.render())
        if not added.written:
            raise intake.summary_error(added.report, f"pin add {args.version}: nothing written")
        for path in added.written:
            print(f"wrote {path}")
        print(f"next: review the entry, `llama-wheels pin check {added.report.pin.name}`, then commit")
        return 0
    names = sorted(config.pins) if args.all else (args.pins or [config.default_pin])
    for name in names:
        config.pin(name)  # every name checked before any work
    reports = intake.check_pins(config, names, cache)
    print("\n\n".join(report.render() for report in reports))
    failed = [report for report in reports if report.problems]
    if failed:
        also = f" (pins failing: {', '.join(r.pin.name for r in failed)})" if len(failed) > 1 else ""
        raise intake.summary_error(failed[0], f"pin check {failed[0].pin.name}{also}")
    return 0


def cmd_convert_model(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.gguf_tools.convert import convert_model

    converted = convert_model(args.input, args.output)
    kinds = ", ".join(sorted({kind for _, kind in converted}))
    print(f"{args.output}: {len(converted)} tensors re-laid from {kinds} to plain Q4_0 (lossless)")
    return 0


def cmd_repack_report(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.config.cpus import choose_cpus, load_cpus
    from llama_wheels.reports.repack_report import build_wheels, run, write

    config = _config(args)
    chosen = choose_cpus(load_cpus(config.root), args.cpu)
    data = run(config, cache, chosen, build_wheels(config, cache, args.dist.resolve()), jobs=args.jobs)
    json_path, md_path = write(data, args.out.resolve(), config.root / "README.md")
    print(f"report: {md_path} and {json_path}; README.md's table updated")
    bad = [f"{role} on {cpu}: {cell['verdict']} {cell['detail']}" for role, cells in data["cells"].items()
           for cpu, cell in cells.items() if cell["verdict"] not in ("pass", "unsupported")]
    for line in bad:
        print(f"not ok: {line}")
    return 1 if bad else 0


def cmd_legacy_report(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.config.cpus import choose_cpus, load_cpus
    from llama_wheels.reports.legacy import build_wheels, run, write

    config = _config(args)
    chosen = choose_cpus(load_cpus(config.root), args.cpu)
    data = run(config, cache, chosen, build_wheels(config, cache, args.dist.resolve()), jobs=args.jobs)
    json_path, md_path = write(data, config, args.out.resolve())
    print(f"report: {md_path} and {json_path}")
    # The unpatched wheel is expected to crash; the patched ones must not fail anywhere.
    bad = [f"{role} on {cpu}: {cell['verdict']} {cell['detail']}" for role, cells in data["cells"].items()
           if role != "before" for cpu, cell in cells.items() if cell["verdict"] not in ("pass", "unsupported")]
    for line in bad:
        print(f"not ok: {line}")
    return 1 if bad else 0


def cmd_clean(args: argparse.Namespace, cache: Cache) -> int:
    everything = ["sdists", "ccache", "zig", "sysroot", "wheels"]
    parts = ["build", "src", "toolchains"] + (everything if args.all else [])
    for part in parts:
        # remove() raises what it could not remove (main() reports it in one line): never "removed" untrue
        print(f"removed {cache.root / part}" if remove(cache.root / part) else f"absent  {cache.root / part}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="llama-wheels", description=__doc__.splitlines()[0] if __doc__ else None)
    top.add_argument("--config", type=Path, help="checkout holding build_config/ (default: found from cwd)")
    top.add_argument("--log", type=Path, help="full log file (default: logs/llama-wheels-<time>.log)")
    top.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = top.add_subparsers(dest="command", required=True)

    def with_targets(p: argparse.ArgumentParser) -> None:
        p.add_argument("targets", nargs="*", metavar="TARGET", help="targets from build_config/targets.toml")
        p.add_argument("--pin", help="pin from build_config/pins.toml (default: its default)")

    p = sub.add_parser("plan", help="show per target the exact CMake arguments and patches; builds nothing")
    with_targets(p)
    p.set_defaults(func=cmd_plan)
    p = sub.add_parser("fetch", help="download (sha256-checked) and prepare (patch) the pinned source")
    with_targets(p)
    p.set_defaults(func=cmd_fetch)
    p = sub.add_parser("build", help="fetch, prepare, build, repair, verify and ISA-audit wheels into dist/")
    with_targets(p)
    p.add_argument("--dist", type=Path, default=Path("dist"), help="where finished wheels go (default: dist/)")
    p.add_argument("--no-verify", action="store_true", help="skip the emulated smoke test")
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("repair", help="auditwheel-repair and check a built wheel")
    p.add_argument("wheel", type=Path)
    p.add_argument("--target", help="target the wheel was built for (default: the default target)")
    p.add_argument("--dist", type=Path, default=Path("dist"))
    p.set_defaults(func=cmd_repair)
    p = sub.add_parser("bed", help="build (once) the emulated test bed of a libc and print where it is")
    p.add_argument("libc", choices=("glibc", "musl"), help="glibc: build_config/sysroot.toml; musl: musl_bed.toml")
    p.set_defaults(func=cmd_bed)
    p = sub.add_parser("test", help="run wheels on every emulated CPU; JSON report and table")
    p.add_argument("wheels", nargs="+", type=Path, metavar="WHEEL")
    p.add_argument("--cpu", action="append", default=[], help="a CPU from build_config/cpus.toml (repeatable)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="report directory (default: reports/)")
    p.add_argument("--jobs", type=int, help="cells run at once (default: number of cores)")
    p.add_argument("--cell-timeout", type=float, metavar="SECONDS",
                   help="a cell still running after this ends as 'timeout', the others go on (default: 1200)")
    p.set_defaults(func=cmd_test)
    p = sub.add_parser("audit", help="static ISA audit: every instruction of every library within what it may use")
    p.add_argument("wheels", nargs="+", type=Path, metavar="WHEEL")
    p.add_argument("--json", action="store_true", help="machine-readable output (every offending instruction)")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("inspect", help="a wheel's provenance, tags, libraries, CPU variants, GLIBC/minos")
    p.add_argument("wheel", type=Path, metavar="WHEEL")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)
    p = sub.add_parser("index", help="static PEP 503/691 index of DIST's wheels, one per variant family")
    p.add_argument("dist", type=Path, metavar="DIST", help="directory of built wheels (e.g. dist/)")
    p.add_argument("out", type=Path, metavar="OUT", help="index root: OUT/<family>/simple is an --index-url")
    p.set_defaults(func=cmd_index)
    p = sub.add_parser("ci", help="GitHub Actions + cibuildwheel: generate/check the files; the CI-side hooks")
    ci_sub = p.add_subparsers(dest="ci_command", required=True)
    ci_sub.add_parser("generate", help="write .github/workflows/wheels.yml and cibuildwheel.toml from build_config/")
    ci_sub.add_parser("check", help="fail if the committed CI files differ from what `ci generate` writes")
    q = ci_sub.add_parser("prepare", help="fetch + patch TARGET's source and copy it to OUT (cibuildwheel's package)")
    q.add_argument("target", nargs="?", metavar="TARGET", help="default: $LLAMA_WHEELS_TARGET")
    q.add_argument("--pin", help="default: $LLAMA_WHEELS_PIN, else the default pin")
    q.add_argument("--out", type=Path, required=True)
    q = ci_sub.add_parser("before-build", help="cibuildwheel hook: write the job's CMake settings (initial cache)")
    q.add_argument("--project", type=Path, required=True, help="cibuildwheel's {project}")
    q.add_argument("--package", type=Path, required=True, help="cibuildwheel's {package} (the prepared source)")
    q = ci_sub.add_parser("repair", help="cibuildwheel hook: auditwheel/delocate + the local build's checks")
    q.add_argument("wheel", type=Path, metavar="WHEEL")
    q.add_argument("--dest", type=Path, required=True, help="cibuildwheel's {dest_dir}")
    p.set_defaults(func=cmd_ci)
    p = sub.add_parser("lock", help="hash-locked requirements/*.txt from pyproject.toml (uv); --check: offline")
    p.add_argument("--check", action="store_true", help="fail if the locks do not match pyproject.toml")
    p.set_defaults(func=cmd_lock)
    p = sub.add_parser("pin", help="take a new llama-cpp-python release into build_config/, or check the pins")
    pin_sub = p.add_subparsers(dest="pin_command", required=True)
    q = pin_sub.add_parser("add", help="add [pins.NAME] for a PyPI release: sdist, commit, patches carried over, "
                                       "switches and every target checked; written only if all pass")
    q.add_argument("version", metavar="VERSION", help="a llama-cpp-python release on the package index")
    q.add_argument("--from", dest="from_pin", metavar="PIN", help="the pin whose patches and switches to carry "
                   "over (default: the default pin)")
    q.add_argument("--name", help="the new pin's name (default: VERSION)")
    q.add_argument("--switch", action="append", default=[], metavar="KEY=VALUE",
                   help="a switch that differs from the --from pin's (a CMake name, -flag={}, or false; repeatable)")
    q = pin_sub.add_parser("check", help="the same checks for committed pins (offline once their sdists are cached)")
    q.add_argument("pins", nargs="*", metavar="PIN", help="default: the default pin")
    q.add_argument("--all", action="store_true", help="every pin of build_config/pins.toml")
    p.set_defaults(func=cmd_pin)
    p = sub.add_parser("convert-model", help="rewrite an old GGUF's Q4_0_4_4/4_8/8_8 tensors as plain Q4_0")
    p.add_argument("input", type=Path, metavar="IN", help="GGUF from a llama.cpp that still had those types")
    p.add_argument("output", type=Path, metavar="OUT", help="the converted GGUF (written atomically)")
    p.set_defaults(func=cmd_convert_model)
    p = sub.add_parser("legacy-report", help="0.3.4 with vs without its patches on every emulated CPU -> docs/")
    p.add_argument("--cpu", action="append", default=[], help="a CPU from build_config/cpus.toml (repeatable)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="report directory (default: docs/)")
    p.add_argument("--dist", type=Path, default=Path("dist"), help="where the wheels go (default: dist/)")
    p.add_argument("--jobs", type=int, help="matrix cells run at once (default: number of cores)")
    p.set_defaults(func=cmd_legacy_report)
    p = sub.add_parser("repack-report", help="every repackable type on every emulated CPU, with and without "
                       "patch 0007 -> docs/ and README")
    p.add_argument("--cpu", action="append", default=[], help="a CPU from build_config/cpus.toml (repeatable)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="report directory (default: docs/)")
    p.add_argument("--dist", type=Path, default=Path("dist"), help="where the wheels go (default: dist/)")
    p.add_argument("--jobs", type=int, help="matrix cells run at once (default: number of cores)")
    p.set_defaults(func=cmd_repack_report)
    p = sub.add_parser("clean", help="remove cached build trees (--all: also downloads, ccache, sysroot)")
    p.add_argument("--all", action="store_true")
    p.set_defaults(func=cmd_clean)
    return top


def os_error(exc: OSError) -> LlamaWheelsError:
    """An operating-system error as one line: the file, what the system said, and what to do."""
    import errno

    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None) or "a file operation"
    name = errno.errorcode.get(exc.errno or 0, "")
    fix = {errno.ENOSPC: "free space there (or point LLAMA_WHEELS_CACHE / --dist elsewhere) and run again",
           errno.EDQUOT: "free space there (or point LLAMA_WHEELS_CACHE / --dist elsewhere) and run again",
           errno.EACCES: "make it writable for this user or choose another directory",
           errno.EPERM: "make it writable for this user or choose another directory",
           errno.EROFS: "choose a directory on a writable file system"}.get(exc.errno or 0, "check it and run again")
    return LlamaWheelsError(f"{where}: {exc.strerror or exc}{f' ({name})' if name else ''}; {fix}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a cancelled CI job, `timeout`) cleans up like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    runner.adopt_orphans()  # an interrupt ends every process a command started, however deep
    log_path = args.log or Path("logs") / f"llama-wheels-{time.strftime('%Y%m%d-%H%M%S')}-{args.command}.log"
    quiet = args.command in ("plan", "inspect", "convert-model", "audit", "lock") or (
        args.command == "ci" and args.ci_command in ("generate", "check"))
    try:
        log = runner.Log(None if quiet else log_path.resolve(), quiet=quiet)
    except OSError as exc:
        print(f"llama-wheels: error: {os_error(exc)} (or pass --log FILE)", file=sys.stderr)
        return 1
    runner.set_log(log)
    if not quiet:
        log.progress(f"full log: {log_path}")
    try:
        return int(args.func(args, Cache.from_env()))
    except KeyboardInterrupt:
        error: LlamaWheelsError = Interrupted("interrupted; nothing was published")
    except LlamaWheelsError as exc:
        error = exc
    except BrokenPipeError:  # the reader went away (`... | head`): nothing to report to it
        return 1
    except OSError as exc:  # a full disk, a read-only or unwritable directory: one line, not a traceback
        if args.debug:
            raise
        error = os_error(exc)
    finally:
        log.close()
    if args.debug:
        raise error
    print(f"llama-wheels: error: {error}", file=sys.stderr)
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
