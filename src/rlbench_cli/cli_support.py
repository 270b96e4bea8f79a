"""Plain helpers behind the CLI commands (no typer here): the dry-run plan printout and eval defaults.

Kept apart from cli.py so that file stays the thin command wiring; heavy imports stay inside the functions.
"""

from __future__ import annotations

from pathlib import Path


def print_plan(console, recipe, num_processes: int) -> None:  # type: ignore[no-untyped-def]
    """`train --dry-run`: the resolved recipe, batch arithmetic, code that would run, departures from the paper."""
    from rich.table import Table

    from rlbench_cli.config import recipe_to_yaml
    from rlbench_cli.training.batching import count_rows, plan_for
    from rlbench_cli.training.launch import reference_departures

    console.print(f"[bold]Recipe[/] {recipe.name} ({recipe.algorithm.name}), seed {recipe.seed}")
    console.print(recipe_to_yaml(recipe), markup=False, highlight=False, soft_wrap=True)
    table = Table(title="Batch arithmetic (per device)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in plan_for(recipe, num_processes, count_rows(recipe)).items():
        table.add_row(key, str(value))
    console.print(table)
    # Safe defaults: anything that would run code not shipped with rlbench is said out loud.
    if recipe.model.trust_remote_code:
        console.print("[yellow]model.trust_remote_code is on: code from the model repository would run[/]")
    if recipe.reward.function:
        from rich.markup import escape

        spec = escape(recipe.reward.function)
        console.print(f"[yellow]Custom reward code from the recipe would run: {spec}[/]", highlight=False)
    out = Path(recipe.output.dir) / recipe.run_name
    console.print(f"Would write: {out}/ (recipe.yaml, manifest.json, metrics.jsonl, train.log, model/)")
    notes = reference_departures(recipe)
    if notes:
        console.print("[bold yellow]Departures from the reference paper's settings (docs/reference.md §1):[/]")
        for note in notes:
            console.print(f"  - {note}")


def em_inf_settings(defaults: dict, flag: bool | None) -> dict | None:
    """EM-INF settings from the recipe's eval section (or its defaults) when on, else None."""
    if not (defaults["em_inf"] if flag is None else flag):
        return None
    if defaults.get("em_inf_mode") == "adaptive_temp":
        keys = {"target_ratio": "target_ratio", "t_min": "t_min", "t_max": "t_max", "tol": "tol",
                "max_iter": "max_iter", "threshold": "min_entropy"}
        return {"mode": "adaptive_temp"} | {key: defaults[f"em_inf_{name}"] for key, name in keys.items()}
    return {key: defaults[f"em_inf_{key}"] for key in ("threshold", "kl_weight", "lr", "steps")}


def eval_defaults(chosen: str | None) -> dict:
    """Eval settings when not given: the run's recipe `eval` section, else the testbed's or the paper's protocol."""
    import json

    import yaml

    from rlbench_cli.config import PAPER_EVAL, TESTBED_EVAL, TESTBED_V1_EVAL

    defaults = {"benchmarks": list(PAPER_EVAL), "k": 16, "temperature": 1.0, "top_p": 1.0,
                "max_new_tokens": 4096, "batch_size": 64, "em_inf": False, "em_inf_mode": "logits",
                "em_inf_threshold": 0.3, "em_inf_kl_weight": 0.05, "em_inf_lr": 0.1, "em_inf_steps": 3,
                "em_inf_target_ratio": 0.85, "em_inf_t_min": 0.01, "em_inf_t_max": 1.0, "em_inf_tol": 0.1,
                "em_inf_max_iter": 100, "em_inf_min_entropy": 1e-5, "grader": "rlbench"}
    folder = Path(chosen) if chosen else None
    if folder is not None and (folder / "testbed.json").exists():
        v1 = json.loads((folder / "testbed.json").read_text()).get("testbed_version", "v1") == "v1"
        benches = list(TESTBED_V1_EVAL if v1 else TESTBED_EVAL)
        defaults.update(benchmarks=benches, max_new_tokens=80, batch_size=256)
    section = None
    if folder is not None and (folder / "recipe.yaml").is_file():
        try:
            section = (yaml.safe_load((folder / "recipe.yaml").read_text()) or {}).get("eval")
        except (OSError, yaml.YAMLError):
            section = None
    for key in defaults:
        if section and section.get(key) is not None:
            defaults[key] = section[key]
    return defaults
