"""``llama-wheels``: the command line. Parses arguments, runs a command, maps errors to exit codes.

Exit codes (one policy for every command, printed by ``--help`` and in the reference):
0 ok; 1 the work or the environment failed (a build, a gate, a full disk, an unwritable directory);
2 bad input (arguments, a missing file, configuration, checksum, patch, missing tool); 130 interrupted.
An error prints one line; ``--debug`` adds the traceback and keeps the exit code.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from llama_wheels.config import Config, load
from llama_wheels.core import runner
from llama_wheels.core.cache import Cache, remove
from llama_wheels.core.errors import ConfigError, Interrupted, LlamaWheelsError, one_line
from llama_wheels.plan import describe, plan, to_json

SUMMARY = "Build, test and release ARM wheels of llama-cpp-python whose runtime repacking works."
EXIT_CODES = (("0", "ok"),
              ("1", "the work or the environment failed: a build, a gate, a test cell, a full disk, an unwritable "
                    "directory"),
              ("2", "bad input: arguments, a missing file, build_config/, a checksum, a patch, a missing tool"),
              ("130", "interrupted (Ctrl-C, SIGTERM); nothing half-written is left"))
REPACK_TABLE_PAGE = "docs/measurements.md"  # the page holding the repack table `repack-report` rewrites
EXIT_POLICY = ("exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES)
               + ". An error is one line on stderr; --debug adds the traceback and keeps the exit code.")


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
    jobs = plan(_config(args), args.targets, args.pin)
    print(to_json(jobs) if args.json else describe(jobs))
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
    from llama_wheels.stages.repair import check_input, repair_wheel

    target = _config(args).target(args.target)
    check_input(args.wheel)  # auditwheel is handed a whole wheel with something to repair, or nothing
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
    if args.json:  # the report file's own text: one owner of the format (matrix.Report.write)
        print(json_path.read_text())
    else:
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
    from llama_wheels.judges.isa_audit import audit

    config = _config(args)
    reports = [audit(wheel.resolve(), config, cache) for wheel in args.wheels]
    if args.json:
        print(json.dumps([json.loads(r.to_json()) for r in reports], indent=2))
    else:
        print("\n".join(r.render() for r in reports))
        failing = [r.wheel for r in reports if r.violations]
        print(f"verdict: {len(reports) - len(failing)} of {len(reports)} wheel(s) pass the ISA audit"
              + (f"; failing: {', '.join(failing)}" if failing else ""))
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
    from llama_wheels.pins.report import summary_error

    config = _config(args)
    if args.pin_command == "add":
        if args.abort:
            print(f"removed {intake.abort_pin(config, args.version, name=args.name)}; nothing was written")
            return 0
        if args.resume:
            added = intake.continue_pin(config, args.version, name=args.name, cache=cache)
        else:
            added = intake.add_pin(config, args.version, from_pin=args.from_pin, name=args.name, cache=cache,
                                    overrides=intake.parse_overrides(args.switch))
        print(added.report.render())
        if added.stopped is not None:
            print(added.stopped.render())
            raise summary_error(added.report, f"pin add {args.version}: stopped in {added.stopped.repo}")
        if not added.written:
            raise summary_error(added.report, f"pin add {args.version}: nothing written")
        for path in added.written:
            print(f"wrote {path}")
        print(f"next: review the entry, `llama-wheels pin check {added.report.pin.name}`, then commit")
        return 0
    names = sorted(config.pins) if args.all else (args.pins or [config.default_pin])
    for name in names:
        config.pin(name)  # every name checked before any work
    reports = intake.check_pins(config, names, cache)
    if args.json:
        from dataclasses import asdict

        print(json.dumps([{**asdict(report), "problems": report.problems} for report in reports], indent=2,
                         default=str))
    else:
        print("\n\n".join(report.render() for report in reports))
    failed = [report for report in reports if report.problems]
    if failed:
        also = f" (pins failing: {', '.join(r.pin.name for r in failed)})" if len(failed) > 1 else ""
        raise summary_error(failed[0], f"pin check {failed[0].pin.name}{also}")
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
    page = config.root / REPACK_TABLE_PAGE
    json_path, md_path = write(data, args.out.resolve(), page)
    print(f"wrote {md_path}, {json_path} and the repack table of {page}")
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


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    return sum(f.lstat().st_size for f in path.rglob("*") if not f.is_dir() or f.is_symlink())


def cmd_release(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels.ci.workflows import RELEASE
    from llama_wheels.release import commands

    return commands.run(args, _config(args), workflow=RELEASE)


def cmd_clean(args: argparse.Namespace, cache: Cache) -> int:
    everything = ["sdists", "ccache", "zig", "sysroot", "wheels"]
    parts = ["build", "src", "toolchains"] + (everything if args.all else [])
    for part in parts:
        path = cache.root / part
        if args.dry_run:
            there = path.exists() or path.is_symlink()
            print(f"would remove {path} ({_size(path) / 1e6:.1f} MB)" if there else f"absent  {path}")
            continue
        # remove() raises what it could not remove (main() reports it in one line): never "removed" untrue
        print(f"removed {path}" if remove(path) else f"absent  {path}")
    return 0


def cmd_completion(args: argparse.Namespace, cache: Cache) -> int:
    import shtab

    print(shtab.complete(parser(), shell=args.shell), end="")
    return 0


def cmd_docs(args: argparse.Namespace, cache: Cache) -> int:
    from llama_wheels import reference

    root = find_root(args.config)
    if args.docs_command == "build":
        print(f"documentation site: {reference.build_site(root, args.site_dir)}/index.html")
        return 0
    if args.docs_command == "generate":
        written = reference.generate(root, parser())
        for rel in reference.PAGES:
            print(f"{rel}: {'written' if rel in written else 'up to date'}")
        return 0
    drifted = reference.drift(root, parser())
    if drifted:
        raise ConfigError(f"{', '.join(map(str, drifted))}: differ from what the code gives; run "
                          "`llama-wheels docs generate` and commit the result")
    print(f"{', '.join(map(str, reference.PAGES))}: match the code")
    return 0


def version_text(config_dir: Path | None) -> str:
    """``--version``: the tool, the pins it builds and the emulator it judges with."""
    import importlib.metadata
    import platform

    try:
        tool = importlib.metadata.version("llama-wheels")
    except importlib.metadata.PackageNotFoundError:
        tool = "(not installed: run scripts/bootstrap.sh)"
    lines = [f"llama-wheels {tool} (Python {platform.python_version()})"]
    try:
        from llama_wheels.config.qemu_spec import load_qemu_spec

        config = load(find_root(config_dir))
        qemu = load_qemu_spec(config.root)
    except LlamaWheelsError as exc:
        return "\n".join([*lines, f"pins: not read ({exc})"])
    for pin in config.pins.values():
        marks = [m for m, on in (("default", pin.name == config.default_pin), ("published", pin.publish),
                                 (f"build {pin.build}", pin.build is not None)) if on]
        lines.append(f"pin {pin.name}: llama-cpp-python {pin.version}, llama.cpp {pin.llama_cpp_commit[:9]}"
                     + (f" ({', '.join(marks)})" if marks else ""))
    lines.append(f"qemu: {qemu.package} {qemu.version} (Debian {qemu.suite}, build_config/qemu.toml)")
    return "\n".join(lines)


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version, the pins and the qemu pin; exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> NoReturn:
        print(version_text(getattr(namespace, "config", None)))
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    """Bad arguments end like all bad input: one line naming the culprit, exit code 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("llama-wheels").strip()
        self.exit(2, f"llama-wheels: error: {where + ': ' if where else ''}{message} (see `{self.prog} --help`)\n")


class _Formatter(argparse.HelpFormatter):
    """Paragraphs filled to the terminal; example lines (indented) and headings (ending in ':') as written."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=28)

    def _format_action(self, action: argparse.Action) -> str:
        text = super()._format_action(action)
        if isinstance(action, argparse._SubParsersAction):  # the commands one line each, no bare "COMMAND" above
            return "".join(text.splitlines(keepends=True)[1:])
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if lines and (lines[0].endswith(":") or lines[0].startswith(" ")):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)


def _command(sub: Any, name: str, summary: str, description: str,
             *examples: str) -> argparse.ArgumentParser:
    """A subcommand: a one-line summary (the top-level list), a description and at least one example."""
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    command: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description,
                                                      epilog=epilog, formatter_class=_Formatter)
    return command


def _existing(kind: str) -> Callable[[str], Path]:
    """An argparse type: a path that exists as a ``kind`` ("file" or "directory"); else bad input (exit 2)."""
    def check(text: str) -> Path:
        path = Path(text)
        if not (path.is_file() if kind == "file" else path.is_dir()):
            raise argparse.ArgumentTypeError(f"{text}: {'not a' if path.exists() else 'no such'} {kind}; "
                                             "check the path")
        return path
    return check


_existing_file, _existing_dir = _existing("file"), _existing("directory")


def _positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """An argparse type: a number of ``kind`` above zero (argparse names the option and exits 2 otherwise)."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}"
                                             ) from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} is not above zero")
        return value
    parse.__name__ = kind.__name__
    return parse


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="llama-wheels", description=SUMMARY, formatter_class=_Formatter,
                  epilog=f"{EXIT_POLICY}\n\nRun `llama-wheels COMMAND --help` for a command's description and "
                         "examples. Most commands need the checkout holding build_config/ (found from the current "
                         "directory, or --config).")
    top.add_argument("--version", action=_Version)
    top.add_argument("--config", type=Path, help="checkout holding build_config/ (default: found from cwd)")
    top.add_argument("--log", type=Path, help="full log file (default: <cache>/logs/<time>-<command>.log)")
    top.add_argument("--debug", action="store_true", help="add the traceback to an error (same exit code)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    def with_targets(p: argparse.ArgumentParser) -> None:
        p.add_argument("targets", nargs="*", metavar="TARGET", help="targets from build_config/targets.toml "
                       "(default: the pin's targets, else the default target)")
        p.add_argument("--pin", help="pin from build_config/pins.toml (default: its default)")

    def with_cpus(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cpu", action="append", default=[], help="a CPU from build_config/cpus.toml (repeatable; "
                       "default: every one)")

    p = _command(sub, "build", "fetch, patch, build, repair, verify, audit -> dist/",
                 "Build wheels of the pinned llama-cpp-python: download and sha256-check the sdist, apply the pin's "
                 "patch series, compile with zig, repair (auditwheel), finalize (provenance record, reproducible "
                 "archive), smoke-test under the emulated neoverse-n1 (verify) and run the static ISA audit. "
                 "A wheel reaches --dist only if every gate passes; a multi-target build publishes all or none.",
                 "llama-wheels build",
                 "llama-wheels build linux-aarch64-armv8.2-dotprod --pin legacy --dist dist-legacy")
    with_targets(p)
    p.add_argument("--dist", type=Path, default=Path("dist"), help="where finished wheels go (default: dist/)")
    p.add_argument("--no-verify", action="store_true", help="skip the emulated smoke test")
    p.set_defaults(func=cmd_build)

    p = _command(sub, "test", "run wheels on every emulated CPU class",
                 "Run each wheel's test suite on every CPU class of build_config/cpus.toml under the pinned "
                 "qemu-user: the CPU variant ggml loads, each weight's repack layout (judged by the oracle), the "
                 "same greedy tokens with repacking off, ImportError instead of SIGILL where a fixed-ISA wheel "
                 "must refuse. Writes OUT/matrix.json and OUT/matrix.txt; exit 1 if a cell fails.",
                 "llama-wheels test dist/*.whl", "llama-wheels test dist/*.whl --cpu cortex-a53 --cpu neoverse-n1 "
                 "--json")
    p.add_argument("wheels", nargs="+", type=_existing_file, metavar="WHEEL", help="Linux aarch64 wheels to run")
    with_cpus(p)
    p.add_argument("--out", type=Path, default=Path("reports"), help="report directory (default: reports/)")
    p.add_argument("--jobs", type=_positive(int), help="cells run at once (default: number of cores)")
    p.add_argument("--cell-timeout", type=_positive(float), metavar="SECONDS",
                   help="a cell still running after this ends as 'timeout', the others go on (default: 1200)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.set_defaults(func=cmd_test)

    p = _command(sub, "plan", "show the CMake arguments and patches; builds nothing",
                 "Print, per target, the pin, the exact CMake arguments and the patch series a build would use. "
                 "Pure: reads build_config/ only, downloads and builds nothing.",
                 "llama-wheels plan", "llama-wheels plan linux-aarch64-armv8.2-dotprod --pin legacy --json")
    with_targets(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_plan)

    p = _command(sub, "fetch", "download and patch the pinned source",
                 "Download the pinned sdist (sha256-checked, cached by hash) and prepare the source tree (the pin's "
                 "patch series applied); prints where each prepared tree is.",
                 "llama-wheels fetch", "llama-wheels fetch --pin legacy")
    with_targets(p)
    p.set_defaults(func=cmd_fetch)

    p = _command(sub, "repair", "auditwheel-repair and check a built wheel",
                 "Repair a wheel built elsewhere (auditwheel for Linux) for its target's platform and run the "
                 "post-repair checks; the repaired wheel goes to --dist.",
                 "llama-wheels repair build/llama_cpp_python-0.3.36-py3-none-linux_aarch64.whl")
    p.add_argument("wheel", type=_existing_file, metavar="WHEEL", help="the wheel scikit-build-core wrote")
    p.add_argument("--target", help="target the wheel was built for (default: the default target)")
    p.add_argument("--dist", type=Path, default=Path("dist"), help="where the repaired wheel goes (default: dist/)")
    p.set_defaults(func=cmd_repair)

    p = _command(sub, "audit", "static ISA audit of every library in a wheel",
                 "Disassemble every ELF and Mach-O library of each wheel and hold every instruction to what its "
                 "library may use (a CPU variant's -march, a fixed ISA, or the platform baseline). Prints one line "
                 "per library and a verdict line; exit 1 if an instruction is beyond what its library may use.",
                 "llama-wheels audit dist/*.whl", "llama-wheels audit dist/*.whl --json > audit.json")
    p.add_argument("wheels", nargs="+", type=_existing_file, metavar="WHEEL", help="wheels to audit")
    p.add_argument("--json", action="store_true", help="machine-readable output (every offending instruction)")
    p.set_defaults(func=cmd_audit)

    p = _command(sub, "inspect", "a wheel's provenance, tags, libraries, variants",
                 "Print what a wheel is: its provenance record (pin, sdist, llama.cpp commit, patches, settings, "
                 "tools), tags, bundled libraries, CPU variants or fixed ISA, and the GLIBC (or macOS minos) it "
                 "needs.",
                 "llama-wheels inspect dist/llama_cpp_python-0.3.36-py3-none-manylinux_2_17_aarch64.whl --json")
    p.add_argument("wheel", type=_existing_file, metavar="WHEEL", help="the wheel to describe")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = _command(sub, "bed", "build (once) an emulated test bed",
                 "Build the emulated aarch64 test bed of a libc once (cached by its inputs) and print where it is: "
                 "glibc from build_config/sysroot.toml, musl from build_config/musl_bed.toml.",
                 "llama-wheels bed glibc", "llama-wheels bed musl")
    p.add_argument("libc", choices=("glibc", "musl"), help="glibc: build_config/sysroot.toml; musl: musl_bed.toml")
    p.set_defaults(func=cmd_bed)

    p = _command(sub, "index", "static PEP 503/691 index of built wheels",
                 "Write (or extend: append-only) a static package index of DIST's wheels, one per variant family "
                 "(OUT/<family>/simple is a pip --extra-index-url). A wheel that would give a published file name "
                 "other bytes is refused (raise the pin's build number).",
                 "llama-wheels index dist site")
    p.add_argument("dist", type=_existing_dir, metavar="DIST", help="directory of built wheels (e.g. dist/)")
    p.add_argument("out", type=Path, metavar="OUT", help="index root: OUT/<family>/simple is an --index-url")
    p.set_defaults(func=cmd_index)
    from llama_wheels.release import commands as release_commands

    release_commands.add_parser(sub, _command).set_defaults(func=cmd_release)

    p = _command(sub, "pin", "add a llama-cpp-python release, or check the pins",
                 "Take a new llama-cpp-python release into build_config/ (pin add) or re-run the same checks on "
                 "committed pins (pin check).",
                 "llama-wheels pin add 0.3.37", "llama-wheels pin check --all")
    pin_sub = p.add_subparsers(dest="pin_command", required=True, metavar="SUBCOMMAND", title="subcommands")
    q = _command(pin_sub, "add", "add [pins.NAME] for a release",
                 "Add [pins.NAME] for a llama-cpp-python release on the package index: sdist and its sha256, the "
                 "vendored llama.cpp commit, the --from pin's patches carried over (git am --3way), every switch "
                 "and target checked. Written only if everything passes; otherwise nothing is written, exit 2.\n\n"
                 "A patch conflict stops the carry in a named worktree (.pin-add/NAME/repo in the checkout) at the "
                 "conflicting patch, with its conflict markers: resolve them there, `git add` the files, then "
                 "--continue carries the rest and writes the pin; --abort removes the worktree.",
                 "llama-wheels pin add 0.3.35",
                 "llama-wheels pin add 0.3.35 --from current --switch repack=GGML_CPU_REPACK",
                 "llama-wheels pin add 0.3.34 --continue")
    q.add_argument("version", metavar="VERSION", help="a llama-cpp-python release on the package index")
    q.add_argument("--from", dest="from_pin", metavar="PIN", help="the pin whose patches and switches to carry "
                   "over (default: the default pin)")
    q.add_argument("--name", help="the new pin's name (default: VERSION)")
    q.add_argument("--switch", action="append", default=[], metavar="KEY=VALUE",
                   help="a switch that differs from the --from pin's (a CMake name, -flag={}, or false; repeatable)")
    stop = q.add_mutually_exclusive_group()
    stop.add_argument("--continue", dest="resume", action="store_true",
                      help="after resolving and staging a conflict in the worktree: carry the rest, write the pin")
    stop.add_argument("--abort", action="store_true", help="remove the worktree of a stopped pin add")
    q = _command(pin_sub, "check", "check committed pins",
                 "Run pin add's checks on committed pins (each pin's own series on its own source); offline once "
                 "their sdists are cached. Exit 2 if a pin has a problem.",
                 "llama-wheels pin check", "llama-wheels pin check --all --json")
    q.add_argument("pins", nargs="*", metavar="PIN", help="default: the default pin")
    q.add_argument("--all", action="store_true", help="every pin of build_config/pins.toml")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_pin)

    p = _command(sub, "ci", "generate/check the CI files; cibuildwheel hooks",
                 "GitHub Actions and cibuildwheel: write or check the generated files (.github/workflows/wheels.yml, "
                 ".github/workflows/release.yml, cibuildwheel.toml), and the hooks the CI jobs call.",
                 "llama-wheels ci generate", "llama-wheels ci check")
    ci_sub = p.add_subparsers(dest="ci_command", required=True, metavar="SUBCOMMAND", title="subcommands")
    _command(ci_sub, "generate", "write the workflows and cibuildwheel.toml",
             "Write .github/workflows/wheels.yml, .github/workflows/release.yml and cibuildwheel.toml from "
             "build_config/ (the same plan as a local build). Commit the result.",
             "llama-wheels ci generate")
    _command(ci_sub, "check", "fail if the committed CI files are stale",
             "Exit 2 if the committed CI files differ from what `ci generate` writes (prints the diff).",
             "llama-wheels ci check")
    q = _command(ci_sub, "prepare", "fetch + patch TARGET's source into OUT",
                 "CI: fetch and patch TARGET's source and copy it to OUT (cibuildwheel's package directory).",
                 "llama-wheels ci prepare linux-aarch64 --out .cibw/src")
    q.add_argument("target", nargs="?", metavar="TARGET", help="default: $LLAMA_WHEELS_TARGET")
    q.add_argument("--pin", help="default: $LLAMA_WHEELS_PIN, else the default pin")
    q.add_argument("--out", type=Path, required=True, help="where the prepared source goes")
    q = _command(ci_sub, "before-build", "cibuildwheel hook: the job's CMake settings",
                 "cibuildwheel's before-build hook: write the job's CMake settings (an initial cache file).",
                 "llama-wheels ci before-build --project . --package .cibw/src")
    q.add_argument("--project", type=Path, required=True, help="cibuildwheel's {project}")
    q.add_argument("--package", type=Path, required=True, help="cibuildwheel's {package} (the prepared source)")
    q = _command(ci_sub, "repair", "cibuildwheel hook: repair + the local checks",
                 "cibuildwheel's repair hook: auditwheel (Linux) or delocate (macOS), then the local build's "
                 "finalize stage and checks.",
                 "llama-wheels ci repair build/llama_cpp_python-0.3.36-py3-none-linux_aarch64.whl --dest wheelhouse")
    q.add_argument("wheel", type=_existing_file, metavar="WHEEL", help="the wheel cibuildwheel built ({wheel})")
    q.add_argument("--dest", type=Path, required=True, help="cibuildwheel's {dest_dir}")
    p.set_defaults(func=cmd_ci)

    p = _command(sub, "lock", "hash-locked requirements/*.txt from pyproject.toml",
                 "Resolve requirements/ci.txt, test.txt and wheel-tests.txt from pyproject.toml with the pinned uv "
                 "(every file by sha256). --check verifies them offline.",
                 "llama-wheels lock", "llama-wheels lock --check")
    p.add_argument("--check", action="store_true", help="fail if the locks do not match pyproject.toml")
    p.set_defaults(func=cmd_lock)

    p = _command(sub, "docs", "generate/check the reference pages of docs/",
                 "Write the generated pages of the documentation site (every command and option from this "
                 "parser, every build_config/ key from the typed config, every key of the wheel's record, the "
                 "test tiers) and README.md's comparison table (from docs/arm.json), or check that the committed "
                 "ones match the code.",
                 "llama-wheels docs generate", "llama-wheels docs check")
    docs_sub = p.add_subparsers(dest="docs_command", required=True, metavar="SUBCOMMAND", title="subcommands")
    _command(docs_sub, "generate", "write docs/reference/*.md from the code",
             "Write the generated reference pages (each atomically). Commit the result.", "llama-wheels docs generate")
    _command(docs_sub, "check", "fail if the committed reference pages are stale",
             "Exit 2 if a committed reference page differs from what `docs generate` writes.",
             "llama-wheels docs check")
    b = _command(docs_sub, "build", "render the documentation site (MkDocs, strict) into a directory",
                 "Render docs/ with MkDocs (--strict: a broken link fails) into SITE_DIR, atomically. The "
                 "release's index job publishes it on Pages beside the package index (site/docs/).",
                 "llama-wheels docs build site/docs")
    b.add_argument("site_dir", type=Path, help="where the rendered site goes (replaced as a whole)")
    p.set_defaults(func=cmd_docs)

    p = _command(sub, "clean", "remove cached build trees (--all: everything)",
                 "Remove the cache's build trees, prepared sources and toolchain wrappers (--all: also downloads, "
                 "ccache, zig's cache, the sysroots and finished wheels). Says what it removed.",
                 "llama-wheels clean --dry-run", "llama-wheels clean --all")
    p.add_argument("--all", action="store_true", help="also downloads, ccache, zig's cache, sysroots, finished wheels")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed (and its size); remove nothing")
    p.set_defaults(func=cmd_clean)

    p = _command(sub, "convert-model", "old Q4_0_4_4/4_8/8_8 GGUF -> plain Q4_0",
                 "Rewrite an old GGUF's Q4_0_4_4 / Q4_0_4_8 / Q4_0_8_8 tensors as plain Q4_0 (a lossless "
                 "permutation), which current wheels repack at load time again. Written atomically.",
                 "llama-wheels convert-model old-q4_0_4_4.gguf model-q4_0.gguf")
    p.add_argument("input", type=_existing_file, metavar="IN", help="GGUF from a llama.cpp that still had those types")
    p.add_argument("output", type=Path, metavar="OUT", help="the converted GGUF (written atomically)")
    p.set_defaults(func=cmd_convert_model)

    p = _command(sub, "legacy-report", "0.3.4 with vs without its patches -> docs/",
                 "Build the 0.3.4 wheels with and without their patch series and run them on every emulated CPU "
                 "class. Rewrites OUT/legacy-0.3.4.json and .md (nothing else).",
                 "llama-wheels legacy-report", "llama-wheels legacy-report --cpu cortex-a53 --out reports")
    with_cpus(p)
    p.add_argument("--out", type=Path, default=Path("docs"), help="report directory (default: docs/)")
    p.add_argument("--dist", type=Path, default=Path("dist"), help="where the wheels go (default: dist/)")
    p.add_argument("--jobs", type=_positive(int), help="matrix cells run at once (default: number of cores)")
    p.set_defaults(func=cmd_legacy_report)

    p = _command(sub, "repack-report", "repack layouts per CPU class -> docs/",
                 "Build the default wheel with and without patch 0007 and measure every repackable type on every "
                 "emulated CPU class. Rewrites OUT/repack-<version>.json and .md and the generated table of "
                 f"{REPACK_TABLE_PAGE} (between its markers); names each file it wrote.",
                 "llama-wheels repack-report", "llama-wheels repack-report --cpu neoverse-n1 --jobs 2")
    with_cpus(p)
    p.add_argument("--out", type=Path, default=Path("docs"), help="report directory (default: docs/)")
    p.add_argument("--dist", type=Path, default=Path("dist"), help="where the wheels go (default: dist/)")
    p.add_argument("--jobs", type=_positive(int), help="matrix cells run at once (default: number of cores)")
    p.set_defaults(func=cmd_repack_report)

    p = _command(sub, "completion", "print a shell completion script",
                 "Print a completion script for bash, zsh or tcsh, generated from this parser (shtab).",
                 "llama-wheels completion bash > ~/.local/share/bash-completion/completions/llama-wheels",
                 "llama-wheels completion zsh > ~/.zfunc/_llama-wheels")
    p.add_argument("shell", choices=("bash", "zsh", "tcsh"), help="the shell to complete for")
    p.set_defaults(func=cmd_completion)
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


def _error_of(exc: BaseException) -> LlamaWheelsError:
    """What ``main`` reports for ``exc``: ours as raised, an operating-system error as one line (a full disk, a
    read-only or unwritable directory), anything else as a bug of ours (still one line: --debug shows it)."""
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted("interrupted; nothing was published")
    if isinstance(exc, LlamaWheelsError):
        return exc
    if isinstance(exc, OSError):
        return os_error(exc)
    return LlamaWheelsError(f"internal error {type(exc).__name__}: {exc}; a bug in llama-wheels: run again with "
                            "--debug and report the traceback")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a cancelled CI job, `timeout`) cleans up like Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    runner.adopt_orphans()  # an interrupt ends every process a command started, however deep
    cache = Cache.from_env()
    # never a logs/ folder in the user's working directory: the logs live in the cache, each named
    log_path = args.log or cache.root / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.command}.log"
    quiet = args.command in ("plan", "inspect", "convert-model", "audit", "lock", "completion", "docs", "clean") or (
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
        return int(args.func(args, cache))
    except BrokenPipeError:  # the reader went away (`... | head`): nothing to report to it
        return 1
    except (KeyboardInterrupt, Exception) as exc:
        raised: BaseException = exc
        error = _error_of(exc)
    finally:
        log.close()
    if args.debug:  # the traceback, then the line and exit code the same input gives without --debug
        traceback.print_exception(raised)
    print(f"llama-wheels: error: {one_line(str(error))}", file=sys.stderr)
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
