"""``llama-wheels audit`` on real wheels: the default wheel is clean; a variant library or a core library with
code beyond its ISA fails, naming the library, the instruction and its offset; bad input exits 2."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from llama_wheels.config import load
from llama_wheels.core.cache import Cache
from llama_wheels.core.errors import VerifyError
from llama_wheels.judges.isa_audit import IsaAuditor, pinned_variants
from tests.support.checkout import REPO, cli
from tests.support.rewrite import rewritten

LIB = "llama_cpp/lib"


def test_the_default_wheel_is_clean(default_wheel: Path) -> None:
    result = cli("audit", "--json", str(default_wheel))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    [report] = json.loads(result.stdout)
    libraries = {Path(lib["path"]).name: lib for lib in report["libraries"]}
    assert libraries["libggml-cpu-armv8.2_2.so"]["rule"] == "variant armv8.2_2"
    assert libraries["libggml-base.so"]["rule"] == "baseline armv8-a"
    used = {name: dict(lib["features"]) for name, lib in libraries.items()}
    assert used["libggml-cpu-armv8.2_2.so"]["dotprod"] > 0 and used["libggml-cpu-armv8.2_2.so"]["fp16"] > 0
    assert used["libggml-cpu-armv8.6_1.so"]["i8mm"] > 0 and used["libggml-cpu-armv8.6_2.so"]["sve2"] > 0
    assert "dotprod" not in used["libggml-cpu-armv8.0_1.so"]
    assert not any(lib["violations"] for lib in libraries.values())


def test_a_variant_built_beyond_its_isa_fails(default_wheel: Path, tmp_path: Path) -> None:
    """The armv8.0 variant replaced by an armv8.0 variant compiled with +dotprod (armv8.2_2's bytes)."""
    bad = rewritten(default_wheel, tmp_path, replace={"libggml-cpu-armv8.0_1.so": "libggml-cpu-armv8.2_2.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 1, result.stdout[-3000:]
    [line] = result.stderr.splitlines()
    dotprod = re.search(r"libggml-cpu-armv8\.0_1\.so: \d+ need dotprod, e\.g\. `(\w+) [^`]*` at 0x[0-9a-f]+ "
                        r"\(\.text, file offset 0x[0-9a-f]+\)", line)
    assert dotprod and dotprod[1] in ("sdot", "udot"), line
    assert "libggml-cpu-armv8.0_1.so [variant armv8.0_1]: FAIL" in result.stdout
    assert "libggml-cpu-armv8.2_2.so [variant armv8.2_2]: ok" in result.stdout


def test_a_core_library_beyond_the_baseline_fails(default_wheel: Path, tmp_path: Path) -> None:
    bad = rewritten(default_wheel, tmp_path, replace={"libggml-base.so": "libggml-cpu-armv8.2_2.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "libggml-base.so [baseline armv8-a]: FAIL" in result.stdout
    assert re.search(r"llama_cpp/lib/libggml-base\.so: \d+ need dotprod, e\.g\. `[su]dot ", result.stderr)


def test_builds_audit_stage_refuses_the_sabotaged_wheel(default_wheel: Path, tmp_path: Path, cache: Cache) -> None:
    """What `build` runs before dist/ (pipeline.Auditor): it passes the real wheel and raises on the sabotage."""
    config = load(REPO)
    pin = config.pin(None)
    from llama_wheels.stages.fetch import fetch_sdist
    from llama_wheels.stages.patching import prepare

    tree = prepare(pin, fetch_sdist(pin, cache), config.patches_dir, cache).tree
    assert "within their ISA" in IsaAuditor().audit(default_wheel, tree, "linux-aarch64")
    bad = rewritten(default_wheel, tmp_path, replace={"libggml-cpu-armv8.0_1.so": "libggml-cpu-armv8.2_2.so"})
    with pytest.raises(VerifyError, match=r"libggml-cpu-armv8\.0_1\.so: \d+ need dotprod, e\.g\. `[su]dot "):
        IsaAuditor().audit(bad, tree, "linux-aarch64")


def test_an_unknown_variant_is_bad_input(default_wheel: Path, tmp_path: Path, cache: Cache) -> None:
    assert "armv7.7_1" not in pinned_variants(default_wheel, load(REPO), cache)
    bad = rewritten(default_wheel, tmp_path, rename={f"{LIB}/libggml-cpu-armv8.0_1.so":
                                                     f"{LIB}/libggml-cpu-armv7.7_1.so"})
    result = cli("audit", str(bad))
    assert result.returncode == 2, result.stdout[-3000:]
    [line] = result.stderr.splitlines()
    assert "libggml-cpu-armv7.7_1.so is CPU variant 'armv7.7_1'" in line and "declared: armv8.0_1" in line


def test_a_fixed_isa_wheel_beyond_its_isa_fails(default_wheel: Path, tmp_path: Path) -> None:
    """A fixed-ISA wheel is held to cpu-isa.txt: armv8.2_2's code (dotprod + fp16) as libggml-cpu.so passes as
    armv8.2-a+dotprod+fp16 and fails as armv8.2-a+dotprod (fp16 is optional in armv8.2-a, not implied)."""
    def fixed(isa_name: str, out: Path, guard: Callable[[str], str] = lambda source: source) -> Path:
        out.mkdir()
        copy = out / default_wheel.name
        with zipfile.ZipFile(default_wheel) as src, zipfile.ZipFile(copy, "w") as dst:
            for info in src.infolist():
                if "/libggml-cpu-" not in info.filename and info.filename != "llama_cpp/_backends.py":
                    dst.writestr(info.filename, src.read(info))
            dst.writestr(f"{LIB}/libggml-cpu.so", src.read(f"{LIB}/libggml-cpu-armv8.2_2.so"))
            dst.writestr(f"{LIB}/cpu-isa.txt", isa_name + "\n")
            dst.writestr("llama_cpp/_backends.py", guard(src.read("llama_cpp/_backends.py").decode()))
        return copy

    result = cli("audit", str(fixed("armv8.2-a+dotprod+fp16", tmp_path / "ok")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "libggml-cpu.so [fixed ISA armv8.2-a+dotprod+fp16]: ok; uses dotprod 891, fp16 361" in result.stdout
    result = cli("audit", str(fixed("armv8.2-a+dotprod", tmp_path / "bad")))
    assert result.returncode == 1
    assert re.search(r"llama_cpp/lib/libggml-cpu\.so: 361 need fp16, e\.g\. `f\w+ [^`]*h\d", result.stderr), \
        result.stderr

    # The fixed-ISA gap: an import guard that does not test dotprod lets the wheel import on a CPU without
    # it, so the audit must not allow dotprod although armv8.2-a+dotprod implies it.
    def blind_to_dotprod(source: str) -> str:
        assert '    "dotprod": (_AT_HWCAP, 1 << 20),  # asimddp\n' in source
        return source.replace('    "dotprod": (_AT_HWCAP, 1 << 20),  # asimddp\n', "")

    result = cli("audit", str(fixed("armv8.2-a+dotprod+fp16", tmp_path / "blind", blind_to_dotprod)))
    assert result.returncode == 1, result.stdout[-3000:]
    assert re.search(r"llama_cpp/lib/libggml-cpu\.so: 891 need dotprod, e\.g\. `[us]dot ", result.stderr), \
        result.stderr


