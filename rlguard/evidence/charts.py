"""Charts for the report, as embedded PNG, when matplotlib (the optional extra ``report``) is installed."""

from __future__ import annotations

import base64
import importlib
import io
from collections.abc import Mapping, Sequence
from typing import Any


def available() -> bool:
    """Whether matplotlib can be imported."""
    return _figure() is not None


def _figure() -> Any:
    """matplotlib's `Figure` class (no pyplot: no global state, no GUI backend), or None."""
    try:
        return importlib.import_module("matplotlib.figure").Figure
    except ImportError:
        return None


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def stacked_bars(labels: Sequence[str], series: Mapping[str, Sequence[int]], title: str) -> str | None:
    """A stacked bar chart as a ``data:`` URI, or None without matplotlib."""
    Figure = _figure()
    if Figure is None:
        return None
    fig = Figure(figsize=(9, 3))
    ax = fig.subplots()
    bottom = [0] * len(labels)
    colors = {"allow": "#4c9a5b", "deny": "#c0392b", "require_approval": "#e2a33b"}
    for name, values in series.items():
        ax.bar(range(len(labels)), values, bottom=bottom, label=name, color=colors.get(name))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    step = max(1, len(labels) // 12)
    ax.set_xticks(range(0, len(labels), step))
    ax.set_xticklabels([labels[i] for i in range(0, len(labels), step)], rotation=30, ha="right", fontsize=7)
    ax.set_title(title)
    ax.legend(fontsize=7)
    return _png(fig)


def line(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str) -> str | None:
    """A line chart as a ``data:`` URI, or None without matplotlib."""
    Figure = _figure()
    if Figure is None:
        return None
    fig = Figure(figsize=(9, 3))
    ax = fig.subplots()
    ax.plot(xs, ys, color="#c0392b", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    return _png(fig)
