"""The PNG chart of a benchmark report (matplotlib, no display needed), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from llama_wheels.core.cache import atomic_path


def _bars(ax: Axes, title: str, runs: dict[str, dict[str, Any]], highlight: str | None = None) -> None:
    """Grouped bars (pp, tg) per run: median with a min..max whisker."""
    names = list(runs)
    width = 0.38
    for offset, key, label in (
        (-width / 2, "pp_tokens_per_s", "prompt processing"),
        (width / 2, "tg_tokens_per_s", "generation"),
    ):
        medians = [runs[n][key]["median"] for n in names]
        lows = [runs[n][key]["median"] - runs[n][key]["min"] for n in names]
        highs = [runs[n][key]["max"] - runs[n][key]["median"] for n in names]
        xs = [i + offset for i in range(len(names))]
        ax.bar(xs, medians, width, yerr=[lows, highs], capsize=3, label=label)
        for x, m in zip(xs, medians, strict=True):
            ax.annotate(
                f"{m:.0f}",
                (x, m),
                ha="center",
                va="bottom",
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(
        range(len(names)),
        [n + (" *" if n == highlight else "") for n in names],
        rotation=20,
        ha="right",
        fontsize=8,
    )
    ax.set_ylabel("tokens/s (median, min..max)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def _builds(ax: Axes, builds: dict[str, Any] | None) -> None:
    if not builds:
        ax.text(0.5, 0.5, "build timings not run\n(benchmarks/run.py --builds)", ha="center", va="center")
        ax.set_axis_off()
        return
    labels = ["cold", "warm (ccache)", "no-op"] + [f"matrix {m['target']}" for m in builds["matrix"]]
    values = [builds["cold_seconds"], builds["warm_seconds"]["median"], builds["noop_seconds"]["median"]]
    values += [m["seconds"] for m in builds["matrix"]]
    ax.bar(range(len(values)), values, color="tab:gray")
    for i, v in enumerate(values):
        ax.annotate(f"{v:.0f}s" if v >= 10 else f"{v:.1f}s", (i, v), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title(f"builds of {builds['target']}: warm/cold {builds['warm_over_cold']:.0%}", fontsize=10)


def _paired(ratios: dict[str, Any]) -> str:
    """pp and tg paired ratios with their 95% intervals, for a title."""
    return ", ".join(
        f"{kind} x{ratios[kind]['ratio']:.3f} [{ratios[kind]['ci95'][0]:.3f}, {ratios[kind]['ci95'][1]:.3f}]"
        for kind in ("pp", "tg")
    )


def write_chart(report: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    repack = report["repack"]
    _bars(
        axes[0][0],
        f"repack on / off (paired, 95% CI): {_paired(repack['ratio'])}",
        {"repack on": repack["on"], "repack off": repack["off"]},
    )
    dispatch = report["dispatch"]
    _bars(
        axes[0][1],
        f"dispatch / exact ISA (paired, 95% CI): {_paired(dispatch['ratio'])}",
        {
            f"dispatch ({dispatch['dispatch']['variant']})": dispatch["dispatch"],
            f"exact ISA ({dispatch['exact_target']})": dispatch["exact"],
        },
    )
    variants = report["variants"]
    _bars(
        axes[1][0],
        "each CPU variant forced (* = ggml's automatic choice)",
        variants["runs"],
        highlight=variants["auto"],
    )
    _builds(axes[1][1], report.get("builds"))
    machine = report["machine"]
    fig.suptitle(
        f"llama-wheels {report['commit'][:10]}  |  {machine['cpu_model']}, {machine['cores']} cores, "
        f"{report['settings']['threads']} threads  |  model {report['model']['size_mb']:.0f} MB Q4_0",
        fontsize=11,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_arm_chart(report: dict[str, Any], path: Path) -> Path:
    """``run.py --arm``: per CPU class, instructions without repack over with (per type, prompt and
    generation), and ggml's variant over the variant with the fewest instructions (1 = ggml's is best)."""
    classes = report["classes"]
    names = list(classes)
    types = report["settings"]["types"]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(names) + 3), 8.5))
    width = 0.8 / (2 * len(types))
    for j, (t, phase) in enumerate((t, p) for t in types for p in ("prompt", "generation")):
        values = [classes[n]["repack"][t]["off_over_on"][phase] for n in names]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(names))]
        axes[0].bar(xs, values, width, label=f"{t} {'pp' if phase == 'prompt' else 'tg'}")
    axes[0].axhline(1, color="gray", lw=0.8)
    axes[0].set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    axes[0].set_ylabel("instructions, repack off / on")
    axes[0].set_title("repack: guest instructions per token without / with (higher: repack saves more)", fontsize=10)
    axes[0].legend(fontsize=7, ncol=len(types))
    keys = sorted({k for c in classes.values() for k in c["variants"]})
    width = 0.8 / max(len(keys), 1)
    for j, key in enumerate(keys):
        values = [classes[n]["variants"].get(key, {}).get("auto_over_fewest", 1.0) for n in names]
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(names))]
        axes[1].bar(xs, values, width, label=key.replace(":", " "))
    axes[1].axhline(1, color="gray", lw=0.8)
    axes[1].set_xticks(range(len(names)), [f"{n}\n({classes[n]['auto_variant']})" for n in names], rotation=20,
                       ha="right", fontsize=8)
    axes[1].set_ylabel("ggml's choice / fewest")
    axes[1].set_title("CPU variant: ggml's automatic choice over the forced variant with the fewest instructions",
                      fontsize=10)
    axes[1].legend(fontsize=7, ncol=len(keys))
    fig.suptitle(f"llama-wheels {report['commit'][:10]}  |  qemu {report['qemu']['version'].split()[-1]} + insn_count"
                 f"  |  {report['settings']['n_prompt']}-token prompt, {report['settings']['n_gen']} generated, "
                 "1 thread", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
