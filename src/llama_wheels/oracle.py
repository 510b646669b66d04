"""The oracle: which CPU variant ggml loads on a CPU, and which repack layout each weight then gets.

One module for every judge: the emulated matrix (``judges.matrix``), the smoke test of ``llama-wheels
build`` (``judges.verify``) and the wheel test suite (``wheel_tests/``). Standard library only, and it
imports nothing of ``llama_wheels``: the wheel suite ships it and imports it by file path, exactly like
``models.py`` (see ``wheel_tests/wheel_probe.py: standalone``).

The rules are ggml's, read from the pinned source (llama-cpp-python 0.3.36, vendor/llama.cpp/ggml/src):

- ``CMakeLists.txt``: ``ggml_add_cpu_backend_variant(NAME TOKEN...)`` declares each CPU variant with the
  features it is compiled with, per architecture and operating system (``if()`` blocks).
- ``ggml-cpu/arch/arm/cpu-feats.cpp``: a variant's score on a CPU is 0 when the CPU lacks one of its
  features, else 1 + 2 dotprod + 4 fp16 + 8 sve + 16 i8mm + 32 sve2 + 64 sme; the loader takes the highest.
  On a CPU whose SVE vectors are 128 bits, sve counts -2 and sve2 1 (our patch 0009): a variant with SVE
  ranks below its NEON sibling (armv8.6_nosve, armv8.2_2) there, and SVE2 still above SVE alone.
- ``ggml-cpu/repack.cpp`` ``ggml_repack_get_optimal_repack_type``: per weight type an ordered list of
  layouts, each needing compiled features (ARM's are compile-time: ``__ARM_FEATURE_*``), for SVE a vector
  length, and a row count ``ne1`` divisible by the rows it interleaves; the first that fits wins.
  0.3.4's ``ggml-cpu-aarch64.cpp`` (generation ``"aarch64"``) has the same Q4_0 rules, IQ4_NL's ARM rule and
  no other. ``REPACK_RULES`` is the table; tests/unit/test_repack_rules.py parses each pin's function and compares.

Errors are ``OracleError`` with a one-line message naming what could not be judged and what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

# The ARM features ggml's variants are built with and scored on (build_config/cpus.toml has one key each).
ARM_FEATURES = ("dotprod", "fp16", "i8mm", "sve", "sve2", "sme")
# cpu-feats.cpp: score = 1 + the weight of every feature the variant is built with (0 if the CPU lacks one).
SCORE_BASE = 1
SCORE_WEIGHTS: Mapping[str, int] = {"dotprod": 2, "fp16": 4, "sve": 8, "i8mm": 16, "sve2": 32, "sme": 64}
# Patch 0009: at NEON's width (128-bit SVE vectors) SVE and SVE2 weigh this instead.
SVE_NEON_WIDTH_BITS = 128
SVE_AT_NEON_WIDTH: Mapping[str, int] = {"sve": -2, "sve2": 1}
# ggml's CMake tokens (ggml_add_cpu_backend_variant arguments, GGML_INTERNAL_<token>) -> the features they
# compile in. NOSVE (apple_m4) only takes SVE out of -march: it adds nothing and ggml does not score it.
CMAKE_FEATURES: Mapping[str, frozenset[str]] = {
    "DOTPROD": frozenset({"dotprod"}),
    "FP16_VECTOR_ARITHMETIC": frozenset({"fp16"}),
    "SVE": frozenset({"sve"}),
    "MATMUL_INT8": frozenset({"i8mm"}),
    "SVE2": frozenset({"sve2"}),
    "SME": frozenset({"sme"}),
    "NOSVE": frozenset(),
}
# What an -march may let the compiler use: the instruction features each architecture level makes mandatory
# (as LLVM and GCC define the levels; cumulative), and what each extension brings with it. One table for the
# matrix and the wheel suite (which read the ggml features of it: GGML_FEATURES) and for the ISA audit
# (binaries/isa.py, which reads all of it). armv8.2-a does not imply fp16 (FEAT_FP16 is optional there);
# armv9.N-a is armv8.(N+5)-a with SVE2, which needs SVE, which needs FP16.
LEVEL_ADDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("8.0", frozenset()),
    ("8.1", frozenset({"lse", "crc", "rdm"})),
    ("8.2", frozenset()),
    ("8.3", frozenset({"rcpc", "pauth", "jsconv", "complxnum"})),
    ("8.4", frozenset({"dotprod", "rcpc-immo", "flagm"})),
    ("8.5", frozenset({"sb", "frintts", "altnzcv"})),
    ("8.6", frozenset({"i8mm", "bf16"})),
    ("8.7", frozenset({"wfxt"})),
    ("8.8", frozenset({"mops"})),
    ("8.9", frozenset()),
)
V9_BASE: Mapping[str, str] = {"9.0": "8.5", "9.1": "8.6", "9.2": "8.7", "9.3": "8.8", "9.4": "8.9"}
EXTENSIONS: Mapping[str, frozenset[str]] = {
    "fp16": frozenset({"fp16"}), "fp16fml": frozenset({"fp16", "fp16fml"}), "sve": frozenset({"sve", "fp16"}),
    "sve2": frozenset({"sve", "sve2", "fp16"}), "sme": frozenset({"sme", "bf16"}),
    "crypto": frozenset({"aes", "sha2"}), "rdma": frozenset({"rdm"}), "memtag": frozenset({"mte"}),
}
# The features of those that ggml's variants, the repack rules and the wheel's import check deal in.
GGML_FEATURES = frozenset({*ARM_FEATURES, "bf16"})
# What a CPU description (build_config/cpus.toml, Cpu.from_flags) says yes or no about: ggml's scored
# features and bf16, which ggml's BF16 kernels use and armv8.6-a makes mandatory.
CPU_FEATURES = (*ARM_FEATURES, "bf16")
_MARCH = re.compile(r"armv(?P<major>\d+)(?:\.(?P<minor>\d+))?-a(?P<extensions>(?:\+[\w-]+)*)")


def _level_table() -> dict[str, frozenset[str]]:
    levels: dict[str, frozenset[str]] = {}
    features: frozenset[str] = frozenset()
    for level, adds in LEVEL_ADDS:
        features = levels[level] = features | adds
    for level, base in V9_BASE.items():
        levels[level] = levels[base] | EXTENSIONS["sve2"]
    return levels


LEVELS = _level_table()  # "8.2" -> every instruction feature armv8.2-a makes mandatory

ARM_MACHINES = ("aarch64", "arm64")
X86_MACHINES = ("x86_64", "amd64")

# ggml logs each repacked tensor at DEBUG: "repack: repack tensor <name> with <type>_<NB_COLS>x<INTER_SIZE>".
REPACK_LINE = re.compile(r"repack: repack tensor (?P<name>\S+) with (?P<layout>\w+?_\d+x\d+)\b")
_LAYOUT = re.compile(r"\w+?_(?P<rows>\d+)x(?P<inter>\d+)")
_VARIANT_CALL = re.compile(r"[ \t]*ggml_add_cpu_backend_variant\([ \t]*([\w.]+)((?:[ \t]+\w+)*)[ \t]*\)")
_BLOCK = re.compile(r"[ \t]*(if|elseif|else|endif)[ \t]*\((.*)$")  # the condition may go on over lines


class OracleError(ValueError):
    """The oracle cannot judge: an input it does not know. The message names it and the fix."""


# ---------------------------------------------------------------------------------------------------------
# CPU variants: declaration, features, score, choice


def cmake_features(variant: str, tokens: Iterable[str]) -> frozenset[str]:
    """The features a variant declared with ggml's CMake ``tokens`` is compiled with."""
    out: set[str] = set()
    for token in tokens:
        if token not in CMAKE_FEATURES:
            raise OracleError(f"CPU variant {variant}: unknown ggml CMake feature {token!r}; add it to "
                              "CMAKE_FEATURES in llama_wheels/oracle.py (see ggml-cpu/CMakeLists.txt)")
        out |= CMAKE_FEATURES[token]
    return frozenset(out)


def declared_cmake_variants(cmake_text: str) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every ``ggml_add_cpu_backend_variant`` of ggml/src/CMakeLists.txt: name -> (its CMake tokens, the
    conditions of the ``if()``/``elseif()`` blocks it sits in, outermost first; ``else()`` as ``"else"``)."""
    found: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    stack: list[str] = []
    for number, line in enumerate(cmake_text.splitlines(), 1):
        call = _VARIANT_CALL.match(line)
        if call is not None:
            found[call[1]] = (tuple(call[2].split()), tuple(stack))
            continue
        block = _BLOCK.match(line)
        if block is None:
            continue
        keyword, condition = block[1], " ".join(block[2].split("#")[0].strip().removesuffix(")").split())
        if keyword == "if":
            stack.append(condition)
        elif not stack:
            raise OracleError(f"ggml/src/CMakeLists.txt line {number}: {keyword}() without if(); "
                              "is this ggml's CMakeLists.txt?")
        elif keyword == "endif":
            stack.pop()
        else:
            stack[-1] = condition if keyword == "elseif" else "else"
    return found


# CMake's platform variables: on these CMAKE_SYSTEM_NAMEs ggml's ``elseif (APPLE)`` block is taken.
APPLE_SYSTEMS = ("Darwin", "iOS", "tvOS", "visionOS", "watchOS")


def _declared_arm_tokens(cmake_text: str, system: str) -> dict[str, tuple[str, ...]]:
    """name -> CMake tokens of the ARM CPU variants ggml builds for ``system`` (CMAKE_SYSTEM_NAME): those
    declared inside ``GGML_SYSTEM_ARCH STREQUAL "ARM"`` and ``CMAKE_SYSTEM_NAME MATCHES "<system>"`` (or,
    for Darwin, ``APPLE``)."""
    arm = 'GGML_SYSTEM_ARCH STREQUAL "ARM"'
    wanted = {f'CMAKE_SYSTEM_NAME MATCHES "{system}"'} | ({"APPLE"} if system in APPLE_SYSTEMS else set())
    return {name: tokens for name, (tokens, conditions) in declared_cmake_variants(cmake_text).items()
            if arm in conditions and wanted & set(conditions)}


def declared_arm_variants(cmake_text: str, system: str = "Linux") -> dict[str, frozenset[str]]:
    """The ARM CPU variants ggml builds for ``system`` (CMAKE_SYSTEM_NAME: ``Linux``, ``Android``,
    ``Darwin``), with the features each is built with and scored on."""
    return {name: cmake_features(name, tokens) for name, tokens in _declared_arm_tokens(cmake_text, system).items()}


# ggml-cpu/CMakeLists.txt (GGML_CPU_ALL_VARIANTS on ARM): each token of a variant raises the architecture
# level to the first that has it and appends an extension, in this order; NOSVE only appends +nosve.
_MARCH_TOKENS: tuple[tuple[str, str | None, str], ...] = (
    ("DOTPROD", "armv8.2-a", "+dotprod"),
    ("FP16_VECTOR_ARITHMETIC", "armv8.2-a", "+fp16"),
    ("SVE", "armv8.2-a", "+sve"),
    ("MATMUL_INT8", "armv8.6-a", "+i8mm"),
    ("SVE2", "armv8.6-a", "+sve2"),
    ("NOSVE", None, "+nosve"),
    ("SME", "armv9.2-a", "+sme"),
)


def variant_march(variant: str, tokens: Iterable[str]) -> str:
    """The ``-march`` ggml-cpu/CMakeLists.txt compiles a variant declared with ``tokens`` with
    (``DOTPROD MATMUL_INT8 NOSVE SME`` -> ``armv9.2-a+dotprod+i8mm+nosve+sme``)."""
    wanted = set(tokens)
    cmake_features(variant, wanted)  # an unknown token is an error here too
    level, tags = "armv8-a", ""
    for token, raises, tag in _MARCH_TOKENS:
        if token in wanted:
            level, tags = raises or level, tags + tag
    return level + tags


@dataclass(frozen=True, kw_only=True)
class VariantBuild:
    """How ggml compiles one CPU variant: the features it declares (and is scored on) and its ``-march``,
    whose instructions its code may use (the ISA audit's rule for a variant library)."""

    features: frozenset[str]
    march: str


def variant_build(variant: str, tokens: Iterable[str]) -> VariantBuild:
    """The build of a variant declared with ggml's CMake ``tokens``."""
    tokens = tuple(tokens)
    return VariantBuild(features=cmake_features(variant, tokens), march=variant_march(variant, tokens))


def declared_arm_builds(cmake_text: str, system: str = "Linux") -> dict[str, VariantBuild]:
    """The ARM CPU variants ggml builds for ``system``, each with its features and ``-march``."""
    return {name: variant_build(name, tokens) for name, tokens in _declared_arm_tokens(cmake_text, system).items()}


@dataclass(frozen=True, kw_only=True)
class Cpu:
    """A CPU as the oracle sees it: the ARM features it has, of those it knows about, and its SVE length."""

    features: frozenset[str]
    sve_bits: int = 0
    known: frozenset[str] = frozenset(ARM_FEATURES)  # the features this description says yes or no about

    @classmethod
    def from_flags(cls, flags: Mapping[str, object]) -> Cpu:
        """From ``{"dotprod": True, ..., "bf16": False, "sve_bits": 256}`` (build_config/cpus.toml's keys):
        every feature of CPU_FEATURES, so that a wheel whose ISA implies bf16 (armv8.6-a) is judged on it."""
        absent = [name for name in (*CPU_FEATURES, "sve_bits") if name not in flags]
        if absent:
            raise OracleError(f"CPU description lacks {', '.join(absent)}; give every one of "
                              f"{', '.join(CPU_FEATURES)} and sve_bits")
        bits = flags["sve_bits"]
        if not isinstance(bits, int):
            raise OracleError(f"CPU description: sve_bits {bits!r} is not an integer")
        known = frozenset(name for name in flags if name != "sve_bits")
        return cls(features=frozenset(name for name in known if flags[name]), sve_bits=bits, known=known)

    def lacks(self, needed: Collection[str]) -> tuple[str, ...]:
        """The features of ``needed`` this CPU is known not to have."""
        return tuple(sorted((frozenset(needed) & self.known) - self.features))


def score(features: frozenset[str], cpu: Cpu) -> int:
    """ggml's score of a variant built with ``features`` on ``cpu`` (cpu-feats.cpp): 0 = cannot run there."""
    unknown = sorted(features - frozenset(SCORE_WEIGHTS))
    if unknown:
        raise OracleError(f"ggml scores no ARM feature {', '.join(unknown)}; known: {', '.join(SCORE_WEIGHTS)}")
    if not features <= cpu.features:
        return 0
    weights = {**SCORE_WEIGHTS, **SVE_AT_NEON_WIDTH} if cpu.sve_bits == SVE_NEON_WIDTH_BITS else SCORE_WEIGHTS
    return SCORE_BASE + sum(weights[name] for name in features)


@dataclass(frozen=True, kw_only=True)
class Choice:
    """The variant ggml loads (None: no shipped variant can run) and every shipped variant's score."""

    variant: str | None
    scores: Mapping[str, int]


def choose_variant(shipped: Collection[str], declared: Mapping[str, frozenset[str]], cpu: Cpu) -> Choice:
    """The shipped variant with the highest score on ``cpu`` among those the pinned source declares."""
    if not declared:
        raise OracleError("the pinned source declares no CPU variant for this platform; is the source tree "
                          "ggml's, and is the platform one with variants (Linux or macOS ARM)?")
    if not shipped:
        raise OracleError("the wheel ships no CPU variant library (libggml-cpu-*); nothing to choose from")
    unknown = sorted(set(shipped) - set(declared))
    if unknown:
        raise OracleError(f"the wheel ships CPU variants the pinned source does not declare: {', '.join(unknown)}; "
                          "is the wheel from another pin?")
    scores = {name: score(declared[name], cpu) for name in sorted(shipped)}
    best = max(scores.values())
    if best == 0:
        return Choice(variant=None, scores=scores)
    winners = sorted(name for name, value in scores.items() if value == best)
    if len(winners) > 1:
        raise OracleError(f"CPU variants {', '.join(winners)} score {best} alike: which one ggml loads depends "
                          "on directory order, not on a rule")
    return Choice(variant=winners[0], scores=scores)


# ---------------------------------------------------------------------------------------------------------
# Fixed ISA: the -march a wheel was compiled with


def instruction_features(march: str) -> frozenset[str]:
    """Every instruction feature code compiled with ``-march=<march>`` may use: its level's, each ``+ext``
    with what it brings, less each ``+noext`` and the extensions that need it (``armv9-a+nosve``: no SVE2)."""
    m = _MARCH.fullmatch(march.strip())
    level = f"{m['major']}.{m['minor'] or 0}" if m else ""
    if m is None or level not in LEVELS:
        raise OracleError(f"{march!r} is not an AArch64 -march value such as armv8.2-a+dotprod: unknown ARM "
                          f"architecture level (known: armv8-a .. armv8.9-a, armv9-a .. armv9.4-a; add a new one "
                          "to LEVEL_ADDS in llama_wheels/oracle.py)")
    out = set(LEVELS[level])
    for ext in filter(None, m["extensions"].split("+")):
        if ext.startswith("no"):
            out -= {ext[2:]} | {name for name, brings in EXTENSIONS.items() if ext[2:] in brings}
        else:
            out |= EXTENSIONS.get(ext, frozenset({ext}))
    return frozenset(out)


def arch_features(level: str) -> frozenset[str]:
    """The ggml features an architecture level (``armv8.6-a``) makes mandatory."""
    return instruction_features(level) & GGML_FEATURES


def isa_features(isa: str) -> frozenset[str]:
    """The ggml features code compiled with ``-march=<isa>`` (``armv8.2-a+dotprod+fp16``) may use."""
    return instruction_features(isa) & GGML_FEATURES


# ---------------------------------------------------------------------------------------------------------
# Repacking


@dataclass(frozen=True, kw_only=True)
class RepackRule:
    """One branch of ggml_repack_get_optimal_repack_type: ``layout`` if the code has ``needs`` (and, for
    ``sve_bits``, that SVE vector length) and the weight's row count divides by ``rows``."""

    layout: str
    arch: str  # "arm" | "x86"
    needs: frozenset[str]
    sve_bits: int | None = None
    generations: frozenset[str] = frozenset({"repack", "aarch64"})

    @property
    def rows(self) -> int:
        return layout_rows(self.layout)


_NEW = frozenset({"repack"})  # ggml-cpu/repack.cpp only (0.3.36), not 0.3.4's ggml-cpu-aarch64.cpp
_I8MM, _DOTPROD, _AVX2 = frozenset({"i8mm"}), frozenset({"dotprod"}), frozenset({"avx2"})
# Per ggml type, the branches of ggml_repack_get_optimal_repack_type in ggml's order (types in its order too).
# ARM: ``ggml_cpu_has_neon()`` is every AArch64 build's, so only dotprod / i8mm / SVE are needs; x86's are
# AVX2 / AVX-512F (``__AVX2__``, ``__AVX512F__``). Layouts as ggml logs them: ``<type>_<NB_COLS>x<INTER_SIZE>``
# (``tensor_traits<block_q4_K, 4, 8, ...>`` is q4_K_8x4: 8 rows, interleave 4). The RISC-V and s390x branches
# are left out (no wheel for them). tests/unit/test_repack_rules.py checks this table against each pin's source.
REPACK_RULES: Mapping[str, tuple[RepackRule, ...]] = {
    "Q4_0": (
        RepackRule(layout="q4_0_8x8", arch="x86", needs=_AVX2),
        RepackRule(layout="q4_0_8x8", arch="arm", needs=frozenset({"sve", "i8mm"}), sve_bits=256),
        RepackRule(layout="q4_0_4x8", arch="arm", needs=_I8MM),
        RepackRule(layout="q4_0_4x4", arch="arm", needs=_DOTPROD),
    ),
    "Q4_K": (
        RepackRule(layout="q4_K_8x8", arch="x86", needs=_AVX2, generations=_NEW),
        RepackRule(layout="q4_K_8x8", arch="arm", needs=_I8MM, generations=_NEW),
        RepackRule(layout="q4_K_8x4", arch="arm", needs=_DOTPROD, generations=_NEW),
    ),
    "Q2_K": (
        RepackRule(layout="q2_K_8x8", arch="x86", needs=frozenset({"avx512"}), generations=_NEW),
    ),
    "Q5_K": (
        RepackRule(layout="q5_K_8x8", arch="arm", needs=_I8MM, generations=_NEW),
        RepackRule(layout="q5_K_8x4", arch="arm", needs=_DOTPROD, generations=_NEW),
    ),
    "Q6_K": (
        RepackRule(layout="q6_K_8x8", arch="arm", needs=_I8MM, generations=_NEW),
        RepackRule(layout="q6_K_8x4", arch="arm", needs=_DOTPROD, generations=_NEW),
    ),
    "IQ4_NL": (
        RepackRule(layout="iq4_nl_8x8", arch="x86", needs=_AVX2, generations=_NEW),
        RepackRule(layout="iq4_nl_4x4", arch="arm", needs=_DOTPROD),  # 0.3.4 repacks it too
    ),
    "MXFP4": (
        RepackRule(layout="mxfp4_8x8", arch="x86", needs=_AVX2, generations=_NEW),
        RepackRule(layout="mxfp4_4x4", arch="arm", needs=_DOTPROD, generations=_NEW),
    ),
    "Q8_0": (
        RepackRule(layout="q8_0_4x8", arch="arm", needs=_I8MM, generations=_NEW),
        RepackRule(layout="q8_0_4x4", arch="arm", needs=_DOTPROD, generations=_NEW),
    ),
    "Q1_0": (
        RepackRule(layout="q1_0_4x8", arch="arm", needs=_I8MM, generations=_NEW),
        RepackRule(layout="q1_0_4x4", arch="arm", needs=_DOTPROD, generations=_NEW),
    ),
}
# Every type of the pinned ggml (enum ggml_type in ggml/include/ggml.h; 0.3.4's is a subset of 0.3.36's).
# Those without rules are never repacked; a name outside this list is unknown (an error, not a guess).
GGML_TYPES = (
    "F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
    "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64",
    "F64", "IQ1_M", "BF16", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0",
)
NEVER_REPACKED = frozenset(GGML_TYPES) - frozenset(REPACK_RULES)
GENERATIONS = ("repack", "aarch64")


def layout_rows(layout: str) -> int:
    """Rows a layout interleaves: ``q4_0_8x8`` -> 8, ``q4_0_4x8`` -> 4 (ggml prints NB_COLS first)."""
    m = _LAYOUT.fullmatch(layout)
    if m is None:
        raise OracleError(f"not a repack layout: {layout!r} (expected TYPE_ROWSxINTERLEAVE like q4_0_4x8)")
    return int(m["rows"])


def layout_type(layout: str) -> str:
    """The ggml type a layout is of, as ggml names types: ``q4_K_8x4`` -> ``Q4_K``, ``iq4_nl_4x4`` -> ``IQ4_NL``."""
    layout_rows(layout)  # a layout, or OracleError
    return layout.rsplit("_", 1)[0].upper()


def machine_arch(machine: str) -> str:
    """``"arm"`` or ``"x86"`` for a ``platform.machine()`` value."""
    name = machine.lower()
    if name in ARM_MACHINES:
        return "arm"
    if name in X86_MACHINES:
        return "x86"
    raise OracleError(f"machine {machine!r} is neither ARM ({', '.join(ARM_MACHINES)}) nor x86 "
                      f"({', '.join(X86_MACHINES)}): ggml's repack rules for it are not in the oracle")


def _check_generation(generation: str) -> None:
    if generation not in GENERATIONS:
        raise OracleError(f"unknown repack generation {generation!r}; known: {', '.join(GENERATIONS)}")


# A type whose branch came to ggml after its generation's first release: llama-cpp-python 0.3.35's repack.cpp
# has no Q1_0 branch, 0.3.36's has (measured by `pin add 0.3.35`). A wheel older than this repacks none of it.
REPACKED_SINCE: Mapping[str, str] = {"Q1_0": "0.3.36"}
# The llama-cpp-python release whose ggml.h GGML_TYPES lists (tests/test_repack_rules.py holds it to the default
# pin): a wheel of it or later binds every one of them (llama_cpp.GGML_TYPE_*), and the wheel suite fails, not
# skips, a model whose type it lacks.
TYPES_RELEASE = "0.3.36"


def released_before(version: str, release: str) -> bool:
    """Whether llama-cpp-python ``version`` came before ``release`` (plain release numbers, ``_release``)."""
    return _release(version) < _release(release)


def _release(version: str) -> tuple[int, ...]:
    """``"0.3.36"`` -> (0, 3, 36): llama-cpp-python's plain release numbers (a suffix such as ``.dev1`` or
    ``+local`` ends the comparison)."""
    parts = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits[0]))
        if digits[0] != part:
            break
    return tuple(parts)


def type_rules(ggml_type: str, arch: str = "arm", generation: str = "repack",
               version: str | None = None) -> tuple[RepackRule, ...]:
    """The branches ggml tries, in order, for a weight of ``ggml_type`` on ``arch`` in ``generation``
    (``"repack"``: 0.3.36's repack.cpp; ``"aarch64"``: 0.3.4's ggml-cpu-aarch64.cpp); () if never repacked.
    ``version``: the wheel's llama-cpp-python release, where it predates a type's branch (REPACKED_SINCE);
    None: the pinned sources'."""
    _check_generation(generation)
    if ggml_type in NEVER_REPACKED:
        return ()
    if ggml_type not in REPACK_RULES:
        raise OracleError(f"{ggml_type!r} is no ggml type of the pinned sources (GGML_TYPES in "
                          "llama_wheels/oracle.py); for a new ggml, add its type there and its branches of "
                          "ggml_repack_get_optimal_repack_type to REPACK_RULES")
    since = REPACKED_SINCE.get(ggml_type)
    if version is not None and since is not None and released_before(version, since):
        return ()
    return tuple(r for r in REPACK_RULES[ggml_type] if r.arch == arch and generation in r.generations)


def repack_layout(ggml_type: str, ne1: int, *, code: frozenset[str], sve_bits: int = 0, arch: str = "arm",
                  generation: str = "repack", version: str | None = None) -> str | None:
    """The layout ggml repacks a MUL_MAT weight of ``ggml_type`` with ``ne1`` rows into, or None.

    ``code``: the features the running CPU code was compiled with (the loaded variant's, or a fixed ISA's);
    ``sve_bits``: the CPU's SVE vector length; ``generation``: ``"repack"`` (0.3.36) or ``"aarch64"`` (0.3.4);
    ``version``: the wheel's llama-cpp-python release (``type_rules``).
    """
    for rule in type_rules(ggml_type, arch, generation, version):
        if rule.needs <= code and rule.sve_bits in (None, sve_bits) and ne1 % rule.rows == 0:
            return rule.layout
    return None


_ANY_ROWS = math.lcm(*(rule.rows for rules in REPACK_RULES.values() for rule in rules))


def type_layouts(ggml_type: str, arch: str = "arm", generation: str = "repack") -> tuple[str, ...]:
    """Every layout a weight of ``ggml_type`` can get on ``arch`` in ``generation``, and ``"none"``."""
    return (*sorted({r.layout for r in type_rules(ggml_type, arch, generation)}), "none")


def code_for_layout(ggml_type: str, layout: str, arch: str = "arm",
                    generation: str = "repack") -> tuple[frozenset[str], int]:
    """The weakest code (features, SVE bits) that repacks a ``ggml_type`` weight (of rows that divide by
    every interleave) as ``layout``: its rule's needs and those of every later rule (ggml's variants form a
    chain: each i8mm variant also has dotprod). ``"none"``: no features."""
    if layout == "none":
        return frozenset(), 0
    rules = type_rules(ggml_type, arch, generation)
    index = next((i for i, r in enumerate(rules) if r.layout == layout), None)
    if index is None:
        raise OracleError(f"{layout!r} is no {ggml_type} layout on {arch}; one of "
                          f"{', '.join(type_layouts(ggml_type, arch, generation))}")
    return frozenset().union(*(r.needs for r in rules[index:])), rules[index].sve_bits or 0


def q4_0_layouts(arch: str = "arm") -> tuple[str, ...]:
    """Every layout a Q4_0 weight can get on ``arch``, and ``"none"``."""
    return type_layouts("Q4_0", arch)


def code_for_q4_0_layout(layout: str, arch: str = "arm") -> tuple[frozenset[str], int]:
    """``code_for_layout`` of Q4_0: how the wheel suite, told only the CPU's Q4_0 layout, predicts every other
    weight's layout. It holds because every other type's ARM rules ask only for i8mm or dotprod, which the
    Q4_0 layout tells apart (8x8 and 4x8: i8mm; 4x4: dotprod only). On x86 it tells AVX2 only: a CPU with
    AVX-512 (Q2_K's q2_K_8x8) cannot be told from its Q4_0 layout."""
    return code_for_layout("Q4_0", layout, arch)


def repack_generation(system_info: str) -> str | None:
    """Which repack code a wheel has, from ``llama_print_system_info()``: ``"repack"`` (ggml-cpu/repack.cpp,
    0.3.36: ``REPACK = 1``), ``"aarch64"`` (0.3.4's ggml-cpu-aarch64.cpp: ``AARCH64_REPACK = 1``), or None."""
    if re.search(r"\bAARCH64_REPACK = 1\b", system_info):
        return "aarch64"
    if re.search(r"\bREPACK = 1\b", system_info):
        return "repack"
    return None


def repacked_tensors(log_text: str) -> dict[str, str]:
    """Tensor name -> repack layout (``q4_0_8x8``), from llama.cpp/ggml log text."""
    found: dict[str, str] = {}
    for m in REPACK_LINE.finditer(log_text):
        name, layout = m["name"], m["layout"]
        if found.setdefault(name, layout) != layout:
            raise OracleError(f"tensor {name} repacked as both {found[name]} and {layout}")
    return found


def layout_summary(repacked: Mapping[str, str]) -> str:
    """The layouts of ``repacked`` as one string (``q4_0_4x4``, ``q4_0_4x8, q4_0_8x8``), or ``none``."""
    return ", ".join(sorted(set(repacked.values()))) or "none"


# ---------------------------------------------------------------------------------------------------------
# A wheel on a CPU


@dataclass(frozen=True, kw_only=True)
class Build:
    """What a wheel was built as: runtime dispatch (the CPU variants it ships) or a fixed ISA."""

    variants: tuple[str, ...] = ()
    fixed_isa: str | None = None  # e.g. "armv8.2-a+dotprod" (llama_cpp/lib/cpu-isa.txt)


def build_of(switches: Mapping[str, object], cpu_variants: Iterable[str]) -> Build:
    """What a wheel was built as, from its record's target (``target.switches`` and the names of
    ``target.cpu_variants``): every declared CPU variant when the target builds them all (switch
    ``all_variants``), else its one fixed ISA (switch ``arm_arch``), else neither. The one rule: the package
    reads the record through binaries/record.py, the wheel suite (without the package) as JSON; both ask this."""
    if switches.get("all_variants") is True:
        return Build(variants=tuple(cpu_variants))
    arm_arch = switches.get("arm_arch")
    return Build(fixed_isa=arm_arch if isinstance(arm_arch, str) else None)


@dataclass(frozen=True, kw_only=True)
class Expectation:
    """What a wheel must show on a CPU. ``code`` None: the wheel says too little to predict repacking."""

    supported: bool
    variant: str | None = None
    code: frozenset[str] | None = None
    sve_bits: int = 0
    missing: tuple[str, ...] = ()
    scores: Mapping[str, int] = field(default_factory=dict)

    def layout(self, ggml_type: str, ne1: int, generation: str = "repack") -> str | None:
        """The layout a MUL_MAT weight gets (None: stays in the plain CPU buffer)."""
        if self.code is None:
            raise OracleError("the wheel records neither CPU variants nor cpu-isa.txt: its repacking cannot be "
                              "predicted")
        return repack_layout(ggml_type, ne1, code=self.code, sve_bits=self.sve_bits, generation=generation)

    @property
    def q4_0_layout(self) -> str | None:
        """The layout of a Q4_0 weight whose rows divide by every interleave (``"none"``: not repacked);
        None when unknown or unsupported."""
        if self.code is None or not self.supported:
            return None
        return self.layout("Q4_0", _ANY_ROWS) or "none"


def expect(build: Build, cpu: Cpu, declared: Mapping[str, frozenset[str]]) -> Expectation:
    """The variant and repacking ``build`` must show on ``cpu`` (ARM); ``declared``: the pinned source's
    variants for the wheel's platform (``declared_arm_variants``), needed for a dispatch wheel only."""
    if build.variants:
        choice = choose_variant(build.variants, declared, cpu)
        if choice.variant is None:
            return Expectation(supported=False, scores=choice.scores)
        return Expectation(supported=True, variant=choice.variant, code=declared[choice.variant],
                           sve_bits=cpu.sve_bits, scores=choice.scores)
    if build.fixed_isa is not None:
        code = isa_features(build.fixed_isa)
        missing = cpu.lacks(code)
        if missing:
            return Expectation(supported=False, missing=missing)
        return Expectation(supported=True, code=code, sve_bits=cpu.sve_bits)
    return Expectation(supported=True)
