"""convert-model against the real old format: files written by llama.cpp 74d73dc85's own llama-quantize.

llama-cpp-python 0.3.2 vendors the last llama.cpp whose llama-quantize writes Q4_0_4_4 / Q4_0_4_8 /
Q4_0_8_8. Its llama-quantize is built natively once (cached outside the clone, a few minutes cold); a
tiny F32 model is quantized to each old type and to plain Q4_0, each old file is converted, and every
tensor must then be byte-identical to the Q4_0 file's. Finally the converted model runs on the current
(0.3.36) default wheel under emulation and is repacked there.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from llama_wheels.config.cpus import load_cpus
from llama_wheels.core.cache import Cache
from llama_wheels.emulation.qemu import install_wheel
from llama_wheels.gguf_tools import convert
from llama_wheels.judges.verify import run_smoke
from llama_wheels.standalone import models
from tests.support import oldquant
from tests.support.checkout import REPO, cli

OLD_TYPES = {kind.name: kind for kind in convert.OLD_TYPES.values()}


@pytest.fixture(scope="module")
def quantized(cache: Cache, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The F32 model quantized by the real old llama-quantize to Q4_0 and each removed type."""
    tool = oldquant.ensure_llama_quantize(cache)
    work = tmp_path_factory.mktemp("oldquant")
    f32 = models.write_model(models.F32_SPEC, work / "f32.gguf")
    types = ("Q4_0", *oldquant.OLD_TYPE_NAMES)
    return {t: oldquant.quantize(tool, f32, work / f"{t}.gguf", t) for t in types}


@pytest.mark.parametrize("type_name", oldquant.OLD_TYPE_NAMES)
def test_real_old_file_converts_to_the_q4_0_file(quantized: dict[str, Path], tmp_path: Path,
                                                 type_name: str) -> None:
    kind = OLD_TYPES[type_name]
    old = convert.tensor_bytes(quantized[type_name])
    reference = convert.tensor_bytes(quantized["Q4_0"])
    interleaved = sorted(name for name, (t, _) in old.items() if t == kind.ggml_type)
    # every 2D weight with a row count the layout can take was written interleaved ...
    weights = {t.name: t for t in models.weight_tensors(models.F32_SPEC) if t.ne1 > 1}
    assert interleaved == sorted(n for n, t in weights.items() if t.ne1 % kind.rows == 0)
    # ... and differs from plain Q4_0 there (else the comparison below would prove nothing)
    assert all(old[n][1] != reference[n][1] for n in interleaved)

    out = tmp_path / "converted.gguf"
    result = cli("convert-model", str(quantized[type_name]), str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    converted = convert.tensor_bytes(out)
    assert converted.keys() == reference.keys()
    differing = [n for n in reference if converted[n] != reference[n]]
    assert not differing, f"tensors differ from llama-quantize's own Q4_0: {differing}"
    assert convert.read_layout(out).file_type == convert.MOSTLY_Q4_0
    # in fact the whole file is what llama-quantize writes for Q4_0 (metadata, tensor infos, data)
    assert out.read_bytes() == quantized["Q4_0"].read_bytes()


def test_converted_model_loads_and_repacks_on_the_current_wheel(
    quantized: dict[str, Path], default_wheel: Path, cache: Cache, tmp_path: Path
) -> None:
    """The converted Q4_0_8_8 file on the 0.3.36 dispatch wheel (neoverse-n1): loads, repacks to 4x4,
    and generates exactly what llama-quantize's own Q4_0 file generates."""
    converted = tmp_path / "converted.gguf"
    convert.convert_model(quantized["Q4_0_8_8"], converted)
    cpu = load_cpus(REPO)["neoverse-n1"]
    with tempfile.TemporaryDirectory(prefix="llama-wheels-oldquant-") as scratch:
        site = install_wheel(default_wheel, Path(scratch) / "site")
        runs = {name: run_smoke(site, cpu, cache, label=name, model=model)
                for name, model in (("converted", converted), ("q4_0", quantized["Q4_0"]))}
    assert (runs["converted"].tokens, runs["converted"].repacked) == (runs["q4_0"].tokens, runs["q4_0"].repacked)
    repacked = runs["converted"].repacked
    assert repacked and set(repacked.values()) == {"q4_0_4x4"}, repacked
    assert "blk.0.attn_q.weight" in repacked

