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

from rlbench_cli.cli_support import em_inf_settings, eval_defaults, print_plan
from rlbench_cli.errors import UserError

app = typer.Typer(
    name="rlbench",
    help="Compare LLM post-training algorithms reproducibly (SFT, RAFT/RAFT++, Reinforce(-Rej), GRPO, PPO, DPO).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
testbed_app = typer.Typer(
    help="The CPU testbed: a synthetic task and a tiny locally built model.", no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(testbed_app, name="testbed")

def _hide_flag_types() -> None:
    """typer 0.29 (pinned) shows `<bool>` after every on/off flag; a flag takes no value, so show none."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):  # type: ignore[no-untyped-def]
        return None if self.is_bool_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()
console = Console(stderr=False)
err_console = Console(stderr=True)

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def _version(value: bool) -> None:
    if value:
        from rlbench_cli import __version__

        console.print(f"rlbench {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show library logs, warnings and "
                                          "progress bars on the console (they always go to the run's log).")] = False,
) -> None:
    from rlbench_cli.console import set_verbose

    set_verbose(verbose)


def _given(value, default):  # type: ignore[no-untyped-def]
    """The option's value when given (0 included), else the default: never `value or default`."""
    return default if value is None else value


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
    output: Annotated[Path | None, typer.Option("--results-dir", "--output",
                                                help="Results folder (default: the recipe's output.dir).")] = None,
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
    if not dry_run:
        from rlbench_cli.runfolder import check_run_folders

        check_run_folders(recipes, resume=resume, overwrite=overwrite)  # every seed's folder, before any run
    if launcher == "accelerate" or num_processes > 1 or deepspeed:
        from rlbench_cli.training.launch import check_processes, launch_command, run_launch

        for r in recipes:
            check_processes(r, num_processes)
            cmd = launch_command(recipe, extra + [f"seed={r.seed}"], num_processes=num_processes, deepspeed=deepspeed,
                                 resume=resume, overwrite=overwrite)
            if dry_run:
                print_plan(console, r, num_processes)
                console.print("[bold]Launch command:[/] " + " ".join(shlex.quote(c) for c in cmd), soft_wrap=True)
            else:
                run_launch(cmd)
        return
    for r in recipes:
        if dry_run:
            print_plan(console, r, 1)
            continue
        from rlbench_cli.training.run import run_training

        run_dir = run_training(r, command=_command_line(), resume=resume, overwrite=overwrite, console=console)
        console.print(f"[green]Run complete:[/] {run_dir}   next: rlbench eval {run_dir}")


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
    results: Annotated[Path, typer.Option("--results-dir", "--results", help="Results folder.")] = Path("results"),
    label: Annotated[str | None, typer.Option(help="Row label for a base model.")] = None,
    workers: Annotated[int, typer.Option(help="Grader worker processes.")] = 2,
    timeout: Annotated[float, typer.Option(help="Per-answer grading time limit (s).")] = 5.0,
    tensor_parallel_size: Annotated[int, typer.Option(help="vLLM tensor parallelism.")] = 1,
    shard: Annotated[str | None, typer.Option(help="Evaluate shard I/N of the problems (multi-GPU).")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Only merge finished shards into the summary.")] = False,
    allow_incomplete: Annotated[bool, typer.Option("--allow-incomplete", help="Evaluate a run whose training did "
                                                   "not complete (its model/ as it is).")] = False,
    em_inf: Annotated[bool | None, typer.Option(
        "--em-inf/--no-em-inf",
        help="EM-INF: minimise each step's entropy on the logits (hf backend). Default: the recipe's eval.em_inf.",
    )] = None,
    grader: Annotated[str | None, typer.Option(help="rlbench or math_verify (plain Math-Verify as the paper "
                                                    "called it). Default: recipe's eval.grader, else rlbench.")] = None,
    regrade: Annotated[bool, typer.Option("--regrade", help="Grade the stored samples again (with --grader) and "
                                                            "rewrite the summaries; generates nothing.")] = False,
    completions: Annotated[Path | None, typer.Option(
        help="Grade completions generated by another tool (JSONL: problem id or text, completion; vLLM, "
             "verl and OpenRLHF dumps) into results/external-<label>-s<seed>/; needs --label.")] = None,
) -> None:
    """Evaluate mean@k (also pass@k, maj@k) on the benchmarks. Rerunning resumes an interrupted eval."""
    from rlbench_cli.evaluation.options import check_eval_options, check_grader_options
    from rlbench_cli.evaluation.runner import run_eval

    check_eval_options(k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, limit=limit)
    check_grader_options(workers=workers, timeout=timeout)
    if grader is not None and grader not in ("rlbench", "math_verify"):
        raise UserError(f"unknown grader {grader!r}", where="--grader", fix="use rlbench or math_verify")
    if regrade:
        from rlbench_cli.evaluation.regrade import print_regrade, regrade_run

        reports = regrade_run(model or target, results_dir=results, grader=grader or "rlbench", workers=workers,
                              timeout_s=timeout, data_dir=data_dir, label=label)
        print_regrade(console, reports, grader or "rlbench")
        return

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
    from rlbench_cli.testbed.versions import model_version

    if chosen and (version := model_version(chosen)):  # the locally built tiny base model (built on first use)
        from rlbench_cli.testbed.model import build_base_model

        chosen = str(build_base_model(progress=True, version=version))
    defaults = eval_defaults(chosen)
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
        chosen, results_dir=results, benchmarks=bench_list, k=_given(k, defaults["k"]),
        temperature=_given(temperature, defaults["temperature"]), top_p=_given(top_p, defaults["top_p"]),
        max_new_tokens=_given(max_new_tokens, defaults["max_new_tokens"]),
        prompt_template=template, backend=backend, batch_size=_given(batch_size, defaults["batch_size"]),
        seed=seed, data_dir=data_dir, limit=limit, grader_workers=workers,
        grader_timeout_s=timeout, label=label, tensor_parallel_size=tensor_parallel_size, shard=shard_t,
        merge=merge, console=console, allow_incomplete=allow_incomplete, command=_command_line(),
        em_inf=em_inf_settings(defaults, em_inf),
        grader=grader or defaults["grader"],
    )


# -------------------------------------------------------------------------------------------------------- compare


@app.command()
def compare(
    results_dir: Annotated[Path, typer.Argument(help="Folder of run folders.")] = Path("results"),
    results_dir_opt: Annotated[Path | None, typer.Option("--results-dir", help="Same as RESULTS_DIR.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="rich, markdown, latex, csv, json or lm-eval "
                                                      "(lm-evaluation-harness results JSON).")] = "rich",
    output: Annotated[Path | None, typer.Option(help="Write the table to this file (lm-eval: a folder).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Recipe name or label to test every row against.")] = None,
    reference: Annotated[str | None, typer.Option(help="Add published rows: minimal-rl.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write training-curve and bar-chart PNGs here.")] = None,
    extra: Annotated[str | None, typer.Option(help="Extra columns: pass@k,maj@k,entropy,wall_time,gen_tokens.")] = None,
    metric: Annotated[str, typer.Option(help="Cell metric: mean@k, pass@k, maj@k or pass@1.")] = "mean@k",
    power: Annotated[float | None, typer.Option(
        help="Print the seeds needed to detect a difference of POWER points (80% power) and exit.")] = None,
) -> None:
    """Paper-style comparison table (mean@k ± error) of every run under RESULTS_DIR."""
    from rlbench_cli.compare import run_compare

    if results_dir_opt is not None:
        if results_dir != Path("results") and results_dir != results_dir_opt:
            raise UserError("give the results folder either as RESULTS_DIR or with --results-dir",
                            where="command line")
        results_dir = results_dir_opt
    if fmt not in ("rich", "markdown", "latex", "csv", "json", "lm-eval"):
        raise UserError(f"unknown format {fmt!r}", where="--format",
                        fix="use rich, markdown, latex, csv, json or lm-eval")
    if metric not in ("mean@k", "pass@k", "maj@k", "pass@1"):
        raise UserError(f"unknown metric {metric!r}", where="--metric", fix="use mean@k, pass@k, maj@k or pass@1")
    if not results_dir.is_dir():
        raise UserError("results folder not found", where=str(results_dir), fix="train and eval a run first")
    if power is not None:
        from rlbench_cli.compare.loader import load_runs
        from rlbench_cli.compare.seeds import power_report, render_power

        if not power > 0:
            raise UserError(f"--power must be a positive difference in points, got {power}", where="--power")
        runs, _ = load_runs(results_dir, metric)
        for line in render_power(power_report(runs, power, metric)):
            console.print(line, highlight=False, markup=False)
        return
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
    grader: Annotated[str, typer.Option(help="rlbench or math_verify (plain Math-Verify as the paper called it).")]
    = "rlbench",
    explain: Annotated[bool, typer.Option("--explain", help="For each line: what was extracted from the completion "
                                                            "and gold, how each parsed, which rule decided.")] = False,
) -> None:
    """Grade completions produced elsewhere with rlbench's grader; prints accuracy."""
    from rlbench_cli.evaluation.grader import grade_file
    from rlbench_cli.evaluation.options import check_grade_paths, check_grader_options

    check_grader_options(workers=workers, timeout=timeout)
    if not file.is_file():
        raise UserError("file not found", where=str(file))
    if grader not in ("rlbench", "math_verify"):
        raise UserError(f"unknown grader {grader!r}", where="--grader", fix="use rlbench or math_verify")
    if explain:
        from rlbench_cli.evaluation.grader import explain_file, format_explanation

        for e in explain_file(file, grader=grader):
            console.print(format_explanation(e), markup=False, highlight=False)
        return
    out = output or file.with_suffix(".graded.jsonl")
    check_grade_paths(file, out, output_given=output is not None)
    summary = grade_file(file, out, workers=workers, timeout_s=timeout, grader=grader)
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
    rows = []
    for path in _recipe_files():
        try:
            data = yaml.safe_load(path.read_text()) or {}
            algo = (data.get("algorithm") or {}).get("name", "?")
            desc = " ".join(str(data.get("description", "")).split())
        except (OSError, yaml.YAMLError):
            algo, desc = "?", "(unreadable)"
        rows.append((str(path.relative_to(RECIPES_DIR.parent)), str(algo), desc))
    # One line per recipe: the description is cut to the console's width (off a terminal, nothing is cut).
    w1 = max([len("recipe"), *(len(r[0]) for r in rows)])
    w2 = max([len("algorithm"), *(len(r[1]) for r in rows)])
    room = max(10, console.width - w1 - w2 - 4)
    console.print(f"{'recipe':<{w1}}  {'algorithm':<{w2}}  description", markup=False, highlight=False)
    for name, algo, desc in rows:
        desc = desc if len(desc) <= room else desc[: room - 1] + "…"
        console.print(f"{name:<{w1}}  {algo:<{w2}}  {desc}", markup=False, highlight=False, soft_wrap=True)


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


# ------------------------------------------------------------------------------------------------------ reproduce


@app.command()
def reproduce(
    findings: Annotated[list[str] | None, typer.Argument(help="Finding ids (default: every shipped finding).")] = None,
    seeds: Annotated[int | None, typer.Option(help="Seeds per arm (default: each finding's own).", min=1)] = None,
    output: Annotated[Path, typer.Option(help="Folder for the cached runs and the report.")] = Path(
        "results/reproduce"),
    list_: Annotated[bool, typer.Option("--list", help="List the shipped findings and exit.")] = False,
    jobs: Annotated[int, typer.Option(help="Runs trained at once (separate processes).", min=1)] = 1,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="KEY=VALUE for every training arm, e.g. torch_threads=1 (part of the cache key).")] = None,
) -> None:
    """Check published findings on the testbed: holds / does not hold / inconclusive, with statistics."""
    if list_:
        from rich.table import Table

        from rlbench_cli.reproduce.spec import load_findings

        table = Table()
        table.add_column("finding", no_wrap=True)
        for col in ("claim", "source", "seeds"):
            table.add_column(col)
        for f, _, _ in load_findings().values():
            table.add_row(f.id, f.claim, f"{f.source.paper.split(',')[0]}: {f.source.where}", str(f.seeds))
        console.print(table)
        return
    from rlbench_cli.reproduce.report import reproduce as run_reproduce

    run_reproduce(findings, seeds, output, console=console, jobs=jobs, overrides=list(overrides or []))
    console.print((output / "report.md").read_text(), markup=False, highlight=False)
    console.print(f"[green]report:[/] {output / 'report.md'} and {output / 'report.json'}")


# -------------------------------------------------------------------------------------------------------- testbed


@testbed_app.command("build")
def testbed_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: $RLBENCH_CACHE or ~/.cache/rlbench).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Testbed version: v2 (default) or v1.")] = None,
    model: Annotated[str, typer.Option(help="testbed, or a packaged real model: smollm2-135m.")] = "testbed",
) -> None:
    """Build (or find in the cache) the tiny testbed base model. Deterministic; cached by config hash."""
    if model != "testbed":
        from rlbench_cli.models import build_real_model

        path = build_real_model(model, cache_dir, force=force, console=console)
        console.print(f"[green]{model}:[/] {path}")
        console.print(f"next: rlbench eval --model {model} --limit 20 --k 2  or  rlbench train recipes/smol/grpo.yaml")
        return
    from rlbench_cli.testbed.model import build_base_model

    path = build_base_model(cache_dir, force=force, progress=True, version=version)
    console.print(f"[green]testbed base model:[/] {path}")
    console.print(f"next: rlbench eval --model {path} --k 16   or   rlbench train recipes/tiny/grpo.yaml")


@testbed_app.command("show")
def testbed_show(
    split: Annotated[str, typer.Argument(help="sft, train, easy, medium or hard (v1: v1/easy ...).")] = "easy",
    n: Annotated[int, typer.Option(help="How many problems.")] = 5,
) -> None:
    """Print a few problems of a testbed split."""
    from rlbench_cli.testbed.versions import generate_split

    for row in generate_split(split, n):
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

    from rlbench_cli import signals
    from rlbench_cli.console import setup_console

    setup_console(console)
    setup_console(err_console)
    click_errors, aborts = _click_errors()
    try:
        # Non-standalone typer turns Ctrl-C into a returned exit code (130) instead of raising: pass it on.
        with signals.on_sigterm():  # SIGTERM (SLURM, Kubernetes) ends like Ctrl-C, with exit code 143
            code = app(standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            if code == 130:
                if signals.received():
                    err_console.print("terminated (SIGTERM)")
                    sys.exit(signals.EXIT_CODE)
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
        if signals.received():
            err_console.print("terminated (SIGTERM)")
            sys.exit(signals.EXIT_CODE)
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
