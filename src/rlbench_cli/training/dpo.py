"""The iterative DPO runner (docs/reference.md §1): sample with the current policy, pair correct vs incorrect,
train DPO, repeat with the new policy.

Data rule: the prompts (already shuffled with the run seed by `load_rows`) are cut into `algorithm.dpo_iterations`
consecutive chunks of `len(rows) // dpo_iterations` prompts (the remainder is unused), so the run makes one pass over
the data, as the RL runners do by default. Iteration k:
1. samples `rollout.n` responses per prompt of chunk k with the current policy (`rollout.temperature/top_p/
   max_new_tokens`), each with its own seed `sample_seed(recipe.seed, "dpo", k, problem_id, j)`
   (`evaluation.generate.generate_with_model`);
2. scores them with the training reward (`training.rewards.make_reward_fn`: the evaluation grader, or the recipe's
   custom function); a response is correct iff its reward equals `reward.correct`;
3. builds at most one (chosen = correct, rejected = incorrect) pair per prompt with `algorithms.pairs.
   select_dpo_pairs` (`algorithm.pair_strategy`, seed derived from the run seed and k); all-correct and all-wrong
   groups give no pair. An iteration with no pair is logged, warned about and skipped;
4. runs TRL's DPOTrainer for `algorithm.dpo_epochs` passes over the pairs (Online-DPO-R1: 2) with label smoothing
   `algorithm.dpo_label_smoothing` (Online-DPO-R1: 0.1, TRL's sigmoid loss): reference = a frozen copy of the policy
   made at the start of the iteration, beta = `algorithm.dpo_beta`, plus TRL's `sft` loss (mean NLL of the chosen
   tokens) with weight `algorithm.sft_coef` when it is > 0 (trl 1.16 has no `rpo_alpha`: loss_type ["sigmoid",
   "sft"] with loss_weights [1, sft_coef] is its replacement). Pairs per optimizer step: `optim.mini_batch_prompts or
   rollout.prompts_per_batch` (one pair per prompt), `optim.micro_batch_size` pairs per forward pass; the last step
   of an iteration may see fewer pairs. Each iteration builds a new trainer, so AdamW state and the LR schedule
   restart every iteration (like Online-DPO-R1, which launches one training run per iteration).
`optim.max_steps`, when set, caps the total optimizer steps of the run. One metrics.jsonl line per optimizer step,
steps numbered across iterations, each carrying its iteration's sampling statistics (`samples` and `gen_tokens`
count generated responses and tokens so far). With `output.checkpoint_every` > 0 the policy is saved after every
iteration under checkpoints/iter-K, and `--resume` continues after the last saved iteration (without checkpoints
it starts over). One process only (no accelerate multi-process launch).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlbench_cli.config import Recipe
from rlbench_cli.errors import UserError
from rlbench_cli.training.batching import dpo_batching, dpo_plan, iteration_chunks, steps_for_pairs
from rlbench_cli.training.checkpoints import truncate_metrics
from rlbench_cli.training.context import RunContext, trainer_args, world_size
from rlbench_cli.training.policy import load_policy, peft_config, write_model_folder

log = logging.getLogger("rlbench")


# ---------------------------------------------------------------------------------------------- pure helpers


def build_pair_rows(prompts: list[str], groups: list[list[str]], correct: list[list[bool]], seed: int,
                    choose: str = "random") -> list[dict[str, str]]:
    """DPO rows {prompt, chosen, rejected} from n responses per prompt and their verdicts (pure)."""
    from rlbench_cli.algorithms.pairs import select_dpo_pairs

    pairs = select_dpo_pairs(groups, correct, seed, choose=choose)
    return [{"prompt": prompts[g], "chosen": groups[g][c], "rejected": groups[g][r]} for g, c, r in pairs]


def sampling_stats(rewards: list[float], correct: list[list[bool]], lengths: list[int], n_pairs: int,
                   gen_time_s: float) -> dict[str, Any]:
    """The iteration's rollout statistics in METRIC_KEYS names (pure)."""
    finite = [r for r in rewards if r is not None and not math.isnan(r)]
    flat = [ok for group in correct for ok in group]
    n_groups = len(correct)
    tokens = sum(lengths)
    return {
        "reward_mean": sum(finite) / len(finite) if finite else None,
        "accuracy": sum(flat) / len(flat) if flat else None,
        "response_len": tokens / len(lengths) if lengths else None,
        "frac_all_correct": sum(all(g) for g in correct) / n_groups if n_groups else None,
        "frac_all_wrong": sum(not any(g) for g in correct) / n_groups if n_groups else None,
        "kept_frac": n_pairs / n_groups if n_groups else None,
        "tokens_per_s": tokens / gen_time_s if gen_time_s > 0 else None,
    }


# ---------------------------------------------------------------------------------------------- sampling


@dataclass
class IterationSample:
    """What one iteration's sampling produced."""

    pairs: list[dict[str, str]]
    stats: dict[str, Any]
    n_responses: int
    n_tokens: int


def kl_to_initial(model: Any, initial: Any, tokenizer: Any, prompts: list[str], texts: list[str], *,
                  temperature: float = 1.0, batch_size: int = 64) -> float | None:
    """Mean per-token KL(policy ‖ initial policy) on the policy's own samples: the low_var_kl estimate the RL
    runners log, so the `kl` column means the same for every algorithm."""
    import torch

    from rlbench_cli.algorithms.losses import kl_penalty
    from rlbench_cli.evaluation.generate import encode_prompt

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0.0
    was_training = model.training
    model.eval()
    for start in range(0, len(prompts), batch_size):
        seqs, spans = [], []
        for prompt, text in zip(prompts[start:start + batch_size], texts[start:start + batch_size], strict=True):
            prompt_ids = encode_prompt(tokenizer, prompt)
            completion_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if completion_ids:
                seqs.append(prompt_ids + completion_ids)
                spans.append((len(prompt_ids), len(completion_ids)))
        if not seqs:
            continue
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        mask = torch.zeros(len(seqs), width - 1, device=device)
        for row, (prompt_len, completion_len) in enumerate(spans):
            mask[row, prompt_len - 1:prompt_len - 1 + completion_len] = 1.0  # position t predicts token t+1
        with torch.no_grad():
            logps = [torch.log_softmax(m(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
                                       / temperature, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
                     for m in (model, initial)]
        kl = kl_penalty(logps[0], logps[1], kind="low_var_kl")
        total += float((kl * mask).sum())
        count += float(mask.sum())
    model.train(was_training)
    return total / count if count else None


def sample_and_pair(model: Any, tokenizer: Any, recipe: Recipe, reward_fn: Any, rows: list[dict[str, str]],
                    prompts: list[str], iteration: int, initial: Any = None) -> IterationSample:
    """Sample rollout.n responses per prompt with `model`, score them, and build the iteration's pairs."""
    from rlbench_cli.evaluation.generate import generate_with_model, sample_seed

    ro, n = recipe.rollout, recipe.rollout.n
    flat_prompts = [p for p in prompts for _ in range(n)]
    seeds = [sample_seed(recipe.seed, "dpo", iteration, r["problem_id"], j) for r in rows for j in range(n)]
    start = time.perf_counter()
    completions = generate_with_model(model, tokenizer, flat_prompts, seeds, temperature=ro.temperature,
                                      top_p=ro.top_p, max_new_tokens=ro.max_new_tokens,
                                      batch_size=recipe.eval.batch_size)
    gen_time = time.perf_counter() - start
    texts = [c.text for c in completions]
    rewards = reward_fn(
        prompts=flat_prompts, completions=texts,
        completion_ids=[tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
        answer=[r["answer"] for r in rows for _ in range(n)],
        solution=[r["solution"] for r in rows for _ in range(n)],
        problem_id=[r["problem_id"] for r in rows for _ in range(n)],
    )
    rewards = [float("nan") if r is None else float(r) for r in rewards]
    verdicts = [r == recipe.reward.correct for r in rewards]
    groups = [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
    correct = [verdicts[i * n:(i + 1) * n] for i in range(len(prompts))]
    pairs = build_pair_rows(prompts, groups, correct, sample_seed(recipe.seed, "dpo-pairs", iteration),
                            recipe.algorithm.pair_strategy)
    lengths = [c.n_tokens for c in completions]
    stats = sampling_stats(rewards, correct, lengths, len(pairs), gen_time)
    if initial is not None:
        stats["kl"] = kl_to_initial(model, initial, tokenizer, flat_prompts, texts, temperature=ro.temperature,
                                    batch_size=recipe.eval.batch_size)
    return IterationSample(pairs=pairs, stats=stats, n_responses=len(texts), n_tokens=sum(lengths))


# ---------------------------------------------------------------------------------------------- training


def dpo_config(recipe: Recipe, run: RunContext, iteration: int, batching: dict[str, int], max_steps: int):
    """Translate a recipe into TRL's DPOConfig for one iteration."""
    from trl import DPOConfig

    algo = recipe.algorithm
    sft = algo.sft_coef > 0

    # rlbench saves the policy between iterations itself, so TRL checkpoints nothing.
    args = trainer_args(recipe, run, max_steps, seed=(recipe.seed + iteration) % 2**32, checkpoints=False)
    args["output_dir"] = str(run.checkpoint_dir / f"trainer-iter-{iteration}")
    return DPOConfig(
        **args,
        gradient_accumulation_steps=batching["gradient_accumulation_steps"],
        beta=algo.dpo_beta,
        label_smoothing=algo.dpo_label_smoothing,  # conservative DPO (sigmoid loss), Online-DPO-R1: 0.1
        loss_type=["sigmoid", "sft"] if sft else ["sigmoid"],
        loss_weights=[1.0, algo.sft_coef] if sft else None,
        max_length=None,
        precompute_ref_log_probs=False,
        dataset_num_proc=None,
    )


def _offset_metrics_callback(metrics_path: Path, rollout_stats: Any, progress: Any, step_offset_wall: float) -> Any:
    """A MetricsCallback whose step numbers continue across iterations (one trainer per iteration; set .offset)."""
    from rlbench_cli.training.callbacks import MetricsCallback

    class StepOffsetMetrics(MetricsCallback):
        offset = 0

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            shifted = copy.copy(state)
            shifted.global_step = state.global_step + self.offset
            super().on_log(args, shifted, control, logs, **kwargs)

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if self.progress is not None and state.is_world_process_zero:
                self.progress.advance(state.global_step + self.offset)

    return StepOffsetMetrics(metrics_path, rollout_stats, progress, step_offset_wall)


def _remove_empty(folder: Path) -> None:
    for path in (folder, folder.parent):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _unpatch_forward(model: Any) -> None:
    """Drop the fused-LM-head forward TRL binds onto the instance, so copies and the next trainer start clean."""
    vars(model).pop("forward", None)


def _save_iteration(run: RunContext, model: Any, tokenizer: Any, state: dict[str, Any]) -> None:
    import shutil

    from rlbench_cli.records import atomic_write_json

    folder = run.checkpoint_dir / f"iter-{state['iteration']:04d}"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    atomic_write_json(folder / "rlbench_dpo_state.json", state)  # written last: marks the checkpoint complete
    done = sorted(p for p in run.checkpoint_dir.glob("iter-*") if (p / "rlbench_dpo_state.json").exists())
    for old in done[: -run.recipe.output.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)


def _last_iteration(run: RunContext) -> tuple[Path, dict[str, Any]] | None:
    done = sorted(p for p in run.checkpoint_dir.glob("iter-*") if (p / "rlbench_dpo_state.json").exists())
    if not done:
        return None
    return done[-1], json.loads((done[-1] / "rlbench_dpo_state.json").read_text())


def train_dpo(recipe: Recipe, run: RunContext, console: Any, *, rows: list[dict[str, str]], model_path: str,
              resume: bool = False) -> Path:
    from accelerate import PartialState
    from datasets import Dataset
    from trl import DPOTrainer

    from rlbench_cli.training.callbacks import RichProgress
    from rlbench_cli.training.data import build_prompt_dataset
    from rlbench_cli.training.rewards import make_reward_fn

    num_processes = world_size()
    if num_processes > 1:
        raise UserError("iterative DPO is implemented for one process", where="algorithm.name=dpo",
                        fix="run it without accelerate launch / torchrun (one process)")
    algo = recipe.algorithm
    chunks = iteration_chunks(len(rows), algo.dpo_iterations)
    batching = dpo_batching(recipe, num_processes)
    start_iteration, global_step, samples, gen_tokens, wall0 = 0, 0, 0, 0, 0.0
    last = _last_iteration(run) if resume else None
    if last is not None:
        folder, state = last
        model, tokenizer = load_policy(str(folder), recipe)
        start_iteration, global_step = state["iteration"] + 1, state["global_step"]
        samples, gen_tokens, wall0 = state["samples"], state["gen_tokens"], state["wall_time"]
        truncate_metrics(run, global_step)
        log.info("resuming iterative DPO after iteration %d (step %d)", state["iteration"], global_step)
    else:
        model, tokenizer = load_policy(model_path, recipe)
        if resume:
            truncate_metrics(run, 0)
    model.to(PartialState().device)  # sampling runs before any trainer has placed the model
    initial = None
    if algo.log_kl:  # the starting policy, frozen, for the `kl` metric (from model_path, also on resume)
        initial = load_policy(model_path, recipe)[0].to(PartialState().device).eval().requires_grad_(False)
    prompts = build_prompt_dataset(rows, recipe, tokenizer)["prompt"]
    reward_fn = make_reward_fn(recipe, console)
    step_cap = recipe.optim.max_steps
    total = dpo_plan(recipe, len(rows), num_processes)["max_steps"]  # upper bound: every prompt yields a pair
    stats: dict[str, Any] = {}
    try:
        with RichProgress(console, total, f"dpo {run.dir.name}") as progress:
            metrics = _offset_metrics_callback(run.metrics_path, lambda: stats, progress, wall0)
            for k in range(start_iteration, algo.dpo_iterations):
                if step_cap and global_step >= step_cap:
                    break
                chunk = chunks[k]
                sample = sample_and_pair(model, tokenizer, recipe, reward_fn, [rows[i] for i in chunk],
                                         [prompts[i] for i in chunk], k, initial=initial)
                samples += sample.n_responses
                gen_tokens += sample.n_tokens
                stats = {**sample.stats, "samples": samples, "gen_tokens": gen_tokens}
                log.info("dpo iteration %d/%d: %d prompts, accuracy %.3f, %d pairs", k + 1, algo.dpo_iterations,
                         len(chunk), stats["accuracy"] or 0.0, len(sample.pairs))
                if sample.pairs:
                    steps = steps_for_pairs(len(sample.pairs), batching["pairs_per_step"]) * algo.dpo_epochs
                    if step_cap:
                        steps = min(steps, step_cap - global_step)
                    model = _train_iteration(recipe, run, model, tokenizer, sample.pairs, k, batching, steps,
                                             metrics, global_step, peft_config(recipe), DPOTrainer, Dataset)
                    global_step += steps
                else:
                    log.warning("dpo iteration %d: no prompt has both a correct and a wrong response; skipped", k + 1)
                    if console is not None:
                        console.print(f"[yellow]DPO iteration {k + 1}: no preference pairs (all groups all-correct "
                                      "or all-wrong); skipped[/]")
                if recipe.output.checkpoint_every:
                    _save_iteration(run, model, tokenizer, {
                        "iteration": k, "global_step": global_step, "samples": samples, "gen_tokens": gen_tokens,
                        "wall_time": round(time.time() - metrics.t0, 3),
                    })
    finally:
        if hasattr(reward_fn, "close"):
            reward_fn.close()
    return write_model_folder(run, model, tokenizer, model_path)


def _train_iteration(recipe: Recipe, run: RunContext, model: Any, tokenizer: Any, pairs: list[dict[str, str]],
                     iteration: int, batching: dict[str, int], steps: int, metrics: Any, step_offset: int,
                     peft: Any, trainer_cls: Any, dataset_cls: Any) -> Any:
    """One DPO pass over the iteration's pairs against a frozen copy of the iteration's starting policy."""
    _unpatch_forward(model)
    ref_model = copy.deepcopy(model)
    ref_model.eval()
    ref_model.requires_grad_(False)
    # The Trainer seeds at construction; nothing random may run between here and train().
    trainer = trainer_cls(
        model=model, ref_model=ref_model, args=dpo_config(recipe, run, iteration, batching, steps),
        train_dataset=dataset_cls.from_list(pairs), processing_class=tokenizer, peft_config=peft,
    )
    metrics.offset = step_offset
    trainer.add_callback(metrics)
    from rlbench_cli.training.callbacks import quiet_trainer

    quiet_trainer(trainer)
    trainer.train()
    _remove_empty(Path(trainer.args.output_dir))  # save_strategy "no": TRL only leaves an empty folder
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(trained, "merge_and_unload"):  # LoRA: fold this iteration's adapter in; the next one starts fresh
        trained = trained.merge_and_unload()
    _unpatch_forward(trained)
    del trainer, ref_model
    return trained
