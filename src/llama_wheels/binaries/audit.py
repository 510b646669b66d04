"""``llama-wheels audit``: the static ISA audit of every code object in a wheel.

Each ELF and Mach-O file is disassembled (binaries/isa.py) and every instruction is held against what its
library may use:
- a CPU variant library ``llama_cpp/lib/libggml-cpu-<variant>.so`` of a dispatch wheel: the ``-march`` the pinned
  ggml compiles that variant with (``oracle.variant_march``: its declared features and the architecture level
  they raise it to; ``armv8.2_2`` -> armv8.2-a+dotprod+fp16, ``apple_m4`` -> armv9.2-a+dotprod+i8mm+nosve+sme);
- every library of a fixed-ISA wheel (``llama_cpp/lib/cpu-isa.txt``): the baseline plus those features of that
  ISA that the wheel's import guard verifies (``wheel.import_checked``: the hwcaps it reads before any library
  is loaded; the guard refuses a CPU without them). What the -march implies but the guard cannot see (an
  armv8.4-a's FCMA on a guard that checks only dotprod) would SIGILL where the guard lets it import;
- every other library (libggml-base, libggml, libllama, libmtmd, ...): the platform's baseline
  (config/platforms.py ``isa_baseline``).
An instruction beyond that is excused only inside a recognized runtime-guarded toolchain function
(``isa.RUNTIME_GUARDED``). This is the SIGILL proof for code the tiny test models never run.
"""

from __future__ import annotations

import json
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from llama_wheels.binaries import isa
from llama_wheels.binaries.macho import is_macho
from llama_wheels.binaries.wheel import fixed_isa, import_checked, open_wheel, variant_of
from llama_wheels.core.errors import UserError, VerifyError
from llama_wheels.oracle import VariantBuild, instruction_features


@dataclass(frozen=True, kw_only=True)
class Violation:
    library: str
    section: str
    address: int
    offset: int  # in the library file
    instruction: str
    features: tuple[str, ...]  # the ones not allowed
    symbol: str | None

    def site(self) -> str:
        where = f" in {self.symbol}" if self.symbol else ""
        return f"`{self.instruction}` at {self.address:#x} ({self.section}, file offset {self.offset:#x}){where}"

    def line(self) -> str:
        return f"{self.library}: {'+'.join(self.features)}: {self.site()}"


@dataclass(frozen=True, kw_only=True)
class LibraryAudit:
    path: str
    rule: str  # what it is held to, e.g. "variant armv8.2_2" or "baseline armv8-a"
    allowed: tuple[str, ...]
    instructions: int
    features: tuple[tuple[str, int], ...]  # (feature, instructions) used, excused ones included
    excused: tuple[tuple[str, int], ...]  # (runtime-guarded function, instructions beyond ``allowed``)
    violations: tuple[Violation, ...]
    implied_only: tuple[str, ...]  # used, allowed only by the variant's architecture level (not declared)


@dataclass(frozen=True, kw_only=True)
class WheelAudit:
    wheel: str
    libraries: tuple[LibraryAudit, ...]
    seconds: float

    @property
    def violations(self) -> tuple[Violation, ...]:
        return tuple(v for lib in self.libraries for v in lib.violations)

    def render(self) -> str:
        """One line per library (its rule, verdict, features used; a failure's first offending instruction per
        feature), under a heading line; --json has every instruction."""
        lines = [f"{self.wheel}: {len(self.libraries)} code objects, "
                 f"{sum(lib.instructions for lib in self.libraries)} instructions, {self.seconds:.1f}s"]
        groups = self.by_feature()
        for lib in self.libraries:
            used = ", ".join(f"{f} {n}" for f, n in lib.features) or "nothing beyond armv8-a"
            parts = [f"uses {used}"]
            if lib.excused:
                parts.append(f"{sum(n for _, n in lib.excused)} excused in {len(lib.excused)} runtime-guarded "
                             "toolchain function(s)")
            if lib.implied_only:
                parts.append(f"{', '.join(lib.implied_only)} allowed only by its architecture level")
            failing = [f"{len(found)} need {feature}, e.g. {found[0].site()}"
                       for (library, feature), found in groups.items() if library == lib.path]
            verdict = f"FAIL: {'; '.join(failing)}" if failing else "ok"
            lines.append(f"  {PurePosixPath(lib.path).name} [{lib.rule}]: {verdict}; {'; '.join(parts)}")
        return "\n".join(lines)

    def by_feature(self) -> dict[tuple[str, str], list[Violation]]:
        """The violations per (library, feature not allowed), in the order of the libraries and features."""
        groups: dict[tuple[str, str], list[Violation]] = {}
        for violation in self.violations:
            for feature in violation.features:
                groups.setdefault((violation.library, feature), []).append(violation)
        return dict(sorted(groups.items()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def check(self) -> None:
        """VerifyError naming the first offending instruction, if any."""
        if self.violations:
            parts = [f"{library}: {len(found)} need {feature}, e.g. {found[0].site()}"
                     for (library, feature), found in self.by_feature().items()]
            raise VerifyError(f"ISA audit of {self.wheel}: {len(self.violations)} instructions beyond what their "
                              f"library may use: {'; '.join(parts)}")


def _code_objects(archive: zipfile.ZipFile) -> list[isa.CodeObject]:
    objects = []
    for info in archive.infolist():
        if info.is_dir():
            continue
        with archive.open(info) as fh:
            head = fh.read(4)
        if head == b"\x7fELF":
            code = isa.elf_code(info.filename, archive.read(info))
        elif is_macho(head):
            data = archive.read(info)
            with tempfile.NamedTemporaryFile(prefix="llama-wheels-audit-") as copy:
                copy.write(data)
                copy.flush()
                code = isa.macho_code(info.filename, data, file=copy.name)
        else:
            continue
        if code.machine not in ("EM_AARCH64", "ARM64"):
            raise UserError(f"{info.filename}: {code.machine} code; the ISA audit reads AArch64 wheels only")
        objects.append(code)
    return objects


def _allowed(path: str, *, isa_name: str | None, baseline: frozenset[str], checked: frozenset[str],
             variants: Mapping[str, VariantBuild] | None, wheel: str) -> tuple[str, frozenset[str], frozenset[str]]:
    """(rule, allowed features, features allowed only by a variant's architecture level) for one library;
    ``checked``: the features the wheel's import guard verifies."""
    variant = variant_of(path)
    if isa_name is not None:
        return f"fixed ISA {isa_name}", baseline | (instruction_features(isa_name) & checked), frozenset()
    if variant is None:
        return "baseline", baseline, frozenset()
    if variants is None or variant not in variants:
        known = ", ".join(sorted(variants or ())) or "none given"
        raise UserError(f"{wheel}: {path} is CPU variant {variant!r}, which the pinned ggml does not declare "
                        f"(declared: {known}); audit wheels of a pin in build_config/pins.toml")
    build = variants[variant]
    allowed = baseline | instruction_features(build.march)
    return f"variant {variant}", allowed, allowed - baseline - build.features


def audit_library(code: isa.CodeObject, rule: str, allowed: frozenset[str],
                  implied: frozenset[str] = frozenset()) -> LibraryAudit:
    counts, total = isa.feature_counts(code)
    excused: dict[str, int] = {}
    violations = []
    for site in isa.sites_needing(code, frozenset(counts) - allowed):
        guarded = isa.guarded_by_runtime(code, site)
        if guarded is not None:
            excused[guarded.name] = excused.get(guarded.name, 0) + 1
            continue
        violations.append(Violation(library=code.path, section=site.section, address=site.address,
                                    offset=site.offset, instruction=site.instruction.text,
                                    features=tuple(sorted(site.instruction.features - allowed)),
                                    symbol=isa.enclosing_symbol(code, site.address)))
    return LibraryAudit(path=code.path, rule=rule, allowed=tuple(sorted(allowed)), instructions=total,
                        features=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                        excused=tuple(sorted(excused.items())), violations=tuple(violations),
                        implied_only=tuple(sorted(implied & set(counts))))


def audit_wheel(wheel: Path, *, baseline: str, variants: Mapping[str, VariantBuild] | None,
                recorded_isa: str | None = None) -> WheelAudit:
    """Audit every code object of ``wheel``. ``baseline``: the platform's ``-march`` floor; ``variants``: the
    pinned ggml's declared CPU variants for the wheel's platform, with their features and ``-march``
    (``oracle.declared_arm_builds``; needed for a dispatch wheel); ``recorded_isa``:
    the fixed ISA the wheel's provenance record names (else lib/cpu-isa.txt, which must agree with it).
    UserError for input that cannot be audited; the verdict is in the result (``check()``)."""
    started = time.monotonic()
    try:
        with open_wheel(wheel, fix="pass a .whl that `llama-wheels build` or cibuildwheel wrote") as archive:
            shipped_isa = fixed_isa(archive)
            checked = import_checked(archive)
            objects = _code_objects(archive)
    except ValueError as exc:  # a damaged import guard
        raise UserError(f"{wheel.name}: {exc}; rebuild it") from None
    if not objects:
        raise UserError(f"{wheel.name}: no ELF or Mach-O code in it; is this a llama-cpp-python binary wheel?")
    if recorded_isa is not None and shipped_isa is not None and recorded_isa != shipped_isa:
        raise UserError(f"{wheel.name}: lib/cpu-isa.txt says {shipped_isa} but its provenance record says "
                        f"arm_arch {recorded_isa}; rebuild it")
    isa_name = recorded_isa or shipped_isa
    try:
        floor = instruction_features(baseline)
        if isa_name is not None:
            instruction_features(isa_name)
    except ValueError as exc:
        raise UserError(f"{wheel.name}: {exc} (llama_cpp/lib/cpu-isa.txt or the platform's isa_baseline)") from None
    libraries = []
    for code in objects:
        rule, allowed, implied = _allowed(code.path, isa_name=isa_name, baseline=floor, checked=checked,
                                          variants=variants, wheel=wheel.name)
        libraries.append(audit_library(code, f"{rule}" if rule != "baseline" else f"baseline {baseline}",
                                       allowed, implied))
    return WheelAudit(wheel=wheel.name, libraries=tuple(libraries), seconds=time.monotonic() - started)
