"""The report's figures: output throughput and p50 TTFT against concurrency, one line per server.

One panel per model, log-log axes (the servers differ by orders of magnitude); markers are
medians over repeats, bars the min-max range.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from bench.servers import LABELS

FIGURES = {  # file name -> (summary key, y label)
    "throughput.png": ("output_throughput", "output tokens/s"),
    "ttft.png": ("p50_ttft_ms", "TTFT p50 (ms)"),
}


def _panel(ax, rows: list, key: str, ylabel: str, title: str) -> None:
    for color, (server, label) in enumerate(LABELS.items()):
        pts = [(r["concurrency"], r[key]) for r in rows if r["server"] == server and r[key]]
        if not pts:
            continue
        xs = [c for c, _ in pts]
        ys = [s["median"] for _, s in pts]
        err = [[s["median"] - s["min"] for _, s in pts], [s["max"] - s["median"] for _, s in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, color=f"C{color}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    levels = sorted({r["concurrency"] for r in rows})
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))  # labels 1-2-5 per decade
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no valid run of any server: no legend either
        ax.legend(fontsize="small")


def draw(summary: list, out: Path) -> list[str]:
    """Write the figures into `out`; their file names."""
    model_names = list(dict.fromkeys(r["model"] for r in summary))
    for name, (key, ylabel) in FIGURES.items():
        fig, axes = plt.subplots(
            1, len(model_names), figsize=(6 * len(model_names), 4.5), squeeze=False
        )
        for ax, model in zip(axes[0], model_names, strict=True):
            _panel(ax, [r for r in summary if r["model"] == model], key, ylabel, model)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
    return list(FIGURES)
