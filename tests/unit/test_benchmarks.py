"""benchmarks/: the statistics and variant forcing (fast), and the smoke run that keeps run.py working.

The smoke run builds (or reuses) the x86_64 dispatch and exact-ISA wheels through the pipeline, so it is a
`build` test; with warm caches it takes about a minute. It checks the shape of what run.py writes and that
each run measured what it claims (repacking on/off, the forced variant), never a speed: CI machines vary.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import perf, stats, wheels
from llama_wheels.config import load
from llama_wheels.core.errors import UserError, VerifyError
from tests.support.checkout import CHECKOUT_PATH, REPO


def test_summary_median_and_spread() -> None:
    s = stats.summarize([10.0, 12.0, 11.0, 30.0])
    assert s.median == 11.5
    assert (s.low, s.high) == (10.0, 30.0)
    assert s.spread == pytest.approx(20.0 / 11.5)
    assert s.to_json()["n"] == 4
    assert stats.ratio(stats.summarize([30.0]), stats.summarize([20.0, 20.0])) == 1.5
    with pytest.raises(ValueError, match="at least one sample"):
        stats.summarize([])


def _fake_site(root: Path, variants: list[str]) -> Path:
    lib = root / "llama_cpp" / "lib"
    lib.mkdir(parents=True)
    for name in ["libllama.so", "libggml.so", "libggml-base.so", *(f"libggml-cpu-{v}.so" for v in variants)]:
        (lib / name).write_bytes(name.encode())
    return root


def test_single_variant_lib_keeps_everything_but_the_other_variants(tmp_path: Path) -> None:
    site = _fake_site(tmp_path / "site", ["x64", "haswell", "skylakex"])
    assert wheels.variants(site) == ["haswell", "skylakex", "x64"]
    lib = wheels.single_variant_lib(site, "haswell", tmp_path / "lib-haswell")
    assert sorted(p.name for p in lib.iterdir()) == [
        "libggml-base.so",
        "libggml-cpu-haswell.so",
        "libggml.so",
        "libllama.so",
    ]
    assert not any(p.is_symlink() for p in lib.iterdir()), "$ORIGIN must resolve to the copy"
    with pytest.raises(UserError, match=r"no CPU variant 'zen9' \(it ships haswell, skylakex, x64\)"):
        wheels.single_variant_lib(site, "zen9", tmp_path / "lib-zen9")


def test_rounds_alternate_so_each_pair_of_passes_is_adjacent_and_no_case_is_always_first(tmp_path: Path) -> None:
    two = [perf.Case(name=n, site=tmp_path, repack=True) for n in "AB"]
    assert ["".join(c.name for c in perf.round_order(two, i)) for i in range(4)] == ["AB", "BA", "BA", "AB"]
    for n_cases in range(2, 9):
        cases = [perf.Case(name=str(i), site=tmp_path, repack=True) for i in range(n_cases)]
        orders = [perf.round_order(cases, i) for i in range(2 * n_cases)]
        assert all(sorted(c.name for c in o) == sorted(c.name for c in cases) for o in orders)
        # Over the rounds every case runs first and last at least once: no case is always early or late.
        assert {o[0].name for o in orders} == {c.name for c in cases} == {o[-1].name for o in orders}


def test_t_quantile_matches_the_tables() -> None:
    # Student's t, 97.5% (two-sided 95%), from any statistics table.
    for df, t in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (7, 2.365), (11, 2.201), (30, 2.042)):
        assert stats.t_quantile_975(df) == pytest.approx(t, abs=1e-3), df
    with pytest.raises(ValueError, match="at least two"):
        stats.t_quantile_975(0)


def test_a_paired_ratio_cancels_the_machines_speed_phases_that_medians_do_not() -> None:
    # A is 1.10x faster than B. The machine runs in slow and fast phases (x0.5 .. x1.0) that both passes of a
    # pair share; which pass of A happens to fall into a fast phase differs from B's by chance.
    phases = [1.0, 0.5, 0.55, 1.0, 0.95, 0.5, 0.6, 1.0, 0.52, 0.98]
    a = [110.0 * p * (1.004 if i % 2 else 0.996) for i, p in enumerate(phases)]
    b = [100.0 * p for p in phases]
    paired = stats.PairedRatio(tuple(a), tuple(b))
    low, high = paired.interval
    assert paired.ratio == pytest.approx(1.10, rel=1e-3)
    assert low < 1.10 < high and high - low < 0.01  # tight: the phases cancel pair by pair
    # The same samples unpaired: shuffling B's passes destroys the pairing, and the interval says so.
    shuffled = stats.PairedRatio(tuple(a), tuple(b[3:] + b[:3]))
    s_low, s_high = shuffled.interval
    assert s_high - s_low > 20 * (high - low)
    assert paired.to_json()["ci95"] == [round(low, 4), round(high, 4)]
    with pytest.raises(ValueError, match="two equally long series of at least 2"):
        stats.PairedRatio((1.0,), (1.0,))


def test_settings_reject_zero_repetitions() -> None:
    from benchmarks import run

    for bad in (["--passes", "1"], ["--threads", "0"]):
        with pytest.raises(UserError, match="--passes at least 2"):
            run.settings_from(run.parser().parse_args(bad))
    assert run.settings_from(run.parser().parse_args(["--smoke"])) == run.SMOKE


def test_the_exact_isa_target_is_the_one_compiled_for_the_chosen_variant() -> None:
    from benchmarks import run

    config = load(REPO)
    assert run.exact_target_for(config, "linux-x86_64", "haswell") == "linux-x86_64-haswell"
    assert run.exact_target_for(config, "linux-x86_64", "zen4") == "linux-x86_64-zen4"
    assert run.exact_target_for(config, "linux-aarch64", "armv8.2_1") == "linux-aarch64-armv8.2-dotprod"
    with pytest.raises(UserError, match=r"ggml chose CPU variant 'icelake' .* no linux-x86_64 target .* "
                                        r"variant = 'icelake'.*--exact-target"):
        run.exact_target_for(config, "linux-x86_64", "icelake")
    with pytest.raises(UserError, match="no linux-aarch64 target"):  # same variant name, other platform
        run.exact_target_for(config, "linux-aarch64", "haswell")


def test_an_unknown_exact_target_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke", "--exact-target", "linux-x86_64-zen5",
         "--out", str(tmp_path / "out"), "--log", str(tmp_path / "bench.log")],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": CHECKOUT_PATH}, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "benchmarks: error: unknown target 'linux-x86_64-zen5' (did you mean 'linux-x86_64-zen4'?); "
        "the targets are defined in build_config/targets.toml")
    assert not (tmp_path / "out").exists()
    assert "wheel " not in (tmp_path / "bench.log").read_text()  # no build stage started


def test_report_pairs_the_lockstep_passes_and_ranks_variants_against_auto(tmp_path: Path) -> None:
    from benchmarks import run

    def result(name: str, pp: list[float], tg: list[float], variant: str | None) -> perf.CaseResult:
        return perf.CaseResult(
            case=perf.Case(name=name, site=tmp_path, repack=name != "repack-off"),
            pp=pp,
            tg=tg,
            info={"variant": variant, "repacked": 0 if name == "repack-off" else 5},
        )

    def results(*rs: perf.CaseResult) -> dict[str, perf.CaseResult]:
        return {r.case.name: r for r in rs}

    repack = results(result("repack-on", [150.0, 75.0, 153.0], [30.0, 15.0, 31.0], "haswell"),
                     result("repack-off", [100.0, 50.0, 102.0], [20.0, 10.0, 20.5], "haswell"))
    dispatch = results(result("dispatch", [150.0, 140.0, 160.0], [30.0, 30.0, 30.0], "haswell"),
                       result("exact-isa", [151.0, 141.0, 161.0], [30.0, 29.0, 31.0], None))
    variants = results(
        result("variant:haswell", [150.0, 100.0, 150.0], [29.0, 29.0, 29.0], "haswell"),
        result("variant:x64", [40.0, 30.0, 40.0], [31.0, 31.2, 30.8], "x64"),
        # Faster than auto by the point estimate, but not beyond doubt: its pairs disagree.
        result("variant:skylakex", [180.0, 95.0, 150.0], [28.0, 28.0, 28.0], "skylakex"),
    )
    data = run.report(repack, dispatch, variants, "haswell", {"haswell": 4, "x64": 1, "skylakex": 5},
                      "linux-x86_64-haswell")
    assert data["repack"]["ratio"]["pp"]["ratio"] == pytest.approx(1.5, abs=1e-3)
    assert data["repack"]["goal"]["pp"] == {"goal": 1.4, "met": True, "lower95_met": True}
    assert data["dispatch"]["ratio"]["pp"]["ratio"] == pytest.approx(0.9933, abs=1e-3)
    assert data["dispatch"]["goal"]["pp"]["met"] is True
    paired = data["variants"]["paired"]
    assert paired["fastest"] == {"pp": "skylakex", "tg": "x64"}
    assert paired["auto_is_fastest"] == {"pp": False, "tg": False}
    assert paired["beats_auto_surely"] == {"pp": [], "tg": ["x64"]}
    assert paired["vs_auto"]["pp"]["haswell"]["ratio"] == 1.0
    text = run.table({**data, "builds": None})
    assert "paired on/off, 95% CI" in text and "x1.500 [" in text


def test_a_worker_that_repacks_nothing_is_refused_and_a_lying_variant_too(tmp_path: Path) -> None:
    ready = {"variant": "x64", "q4_0_repack_layout": None,
             "slots": {"on": {"repacked": 0, "layouts": []}, "off": {"repacked": 0, "layouts": []}}}
    on = perf.Case(name="repack-on", site=tmp_path, repack=True, must_repack=True)
    with pytest.raises(VerifyError, match="repack-on: repacking on, yet ggml repacked no tensor"):
        perf.check_claims(on, ready)
    leaky = {**ready, "slots": {"off": {"repacked": 3, "layouts": ["q4_0_8x8"]}}}
    with pytest.raises(VerifyError, match="use_extra_bufts=False, yet 3 tensors were repacked"):
        perf.check_claims(perf.Case(name="off", site=tmp_path, repack=False), leaky)
    forced = perf.Case(name="variant:haswell", site=tmp_path, repack=True, expect_variant="haswell")
    with pytest.raises(VerifyError, match="forced CPU variant haswell, but ggml ran x64"):
        perf.check_claims(forced, ready)
    assert perf.check_claims(perf.Case(name="off", site=tmp_path, repack=False), ready)["variant"] == "x64"

