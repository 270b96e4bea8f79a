"""The `rlbench` command line: train, eval, compare, runs, grade, recipes, validate, env, testbed.

Heavy libraries (torch, transformers, trl) are imported inside command bodies, so `rlbench --help` and
`rlbench validate` start instantly. Bad input raises UserError: one message, exit code 2, no traceback.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rlbench_cli.errors import UserError

app = typer.Typer(
    name="rlbench",
    help="Compare LLM post-training algorithms reproducibly (SFT, RAFT/RAFT++, Reinforce(-Rej), GRPO, PPO, DPO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
testbed_app = typer.Typer(
    help="The CPU testbed: a synthetic task and a tiny locally built model.", no_args_is_help=True
)
app.add_typer(testbed_app, name="testbed")

console = Console(stderr=False)
err_console = Console(stderr=True)

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def _command_line() -> str:
    return "rlbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _split_csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


# ---------------------------------------------------------------------------------------------------------- train


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/tiny/grpo.yaml.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. optim.lr=1e-5.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the recipe seed.")] = None,
    seeds: Annotated[str | None, typer.Option(help="Run several seeds one after another, e.g. 0,1,2.")] = None,
    output: Annotated[Path | None, typer.Option(help="Results folder (default: the recipe's output.dir).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimizer steps.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the plan; load nothing.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run folder.")] = False,
    launcher: Annotated[str, typer.Option(help="none (this process) or accelerate (multi-process/GPU).")] = "none",
    num_processes: Annotated[int, typer.Option(help="Processes for --launcher accelerate.")] = 1,
    deepspeed: Annotated[str | None, typer.Option(help="DeepSpeed ZeRO stage for accelerate: zero2 or zero3.")] = None,
) -> None:
    """Train a recipe. Writes results/<run-name>/ (recipe, manifest, metrics, model, log)."""
    from rlbench_cli.config import load_recipe

    extra = list(overrides or [])
    if max_steps is not None:
        extra.append(f"optim.max_steps={max_steps}")
    if output is not None:
        extra.append(f"output.dir={output}")
    seed_list = [int(s) for s in _split_csv(seeds)] if seeds else [seed] if seed is not None else [None]
    if seeds and seed is not None:
        raise UserError("use either --seed or --seeds", where="command line")
    if launcher not in ("none", "accelerate"):
        raise UserError(f"unknown launcher {launcher!r}", where="--launcher", fix="use none or accelerate")
    if deepspeed not in (None, "zero2", "zero3"):
        raise UserError(f"unknown DeepSpeed stage {deepspeed!r}", where="--deepspeed", fix="use zero2 or zero3")
    recipes = [load_recipe(recipe, extra + ([f"seed={s}"] if s is not None else [])) for s in seed_list]
    if launcher == "accelerate" or num_processes > 1 or deepspeed:
        from rlbench_cli.training.launch import check_processes, launch_command, run_launch

        for r in recipes:
            check_processes(r, num_processes)
            cmd = launch_command(recipe, extra + [f"seed={r.seed}"], num_processes=num_processes, deepspeed=deepspeed,
                                 resume=resume, overwrite=overwrite)
            if dry_run:
                _print_plan(r, num_processes)
                console.print("[bold]Launch command:[/] " + " ".join(shlex.quote(c) for c in cmd))
            else:
                run_launch(cmd)
        return
    for r in recipes:
        if dry_run:
            _print_plan(r, 1)
            continue
        from rlbench_cli.training.run import run_training

        run_dir = run_training(r, command=_command_line(), resume=resume, overwrite=overwrite, console=console)
        console.print(f"[green]Run complete:[/] {run_dir}   next: rlbench eval {run_dir}")


def _print_plan(recipe, num_processes: int) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    from rlbench_cli.config import recipe_to_yaml
    from rlbench_cli.training.batching import count_rows, plan_for
    from rlbench_cli.training.launch import reference_departures

    console.print(f"[bold]Recipe[/] {recipe.name} ({recipe.algorithm.name}), seed {recipe.seed}")
    console.print(recipe_to_yaml(recipe), markup=False, highlight=False)
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
        console.print("[bold yellow]Departures from the reference paper's settings (REFERENCE.md §1):[/]")
        for note in notes:
            console.print(f"  - {note}")


# ----------------------------------------------------------------------------------------------------------- eval


@app.command("eval")
def eval_cmd(
    target: Annotated[str | None, typer.Argument(
        help="Run folder, model folder, hub id, or 'testbed' (default: the latest completed run).")] = None,
    model: Annotated[str | None, typer.Option(help="Model folder or hub id (same as TARGET).")] = None,
    benchmarks: Annotated[str | None, typer.Option(help="Comma-separated benchmarks (default: the recipe's or "
                                                        "math500,minerva_math,olympiadbench).")] = None,
    k: Annotated[int | None, typer.Option(help="Samples per problem (mean@k). Default: the recipe's, else 16.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default: recipe's, else 1).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling (default: recipe's, else 1.0).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Max new tokens (default: recipe's, else 4096).")] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template: paper, plain or raw.")] = None,
    backend: Annotated[str, typer.Option(help="hf or vllm.")] = "hf",
    batch_size: Annotated[int | None, typer.Option(help="Generation batch size (results do not depend on it).")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Folder with local benchmark JSONL files "
                                                       "(or set RLBENCH_DATA_DIR).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N problems of each benchmark.")] = None,
    results: Annotated[Path, typer.Option(help="Results folder.")] = Path("results"),
    label: Annotated[str | None, typer.Option(help="Row label for a base model.")] = None,
    workers: Annotated[int, typer.Option(help="Grader worker processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Per-answer grading time limit (s).")] = 5.0,
    tensor_parallel_size: Annotated[int, typer.Option(help="vLLM tensor parallelism.")] = 1,
    shard: Annotated[str | None, typer.Option(help="Evaluate shard I/N of the problems (multi-GPU).")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Only merge finished shards into the summary.")] = False,
    em_inf: Annotated[bool | None, typer.Option(
        "--em-inf/--no-em-inf",
        help="EM-INF: minimise each step's entropy on the logits (hf backend). Default: the recipe's eval.em_inf.",
    )] = None,
    completions: Annotated[Path | None, typer.Option(
        help="Grade completions generated by another tool (JSONL: problem id or text, completion; vLLM, "
             "verl and OpenRLHF dumps) into results/external-<label>-s<seed>/; needs --label.")] = None,
) -> None:
    """Evaluate mean@k (also pass@k, maj@k) on the benchmarks. Rerunning resumes an interrupted eval."""
    from rlbench_cli.evaluation.runner import run_eval

    if completions is not None:
        from rlbench_cli.config import PAPER_EVAL
        from rlbench_cli.evaluation.external import run_external_eval

        if target or model:
            raise UserError("--completions grades a file; give no model or run with it", where="command line")
        if not label:
            raise UserError("--completions needs --label NAME (the row name in compare)", where="--label")
        run_external_eval(completions, label=label, results_dir=results, benchmarks=_split_csv(benchmarks)
                          or list(PAPER_EVAL), seed=seed, k=k, temperature=temperature, top_p=top_p,
                          max_new_tokens=max_new_tokens, prompt_template=template, data_dir=data_dir, limit=limit,
                          grader_workers=workers, grader_timeout_s=timeout, console=console)
        return
    if target and model:
        raise UserError("give the model either as TARGET or with --model, not both", where="command line")
    chosen = model or target
    if chosen == "testbed":  # the locally built tiny base model (built on first use)
        from rlbench_cli.testbed.model import build_base_model

        chosen = str(build_base_model(progress=True))
    defaults = _eval_defaults(chosen)
    bench_list = _split_csv(benchmarks) or defaults["benchmarks"]
    shard_t = None
    if shard:
        try:
            i, n = (int(x) for x in shard.split("/"))
            assert 0 <= i < n
        except (ValueError, AssertionError):
            raise UserError(f"bad shard {shard!r}", where="--shard",
                            fix="write I/N with 0 <= I < N, e.g. 0/4") from None
        shard_t = (i, n)
    run_eval(
        chosen, results_dir=results, benchmarks=bench_list, k=k or defaults["k"],
        temperature=defaults["temperature"] if temperature is None else temperature,
        top_p=top_p or defaults["top_p"], max_new_tokens=max_new_tokens or defaults["max_new_tokens"],
        prompt_template=template, backend=backend, batch_size=batch_size or defaults["batch_size"],
        seed=seed, data_dir=data_dir, limit=limit, grader_workers=workers,
        grader_timeout_s=timeout, label=label, tensor_parallel_size=tensor_parallel_size, shard=shard_t,
        merge=merge, console=console, em_inf=_em_inf_settings(defaults, em_inf),
    )


def _em_inf_settings(defaults: dict, flag: bool | None) -> dict | None:
    """EM-INF settings from the recipe's eval section (or its defaults) when on, else None."""
    if not (defaults["em_inf"] if flag is None else flag):
        return None
    return {key: defaults[f"em_inf_{key}"] for key in ("threshold", "kl_weight", "lr", "steps")}


def _eval_defaults(chosen: str | None) -> dict:
    """Eval settings when not given: the run's recipe `eval` section, else the testbed's or the paper's protocol."""
    import yaml

    from rlbench_cli.config import PAPER_EVAL, TESTBED_EVAL

    defaults = {"benchmarks": list(PAPER_EVAL), "k": 16, "temperature": 1.0, "top_p": 1.0,
                "max_new_tokens": 4096, "batch_size": 64, "em_inf": False, "em_inf_threshold": 0.1,
                "em_inf_kl_weight": 0.001, "em_inf_lr": 0.1, "em_inf_steps": 3}
    folder = Path(chosen) if chosen else None
    if folder is not None and (folder / "testbed.json").exists():
        defaults.update(benchmarks=list(TESTBED_EVAL), max_new_tokens=80, batch_size=256)
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


# -------------------------------------------------------------------------------------------------------- compare


@app.command()
def compare(
    results_dir: Annotated[Path, typer.Argument(help="Folder of run folders.")] = Path("results"),
    fmt: Annotated[str, typer.Option("--format", help="rich, markdown, latex, csv, json or lm-eval "
                                                      "(lm-evaluation-harness results JSON).")] = "rich",
    output: Annotated[Path | None, typer.Option(help="Write the table to this file (lm-eval: a folder).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Recipe name or label to test every row against.")] = None,
    reference: Annotated[str | None, typer.Option(help="Add published rows: minimal-rl.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write training-curve and bar-chart PNGs here.")] = None,
    extra: Annotated[str | None, typer.Option(help="Extra columns: pass@k,maj@k,entropy,wall_time,gen_tokens.")] = None,
    metric: Annotated[str, typer.Option(help="Cell metric: mean@k, pass@k, maj@k or pass@1.")] = "mean@k",
) -> None:
    """Paper-style comparison table (mean@k ± error) of every run under RESULTS_DIR."""
    from rlbench_cli.compare import run_compare

    if fmt not in ("rich", "markdown", "latex", "csv", "json", "lm-eval"):
        raise UserError(f"unknown format {fmt!r}", where="--format",
                        fix="use rich, markdown, latex, csv, json or lm-eval")
    if metric not in ("mean@k", "pass@k", "maj@k", "pass@1"):
        raise UserError(f"unknown metric {metric!r}", where="--metric", fix="use mean@k, pass@k, maj@k or pass@1")
    if not results_dir.is_dir():
        raise UserError("results folder not found", where=str(results_dir), fix="train and eval a run first")
    run_compare(results_dir, fmt=fmt, output=output, baseline=baseline, reference=reference, plots_dir=plots,
                extra_columns=_split_csv(extra), metric=metric, console=console)


# ----------------------------------------------------------------------------------------------------------- runs


@app.command()
def runs(
    results_dir: Annotated[Path, typer.Argument(help="Folder of run folders.")] = Path("results"),
    status: Annotated[str | None, typer.Option(
        help="Only these statuses, comma-separated: completed, running, interrupted, failed, broken.")] = None,
    recipe: Annotated[str | None, typer.Option(help="Only runs of this recipe name (wildcards allowed).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of lines.")] = False,
) -> None:
    """One line per run: name, algorithm, seed, status, steps done/planned, evaluated benchmarks, Average."""
    import json

    from rlbench_cli.compare.runs import list_runs, render_lines, to_json

    lines = list_runs(results_dir, statuses=_split_csv(status) or None, recipe=recipe)
    if as_json:
        console.out(json.dumps(to_json(lines), indent=2), highlight=False)
    elif lines:
        console.out(render_lines(lines), highlight=False, end="")
    else:
        err_console.print(f"no runs under {results_dir}" + (" match the filters" if status or recipe else ""),
                          markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------------------- grade


@app.command()
def grade(
    file: Annotated[Path, typer.Argument(help="JSONL with `completion` and `gold` per line (optional `id`).")],
    output: Annotated[Path | None, typer.Option(help="Output JSONL (default: FILE with .graded.jsonl).")] = None,
    workers: Annotated[int, typer.Option(help="Grader worker processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Per-answer time limit (s).")] = 5.0,
) -> None:
    """Grade completions produced elsewhere with rlbench's grader; prints accuracy."""
    from rlbench_cli.evaluation.grader import grade_file

    if not file.is_file():
        raise UserError("file not found", where=str(file))
    out = output or file.with_suffix(".graded.jsonl")
    summary = grade_file(file, out, workers=workers, timeout_s=timeout)
    console.print(f"accuracy {summary['accuracy']:.4f} ({summary['correct']}/{summary['n']}), "
                  f"timeouts {summary['timeouts']} → {out}")


# ---------------------------------------------------------------------------------------------- recipes, validate


def _recipe_files() -> list[Path]:
    return sorted(RECIPES_DIR.rglob("*.yaml")) if RECIPES_DIR.is_dir() else []


@app.command()
def recipes(
    keys: Annotated[bool, typer.Option("--keys", help="Print every recipe key, its default and meaning.")] = False,
) -> None:
    """List shipped recipes with a one-line description each."""
    import yaml
    from rich.table import Table

    if keys:
        from rlbench_cli.config import reference_rows

        table = Table("key", "default", "meaning")
        for row in reference_rows():
            table.add_row(*row)
        console.print(table)
        return
    table = Table()
    table.add_column("recipe", no_wrap=True)
    table.add_column("algorithm", no_wrap=True)
    table.add_column("description")
    for path in _recipe_files():
        try:
            data = yaml.safe_load(path.read_text()) or {}
            algo = (data.get("algorithm") or {}).get("name", "?")
            desc = data.get("description", "")
        except (OSError, yaml.YAMLError):
            algo, desc = "?", "(unreadable)"
        table.add_row(str(path.relative_to(RECIPES_DIR.parent)), algo, desc)
    console.print(table)


@app.command()
def validate(
    recipe_files: Annotated[list[Path], typer.Argument(help="Recipe YAML files.")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE override (repeatable).")] = None,
) -> None:
    """Validate recipes (schema, types, ranges, batch arithmetic) without loading any model."""
    from rlbench_cli.config import load_recipe
    from rlbench_cli.training.batching import plan_for

    for path in recipe_files:
        r = load_recipe(path, list(overrides or []))
        plan_for(r)
        console.print(f"[green]ok[/] {path}: {r.name} ({r.algorithm.name})")


@app.command()
def env() -> None:
    """Print versions, git commit and hardware, for bug reports."""
    import json

    from rlbench_cli.records import git_commit, hardware_info, package_versions

    console.print_json(json.dumps({"versions": package_versions(), "git_commit": git_commit(),
                                   "hardware": hardware_info()}))


# -------------------------------------------------------------------------------------------------------- testbed


@testbed_app.command("build")
def testbed_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: $RLBENCH_CACHE or ~/.cache/rlbench).")
    ] = None,
) -> None:
    """Build (or find in the cache) the tiny testbed base model. Deterministic; cached by config hash."""
    from rlbench_cli.testbed.model import build_base_model

    path = build_base_model(cache_dir, force=force, progress=True)
    console.print(f"[green]testbed base model:[/] {path}")
    console.print(f"next: rlbench eval --model {path} --k 16   or   rlbench train recipes/tiny/grpo.yaml")


@testbed_app.command("show")
def testbed_show(
    split: Annotated[str, typer.Argument(help="sft, train, easy, medium or hard.")] = "easy",
    n: Annotated[int, typer.Option(help="How many problems.")] = 5,
) -> None:
    """Print a few problems of a testbed split."""
    from rlbench_cli.testbed.task import generate_split

    for row in generate_split(split)[:n]:
        console.print(f"{row['id']}  {row['problem']}  →  {row['solution']}", highlight=False, markup=False)


def _click_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(ClickException classes, Abort classes) of typer's vendored click and of click itself, if installed."""
    from typer import exceptions as typer_exceptions
    from typer._click import exceptions as typer_click

    errors: list[type[BaseException]] = [typer_click.ClickException]
    aborts: list[type[BaseException]] = [typer_exceptions.Abort, KeyboardInterrupt]
    try:
        import click

        errors.append(click.exceptions.ClickException)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(errors), tuple(aborts)


def main() -> None:
    from rich.markup import escape

    click_errors, aborts = _click_errors()
    try:
        # Non-standalone typer turns Ctrl-C into a returned exit code (130) instead of raising: pass it on.
        code = app(standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            if code == 130:
                err_console.print("interrupted")
            sys.exit(code)
    except UserError as e:
        one_line = " ".join(str(e).splitlines())  # the contract is one line, whatever a message embeds
        err_console.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except click_errors as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # type: ignore[attr-defined]
        else:
            # One line, like UserError: the problem and where to read about the command's options.
            ctx = getattr(e, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = " ".join(e.format_message().split())  # type: ignore[attr-defined]
            err_console.print(f"[bold red]error:[/] {escape(message)}{where}", highlight=False,
                              soft_wrap=True)
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except aborts:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
