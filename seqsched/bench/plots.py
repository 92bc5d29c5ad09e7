"""One PNG per bench: (a) the actual output lengths, (b) throughput with the range of the
repeats, (c) each static strategy's micro-batches as useful, padded and discarded
token-steps, and, when a continuous strategy ran, (d) the share of requests finished
over time, where ordering by predicted length shows. The subtitle holds the
configuration (model, limit, batch, threads, repeats). matplotlib, Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqsched.bench.runner import BenchResult
from seqsched.pipeline import BatchRecord
from seqsched.request import RequestStatus

USEFUL, PADDED, DISCARDED = "#2b6cb0", "#cbd5e0", "#e53e3e"


def batch_token_steps(batch: BatchRecord) -> tuple[int, int, int]:
    """(useful, padded, discarded) token-steps of one micro-batch.

    Its rows are charged ``batch_size * num_steps`` token-steps. The tokens of an FCR
    failure are discarded under a restart and kept under a resume; every other generated
    token is kept."""
    total = batch.batch_size * batch.num_steps
    discarded = batch.num_discarded_tokens
    useful = batch.num_output_tokens - discarded
    assert useful >= 0 and useful + discarded <= total, f"inconsistent batch record {batch}"
    return useful, total - useful - discarded, discarded


def plot_bench(bench: BenchResult, path: str | Path, title: str = "", subtitle: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    static = [r for r in bench.results if r.report.batches]
    streamed = len(static) < len(bench.results)
    heights = [3] + ([max(1, len(static))] if static else []) + ([3] if streamed else [])
    fig = plt.figure(figsize=(12, 1 + sum(heights) * 0.9 + 0.3 * len(static)))
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, hspace=0.75, wspace=0.25)
    _lengths(fig.add_subplot(grid[0, 0]), bench)
    _throughput(fig.add_subplot(grid[0, 1]), bench)
    if static:
        _batches(fig.add_subplot(grid[1, :]), bench)
    if streamed:
        _completions(fig.add_subplot(grid[len(heights) - 1, :]), bench)
    if title or subtitle:
        fig.suptitle("\n".join(t for t in (title, subtitle) if t), fontsize=11)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _lengths(ax: Any, bench: BenchResult) -> None:
    results = bench.results[0].report.results
    lengths = [r.num_output_tokens for r in results if r.status != RequestStatus.FINISHED_ERROR]
    limit = max(r.request.max_new_tokens for r in results)
    ax.hist(lengths, bins=min(50, max(1, len(set(lengths)))), range=(0, limit), color=USEFUL)
    at_limit = sum(n >= limit for n in lengths)
    ax.axvline(limit, color=DISCARDED, linestyle="--", linewidth=1)
    ax.annotate(
        f"limit {limit}: {at_limit} ({100 * at_limit / max(1, len(lengths)):.0f}%)",
        (limit, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(-4, -4),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize=8,
        color=DISCARDED,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1},
    )
    ax.set_xlim(0, limit * 1.04)
    ax.set_title("(a) actual output lengths")
    ax.set_xlabel("output tokens")
    ax.set_ylabel("requests")


def _throughput(ax: Any, bench: BenchResult) -> None:
    names = [r.strategy.name for r in bench.results]
    values = [r.metrics.requests_per_second for r in bench.results]
    spreads = [r.spread("requests_per_second") for r in bench.results]
    errors = [
        [v - lo for v, (lo, _) in zip(values, spreads, strict=True)],
        [hi - v for v, (_, hi) in zip(values, spreads, strict=True)],
    ]
    bars = ax.bar(names, values, color=USEFUL, yerr=errors if bench.repeat > 1 else None, capsize=3)
    for bar, name, (_, high) in zip(bars, names, spreads, strict=True):
        ratio = bench.ratio(name)
        if ratio is not None:
            ax.annotate(
                f"{ratio:.2f}x",
                (bar.get_x() + bar.get_width() / 2, max(bar.get_height(), high)),
                ha="center",
                va="bottom",
            )
    ax.margins(y=0.15)
    ax.tick_params(axis="x", labelrotation=20)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_title("(b) throughput" + (f" (median, min-max of {bench.repeat} repeats)" if bench.repeat > 1 else ""))
    ax.set_ylabel("requests / s")


def _completions(ax: Any, bench: BenchResult) -> None:
    """The share of requests finished by each moment of the run (the median repeat)."""
    for res in bench.results:
        times = sorted(r.completed_at for r in res.report.results if r.status != RequestStatus.FINISHED_ERROR)
        if times:
            shares = [(k + 1) / len(times) for k in range(len(times))]
            mean = res.metrics.latency_mean
            ax.step([0.0, *times], [0.0, *shares], where="post", label=f"{res.strategy.name} (mean {mean:.2f} s)")
    ax.set_xlabel("seconds from the start of the run")
    ax.set_ylabel("share of requests finished")
    ax.set_title("(d) completion times: higher and further left is better for latency")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)


def _batches(ax: Any, bench: BenchResult) -> None:
    """A row per static strategy; each micro-batch a segment as wide as its token-steps."""
    results = [r for r in bench.results if r.report.batches]
    for y, res in enumerate(results):
        segments: tuple[list[tuple[int, int]], ...] = ([], [], [])
        edges, x = [], 0
        for batch in res.report.batches:
            for kind, width in enumerate(batch_token_steps(batch)):
                if width:
                    segments[kind].append((x, width))
                    x += width
            edges.append(x)
        for spans, color in zip(segments, (USEFUL, PADDED, DISCARDED), strict=True):
            ax.broken_barh(spans, (y - 0.3, 0.6), facecolors=color, edgecolor="none")
        ax.vlines(edges, y - 0.3, y + 0.3, colors="white", linewidth=0.3)
        ax.annotate(f" eff {100 * res.metrics.effective_token_ratio:.0f}%", (x, y), va="center", fontsize=8)
    ax.set_yticks(range(len(results)), [r.strategy.name for r in results])
    ax.invert_yaxis()
    ax.set_xlabel("token-steps (rows x decode steps), micro-batches in run order")
    ax.set_title("(c) micro-batches: useful (blue), padding (grey), discarded FCR runs (red)")
