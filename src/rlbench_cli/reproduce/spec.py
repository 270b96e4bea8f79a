"""Findings as data: the schema of `reproduce/findings/*.yaml`, and loading them with their file hashes.

A finding names two arms (a recipe plus overrides, or the testbed base model), a metric, the relation the
source reports between the arms, the seeds, and the source (paper and table/figure). See findings/README.md for
the decision rule. Run with `rlbench reproduce --list`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlbench_cli.errors import UserError
from rlbench_cli.records import sha256_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    paper: str = Field(..., min_length=1, description="Paper title and arXiv id.")
    where: str = Field(..., min_length=1, description="Table, figure or section the claim comes from.")


class Arm(_Strict):
    recipe: str = Field(..., min_length=1, description="Recipe path under recipes/ (e.g. tiny/grpo.yaml), or 'base'.")
    overrides: list[str] = Field(default_factory=list, description="key=value recipe overrides.")


class Metric(_Strict):
    kind: Literal["eval_mean_at_k", "eval_pass_at_k", "train_accuracy_auc", "entropy_end", "incorrect_length_end"]
    samples: int | None = Field(None, ge=1, description="train_accuracy_auc: the first N training samples.")
    last_steps: int | None = Field(None, ge=1, description="*_end: average over the last N optimizer steps.")

    @model_validator(mode="after")
    def _needs(self) -> Metric:
        if self.kind == "train_accuracy_auc" and self.samples is None:
            raise ValueError("metric train_accuracy_auc needs `samples`")
        if self.kind in ("entropy_end", "incorrect_length_end") and self.last_steps is None:
            raise ValueError(f"metric {self.kind} needs `last_steps`")
        return self

    @property
    def needs_eval(self) -> bool:
        return self.kind.startswith("eval_")


class Relation(_Strict):
    type: Literal["greater", "at_least"]
    a: str
    b: str
    margin: float = Field(0.0, ge=0, description="at_least: non-inferiority margin in the metric's units.")


class Finding(_Strict):
    id: str = Field(..., pattern=r"^[a-z0-9_]+$")
    claim: str = Field(..., min_length=1)
    source: Source
    arms: dict[str, Arm]
    metric: Metric
    relation: Relation
    seeds: int = Field(3, ge=1, le=100)

    @model_validator(mode="after")
    def _arms_named(self) -> Finding:
        if len(self.arms) != 2:
            raise ValueError("a finding compares exactly two arms")
        for side in (self.relation.a, self.relation.b):
            if side not in self.arms:
                raise ValueError(f"relation names arm {side!r}, which is not in arms ({', '.join(self.arms)})")
        if self.relation.a == self.relation.b:
            raise ValueError("relation.a and relation.b must be different arms")
        base_arms = [n for n, a in self.arms.items() if a.recipe == "base"]
        if base_arms and not self.metric.needs_eval:
            raise ValueError("the base model has no training curve: use an eval_* metric with a 'base' arm")
        return self


def findings_dir() -> Path:
    return Path(str(resources.files("rlbench_cli.reproduce") / "findings"))


def load_finding(path: Path) -> tuple[Finding, str]:
    """(finding, sha256 of the file); a bad file is a UserError naming the file and the key."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"cannot read finding: {type(e).__name__}", where=str(path)) from None
    try:
        finding = Finding.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise UserError(f"invalid finding: {err['msg']}", where=f"{path} key {loc}",
                        fix="see reproduce/findings/README.md for the schema") from None
    if finding.id != path.stem:
        raise UserError(f"finding id {finding.id!r} differs from its file name", where=str(path),
                        fix=f"name the file {finding.id}.yaml")
    return finding, sha256_file(path)


def load_findings(folder: Path | None = None) -> dict[str, tuple[Finding, str, Path]]:
    """Every shipped finding by id: (finding, file sha256, path)."""
    folder = folder or findings_dir()
    out: dict[str, tuple[Finding, str, Path]] = {}
    for path in sorted(folder.glob("*.yaml")):
        finding, digest = load_finding(path)
        out[finding.id] = (finding, digest, path)
    return out
