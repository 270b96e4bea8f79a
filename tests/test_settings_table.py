"""README's resolved-settings table equals what config.resolve_defaults gives every algorithm.

The README table is the reviewed record of each algorithm's settings; config.py is what runs. A default changed
in one but not the other (e.g. `grpo` resolving to the Dr. GRPO estimator) fails here. Regenerate the table
with `python -m rlbench_cli.docs --write` only after checking the change is intended: the README diff shows it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlbench_cli import docs
from rlbench_cli.config import ALGORITHMS, load_recipe

REPO = Path(__file__).resolve().parents[1]


def _readme_table() -> dict[str, dict[str, str]]:
    block = docs.readme_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert block is not None, "README.md lost its algorithm-settings markers"
    lines = [line for line in block.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[1:] == [h for h, _ in docs.COLUMNS], "README table columns differ from rlbench_cli.docs.COLUMNS"
    rows: dict[str, dict[str, str]] = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = dict(zip(docs.FIELDS, cells[1:], strict=True))
    return rows


def test_readme_has_one_row_per_algorithm() -> None:
    assert list(_readme_table()) == list(ALGORITHMS)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_resolved_settings_equal_the_readme_row(algorithm: str) -> None:
    row = _readme_table()[algorithm]
    resolved = docs.resolved_settings(algorithm)
    wrong = {f: (row[f], docs._cell(resolved[f])) for f in docs.FIELDS if row[f] != docs._cell(resolved[f])}
    assert not wrong, (f"{algorithm}: README says / config resolves {wrong}; fix config.py, or if the change is "
                       "intended run `python -m rlbench_cli.docs --write`")


def test_readme_block_is_exactly_the_generated_table() -> None:
    assert docs.main(["--check", "--readme", str(REPO / "README.md")]) == 0


def test_check_flags_a_stale_readme(tmp_path: Path, capsys) -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    stale = text.replace("| `grpo` | `grpo` |", "| `grpo` | `dr_grpo` |", 1)
    assert stale != text
    (tmp_path / "README.md").write_text(stale, encoding="utf-8")
    assert docs.main(["--check", "--readme", str(tmp_path / "README.md")]) == 1
    assert "stale" in capsys.readouterr().err
    assert docs.main(["--write", "--readme", str(tmp_path / "README.md")]) == 0
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == text


def test_shipped_recipes_without_overrides_resolve_to_the_table(tmp_path: Path) -> None:
    """A tiny recipe that sets only algorithm.name runs the table's settings (no hidden per-recipe default)."""
    for path in sorted((REPO / "recipes" / "tiny").glob("*.yaml")):
        recipe = load_recipe(path)
        name = recipe.algorithm.name
        raw = path.read_text(encoding="utf-8")
        expected = docs.resolved_settings(name)
        for field, value in expected.items():
            if f"{field}:" in raw:  # the recipe chose this one on purpose
                continue
            assert getattr(recipe.algorithm, field) == value, (path.name, field)
