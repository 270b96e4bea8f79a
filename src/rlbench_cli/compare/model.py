"""The comparison table's data model: columns, cells, rows and the whole comparison (with its JSON form).

Built by tables.py (grouping, cells, significance) and drawn by render.py (rich, markdown, LaTeX, CSV) and
plots.py. Kept apart so renderers and statistics import the model without the building code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlbench_cli.compare.loader import Run
from rlbench_cli.compare.stats import BootstrapResult

EXTRA_COLUMNS: dict[str, str] = {
    "pass@k": "pass@k",
    "maj@k": "maj@k",
    "entropy": "Entropy",
    "wall_time": "Wall time",
    "gen_tokens": "Gen tokens",
}
AVERAGE = "average"
SIG_LEVEL = 0.05
N_BOOT = 10_000
ALGORITHM_ORDER = (
    "sft",
    "raft",
    "raftpp",
    "raft++",
    "reinforce",
    "reinforce_rej",
    "reinforce-rej",
    "grpo",
    "ppo",
    "dpo",
    "iterative_dpo",
    "iterative-dpo",
)


@dataclass
class Column:
    key: str
    header: str
    benchmark: str | None  # None for Average
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Cell:
    value: float  # fraction
    uncertainty: float | None  # fraction: SE (one seed) or CI half-width (several seeds)
    kind: str  # "se" | "ci95" | "reference"
    n_seeds: int
    best: bool = False
    test: BootstrapResult | None = None

    @property
    def significant(self) -> bool:
        return self.test is not None and self.test.p_value < SIG_LEVEL

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "uncertainty": self.uncertainty,
            "uncertainty_kind": self.kind,
            "n_seeds": self.n_seeds,
            "best": self.best,
            "vs_baseline": self.test.to_dict() if self.test else None,
            "significant": self.significant if self.test else None,
        }


@dataclass
class Row:
    label: str
    recipe_name: str | None
    kind: str  # "base" | "train" | "reference"
    algorithm: str | None = None
    runs: list[Run] = field(default_factory=list)
    cells: dict[str, Cell] = field(default_factory=dict)
    extras: dict[str, float | None] = field(default_factory=dict)
    is_baseline: bool = False

    @property
    def n_seeds(self) -> int:
        return len(self.runs)


@dataclass
class Comparison:
    metric: str
    columns: list[Column]
    rows: list[Row]
    extra_columns: list[str]
    warnings: list[str]
    baseline: Row | None = None
    reference: str | None = None
    legend: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        comparisons = [
            {"row": r.label, "column": k, **c.test.to_dict()}
            for r in self.rows
            for k, c in r.cells.items()
            if c.test is not None
        ]
        return {
            "metric": self.metric,
            "columns": [
                {"key": c.key, "header": c.header, "benchmark": c.benchmark, "settings": c.settings}
                for c in self.columns
            ],
            "extra_columns": list(self.extra_columns),
            "rows": [
                {
                    "label": r.label,
                    "recipe_name": r.recipe_name,
                    "kind": r.kind,
                    "algorithm": r.algorithm,
                    "baseline": r.is_baseline,
                    "runs": [x.name for x in r.runs],
                    "seeds": [x.seed for x in r.runs],
                    "n_seeds": r.n_seeds,
                    "cells": {
                        c.key: (r.cells[c.key].to_dict() if c.key in r.cells else None) for c in self.columns
                    },
                    "extras": dict(r.extras),
                }
                for r in self.rows
            ],
            "stats": {
                "baseline": self.baseline.label if self.baseline else None,
                "method": "paired bootstrap over problems (and seeds when a row has several), "
                "percentile 95% interval, two-sided p-value",
                "n_boot": N_BOOT,
                "significance_level": SIG_LEVEL,
                "comparisons": comparisons,
            },
            "reference": self.reference,
            "legend": list(self.legend),
            "warnings": list(self.warnings),
        }
