"""Testbed v2's measured requirements (issue 11), read from a finished `rlbench reproduce` output folder.

    rlbench reproduce minimal_rl_raftpp_faster_early minimal_rl_grpo_ends_at_least_raftpp \
        yue_rl_beats_base_pass1 --seeds 3 --output results/reproduce
    python bench/testbed_requirements.py results/reproduce [--json out.json] [--exact-kl]

It moves: per GRPO seed, rollout accuracy of the last 2 rollouts minus the first 2 (points), 95% t interval
across seeds, and KL to the initial policy at the end (mean of the last rollout's steps) and at its maximum, as
logged (clamped k3); with --exact-kl also the exact per-token KL of each final GRPO policy to its base
(bench/kl_to_base.py, 64 train prompts x 8; clamped k3 is biased low once a policy is sharp).
The clip engages: RAFT++ clip fraction averaged over its off-policy optimizer steps (every step of a rollout
after the first). Headroom: base mean@16 and pass@16 per split; the highest mean@16 of any trained arm. Power:
seed-to-seed SD of the Average per arm, the SD of the paired GRPO - RAFT++ differences, and the smallest
difference 3 seeds detect with 80% power (paired t, alpha 0.05), from the paired SD and from the pooled per-arm
SD (sd·√2, i.e. assuming seeds share nothing). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rlbench_cli.compare.seed_stats import min_detectable, paired_t, pooled_seed_sd
from rlbench_cli.compare.stats import t_interval
from rlbench_cli.records import read_jsonl


def _runs(root: Path, prefix: str) -> dict[int, Path]:
    out = {}
    for d in sorted((root / "runs").glob(f"{prefix}-s*-*")):
        if (d / "manifest.json").exists() or (d / "reproduce.json").exists():
            out[int(d.name[len(prefix) + 2:].split("-")[0])] = d
    return out


def _rollouts(rows: list[dict]) -> list[list[dict]]:
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["samples"], []).append(r)
    return [groups[k] for k in sorted(groups)]


def _splits(folder: Path) -> dict[str, dict[str, float]]:
    found = sorted(folder.glob("eval/*/summary.json")) or sorted(folder.glob("base-*/eval/*/summary.json"))
    out = {}
    for p in found:
        s = json.loads(p.read_text())
        rows = s["per_problem"]
        out[s["benchmark"]] = {"mean": 100 * sum(r["n_correct"] / r["n"] for r in rows) / len(rows),
                               "pass": 100 * sum(r["n_correct"] > 0 for r in rows) / len(rows)}
    return out


def _exact_kl(run: Path) -> float:
    import yaml
    from kl_to_base import measure, resolve_model_dir  # bench/ is on sys.path when this file runs as a script

    base = yaml.safe_load((run / "recipe.yaml").read_text())["model"]["path"]
    return measure(str(run / "model"), resolve_model_dir(base), 64, 8, "train", 0)["kl_exact"]


def _avg(splits: dict[str, dict[str, float]], key: str = "mean") -> float | None:
    return sum(v[key] for v in splits.values()) / len(splits) if splits else None


def measure(root: Path, exact_kl: bool = False) -> dict:
    res: dict = {}
    grpo, raftpp, base = _runs(root, "tiny-grpo"), _runs(root, "tiny-raft_pp"), _runs(root, "base")
    if not base:  # `make demo` alone evaluates the base once, into runs/base-<model hash> (no seed in the name)
        base = dict(enumerate(d for d in sorted((root / "runs").glob("base-*")) if (d / "eval").is_dir()))
    # it moves
    rises, kls, kl_max, wall, cpu = {}, {}, {}, {}, {}
    for s, d in grpo.items():
        rows = read_jsonl(d / "metrics.jsonl")
        ro = _rollouts(rows)
        acc = [g[0]["accuracy"] for g in ro]
        rises[s] = 100 * (sum(acc[-2:]) / 2 - sum(acc[:2]) / 2)
        kls[s] = sum(r["kl"] for r in ro[-1]) / len(ro[-1])
        kl_max[s] = max(r["kl"] for r in rows)
        man = json.loads((d / "manifest.json").read_text())
        wall[s] = man.get("wall_time_s")
        info = d / "reproduce.json"
        cpu[s] = json.loads(info.read_text()).get("train_cpu_s") if info.exists() else None
        res.setdefault("steps", {})[s] = len(rows)
    mean, half = t_interval(list(rises.values()))
    res["moves"] = {"rise_points_per_seed": rises, "rise_mean": mean, "rise_ci95": [mean - half, mean + half],
                    "kl_end_per_seed": kls, "kl_max_per_seed": kl_max, "train_wall_s": wall, "train_cpu_s": cpu}
    if exact_kl:
        res["moves"]["kl_exact_end_per_seed"] = {s: _exact_kl(d) for s, d in grpo.items() if (d / "model").is_dir()}
    # the clip engages
    fracs = {}
    for s, d in raftpp.items():
        ro = _rollouts(read_jsonl(d / "metrics.jsonl"))
        off = [r["clip_frac"] for g in ro for r in g[1:] if r.get("clip_frac") is not None]
        on = [g[0]["clip_frac"] for g in ro if g[0].get("clip_frac") is not None]
        fracs[s] = {"off_policy": sum(off) / len(off) if off else None, "on_policy": sum(on) / len(on) if on else None}
    res["clip"] = fracs
    # headroom
    base_splits = {s: _splits(d) for s, d in base.items()}
    # every trained arm in the folder ("no algorithm above 90% mean@16"), not only GRPO and RAFT++
    trained = {d.name: _splits(d) for d in sorted((root / "runs").glob("tiny-*")) if (d / "eval").is_dir()}
    per_split_max: dict[str, tuple[str, float]] = {}
    for name, t in trained.items():
        for split, v in t.items():
            if v["mean"] > per_split_max.get(split, ("", -1.0))[1]:
                per_split_max[split] = (name, v["mean"])
    averages = {name: _avg(t) for name, t in trained.items() if t}
    res["headroom"] = {"base": base_splits,
                       "max_trained_mean": max((m for _, m in per_split_max.values()), default=None),
                       "max_trained_mean_per_split": per_split_max,
                       "max_trained_average": max(averages.items(), key=lambda kv: kv[1], default=None)}
    # power
    avg = {"grpo": {s: a for s, d in grpo.items() if (a := _avg(_splits(d))) is not None},
           "raft_pp": {s: a for s, d in raftpp.items() if (a := _avg(_splits(d))) is not None}}
    sd_pooled, df = pooled_seed_sd([list(v.values()) for v in avg.values()])
    seeds = sorted(set(avg["grpo"]) & set(avg["raft_pp"]))
    pt = paired_t([avg["grpo"][s] for s in seeds], [avg["raft_pp"][s] for s in seeds])
    if not seeds:
        res["power"] = {"note": "no evaluated runs yet"}
        return res
    res["power"] = {
        "average_per_seed": avg,
        "sd_per_arm": {k: (math.sqrt(sum((x - sum(v.values()) / len(v)) ** 2 for x in v.values()) / (len(v) - 1))
                           if len(v) > 1 else None) for k, v in avg.items()},
        "sd_pooled": sd_pooled, "sd_pooled_df": df,
        "paired_grpo_minus_raftpp": pt.to_dict(),
        "mde_3_seeds_paired_sd": min_detectable(pt.sd_diff, 3) if pt.sd_diff is not None else None,
        "mde_3_seeds_unpaired_sd": min_detectable(sd_pooled * math.sqrt(2), 3),
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--exact-kl", action="store_true", help="also measure each GRPO policy's exact KL to its base")
    args = ap.parse_args()
    res = measure(args.root, exact_kl=args.exact_kl)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, sort_keys=True))
    json.dump(res, sys.stdout, indent=1, sort_keys=True, default=str)
    print()


if __name__ == "__main__":
    main()
