"""`rlbench eval`: sample k completions per benchmark problem, grade them, and write resumable results.

Layout of one benchmark's output folder `<out>` (a run's `<run>/eval/<benchmark>/`, or
`<results>/base-<slug>/eval/<benchmark>/` for a base model):

- `settings.json`: everything the samples depend on; a rerun under different settings is refused.
- `samples.jsonl` (or `samples.shard-i-of-n.jsonl`): one graded sample per line, appended chunk by chunk. A
  rerun reads the finished (problem_id, sample_idx) pairs back and generates only the missing ones (resume).
- `timings.jsonl` (or `timings.shard-i-of-n.jsonl`): generation/grading time per chunk, summed in summary.
- `summary.json`: metrics in the schema `rlbench compare` reads; written by unsharded runs when complete.

Each sample's seed is `sample_seed(seed, benchmark, problem_id, sample_idx)`, so results do not depend on
batch size, chunking, sharding or interruptions.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError
from rlbench_cli.evaluation.generate import SAMPLER_VERSION, make_backend, sample_seed
from rlbench_cli.records import (
    append_jsonl,
    atomic_write_json,
    read_jsonl,
    sha256_dir,
    sha256_text,
)

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Keys of settings.json that samples depend on; any change makes old samples unusable.
SETTINGS_KEYS = ("model_sha256", "k", "temperature", "top_p", "max_new_tokens", "prompt_template", "seed",
                 "data_sha256", "backend", "em_inf", "sampler")
SAMPLE_FILE_RE = re.compile(r"^samples(\.shard-\d+-of-\d+)?\.jsonl$")
TIMINGS_FILE_RE = re.compile(r"^timings(\.shard-\d+-of-\d+)?\.jsonl$")


@dataclass
class Target:
    """What to evaluate and where its results go."""

    kind: str  # "run" | "base"
    model_path: Path  # local folder with the HF model
    model_ref: str  # as recorded: the folder path or the hub id
    model_sha256: str
    root: Path  # results go under root / "eval" / <benchmark>
    name: str
    label: str
    recipe_name: str
    seed: int | None = None
    run_dir: Path | None = None


# ---------------------------------------------------------------- target resolution

def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read JSON: {e}", where=str(path), fix="restore or delete the file") from e
    if not isinstance(data, dict):
        raise UserError("expected a JSON object", where=str(path))
    return data


def _read_recipe(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "recipe.yaml"
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse the run's recipe: {e}", where=str(path)) from e
    return data if isinstance(data, dict) else {}


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return slug or "model"


def is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file() and (path / "model").is_dir()


def latest_completed_run(results_dir: Path) -> Path:
    """The most recently finished training run under results_dir (base-model eval folders are skipped)."""
    candidates: list[tuple[str, float, Path]] = []
    if results_dir.is_dir():
        for manifest in results_dir.glob("*/manifest.json"):
            run = manifest.parent
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if not isinstance(data, dict) or data.get("kind") == "base" or data.get("status") != "completed":
                continue
            if not (run / "model").is_dir():
                continue
            finished = str(data.get("finished_at") or data.get("created_at") or "")
            candidates.append((finished, manifest.stat().st_mtime, run))
    if not candidates:
        raise UserError(
            f"no completed training run found under {results_dir}",
            fix="train one first (`rlbench train <recipe>`), or pass a run folder, model folder or hub id",
        )
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def _run_target(run_dir: Path, label: str | None, allow_incomplete: bool = False,
                verify_model: bool = True) -> Target:
    from rlbench_cli.evaluation.modelcheck import check_run_model

    manifest = _read_json(run_dir / "manifest.json")
    recipe = _read_recipe(run_dir)
    model = run_dir / "model"
    model_sha256 = sha256_dir(model) if model.is_dir() else ""
    if verify_model:
        check_run_model(run_dir, manifest, model_sha256, allow_incomplete=allow_incomplete)
    name = str(manifest.get("name") or manifest.get("run_name") or run_dir.name)
    recipe_name = str(manifest.get("recipe_name") or recipe.get("name") or name)
    seed = manifest.get("seed", recipe.get("seed"))
    return Target(
        kind="run", model_path=model, model_ref=str(model), model_sha256=model_sha256, root=run_dir,
        name=name, label=str(label or manifest.get("label") or recipe.get("label") or recipe_name),
        recipe_name=recipe_name, seed=int(seed) if seed is not None else None, run_dir=run_dir,
    )


def _base_target(model_path: Path, model_ref: str, slug: str, results_dir: Path, label: str | None,
                 verify_model: bool = True) -> Target:
    """A base model's target; its manifest.json is written by eval_guard (running, then how the eval ended)."""
    from rlbench_cli.evaluation.modelcheck import check_model_folder

    if verify_model:
        check_model_folder(model_path, fix="point at a whole Hugging Face model folder (config.json + weights)")
    root = results_dir / f"base-{slug}"
    return Target(
        kind="base", model_path=model_path, model_ref=model_ref, model_sha256=sha256_dir(model_path),
        root=root, name=f"base-{slug}", label=label or "Base", recipe_name=f"base-{slug}",
    )


def _hub_snapshot(hub_id: str) -> Path:
    """Download (or find in the local cache) a hub model, so that it can be hashed and loaded from disk."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                              "*.tiktoken", "*.py", "*.jinja"]))
    except Exception as e:  # noqa: BLE001 - hub errors come in many types; all mean "not available"
        raise UserError(
            f"cannot get model {hub_id!r} from the hub or its local cache ({type(e).__name__}: {e})",
            where="target", fix="check the id and the network (HF_HUB_OFFLINE), or pass a local model folder",
        ) from e


def resolve_target(target: str | None, results_dir: Path, label: str | None = None,
                   allow_incomplete: bool = False, verify_model: bool = True) -> Target:
    """Turn the user's target (run folder, model folder, hub id, 'testbed' or None) into a Target.

    `verify_model=False` (regrading stored samples) skips the weights checks: nothing is loaded.
    """
    results_dir = Path(results_dir)
    if target is None:
        return _run_target(latest_completed_run(results_dir), label)
    path = Path(target).expanduser()
    if path.is_dir():
        if (path / "manifest.json").is_file():
            from rlbench_cli.runlock import assert_not_locked

            assert_not_locked(path)  # a live train or eval of this run is named before anything else
            if not (path / "model").is_dir():
                status = _read_json(path / "manifest.json").get("status", "unknown")
                recipe = path / "recipe.yaml"
                raise UserError(
                    f"this run has no saved model (status: {status})", where=str(path),
                    fix=f"its model/ folder is gone: retrain with `rlbench train {recipe} --overwrite`"
                    if status == "completed" else
                    f"wait for training to finish, or resume it with `rlbench train {recipe} --resume`",
                )
            return _run_target(path, label, allow_incomplete, verify_model)
        if (path / "config.json").is_file():
            return _base_target(path, str(path), slugify(path.resolve().name), results_dir, label, verify_model)
        raise UserError(
            "not a run folder (manifest.json + model/) nor a model folder (config.json)", where=str(path),
            fix="pass a run folder under results/, a Hugging Face model folder, or a hub id like org/name",
        )
    if path.exists():
        raise UserError("expected a folder, got a file", where=str(path),
                        fix="pass a run folder, a model folder or a hub id")
    from rlbench_cli.testbed.versions import model_version

    if (version := model_version(target)) is not None:
        from rlbench_cli.testbed.model import build_base_model

        slug = "testbed" if target == "testbed" else f"testbed-{version}"
        return _base_target(Path(build_base_model(version=version)), target, slug, results_dir, label)
    from rlbench_cli.models import REAL_MODELS, build_real_model

    if target in REAL_MODELS:  # a packaged real model (converted once into the cache)
        return _base_target(build_real_model(target), target, target, results_dir, label)
    if HUB_ID_RE.match(target):
        slug = slugify(target.replace("/", "--"))
        return _base_target(_hub_snapshot(target), target, slug, results_dir, label)
    raise UserError(
        "no such folder, and not a hub id (org/name)", where=str(target),
        fix="check the path; pass a run folder, a model folder, a hub id, or nothing for the latest run",
    )


# ---------------------------------------------------------------- prompt template

def resolve_prompt_template(explicit: str | None, target: Target, tokenizer: Any) -> str:
    """explicit > the run's recipe (data.prompt_template) > <model>/rlbench.json > has a chat template?"""
    from rlbench_cli.prompts import TEMPLATES

    chosen, source = explicit, "--template"
    if chosen is None and target.run_dir is not None:
        chosen = (_read_recipe(target.run_dir).get("data") or {}).get("prompt_template")
        source = str(target.run_dir / "recipe.yaml")
    if chosen is None and (target.model_path / "rlbench.json").is_file():
        chosen = _read_json(target.model_path / "rlbench.json").get("prompt_template")
        source = str(target.model_path / "rlbench.json")
    if chosen is None:
        return "paper" if getattr(tokenizer, "chat_template", None) else "plain"
    if chosen not in TEMPLATES:
        raise UserError(f"unknown prompt template {chosen!r}", where=source,
                        fix=f"use one of {', '.join(TEMPLATES)}")
    if chosen == "paper" and not getattr(tokenizer, "chat_template", None):
        raise UserError("prompt template 'paper' needs a tokenizer with a chat template", where=source,
                        fix="use --template plain for base models without one")
    return chosen


def _load_tokenizer(model_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


# ---------------------------------------------------------------- samples, settings, merge

def _shard_suffix(shard: tuple[int, int] | None) -> str:
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


def read_samples(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """All finished samples in `out`, from the unsharded file and every shard file (first copy wins)."""
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if not out.is_dir():
        return done
    for path in sorted(p for p in out.iterdir() if SAMPLE_FILE_RE.match(p.name)):
        for row in read_jsonl(path):
            done.setdefault((str(row["problem_id"]), int(row["sample_idx"])), row)
    return done


def repair_tail(path: Path) -> None:
    """Cut a truncated last line (left by a killed writer) so that the next append starts on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, 2)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def _read_timings(out: Path) -> dict[str, float]:
    totals = {"generation_s": 0.0, "grading_s": 0.0, "total_s": 0.0, "n_tokens": 0.0}
    if out.is_dir():
        for path in sorted(p for p in out.iterdir() if TIMINGS_FILE_RE.match(p.name)):
            for row in read_jsonl(path):
                for key in totals:
                    totals[key] += float(row.get(key, 0.0))
    return totals


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write settings.json on first use; refuse to mix samples made under different settings."""
    path = out / "settings.json"
    if not path.exists():
        if read_samples(out):
            raise UserError(
                "samples exist but settings.json is missing, so they cannot be checked", where=str(out),
                fix=f"delete {out} to start this benchmark over",
            )
        atomic_write_json(path, settings)
        return
    old = _read_json(path)
    diffs = [f"{key}: {old.get(key)!r} -> {settings.get(key)!r}" for key in SETTINGS_KEYS
             if old.get(key) != settings.get(key)]
    if old.get("grader", "rlbench") != settings.get("grader", "rlbench"):  # one grader per samples file
        raise UserError(
            f"existing samples were graded by {old.get('grader', 'rlbench')!r}, not {settings.get('grader')!r}",
            where=str(path), fix=f"regrade them first: rlbench eval <RUN> --regrade --grader {settings.get('grader')}",
        )
    if diffs:
        raise UserError(
            "existing samples were made under different settings (" + "; ".join(diffs) + ")",
            where=str(path),
            fix=f"rerun with the original settings to resume, or delete {out} to start over",
        )


def _majority_correct(rows: list[dict[str, Any]]) -> bool:
    """Whether the most common extracted answer (ties: the one seen first) is graded correct."""
    try:
        from rlbench_cli.evaluation.metrics import maj_at_k
    except ImportError:
        maj_at_k = None
    if maj_at_k is not None:
        return bool(maj_at_k([r.get("pred") for r in rows], [bool(r.get("correct")) for r in rows]))
    votes = Counter(r["pred"] for r in rows if r.get("pred") not in (None, ""))
    if not votes:
        return False
    best = max(votes.values())
    winner = next(r["pred"] for r in rows if r.get("pred") in votes and votes[r["pred"]] == best)
    return any(bool(r.get("correct")) for r in rows if r.get("pred") == winner)


# ---------------------------------------------------------------- progress / display

def _print_table(console: Any, summaries: dict[str, dict[str, Any]], k: int) -> None:
    from rich.table import Table

    from rlbench_cli.evaluation.metrics import pass_at_k, standard_error

    table = Table(title="rlbench eval (± standard error over problems)")
    for col in ("benchmark", "problems", f"mean@{k}", f"pass@{k}", f"maj@{k}"):
        table.add_column(col, justify="left" if col == "benchmark" else "right", no_wrap=True)
    for s in summaries.values():
        m, per = s["metrics"], s.get("per_problem") or []
        ses = {"mean@k": m.get("mean@k_se"),
               "pass@k": standard_error([pass_at_k(int(p["n"]), int(p["n_correct"]), k) for p in per]),
               "maj@k": standard_error([float(bool(p.get("maj_correct"))) for p in per])}
        cells = [f"{100 * float(m.get(key, 0.0)):.1f} ± {100 * float(ses[key] or 0.0):.1f}"
                 for key in ("mean@k", "pass@k", "maj@k")]
        table.add_row(s["display_name"], str(s["data"]["n_problems"]), *cells)
    console.print(table)


# ---------------------------------------------------------------- main entry

class _Engines:
    """The backend and grader, started only when some sample is missing (a finished resume skips them)."""

    def __init__(self, backend: str, model_path: Path, *, batch_size: int, seed: int,
                 tensor_parallel_size: int, grader_workers: int, grader_timeout_s: float,
                 em_inf: dict[str, Any] | None = None, grader: str = "rlbench") -> None:
        self.em_inf = em_inf
        self.grader_name = grader
        self.backend_name, self.model_path = backend, model_path
        self.batch_size, self.seed, self.tp = batch_size, seed, tensor_parallel_size
        self.grader_workers, self.grader_timeout_s = grader_workers, grader_timeout_s
        self.backend: Any = None
        self.grader: Any = None

    def start(self) -> float:
        """Load what is not loaded yet; returns the seconds spent."""
        t0 = time.perf_counter()
        if self.backend is None:
            self.backend = make_backend(self.backend_name, self.model_path, batch_size=self.batch_size,
                                        seed=self.seed, tensor_parallel_size=self.tp, em_inf=self.em_inf)
        if self.grader is None:
            from rlbench_cli.evaluation.grader import Grader

            self.grader = Grader(workers=self.grader_workers, timeout_s=self.grader_timeout_s, grader=self.grader_name)
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.grader is not None:
            self.grader.close()


def _generate_pending(engines: _Engines, name: str, pending: list[tuple[Any, int]], prompt_of: dict[str, str],
                      out: Path, suffix: str, *, seed: int, temperature: float, top_p: float,
                      max_new_tokens: int, chunk_samples: int, on_chunk: Any) -> None:
    """Generate, grade and append the pending (problem, sample_idx) pairs, one chunk at a time."""
    from rlbench_cli.evaluation.grader import GradeItem

    samples_path, timings_path = out / f"samples{suffix}.jsonl", out / f"timings{suffix}.jsonl"
    repair_tail(samples_path)
    repair_tail(timings_path)
    for start in range(0, len(pending), chunk_samples):
        chunk = pending[start : start + chunk_samples]
        load_s = engines.start()
        if load_s > 0.01:
            append_jsonl(timings_path, [{"load_s": load_s, "total_s": load_s}])
        t_chunk = time.perf_counter()
        pids = [str(p.id) for p, _ in chunk]
        idxs = [j for _, j in chunk]
        prompts = [prompt_of[pid] for pid in pids]
        seeds = [sample_seed(seed, name, pid, j) for pid, j in zip(pids, idxs, strict=True)]
        t0 = time.perf_counter()
        comps = engines.backend.generate(prompts, seeds, temperature=temperature, top_p=top_p,
                                         max_new_tokens=max_new_tokens)
        gen_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        items = [GradeItem.for_problem(p, c.text) for (p, _), c in zip(chunk, comps, strict=True)]
        verdicts = engines.grader.grade_many(items)
        grade_s = time.perf_counter() - t0
        rows = [
            {"problem_id": pid, "sample_idx": j, "seed": s, "prompt_sha256": sha256_text(pr),
             "completion": c.text, "n_tokens": c.n_tokens, "finish_reason": c.finish_reason,
             "pred": v.pred, "correct": bool(v.correct), "timed_out": bool(v.timed_out)}
            for pid, j, s, pr, c, v in zip(pids, idxs, seeds, prompts, comps, verdicts, strict=True)
        ]
        append_jsonl(samples_path, rows)
        append_jsonl(timings_path, [{
            "n_samples": len(rows), "n_tokens": sum(c.n_tokens for c in comps), "generation_s": gen_s,
            "grading_s": grade_s, "total_s": time.perf_counter() - t_chunk,
        }])
        on_chunk(len(rows))


def _check_args(k: int, batch_size: int, benchmarks: list[str], backend: str, shard: tuple[int, int] | None,
                merge: bool) -> tuple[int, int] | None:
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}", where="--k")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}", where="--batch-size")
    if not benchmarks:
        raise UserError("no benchmarks given", where="--benchmarks", fix="name at least one, e.g. math500")
    if backend not in ("hf", "vllm"):
        raise UserError(f"unknown backend {backend!r}", where="--backend", fix="use 'hf' or 'vllm'")
    if shard is None:
        return None
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise UserError(f"invalid shard {i}/{n}: need 0 <= i < n", where="--shard", fix="e.g. --shard 0/4")
    if merge:
        raise UserError("--merge combines all shards; do not pass --shard with it", where="--merge")
    return None if n == 1 else (i, n)


def run_eval(target: str | None, *, results_dir: Path = Path("results"), benchmarks: list[str], k: int = 16,
             temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 4096,
             prompt_template: str | None = None, backend: str = "hf", batch_size: int = 32, seed: int = 0,
             data_dir: Path | None = None, limit: int | None = None, grader_workers: int = 2,
             grader_timeout_s: float = 5.0, label: str | None = None, tensor_parallel_size: int = 1,
             shard: tuple[int, int] | None = None, merge: bool = False, console: Any = None,
             em_inf: dict[str, Any] | None = None, grader: str = "rlbench",
             allow_incomplete: bool = False, command: str = "rlbench eval") -> dict:
    """Evaluate one model on the given benchmarks; returns {benchmark: summary} (shards: progress dicts).

    `merge=True` only combines existing (shard) samples into the summary and fails if any are missing.
    """
    from rich.console import Console

    from rlbench_cli.evaluation.benchmarks import load_benchmark
    from rlbench_cli.evaluation.grader import grader_version
    from rlbench_cli.evaluation.metrics import summarize
    from rlbench_cli.prompts import render_prompt

    shard = _check_args(k, batch_size, benchmarks, backend, shard, merge)
    console = console or Console()
    tgt = resolve_target(target, Path(results_dir), label, allow_incomplete)
    from rlbench_cli.console import Progress
    from rlbench_cli.evaluation.guard import eval_guard

    with eval_guard(tgt, command=command, console=console):  # lock, disk reserve, status on every ending
        tokenizer = _load_tokenizer(tgt.model_path)
        template = resolve_prompt_template(prompt_template, tgt, tokenizer)
        console.print(f"[bold]eval[/] {tgt.label} ({tgt.model_ref}) · k={k} T={temperature} top_p={top_p} "
                      f"max_new_tokens={max_new_tokens} template={template} backend={backend}"
                      + (f" em_inf={em_inf}" if em_inf else ""))
        engines = _Engines(backend, tgt.model_path, batch_size=batch_size, seed=seed,
                           tensor_parallel_size=tensor_parallel_size, grader_workers=grader_workers,
                           grader_timeout_s=grader_timeout_s, em_inf=em_inf, grader=grader)
        # Chunk = what is generated, graded and appended at once; at most one chunk is lost on interruption.
        chunk_samples = max(k, batch_size) if backend == "hf" else max(k, 1024)
        results: dict[str, dict[str, Any]] = {}
        try:
            for name in benchmarks:
                bench = load_benchmark(name, data_dir=data_dir, limit=limit)
                out = tgt.root / "eval" / name
                settings = {"model_sha256": tgt.model_sha256, "k": k, "temperature": float(temperature),
                            "top_p": float(top_p), "max_new_tokens": max_new_tokens, "prompt_template": template,
                            "seed": seed, "data_sha256": bench.sha256, "backend": backend,
                            "sampler": SAMPLER_VERSION if backend == "hf" else "vllm",
                            "grader_version": grader_version(grader), "grader": grader, "benchmark": name,
                            "model": tgt.model_ref}
                if em_inf:
                    settings["em_inf"] = em_inf
                check_settings(out, settings)
                problems = list(bench.problems)
                selected = [p for idx, p in enumerate(problems) if shard is None or idx % shard[1] == shard[0]]
                done = read_samples(out)
                pending = [(p, j) for p in selected for j in range(k) if (str(p.id), j) not in done]
                if merge and pending:
                    raise UserError(
                        f"{len(pending)} of {len(selected) * k} samples are missing for {name}",
                        where=str(out),
                        fix="finish the other shards (--shard i/n), or rerun without --merge to generate them",
                    )
                prompt_of = {str(p.id): render_prompt(p.problem, template, tokenizer) for p, _ in pending}
                desc = bench.display_name + (f" shard {shard[0]}/{shard[1]}" if shard else "")
                total = len(selected) * k
                with Progress(console, desc, total, total - len(pending), unit="samples") as progress:
                    _generate_pending(
                        engines, name, pending, prompt_of, out, _shard_suffix(shard), seed=seed,
                        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                        chunk_samples=chunk_samples, on_chunk=lambda n, progress=progress: progress.update(advance=n),
                    )
                if shard is not None:
                    results[name] = {"benchmark": name, "status": "shard", "shard": list(shard),
                                     "n_samples": total, "out": str(out)}
                    continue
                results[name] = _write_summary(out, name, bench, problems, k, tgt, settings, batch_size,
                                               grader_timeout_s, summarize)
        finally:
            engines.close()
        if shard is None:
            _print_table(console, results, k)
            if tgt.run_dir is not None:  # the run's trackers (output.report_to) get the summaries too
                from rlbench_cli.tracking import mirror_eval

                mirror_eval(tgt.run_dir, _read_json(tgt.run_dir / "manifest.json"), results, console)
        return results


def _write_summary(out: Path, name: str, bench: Any, problems: list[Any], k: int, tgt: Target,
                   settings: dict[str, Any], batch_size: int, grader_timeout_s: float,
                   summarize: Any) -> dict:
    done = read_samples(out)
    per_problem: list[dict[str, Any]] = []
    timeouts = 0
    for p in problems:
        rows = [done[(str(p.id), j)] for j in range(k)]
        timeouts += sum(bool(r.get("timed_out")) for r in rows)
        per_problem.append({"id": str(p.id), "n": k, "n_correct": sum(bool(r.get("correct")) for r in rows),
                            "maj_correct": _majority_correct(rows)})
    t = _read_timings(out)
    s = settings
    summary = {
        "benchmark": name, "display_name": bench.display_name, "status": "completed",
        "model": {"path": tgt.model_ref, "sha256": tgt.model_sha256},
        "run": {"name": tgt.name, "label": tgt.label, "recipe_name": tgt.recipe_name, "seed": tgt.seed},
        "settings": {"k": k, "temperature": s["temperature"], "top_p": s["top_p"],
                     "max_new_tokens": s["max_new_tokens"], "prompt_template": s["prompt_template"],
                     "backend": s["backend"], "seed": s["seed"], "batch_size": batch_size},
        "data": {"source": bench.source, "sha256": bench.sha256, "n_problems": len(problems)},
        "grader": {"name": s.get("grader", "rlbench"), "version": s["grader_version"], "timeouts": timeouts,
                   "timeout_s": grader_timeout_s},
        "metrics": summarize(per_problem),
        "per_problem": per_problem,
        "timings": {
            "generation_s": round(t["generation_s"], 3), "grading_s": round(t["grading_s"], 3),
            "tokens_per_s": round(t["n_tokens"] / t["generation_s"], 1) if t["generation_s"] else None,
            "total_s": round(t["total_s"], 3),
        },
    }
    atomic_write_json(out / "summary.json", summary)
    return summary
