"""Figures beside their baselines and targets: the Markdown table and the JSON file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NOT_AVAILABLE = "not available"


@dataclass
class Figure:
    key: str  # stable name in the JSON file
    label: str  # what the table shows
    unit: str
    value: float | str  # a number, or NOT_AVAILABLE
    baseline: float | None = None
    baseline_label: str = ""
    # "ratio": value / baseline >= goal; "max": value <= goal; None: reported only
    rule: str | None = None
    goal: float | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if isinstance(self.value, str) or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def target(self) -> str:
        if self.rule == "ratio":
            return f"≥ {self.goal:g}x baseline"
        if self.rule == "max":
            return f"≤ {self.goal:g} {self.unit}"
        return "—"

    @property
    def met(self) -> bool | None:
        if self.rule is None or isinstance(self.value, str) or self.goal is None:
            return None
        if self.rule == "ratio":
            return self.ratio is not None and self.ratio >= self.goal
        return self.value <= self.goal

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ratio=self.ratio, target=self.target, met=self.met)
        return data


def number(value: float | str | None, unit: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    text = f"{value:,.{digits}f}"
    return f"{text} {unit}".strip()


def markdown(kind: str, figures: list[Figure]) -> str:
    lines = [
        f"| {kind}: figure | value | baseline | ratio | target | met |",
        "| --- | ---: | --- | ---: | --- | :---: |",
    ]
    for f in figures:
        baseline = f"{number(f.baseline, f.unit if f.rule == 'ratio' else '')} {f.baseline_label}"
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else ""
        met = {True: "yes", False: "**no**", None: "—"}[f.met]
        label = f.label + (f" ({'; '.join(f.notes)})" if f.notes else "")
        lines.append(
            f"| {label} | {number(f.value, f.unit)} | {baseline.strip()} | {ratio} | "
            f"{f.target} | {met} |"
        )
    return "\n".join(lines)


def plans_markdown(kind: str, plans: list[dict[str, Any]]) -> str:
    lines = [
        f"| {kind}: list query | page | plan (top nodes) | full scan |",
        "| --- | ---: | --- | :---: |",
    ]
    for p in plans:
        flag = "**Seq Scan**" if p["full_scan"] else "no"
        sort = " (+ sort)" if p["sort"] else ""
        lines.append(f"| {p['query']} | {p['page']} | {p['top']}{sort} | {flag} |")
    return "\n".join(lines)
