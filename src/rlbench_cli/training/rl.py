"""The RL runner: RAFT, RAFT++, Reinforce, Reinforce-Rej, GRPO and the GRPO family on TRL's GRPOTrainer.

TRL does generation, batching, reward calls, off-policy buffering (steps_per_generation), checkpoints and
distribution. TRL has no advantage hook, so `RLBenchGRPOTrainer` overrides two private methods (pinned trl, covered
by tests/test_trl_contract.py):
- `_generate_and_score_completions`: replaces TRL's advantages with `algorithms.advantages.compute_advantages`
  (the recipe's estimator and group filters) and records rollout statistics;
- `_compute_loss`: the policy loss from `algorithms.losses` (no ratio / PPO clip with dual clip / GSPO), weighted by
  TRL's vLLM importance-sampling ratio when rollouts come from vLLM (rollout.vllm_importance_sampling_*), the KL
  term with the recipe's coefficient, the recipe's loss aggregation, and the metrics every algorithm logs.
TRL's `beta` is only the switch that makes TRL keep a reference model and compute its log-probs (needed for the
KL loss and for logging KL to the initial policy); the KL term itself is applied here with `algorithm.kl_coef`.

Run: `rlbench train recipes/tiny/grpo.yaml`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from rlbench_cli.algorithms.advantages import overlong_penalty
from rlbench_cli.algorithms.entropy import em_ft_loss
from rlbench_cli.algorithms.losses import aggregate_loss, kl_penalty, masked_mean
from rlbench_cli.algorithms.policy_losses import POLICY_LOSSES
from rlbench_cli.config import Recipe
from rlbench_cli.errors import UserError
from rlbench_cli.training.batching import plan
from rlbench_cli.training.checkpoints import fit
from rlbench_cli.training.context import RunContext, trainer_args, world_size
from rlbench_cli.training.policy import load_policy, peft_config, save_final_model
from rlbench_cli.training.resampling import STATE_FILE as STREAM_STATE
from rlbench_cli.training.resampling import (
    PromptStream,
    all_equal_groups,
    choose_groups,
    concat_rollouts,
    enough_groups,
)
from rlbench_cli.training.rollout_signals import (
    apply_temperature,
    rollout_advantages,
    shape_rewards,
    shuffle_groups,
    wave2_metric_keys,
)

log = logging.getLogger("rlbench")


class RLBenchGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with rlbench's advantage estimators, policy losses and metrics. Configure with `rb_recipe`."""

    def __init__(self, *args: Any, rb_recipe: Recipe, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rb = rb_recipe
        self._rb_rewards: torch.Tensor | None = None
        self._rb_gen_time = 0.0
        self._rb_rollout: dict[str, Any] = {}
        self._rb_samples = 0
        self._rb_gen_tokens = 0
        self._rb_stream: PromptStream | None = None
        self._rb_stream_state: dict[str, Any] | None = None
        if rb_recipe.algorithm.dynamic_sampling and self.accelerator.num_processes > 1:
            # Choosing groups across rounds would move rollouts between processes; TRL keeps each process's
            # generation buffer local, so this would need the whole rollout gathered (README: multi-process).
            raise UserError("dynamic_sampling runs on one process only", where="algorithm.dynamic_sampling",
                            fix="launch with one process, or set algorithm.dynamic_sampling=false")

    # ------------------------------------------------------------------ rollout side

    def _get_train_sampler(self, dataset=None):  # type: ignore[override]
        if not self.rb.algorithm.dynamic_sampling:
            # TRL's RepeatSampler, made resumable across epochs (training/sampler.py)
            from rlbench_cli.training.sampler import EpochSeededRepeatSampler

            return EpochSeededRepeatSampler(
                data_source=self.train_dataset if dataset is None else dataset,
                mini_repeat_count=self.num_generations,
                batch_size=self.args.generation_batch_size // self.num_generations,
                repeat_count=self.num_iterations * self.args.steps_per_generation,
                shuffle=self.shuffle_dataset, seed=self.args.seed,
            )
        self._rb_stream = PromptStream(
            self.train_dataset if dataset is None else dataset,
            prompts_per_chunk=self.args.generation_batch_size // self.num_generations,
            mini_repeat=self.num_generations, repeat=self.num_iterations * self.args.steps_per_generation,
            shuffle=self.shuffle_dataset, seed=self.args.seed,
        )
        if self._rb_stream_state is not None:
            self._rb_stream.load_state_dict(self._rb_stream_state)
        return self._rb_stream

    def _generate(self, prompts: list):  # type: ignore[override]
        start = time.perf_counter()
        out = super()._generate(prompts)
        self._rb_gen_time += time.perf_counter() - start
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[override]
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rb_rewards = rewards_per_func  # gathered across processes, (N_total, n_funcs)
        return rewards_per_func

    def _score_rollout(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], torch.Tensor]:
        self._rb_gen_time = 0.0
        out = super()._generate_and_score_completions(inputs)
        assert self._rb_rewards is not None, "TRL did not call _calculate_rewards (see test_trl_contract.py)"
        rewards = torch.nansum(self._rb_rewards, dim=1)
        rewards[torch.isnan(self._rb_rewards).all(dim=1)] = float("nan")
        return out, rewards

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:  # type: ignore[override]
        algo = self.rb.algorithm
        if self.model.training and self.rb.rollout.temperature_schedule != "constant":
            apply_temperature(self)
        out, rewards = self._score_rollout(inputs)
        gen_time = self._rb_gen_time
        generated = [self.accelerator.gather(out["completion_mask"].sum(1).float())]
        rounds, padded = 1, None
        if algo.dynamic_sampling and self.model.training:
            out, rewards, gen_time, generated, padded = self._refill(out, rewards, gen_time, generated)
            rounds = len(generated)
        graded_correct = rewards == self.rb.reward.correct  # the grader's verdict: logged accuracy only
        rewards, correct, extra = shape_rewards(self, out, rewards)  # training reward: EM-RL, TTRL, KL in reward
        lengths = self.accelerator.gather(out["completion_mask"].sum(1).float())
        if algo.overlong_buffer_len:  # DAPO's soft overlong penalty shapes the training reward, not correctness
            max_len = self.max_completion_length
            # A truncated response masked out by overlong_filter has an all-zero mask: it ran to max_len.
            full = torch.where(lengths > 0, lengths, torch.full_like(lengths, max_len)) if algo.overlong_filter \
                else lengths
            rewards = rewards + overlong_penalty(full.to(rewards.device), max_len, algo.overlong_buffer_len,
                                                 algo.overlong_penalty_factor or 0.0).to(rewards.dtype)
        result, local_adv, more = rollout_advantages(self, inputs, out, rewards, correct)
        local = slice(self.accelerator.process_index * len(out["advantages"]),
                      (self.accelerator.process_index + 1) * len(out["advantages"]))
        device = out["completion_mask"].device
        out["advantages"] = local_adv.to(device)
        keep = result.keep[local].to(device=device, dtype=out["completion_mask"].dtype)
        out["rb_keep"] = keep
        kept_tokens = (out["completion_mask"] * keep.unsqueeze(1)).sum()
        out["num_items_in_batch"] = self.accelerator.gather(kept_tokens.reshape(1)).sum()

        # samples / gen_tokens / tokens_per_s count every generated response, refill rounds included.
        gen_tokens = int(sum(float(g.sum()) for g in generated))
        if self.model.training:
            self._rb_samples += sum(len(g) for g in generated)
            self._rb_gen_tokens += gen_tokens
        finite = rewards[~torch.isnan(rewards)]
        self._rb_rollout = {
            "reward_mean": float(finite.mean()) if len(finite) else None,
            "accuracy": float(graded_correct.float().mean()),
            "response_len": float(lengths.mean()),
            # Dr. GRPO's length finding looks at wrong answers only (rewards and lengths are both gathered)
            "incorrect_len": float(lengths[~correct.to(lengths.device)].mean()) if bool((~correct).any()) else None,
            "frac_all_correct": result.stats.get("frac_all_correct"),
            "frac_all_wrong": result.stats.get("frac_all_wrong"),
            "kept_frac": result.stats.get("kept_frac"),
            "tokens_per_s": gen_tokens / gen_time if gen_time > 0 else None,
            "samples": self._rb_samples,
            "gen_tokens": self._rb_gen_tokens,
            "rollout_rounds": rounds,
            "padded_groups": padded,
            "temperature": self.temperature,
            **extra, **more,
        }
        return out

    def _refill(self, out, rewards, gen_time, generated):
        """Dynamic sampling (resampling.py): score more chunks of unused prompts until enough groups have unequal
        rewards or max_resample_rounds are spent, then keep the chosen groups."""
        algo = self.rb.algorithm
        n = self.num_generations
        want = len(rewards) // n
        assert self._rb_stream is not None, "dynamic sampling needs the PromptStream sampler"
        self._rb_stream.mark_used()
        outs, rews = [out], [rewards]
        valid = [(~all_equal_groups(rewards, n)).tolist()]
        while not enough_groups(valid, want, algo.min_valid_frac) and len(outs) < algo.max_resample_rounds:
            chunk = self._rb_stream.take()
            o, r = self._score_rollout([self.train_dataset[i] for i in chunk for _ in range(n)])
            gen_time += self._rb_gen_time
            generated.append(self.accelerator.gather(o["completion_mask"].sum(1).float()))
            outs.append(o)
            rews.append(r)
            valid.append((~all_equal_groups(r, n)).tolist())
        if not enough_groups(valid, want, algo.min_valid_frac) and algo.resample_exhausted != "pad":
            found = sum(sum(v) for v in valid)
            raise UserError(
                f"dynamic sampling found {found} groups with unequal rewards in {len(outs)} generation batches, "
                f"{algo.min_valid_frac:g} x {want} needed (the data may be too hard or too easy for the model)",
                where="algorithm.max_resample_rounds",
                fix="raise algorithm.max_resample_rounds, use other data, or set algorithm.resample_exhausted=pad",
            )
        chosen, padded = choose_groups(valid, want)
        offsets = [sum(len(r) for r in rews[:k]) for k in range(len(rews))]
        rows = [offsets[rnd] + g * n + j for rnd, g in chosen for j in range(n)]
        merged = concat_rollouts(outs, pad_id=self.processing_class.pad_token_id)
        picked = {k: (v[rows] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in merged.items()}
        return picked, torch.cat(rews)[rows], gen_time, generated, padded

    # ------------------------------------------------------------------ checkpoints (dynamic sampling)

    def _save_checkpoint(self, model, trial):  # type: ignore[override]
        if self._rb_stream is not None and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            from rlbench_cli.records import atomic_write_json

            # Written before TRL's files (trainer_state.json last marks a checkpoint complete).
            out = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / STREAM_STATE, self._rb_stream.state_dict())
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):  # type: ignore[override]
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self.rb.algorithm.dynamic_sampling:
            import json

            path = Path(checkpoint) / STREAM_STATE
            if not path.is_file():
                raise UserError("checkpoint has no dynamic-sampling prompt stream state", where=str(checkpoint),
                                fix="resume from a checkpoint written by this version, or use --overwrite")
            self._rb_stream_state = json.loads(path.read_text(encoding="utf-8"))
            if self._rb_stream is not None:
                self._rb_stream.load_state_dict(self._rb_stream_state)

    def _prepare_inputs(self, generation_batch):  # type: ignore[override]
        """GVPO needs each group whole in a micro-batch: shuffle whole groups, not rows (TRL's shuffle_sequence_dict),
        then split as TRL does. Every other loss takes TRL's path unchanged."""
        if self.rb.algorithm.policy_loss != "gvpo" or not self.model.training:
            return super()._prepare_inputs(generation_batch)
        from trl.trainer.utils import split_tensor_dict

        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = shuffle_groups(self._generate_and_score_completions(generation_batch), self.num_generations)
            self._buffered_inputs = split_tensor_dict(batch, self.args.steps_per_generation)
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    # ------------------------------------------------------------------ loss side

    def _compute_loss(self, model, inputs):  # type: ignore[override]
        algo = self.rb.algorithm
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True
        )
        keep = inputs.get("rb_keep")
        mask = completion_mask if keep is None else completion_mask * keep.unsqueeze(1)
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps

        per_token, stats = self._policy_loss(logps, old_logps, entropies, inputs["advantages"], mask)
        # vLLM sampled the rollout and the correction is on: TRL put its capped ratio exp(trainer - vLLM log-probs)
        # of the sampled tokens here, (B, 1) or (B, T). It weights the policy term only, as in TRL's own loss.
        vllm_is = inputs.get("importance_sampling_ratio")
        if vllm_is is not None:
            per_token = per_token * vllm_is
        ref_logps = inputs.get("ref_per_token_logps")
        kl_tokens = None
        if ref_logps is not None:
            kl_tokens = kl_penalty(logps, ref_logps, kind=algo.kl_type or "low_var_kl")
            if algo.kl_coef:
                per_token = per_token + algo.kl_coef * kl_tokens

        mode = "train" if self.model.training else "eval"
        accum = self.current_gradient_accumulation_steps if mode == "train" else 1
        if algo.loss_agg == "seq_sum_token_mean":  # GVPO: sum of the sequence losses / accumulation steps
            loss = aggregate_loss(per_token, mask, "seq_mean_token_mean", normalizer=1.0) / accum
        elif algo.loss_agg == "token_mean":
            # Token mean over the optimizer step's mini-batch: TRL's num_items_in_batch counts the kept tokens of
            # the whole generation batch (all processes); scale it to one process's mini-batch (as TRL's 'dapo').
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * accum / self.args.steps_per_generation
            loss = aggregate_loss(per_token, mask, "token_mean", normalizer=normalizer)
        else:
            loss = aggregate_loss(per_token, mask, algo.loss_agg or "seq_mean_token_mean",
                                  max_len=self.max_completion_length) / accum
        if algo.entropy_coef:
            loss = loss - algo.entropy_coef * masked_mean(entropies, completion_mask) / accum

        metrics = self._metrics[mode]
        with torch.no_grad():
            metrics["rb/entropy"].append(self._global_mean(entropies, completion_mask))
            if kl_tokens is not None:
                metrics["rb/kl"].append(self._global_mean(kl_tokens.detach(), completion_mask))
            metrics["rb/clip_frac"].append(float(self.accelerator.gather(stats["clip_frac"].reshape(1)).mean()))
        return loss

    def _policy_loss(self, logps, old_logps, entropies, advantages, mask):
        """The recipe's policy loss (algorithms.policy_losses.POLICY_LOSSES; em_ft: the entropy itself)."""
        algo = self.rb.algorithm
        name = algo.policy_loss or "ppo"
        if name == "em_ft":
            return em_ft_loss(entropies, mask), {"clip_frac": torch.zeros((), device=logps.device)}

        def pick(value, default):  # noqa: ANN001, ANN202
            return default if value is None else value

        return POLICY_LOSSES[name](
            logps, old_logps, advantages, mask, ratio_level=algo.ratio_level or "token",
            clip_low=pick(algo.clip_low, 0.2), clip_high=pick(algo.clip_high, 0.2), dual_clip_c=algo.dual_clip_c,
            tau_pos=pick(algo.sapo_tau_pos, 1.0), tau_neg=pick(algo.sapo_tau_neg, 1.05),
            cov_ratio=pick(algo.cov_ratio, 2e-4), cov_kl_coef=pick(algo.cov_kl_coef, 1.0),
            cov_lb=pick(algo.cov_lb, 1.0), cov_ub=pick(algo.cov_ub, 5.0),
            group_size=self.num_generations, gvpo_beta=pick(algo.gvpo_beta, 0.1),
        )

    def _global_mean(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum().float()]), reduction="sum")
        return float(totals[0] / totals[1].clamp(min=1.0))


def grpo_config(recipe: Recipe, run: RunContext, max_steps: int, num_processes: int = 1,
                config_cls: type[GRPOConfig] = GRPOConfig) -> GRPOConfig:
    """Translate a recipe into TRL's GRPOConfig (batch arithmetic from batching.plan); `config_cls` lets PPO pass its
    GRPOConfig subclass that accepts num_generations == 1."""
    p = plan(recipe, num_processes)
    algo, ro = recipe.algorithm, recipe.rollout
    needs_ref = bool(algo.kl_coef) or algo.log_kl or bool(algo.kl_in_reward_coef) or bool(algo.ref_reset_every)
    return config_cls(
        **trainer_args(recipe, run, max_steps),
        save_only_model=False,
        adam_beta1=0.9,
        adam_beta2=0.999,
        gradient_accumulation_steps=p["gradient_accumulation_steps"],
        steps_per_generation=p["trl_steps_per_generation"],
        num_generations=ro.n,
        num_iterations=recipe.optim.ppo_epochs,
        temperature=ro.temperature,
        top_p=ro.top_p,
        top_k=0,
        max_completion_length=ro.max_new_tokens,
        mask_truncated_completions=bool(algo.overlong_filter),
        beta=1.0 if needs_ref else 0.0,  # a switch only: rlbench applies algo.kl_coef in its own loss
        epsilon=algo.clip_low if algo.clip_low is not None else 0.2,
        epsilon_high=algo.clip_high,
        importance_sampling_level="sequence" if algo.ratio_level == "sequence" else "token",
        loss_type="dapo",  # unused: _compute_loss is rlbench's
        scale_rewards="group",  # unused: advantages are rlbench's
        use_vllm=ro.use_vllm,
        vllm_mode=ro.vllm_mode,
        vllm_gpu_memory_utilization=ro.vllm_gpu_memory_utilization,
        vllm_importance_sampling_correction=ro.vllm_importance_sampling_correction,
        vllm_importance_sampling_mode=ro.vllm_importance_sampling_mode,
        vllm_importance_sampling_clip_max=ro.vllm_importance_sampling_cap,
        shuffle_dataset=recipe.data.shuffle,
        remove_unused_columns=False,
    )


def train_rl(recipe: Recipe, run: RunContext, console: Any, *, rows: list[dict[str, str]], model_path: str,
             resume: bool = False) -> Path:
    from rlbench_cli.training.data import build_prompt_dataset
    from rlbench_cli.training.rewards import make_reward_fn

    model, tokenizer = load_policy(model_path, recipe)
    dataset = build_prompt_dataset(rows, recipe, tokenizer)
    num_processes = world_size()
    max_steps = plan(recipe, num_processes, n_prompts=len(rows))["max_steps"]
    reward_fn = make_reward_fn(recipe, console)
    try:
        from rlbench_cli.training.launch import vllm_seed_override

        # The Trainer seeds at construction; nothing random may run between here and train().
        colocated = recipe.rollout.use_vllm and recipe.rollout.vllm_mode == "colocate"
        with vllm_seed_override(recipe.seed, enabled=colocated):  # TRL would seed vLLM with the process index
            trainer = RLBenchGRPOTrainer(
                model=model, args=grpo_config(recipe, run, max_steps, num_processes), train_dataset=dataset,
                processing_class=tokenizer, reward_funcs=[reward_fn], peft_config=peft_config(recipe),
                rb_recipe=recipe,
            )
        if recipe.algorithm.ref_reset_every:
            from rlbench_cli.training.ref_reset import ReferenceResetCallback

            if trainer.ref_model is None:
                raise UserError("the reference reset needs a separate reference model",
                                where="algorithm.ref_reset_every")
            trainer.add_callback(ReferenceResetCallback(trainer, recipe.algorithm.ref_reset_every,
                                                        recipe.algorithm.ref_reset_optimizer))
        fit(trainer, run, console, max_steps, resume=resume, extra_keys=wave2_metric_keys(recipe))
        return save_final_model(trainer, tokenizer, run, model_path)
    finally:
        if hasattr(reward_fn, "close"):
            reward_fn.close()
