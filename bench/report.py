"""Benchmark figures as Markdown: one row per figure, ours beside the reference, the ratio and the target."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Row:
    """One figure: ``ours`` and ``reference`` in ``unit``; ``verdict`` is None when there is no target."""

    figure: str
    unit: str
    ours: float
    reference: float | None = None
    target: str = ""
    verdict: bool | None = None
    ratio_as: str = "percent"  # "percent": ours / reference; "times": ours / reference as "×N"

    @property
    def ratio(self) -> str:
        if self.reference is None or not self.reference or math.isnan(self.ours):
            return ""
        value = self.ours / self.reference
        return f"{value:.1%}" if self.ratio_as == "percent" else f"×{value:.2f}"


def number(value: float | None, unit: str) -> str:
    """A figure printed with the precision its unit deserves."""
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    if unit in ("events/s",):
        return f"{value:,.0f}"
    if unit in ("µs", "MB"):
        return f"{value:,.1f}"
    if unit in ("ms",):
        return f"{value:.3f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:g}"


def table(rows: list[Row], ours: str = "eventbus", reference: str = "reference") -> str:
    """The rows as a Markdown table."""
    lines = [f"| figure | unit | {ours} | {reference} | ratio | target | result |",
             "|---|---|---:|---:|---:|---|---|"]
    for row in rows:
        verdict = "" if row.verdict is None else ("PASS" if row.verdict else "FAIL")
        lines.append(f"| {row.figure} | {row.unit} | {number(row.ours, row.unit)} | "
                     f"{number(row.reference, row.unit)} | {row.ratio} | {row.target} | {verdict} |")
    return "\n".join(lines)
