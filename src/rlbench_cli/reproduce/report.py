"""`rlbench reproduce`: plan the runs the findings need, train what is missing (with a progress bar), and write
the report (`<output>/report.md` and `report.json`) with each finding's verdict, statistic, interval, p-value,
seeds, runs and file hash.

    rlbench reproduce --list
    rlbench reproduce minimal_rl_raftpp_faster_early --seeds 3 --output results/reproduce
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rlbench_cli.compare.stats import format_p
from rlbench_cli.errors import UserError
from rlbench_cli.records import atomic_write_json, atomic_write_text, git_commit
from rlbench_cli.reproduce.plan import RunSpec, execute, is_done, load_arm_recipe, plan_runs
from rlbench_cli.reproduce.spec import Finding, load_findings
from rlbench_cli.reproduce.verdict import run_metric, seeds_to_settle, verdict


def select(ids: list[str] | None, folder: Path | None = None) -> list[tuple[Finding, str, Path]]:
    shipped = load_findings(folder)
    if not ids:
        return list(shipped.values())
    missing = [i for i in ids if i not in shipped]
    if missing:
        raise UserError(f"unknown finding {missing[0]!r}", where="rlbench reproduce",
                        fix="list them with `rlbench reproduce --list`")
    return [shipped[i] for i in ids]


def _unique_runs(plans: dict[str, dict[str, list[RunSpec]]], findings: list[Finding]) -> list[tuple[RunSpec, bool]]:
    """Each distinct run once, with whether any finding needs its eval."""
    needs: dict[str, tuple[RunSpec, bool]] = {}
    for f in findings:
        for specs in plans[f.id].values():
            for spec in specs:
                prev = needs.get(spec.key)
                needs[spec.key] = (spec, f.metric.needs_eval or bool(prev and prev[1]))
    return list(needs.values())


def _eval_like(f: Finding, seed: int) -> Any:
    train_arm = next((a for a in f.arms.values() if a.recipe != "base"), None)
    return load_arm_recipe(train_arm, seed) if train_arm else None


def reproduce(ids: list[str] | None, seeds: int | None, output: Path, console: Any = None, *, jobs: int = 1,
              overrides: list[str] | None = None, findings_folder: Path | None = None) -> dict[str, Any]:
    """Run every selected finding; returns the report dict (also written to output).

    `overrides` apply to every training arm (e.g. torch_threads=1 on a busy machine) and enter the cache keys."""
    chosen = select(ids, findings_folder)
    findings = [f for f, _, _ in chosen]
    if overrides:
        findings = [f.model_copy(update={"arms": {n: a if a.recipe == "base" else
                                                   a.model_copy(update={"overrides": [*overrides, *a.overrides]})
                                                   for n, a in f.arms.items()}}) for f in findings]
        chosen = [(f, d, p) for f, (_, d, p) in zip(findings, chosen, strict=True)]
    plans = plan_runs(findings, seeds)
    runs_dir = Path(output) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    todo = _unique_runs(plans, findings)
    eval_like = {spec.key: _eval_like(f, spec.seed) for f in findings for specs in plans[f.id].values()
                 for spec in specs if spec.is_base}
    pending = [(s, e) for s, e in todo if not is_done(runs_dir, s, e)]
    if console is not None:
        console.print(f"[bold]reproduce[/]: {len(chosen)} findings, {len(todo)} runs "
                      f"({len(todo) - len(pending)} done, {len(pending)} to do) in {runs_dir}")
    _run_all(pending, runs_dir, eval_like, console, jobs=jobs)
    report = build_report(chosen, plans, runs_dir, seeds)
    report["overrides"] = list(overrides or [])
    atomic_write_json(Path(output) / "report.json", report)
    atomic_write_text(Path(output) / "report.md", render_markdown(report))
    return report


def _run_all(pending: list[tuple[RunSpec, bool]], runs_dir: Path, eval_like: dict[str, Any], console: Any,
             jobs: int = 1) -> None:
    """Train/evaluate the pending runs, `jobs` at a time (separate processes; one writer per run folder)."""
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not pending:
        return
    if jobs > 1 and any(s.is_base or load_arm_recipe(s.arm, s.seed).model.path.startswith("testbed")
                        for s, _ in pending):
        from rlbench_cli.testbed.model import build_base_model

        build_base_model(progress=console is not None)  # once, before workers would race to build it
    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]reproduce runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), console=console, disable=console is None) as bar:
        task = bar.add_task("runs", total=len(pending), info="")
        if jobs <= 1:
            for i, (spec, needs_eval) in enumerate(pending):
                bar.update(task, info=_eta(t0, i, len(pending)) + f"now {spec.key}")
                execute(runs_dir, spec, needs_eval, eval_like=eval_like.get(spec.key), console=None)
                bar.update(task, advance=1)
            return
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(execute, runs_dir, spec, needs_eval, eval_like=eval_like.get(spec.key)): spec
                       for spec, needs_eval in pending}
            done_n, waiting = 0, set(futures)
            while waiting:
                finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for fut in finished:
                    fut.result()  # a failed run stops the reproduce with its error
                    done_n += 1
                info = _eta(t0, done_n, len(pending)) + f"{len(waiting)} running/queued"
                bar.update(task, completed=done_n, info=info)


def _eta(t0: float, done: int, total: int) -> str:
    if done == 0:
        return ""
    return f"ETA {(time.perf_counter() - t0) / done * (total - done) / 60:.0f} min · "


def build_report(chosen: list[tuple[Finding, str, Path]], plans: dict[str, dict[str, list[RunSpec]]],
                 runs_dir: Path, seeds: int | None) -> dict[str, Any]:
    from rlbench_cli.records import package_versions

    out: list[dict[str, Any]] = []
    for f, digest, path in chosen:
        values: dict[str, dict[int, float]] = {}
        for arm, specs in plans[f.id].items():
            values[arm] = {s.seed: run_metric(runs_dir / s.key, f.metric) for s in specs}
        v, test, reason = verdict(f, values[f.relation.a], values[f.relation.b])
        out.append({
            "id": f.id, "claim": f.claim, "source": f.source.model_dump(), "file": path.name, "sha256": digest,
            "metric": f.metric.model_dump(exclude_none=True), "relation": f.relation.model_dump(),
            "verdict": v, "reason": reason, "statistic": test.to_dict(),
            "seeds_for_80pct_power": seeds_to_settle(f, test, v),
            "per_seed": {arm: {str(k): round(x, 4) for k, x in vals.items()} for arm, vals in values.items()},
            "runs": {arm: [s.key for s in specs] for arm, specs in plans[f.id].items()},
            "seeds": len(next(iter(values.values()))),
        })
    return {"rlbench_git_commit": git_commit(), "versions": package_versions(), "seeds_option": seeds,
            "test": "paired t-test across seeds (seed i of arm a vs seed i of arm b), two-sided, 95% interval",
            "findings": out}


def _fmt(x: float | None, nd: int = 2) -> str:
    if x is None or x != x:
        return "–"
    return f"{x:.{nd}f}" if abs(x) >= 0.1 or x == 0 else f"{x:.2g}"  # entropies are ~0.01


def _fmt_p(p: float | None) -> str:
    return "–" if p is None or p != p else format_p(p)


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["| finding | claim (source) | metric | a − b [95% CI] | p | seeds | verdict |",
             "|---|---|---|---|---|---|---|"]
    for f in report["findings"]:
        st, rel = f["statistic"], f["relation"]
        metric = f["metric"]["kind"] + "".join(f" {k}={v}" for k, v in f["metric"].items() if k != "kind")
        rel_txt = f"{rel['a']} > {rel['b']}" if rel["type"] == "greater" else \
            f"{rel['a']} ≥ {rel['b']} − {rel['margin']:g}"
        lines.append(
            f"| `{f['id']}` | {f['claim']} ({f['source']['paper'].split(',')[0]}, {f['source']['where']}) | "
            f"{metric}; expected {rel_txt} | {_fmt(st['diff'])} [{_fmt(st['ci_low'])}, {_fmt(st['ci_high'])}] | "
            f"{_fmt_p(st['p_value'])} | {f['seeds']} | **{f['verdict']}** |")
    lines += ["", f"Test: {report['test']}. Commit {report['rlbench_git_commit']}.", "",
              "Per-seed values and finding-file hashes:", ""]
    for f in report["findings"]:
        per = "; ".join(f"{arm}: " + ", ".join(f"{v:.3g}" for v in vals.values())
                        for arm, vals in f["per_seed"].items())
        plan = f.get("seeds_for_80pct_power")
        more = (f"; planning: about {plan} seeds would give 80% power to settle a difference this far from the "
                f"threshold, for a new test declared before it runs (adding seeds to this one after seeing it makes "
                f"the test sequential, and its false-positive rate rises above 5%)") if plan else ""
        lines.append(f"- `{f['id']}` ({f['file']} sha256 {f['sha256'][:12]}): {per}; {f['reason']}{more}")
    return "\n".join(lines) + "\n"
