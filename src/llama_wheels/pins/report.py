"""What ``pin add`` and ``pin check`` found, per patch, switch and target: the report an engineer reads, and the
one-line error a failed check ends with."""

from __future__ import annotations

import json
from dataclasses import dataclass

from llama_wheels.config import Pin, SwitchMapping
from llama_wheels.core.errors import ConfigError, PatchError
from llama_wheels.pins.sources import GGML_CMAKE


@dataclass(frozen=True, kw_only=True)
class PatchResult:
    name: str
    source: str  # the file applied, relative to the checkout
    status: str  # clean | offset | merged | conflict
    detail: str = ""
    rejected: tuple[str, ...] = ()  # the rejected hunks (.rej text) of a conflict
    refreshed: str | None = None  # the format-patch text at the new release (None: conflict)

    @property
    def ok(self) -> bool:
        return self.status != "conflict"


@dataclass(frozen=True, kw_only=True)
class SwitchResult:
    switch: str
    mapping: SwitchMapping
    status: str  # declared | missing | flag | absent
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "missing"


@dataclass(frozen=True, kw_only=True)
class TargetResult:
    target: str
    required: bool
    problem: str | None  # None: plans and every CMake name it sets is declared


@dataclass(frozen=True, kw_only=True)
class PinReport:
    pin: Pin
    patch_base: Pin  # whose patch series, on whose source, was carried onto this pin's
    base: Pin  # what switch names and variants are compared with
    commit_source: str
    patches: tuple[PatchResult, ...]
    switches: tuple[SwitchResult, ...]
    targets: tuple[TargetResult, ...]
    variants: tuple[str, ...]  # lines describing ggml's declared CPU variants and how they changed
    repack: tuple[str, ...] = ()  # lines naming the weight types ggml repacks and how that changed
    # how the pin changes what the oracle expects of its wheels against the base (types, variants): the verdict
    drift: tuple[str, ...] = ()
    strays: tuple[str, ...] = ()  # "patch X touches Y": a path outside the source tree the patch is applied to

    @property
    def problems(self) -> list[str]:
        found = [f"patch {p.name} does not apply ({p.detail})" for p in self.patches if not p.ok]
        found += [f"switch {s.switch} = {s.mapping} {s.detail}" for s in self.switches if not s.ok]
        found += [f"target {t.target}: {t.problem}" for t in self.targets if t.required and t.problem]
        return found + list(self.strays)

    def render(self) -> str:
        pin, base = self.pin, self.base
        lines = [f"pin {pin.name}: llama-cpp-python {pin.version}"
                 + (f" (compared with pin {base.name}: {base.version})" if base.name != pin.name else ""),
                 f"  sdist      {pin.sdist_filename} sha256 {pin.sdist_sha256} (verified, cached)",
                 f"  llama.cpp  {pin.llama_cpp_commit} ({self.commit_source})",
                 f"  patches    (patches/{self.patch_base.version}/ with git am --3way onto this release's tree, "
                 "in a scratch git repository)"]
        if not self.patches:
            lines.append("    (none)")
        for p in self.patches:
            lines.append(f"    {p.status:<9} {p.name}" + (f"  ({p.detail})" if p.detail else "")
                         + (f"  (as in {p.source})" if not p.source.startswith(f"patches/{self.patch_base.version}/")
                            else ""))
            for hunk in p.rejected:
                lines.extend(f"      | {line}" for line in hunk.rstrip("\n").splitlines())
        lines.append("  switches   (CMake names against the patched tree's option()/CACHE declarations)")
        for s in self.switches:
            lines.append(f"    {s.status:<9} {s.switch} = {json.dumps(s.mapping)}"
                         + (f"  {s.detail}" if s.detail else ""))
        required = ", ".join(t.target for t in self.targets if t.required)
        lines.append(f"  targets    (every target planned and checked at this pin; required: {required})")
        for t in self.targets:
            status = "ok" if t.problem is None else ("FAILS" if t.required else "cannot")
            lines.append(f"    {status:<9} {t.target}" + (f"  {t.problem}" if t.problem else ""))
        lines.append(f"  variants   (ggml's declared CPU variants, {GGML_CMAKE})")
        lines.extend(f"    {line}" for line in self.variants)
        if self.repack:
            lines.append("  repack     (the weight types ggml's get_optimal_repack_type handles, ggml-cpu/repack.cpp)")
            lines.extend(f"    {line}" for line in self.repack)
        problems = self.problems
        verdict = f"{len(problems)} problem(s): " + "; ".join(problems) if problems else "ok"
        drift = f"; expectations change: {'; '.join(self.drift)}" if self.drift else ""
        lines.append(f"  result     {verdict}{drift}")
        return "\n".join(lines)


def summary_error(report: PinReport, what: str) -> PatchError | ConfigError:
    """The one-line error a failed check ends with (exit code 2)."""
    problems = report.problems
    first = problems[0] + (f" (and {len(problems) - 1} more, above)" if len(problems) > 1 else "")
    kind = PatchError if any(not p.ok for p in report.patches) else ConfigError
    return kind(f"{what}: {first}")
