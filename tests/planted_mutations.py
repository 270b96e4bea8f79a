"""Plant the 12 wiring bugs of issue 16 (plus a variant of #5) one at a time and check that the named tests catch each.

Each mutation is applied to a temporary copy of src/ (the working tree is never touched), then pytest runs the
listed tests with that copy first on PYTHONPATH. A mutation counts as caught when pytest fails. A mutation whose
original text is no longer in the source (the code moved) is reported as "stale" so the table gets updated.

Run: `python tests/planted_mutations.py` (all, ~3 min on 2 cores), or `python tests/planted_mutations.py 3 7`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = "src/rlbench_cli"


@dataclass(frozen=True)
class Mutation:
    what: str
    file: str  # under src/rlbench_cli
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("grpo resolves to the Dr. GRPO estimator", "config.py",
             '"label": "GRPO", "estimator": "grpo",', '"label": "GRPO", "estimator": "dr_grpo",',
             ("tests/test_settings_table.py",)),
    Mutation("RL runner ignores filter_mode", "training/rollout_signals.py",
             'filter_mode=algo.filter_mode or "zero")', 'filter_mode="zero")',
             ("tests/test_rl_wiring.py",)),
    Mutation("token-mean normaliser doubled", "training/rl.py",
             'normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes',
             'normalizer = 2 * inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes',
             ("tests/test_rl_wiring.py",)),
    Mutation("KL term's sign flipped", "training/rl.py",
             "per_token = per_token + algo.kl_coef * kl_tokens", "per_token = per_token - algo.kl_coef * kl_tokens",
             ("tests/test_rl_wiring.py",)),
    Mutation("no KL logged when kl_coef is 0", "training/rl.py",
             "needs_ref = bool(algo.kl_coef) or algo.log_kl", "needs_ref = bool(algo.kl_coef)",
             ("tests/test_rl_wiring.py",)),
    Mutation("DAPO dynamic sampling switched off", "training/rl.py",
             "if algo.dynamic_sampling and self.model.training:", "if False and algo.dynamic_sampling:",
             ("tests/test_rl_wiring.py",)),
    Mutation("atomic_write_text turned into a plain write", "records.py",
             "    fd, tmp = tempfile.mkstemp(", "    return path.write_text(text, encoding='utf-8')\n"
             "    fd, tmp = tempfile.mkstemp(",
             ("tests/test_crash_safety.py",)),
    Mutation("eval runner drops multi-answer, tolerance and unit", "evaluation/runner.py",
             "items = [GradeItem.for_problem(p, c.text) for",
             "items = [GradeItem(completion=c.text, gold=p.gold) for",
             ("tests/test_eval_grading_wiring.py",)),
    Mutation("maj@k counted as any sample correct", "evaluation/runner.py",
             '"""Whether the most common extracted answer (ties: the one seen first) is graded correct."""',
             '"""Whether the most common extracted answer (ties: the one seen first) is graded correct."""\n'
             '    return any(bool(r.get("correct")) for r in rows)',
             ("tests/test_eval_grading_wiring.py",)),
    Mutation("bootstrap problem draws unseeded", "compare/stats.py",
             "rng = np.random.default_rng([seed, zlib.crc32(key.encode()), n_problems])",
             "rng = np.random.default_rng()",
             ("tests/test_compare_determinism.py",)),
    Mutation("RAFT advantage max(r, 0) instead of the verdict", "algorithms/advantages.py",
             "a = correct.to(torch.float64) if correct is not None else r.clamp(min=0.0)",
             "a = r.clamp(min=0.0)",
             ("tests/test_rl_wiring.py", "tests/test_advantages.py")),
    Mutation("GPG batch count includes rows with no reward", "algorithms/advantages.py",
             "n_batch = int(v.sum()) if num_items is None else int(num_items)",
             "n_batch = int(v.numel()) if num_items is None else int(num_items)",
             ("tests/test_rl_wiring.py",)),
    Mutation("no KL metric when kl_coef is 0 (variant: the logging line)", "training/rl.py",
             "            if kl_tokens is not None:\n                metrics",
             "            if kl_tokens is not None and algo.kl_coef:\n                metrics",
             ("tests/test_rl_wiring.py",)),
)


def run_one(m: Mutation) -> tuple[str, str, float]:
    """(status, first failing test, seconds): status is caught / MISSED / stale."""
    source = REPO / PKG / m.file
    text = source.read_text(encoding="utf-8")
    if text.count(m.old) != 1:
        return "stale", f"original text found {text.count(m.old)} times in {m.file}", 0.0
    with tempfile.TemporaryDirectory(prefix="rlbench-mutant-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(REPO / "src", copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        (copy / "rlbench_cli" / m.file).write_text(text.replace(m.old, m.new), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests],
                              cwd=REPO, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M) or re.findall(r"^ERROR (\S+)", proc.stdout,
                                                                                  flags=re.M)
    if proc.returncode == 0:
        return "MISSED", "all tests passed", seconds
    why = next((ln[1:].strip() for ln in proc.stdout.splitlines() if ln.startswith("E ")), "")
    name = failed[0] if failed else f"pytest exit {proc.returncode}"
    return "caught", f"{name}` ({why[:90]})`" if why else name, seconds


def main(argv: list[str]) -> int:
    chosen = [int(a) for a in argv] or list(range(1, len(MUTATIONS) + 1))
    print("| # | planted mutation | result | first failing test | s |")
    print("|---|---|---|---|---|")
    bad = 0
    for i in chosen:
        m = MUTATIONS[i - 1]
        status, test, seconds = run_one(m)
        bad += status != "caught"
        print(f"| {i} | {m.what} (`{m.file}`) | {status} | `{test}` | {seconds:.0f} |".replace("``", ""), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
