"""tune.png: output throughput against TTFT p99 and against ITL p99, one point per candidate.

Points are numbered as the table's rows; green ones meet the targets, orange ones miss them; the model's own
config is a square, the choice a star; dashed lines mark the targets. Candidates without numbers (not served,
every request failed) are left out. Needs matplotlib (the `bench` extra): ImportError without it.
"""

from __future__ import annotations

from pathlib import Path

from modelgate.clients.tune.choose import Choice, Targets, meets
from modelgate.clients.tune.measurement import Measurement

PLOT_NAME = "tune.png"
_PANELS = (("TTFT p99 (ms)", "ttft_p99_ms", "ttft_p99_ms"), ("ITL p99 (ms)", "itl_p99_ms", "itl_p99_ms"))


def write_plot(
    path: Path, measurements: list[Measurement], targets: Targets, choice: Choice | None, baseline_key: str, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    axes = figure.subplots(1, 2)
    chosen_key = choice.measurement.key if choice else None
    for ax, (label, field, target_field) in zip(axes, _PANELS):
        _panel(ax, measurements, field, targets, chosen_key, baseline_key)
        target = getattr(targets, target_field)
        if target is not None:
            ax.axvline(target, linestyle="--", color="0.3", label=f"target {target:g} ms")
        ax.set_xlabel(label)
        ax.set_ylabel("output tokens/s")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=9)
    figure.suptitle(title)
    figure.savefig(path)
    return Path(path)


def _panel(ax, measurements: list[Measurement], field: str, targets: Targets, chosen_key, baseline_key) -> None:
    labelled = set()
    for number, m in enumerate(measurements, 1):
        x = getattr(m, field)
        if not m.has_numbers or x is None:
            continue
        ok = meets(m, targets)
        kind = "model's config" if m.key == baseline_key else None
        if m.key == chosen_key:
            kind = "chosen (the model's config)" if kind else "chosen"
        marker = "*" if m.key == chosen_key else "s" if kind else "o"
        name = kind or ("meets targets" if ok else "misses targets")
        ax.scatter(
            [x],
            [m.output_tok_s],
            marker=marker,
            s=220 if m.key == chosen_key else 60,
            color="tab:green" if ok else "tab:orange",
            edgecolors="black",
            zorder=3,
            label=None if name in labelled else name,
        )
        labelled.add(name)
        ax.annotate(str(number), (x, m.output_tok_s), textcoords="offset points", xytext=(6, 6), fontsize=9)
