"""Run mutmut group by group, each group with the fast tests that check that code, then print the per-module report.

One mutmut run over everything maps each mutant to every selected test that reaches the mutated function, so a
mutant of `compute_advantages` also ran the trainer wiring tests (seconds each) and the run did not finish on a
2-core machine. Here each group (pure algorithms, metrics and statistics, records, the RL runner's advantage and
loss wiring) gets its own copy of src/ and tests/ under mutants/<group>/ with its own [tool.mutmut] section, and
mutmut runs there. In the RL runner only the functions that wire advantages and losses in (and GVPO's whole-group
shuffle, `_prepare_inputs`) are mutated (the `functions` globs); the rest of rl.py / rollout_signals.py (TRL config
translation, checkpoints, temperature, ReMax's greedy decode) is listed as "not selected" in the report.

Run: `make mutants` (all groups), or `python tests/mutation_run.py algorithms records` (some groups);
`python tests/mutation_run.py --report` re-prints the report of the last runs; `--survivors` also lists the
surviving mutants per function (inspect one with `cd mutants/<group> && mutmut show NAME`).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "mutants"
PKG = "rlbench_cli"


@dataclass(frozen=True)
class Group:
    name: str
    files: tuple[str, ...]  # under src/rlbench_cli
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # mangled-name globs of the functions to mutate; empty: every function


_SURV = "tests/test_mutation_survivors.py"
GROUPS = (
    Group("algorithms", ("algorithms/*",),
          ("tests/test_advantages.py", "tests/test_losses.py", "tests/test_policy_losses.py",
           "tests/test_baselines.py", "tests/test_entropy.py", "tests/test_pairs.py", "tests/test_pseudo_labels.py",
           "tests/test_schedules.py", "tests/test_mutation_tables.py", _SURV)),
    Group("metrics_stats", ("evaluation/metrics.py", "compare/stats.py"),
          ("tests/test_metrics.py", "tests/test_compare_stats.py", "tests/test_seed_stats.py", _SURV)),
    Group("records", ("records.py",), ("tests/test_crash_safety.py", "tests/test_runs.py", _SURV)),
    Group("rl_wiring", ("training/rl.py", "training/rollout_signals.py"),
          ("tests/test_rl_wiring.py", "tests/test_wiring_wave2.py", "tests/test_rollout_signals.py",
           "tests/test_vllm_is.py", "tests/test_rl_runner_signals.py", _SURV),
          functions=tuple(f"{PKG}.training.rl.xǁRLBenchGRPOTrainerǁ{f}__mutmut_*" for f in (
              "_calculate_rewards", "_score_rollout", "_generate_and_score_completions", "_refill",
              "_prepare_inputs", "_compute_loss", "_policy_loss", "_global_mean"))
          + tuple(f"{PKG}.training.rollout_signals.x_{f}__mutmut_*" for f in (
              "rollout_advantages", "shape_rewards", "sampling_logps", "shuffle_groups"))),
)
BY_NAME = {g.name: g for g in GROUPS}
LINE = re.compile(r"^\s+(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")
COLS = ["killed", "survived", "no tests", "timeout", "not checked"]


def _config(group: Group) -> str:
    """pyproject.toml with this group's [tool.mutmut] section in place of the repository's."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r"^\[tool\.mutmut\]\n(?:(?!^\[).*\n)*", "", text, flags=re.M)
    paths = ", ".join(f'"src/{PKG}/{f}"' for f in group.files)
    tests = ", ".join(f'"{t}"' for t in group.tests if (REPO / t).is_file())
    return text + ("\n[tool.mutmut]\nsource_paths = [\"src\"]\n"
                   f"only_mutate = [{paths}]\n"
                   'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:warnings", "-q"]\n'
                   f"pytest_add_cli_args_test_selection = [{tests}]\n")


def _mutmut() -> str:
    return str(Path(sys.executable).with_name("mutmut"))


def run_group(group: Group, max_children: int) -> int:
    where = WORK / group.name
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "mutants")
    shutil.copytree(REPO / "src", where / "src", ignore=ignore)
    shutil.copytree(REPO / "tests", where / "tests", ignore=ignore)
    (where / "pyproject.toml").write_text(_config(group), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print(f"== mutmut: {group.name} ({', '.join(group.files)})", flush=True)
    cmd = [_mutmut(), "run", "--max-children", str(max_children), *group.functions]
    return subprocess.run(cmd, cwd=where, env=env).returncode


def read_results(group: Group) -> list[tuple[str, str]]:
    where = WORK / group.name
    if not (where / "mutants").is_dir():
        return []
    proc = subprocess.run([_mutmut(), "results", "--all", "true"], cwd=where, capture_output=True, text=True,
                          check=True)
    rows = [(m["name"], m["status"].strip()) for ln in proc.stdout.splitlines() if (m := LINE.match(ln))]
    if group.functions:
        rows = [(n, s if any(fnmatch.fnmatch(n, f) for f in group.functions) else "not selected") for n, s in rows]
    return rows


def module_of(name: str) -> str:
    return name.rsplit(".", 1)[0]


def function_of(name: str) -> str:
    func = name.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    return func.replace("xǁ", "").replace("ǁ", ".").removeprefix("x_")


def report(groups: list[Group], survivors: bool) -> str:
    results = [r for g in groups for r in read_results(g)]
    counts: dict[str, Counter] = defaultdict(Counter)
    for name, status in results:
        counts[module_of(name)][status] += 1
    lines = ["| module | mutants | " + " | ".join(COLS) + " | not selected | killed / tested |",
             "|---" * (len(COLS) + 4) + "|"]
    total: Counter = Counter()

    def row(label: str, c: Counter) -> str:
        tested = c["killed"] + c["survived"] + c["timeout"]
        score = f"{100 * (c['killed'] + c['timeout']) / tested:.0f}%" if tested else "–"
        other = sum(v for k, v in c.items() if k not in (*COLS, "not selected"))
        extra = f" (+{other} other)" if other else ""
        return (f"| {label} | {sum(c.values()) - c['not selected']} | " + " | ".join(str(c[k]) for k in COLS)
                + f" | {c['not selected']} | {score}{extra} |")

    for module in sorted(counts):
        total.update(counts[module])
        lines.append(row(f"`{module}`", counts[module]))
    lines.append(row("all", total))
    if survivors:
        by_func: dict[str, list[str]] = defaultdict(list)
        for name, status in results:
            if status == "survived":
                by_func[f"{module_of(name)}.{function_of(name)}"].append(name.rsplit("__mutmut_", 1)[1])
        lines.append("")
        lines += [f"- `{f}`: {len(ids)} survived (mutants {', '.join(ids)})" for f, ids in sorted(by_func.items())]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    names = [a for a in argv if not a.startswith("--")] or list(BY_NAME)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"unknown group(s) {', '.join(unknown)}; groups: {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    groups = [BY_NAME[n] for n in names]
    bad = 0
    if "--report" not in flags:
        children = int(os.environ.get("MUTMUT_CHILDREN", "2"))
        for g in groups:
            bad += run_group(g, children) != 0
    print(report(groups, "--survivors" in flags))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
