"""The four benchmark plots as PNG files, drawn with matplotlib's Agg backend (no display needed).

- isl_osl_histogram.png: how many requests had each input and output length (a 2D histogram; a
  labelled grid with counts when each axis has at most a dozen distinct lengths)
- ttft_vs_isl.png: TTFT against input length, per pattern, with a least-squares line whose slope
  (ms per input token) is the prefill cost a request pays for its prompt
- itl_vs_position.png: inter-token latency against output token position, median and p90 per
  position over all requests, on a light scatter of every gap
- ttc_by_pattern.png: time to completion per request pattern, as box plots (whiskers 1.5 IQR)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelgate.clients.bench.request_record import RequestRecord
from modelgate.clients.bench.statistics import by_pattern, least_squares_line

PLOT_FILES = ("isl_osl_histogram.png", "ttft_vs_isl.png", "itl_vs_position.png", "ttc_by_pattern.png")
_STYLE = {
    "font.size": 12,
    "axes.titlesize": 14,
    "axes.labelsize": 12,
    "legend.fontsize": 10,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_MAX_SCATTER_POINTS = 20_000
_MAX_CATEGORIES = 12  # distinct lengths per axis up to which the histogram is a labelled grid


def write_plots(records: list[RequestRecord], output_dir: Path, subtitle: str = "") -> list[Path]:
    """Draws the four plots of the successful requests into `output_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    ok = [r for r in records if r.ok and r.isl is not None]
    drawers = (_isl_osl_histogram, _ttft_vs_isl, _itl_vs_position, _ttc_by_pattern)
    paths = []
    with matplotlib.rc_context(_STYLE):
        for name, draw in zip(PLOT_FILES, drawers):
            figure = _figure()
            draw(figure, figure.axes[0], ok)
            if subtitle:
                figure.text(0.99, 0.01, subtitle, ha="right", va="bottom", fontsize=9, color="0.4")
            path = Path(output_dir) / name
            figure.savefig(path)
            paths.append(path)
    return paths


def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    figure.subplots()
    return figure


def _isl_osl_histogram(figure, axes, records: list[RequestRecord]) -> None:
    isl = np.array([r.isl for r in records], dtype=float)
    osl = np.array([r.osl for r in records], dtype=float)
    axes.set_title(f"Input and output lengths ({len(records)} requests)")
    axes.set_xlabel("input length, ISL (tokens)")
    axes.set_ylabel("output length, OSL (tokens)")
    axes.grid(False)
    if not records:
        return
    if np.unique(isl).size <= _MAX_CATEGORIES and np.unique(osl).size <= _MAX_CATEGORIES:
        _length_grid(figure, axes, isl, osl)
        return
    num_bins = int(np.clip(np.sqrt(len(records)), 5, 30))  # coarser bins for fewer requests
    counts, x_edges, y_edges = np.histogram2d(isl, osl, bins=(_edges(isl, num_bins), _edges(osl, num_bins)))
    counts[counts == 0] = np.nan  # empty cells stay white
    mesh = axes.pcolormesh(x_edges, y_edges, counts.T, cmap="viridis")
    _count_colorbar(figure, axes, mesh)


def _length_grid(figure, axes, isl: np.ndarray, osl: np.ndarray) -> None:
    """Few distinct lengths (fixed sizes, the four classes): one labelled cell per pair, with its count."""
    x_values, x_index = np.unique(isl, return_inverse=True)
    y_values, y_index = np.unique(osl, return_inverse=True)
    counts = np.zeros((y_values.size, x_values.size))
    np.add.at(counts, (y_index, x_index), 1)
    shown = np.where(counts > 0, counts, np.nan)
    image = axes.imshow(shown, origin="lower", cmap="viridis", aspect="auto", vmin=0, vmax=counts.max())
    axes.set_xticks(range(x_values.size), [f"{v:g}" for v in x_values])
    axes.set_yticks(range(y_values.size), [f"{v:g}" for v in y_values])
    for (row, column), count in np.ndenumerate(counts):
        if count:
            color = "white" if count < 0.6 * counts.max() else "black"
            axes.text(column, row, f"{count:g}", ha="center", va="center", fontsize=14, color=color)
    _count_colorbar(figure, axes, image)


def _count_colorbar(figure, axes, mappable) -> None:
    from matplotlib.ticker import MaxNLocator

    figure.colorbar(mappable, ax=axes, label="requests", ticks=MaxNLocator(integer=True))


def _edges(values: np.ndarray, max_bins: int) -> np.ndarray:
    """Bin edges on whole tokens: one bin per length when few, else `max_bins` equal bins."""
    low, high = values.min(), values.max()
    if high - low + 1 <= max_bins:
        return np.arange(low - 0.5, high + 1.5)
    return np.linspace(low, high, max_bins + 1)


def _ttft_vs_isl(figure, axes, records: list[RequestRecord]) -> None:
    timed = [r for r in records if r.ttft_s is not None]
    axes.set_title("Time to first token against input length")
    axes.set_xlabel("input length, ISL (tokens)")
    axes.set_ylabel("time to first token (ms)")
    for name, group in by_pattern(timed).items():
        axes.scatter([r.isl for r in group], [r.ttft_s * 1e3 for r in group], s=18, alpha=0.7, label=name)
    fit = least_squares_line([r.isl for r in timed], [r.ttft_s for r in timed])
    if fit is not None:
        xs = np.array([min(r.isl for r in timed), max(r.isl for r in timed)])
        label = f"least squares: {fit['intercept'] * 1e3:.1f} ms + {fit['slope'] * 1e3:.3f} ms/token"
        axes.plot(xs, (fit["intercept"] + fit["slope"] * xs) * 1e3, color="black", linewidth=2, label=label)
    elif timed:
        axes.plot([], [], " ", label="no fit: a single input length")
    if timed:
        axes.legend(loc="upper left")
        axes.set_ylim(bottom=0)


def _itl_vs_position(figure, axes, records: list[RequestRecord]) -> None:
    positions = np.array([p for r in records for p in r.itl_positions], dtype=int)
    gaps = np.array([g for r in records for g in r.itl_s], dtype=float) * 1e3
    axes.set_title("Inter-token latency against output position")
    axes.set_xlabel("output token position (tokens)")
    axes.set_ylabel("inter-token latency (ms)")
    if positions.size == 0:
        return
    sample = np.random.default_rng(0).permutation(positions.size)[:_MAX_SCATTER_POINTS]
    axes.scatter(positions[sample], gaps[sample], s=4, alpha=0.15, color="tab:gray", label="each token")
    order = np.argsort(positions, kind="stable")
    unique, starts = np.unique(positions[order], return_index=True)
    groups = np.split(gaps[order], starts[1:])
    axes.plot(unique, [np.median(g) for g in groups], color="tab:blue", linewidth=2, label="median")
    axes.plot(unique, [np.percentile(g, 90) for g in groups], color="tab:red", linewidth=2, label="p90")
    axes.set_ylim(0, max(np.percentile(gaps, 99.5) * 1.2, 1e-3))
    axes.legend(loc="upper right")


def _ttc_by_pattern(figure, axes, records: list[RequestRecord]) -> None:
    groups = {name: [r.ttc_s for r in group if r.ttc_s is not None] for name, group in by_pattern(records).items()}
    groups = {name: values for name, values in groups.items() if values}
    axes.set_title("Time to completion per request pattern")
    axes.set_xlabel("request pattern (input-output)")
    axes.set_ylabel("time to completion (s)")
    if not groups:
        return
    labels = [_wrapped(name) + f"\n(n={len(values)})" for name, values in groups.items()]
    axes.boxplot(list(groups.values()), tick_labels=labels)
    axes.set_ylim(bottom=0)


def _wrapped(pattern: str) -> str:
    """'long-in-short-out' on two lines, so that four patterns fit side by side."""
    return pattern.replace("-in-", "-in-\n")
