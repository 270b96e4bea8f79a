"""PPO with a learned critic and GAE, on the same TRL GRPOTrainer path as the other RL algorithms.

TRL 1.16 ships no PPO (docs/reference.md §4), so `PPOTrainer` extends rlbench's `RLBenchGRPOTrainer`: TRL still
does generation, reward calls (the grader), batching, off-policy buffering, logging and checkpoints. On top:
- a critic (`ValueModel`: the initial policy's backbone plus a scalar head) with its own AdamW optimizer
  (`algorithm.critic_lr`, the recipe's weight decay and grad clipping), prepared with the trainer's
  accelerator and updated on the same micro-/mini-batches as the policy (gradient accumulation included);
- after each rollout: old values of the completion tokens, the sequence reward at the last valid token, GAE
  advantages and returns (`losses.gae`, `algorithm.gamma` / `algorithm.lam`, advantages whitened over the
  whole batch as verl) put into the batch as per-token (B, T) tensors;
- the policy loss is the parent's (PPO clip with the recipe's clip / dual clip; KL only logged unless
  kl_coef > 0); the critic's clipped value loss (`losses.value_loss`, `algorithm.value_clip`) is
  backpropagated per micro-batch and stepped when the policy steps; the first
  `algorithm.critic_warmup_steps` optimizer steps train the critic only;
- critic weights and optimizer state are saved in every TRL checkpoint and restored on `--resume`.
n = 1: TRL's GRPOConfig rejects num_generations < 2 (it only guards group-relative advantages); `PPOConfig`
validates with a stand-in group size and restores 1, which TRL's sampler and reward code support.
Formulas follow verl as forked by RLHFlow/Minimal-RL (ray_trainer critic warmup, dp_critic, core_algos).

Run: `rlbench train recipes/tiny/ppo.yaml`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from trl import GRPOConfig

from rlbench_cli.algorithms.losses import gae, value_loss
from rlbench_cli.config import Recipe
from rlbench_cli.errors import UserError
from rlbench_cli.training.batching import plan
from rlbench_cli.training.checkpoints import fit
from rlbench_cli.training.context import RunContext, world_size
from rlbench_cli.training.policy import load_policy, peft_config, save_final_model, torch_dtype
from rlbench_cli.training.rl import RLBenchGRPOTrainer, grpo_config

log = logging.getLogger("rlbench")

CRITIC_WEIGHTS = "critic.pt"
CRITIC_OPTIMIZER = "critic_optimizer.pt"
# Extra metrics.jsonl keys PPO adds to the common schema (TRL log key -> our key).
PPO_EXTRA_KEYS = {"value_loss": "rb/value_loss", "value_clip_frac": "rb/value_clip_frac",
                  "value_mean": "rb/value_mean", "critic_grad_norm": "rb/critic_grad_norm"}


# ------------------------------------------------------------------------------------------ pure math


def token_level_rewards(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) sequence rewards -> (B, T): the reward at each row's last masked token, 0 elsewhere (verl's
    token_level_scores). Rows with no masked token or a NaN reward get all zeros."""
    lengths = mask.sum(dim=1).long()
    out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    rows = torch.arange(mask.shape[0], device=mask.device)
    r = torch.nan_to_num(rewards.to(out.dtype), nan=0.0)
    out[rows, (lengths - 1).clamp(min=0)] = torch.where(lengths > 0, r, torch.zeros_like(r))
    return out


def whiten_global(x: torch.Tensor, mask: torch.Tensor, reduce_sum: Callable[[torch.Tensor], torch.Tensor],
                  eps: float = 1e-8) -> torch.Tensor:
    """`losses.masked_whiten` over the masked entries of every process (`reduce_sum` sums a tensor across
    processes; identity on one process), so the result matches verl's whitening of the whole batch."""
    m = mask.to(x.dtype)
    n_sum = reduce_sum(torch.stack([(x * m).sum(), m.sum()]))
    n = n_sum[1].clamp(min=1.0)
    mean = n_sum[0] / n
    var = reduce_sum(((x - mean) ** 2 * m).sum().reshape(1))[0] / n
    if n_sum[1] > 1:
        var = var * n / (n - 1)  # unbiased, as verl's masked_var
    return (x - mean) * torch.rsqrt(var + eps) * m


# ------------------------------------------------------------------------------------------ critic


class ValueModel(torch.nn.Module):
    """A causal LM backbone (no LM head) with a scalar value head: values (B, L) for every position."""

    def __init__(self, backbone: torch.nn.Module, hidden_size: int, seed: int = 0) -> None:
        super().__init__()
        self.backbone = backbone
        dtype = next(backbone.parameters()).dtype
        self.score = torch.nn.Linear(hidden_size, 1, dtype=dtype)
        # Local generator: building the critic must not move the global RNG (run reproducibility).
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w = torch.randn(self.score.weight.shape, generator=gen) / (hidden_size + 1) ** 0.5
            self.score.weight.copy_(w.to(dtype))
            self.score.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.score(hidden.to(self.score.weight.dtype)).squeeze(-1).float()


def load_critic(model_path: str, recipe: Recipe) -> ValueModel:
    """The critic: the policy's backbone loaded from the same weights (verl initialises it from the actor), a
    full copy even when the policy trains a LoRA adapter."""
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(model_path, dtype=torch_dtype(recipe), revision=recipe.model.revision,
                                         trust_remote_code=recipe.model.trust_remote_code)
    cfg = backbone.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if recipe.model.gradient_checkpointing:
        backbone.gradient_checkpointing_enable()
    return ValueModel(backbone, int(cfg.hidden_size), seed=recipe.seed)


# ------------------------------------------------------------------------------------------ TRL config


@dataclass
class PPOConfig(GRPOConfig):
    """GRPOConfig that accepts num_generations == 1.

    GRPOConfig.__post_init__ rejects fewer than 2 generations because group-relative advantages need a group;
    PPO's baseline is the critic. Validation runs with a stand-in group size (the local generation batch,
    which divides the global one), then 1 is restored; TRL's RepeatSampler and reward code handle groups of 1.
    """

    def __post_init__(self) -> None:
        if self.num_generations != 1:
            super().__post_init__()
            return
        stand_in = self.per_device_train_batch_size * (self.steps_per_generation or 1)
        if stand_in < 2:
            raise UserError("PPO needs at least 2 prompts per rollout batch on each process",
                            where="rollout.prompts_per_batch", fix="raise rollout.prompts_per_batch")
        self.num_generations = stand_in
        super().__post_init__()
        self.num_generations = 1


def ppo_config(recipe: Recipe, run: RunContext, max_steps: int, num_processes: int = 1) -> GRPOConfig:
    """`rl.grpo_config` with PPOConfig (num_generations = 1)."""
    return grpo_config(recipe, run, max_steps, num_processes, config_cls=PPOConfig)


# ------------------------------------------------------------------------------------------ trainer


class PPOTrainer(RLBenchGRPOTrainer):
    """RLBenchGRPOTrainer with a learned critic and GAE advantages (see the module docstring)."""

    def __init__(self, *args: Any, critic: ValueModel, rb_recipe: Recipe, **kwargs: Any) -> None:
        # The parent's per-response advantage only feeds its rollout statistics and row mask here; 'reinforce'
        # rejects no row, so with n = 1 the mask keeps every scorable response (frac_all_correct = accuracy).
        view = rb_recipe.model_copy(deep=True)
        view.algorithm.estimator = "reinforce"
        super().__init__(*args, rb_recipe=view, **kwargs)
        algo = rb_recipe.algorithm
        a = self.args
        optimizer = torch.optim.AdamW(critic.parameters(), lr=algo.critic_lr, weight_decay=a.weight_decay,
                                      betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_epsilon)
        self.critic, self.critic_optimizer = self.accelerator.prepare(critic, optimizer)
        self._rb_micro: dict[str, Any] | None = None

    # ------------------------------------------------------------------ rollout side

    def _critic_values(self, batch: dict[str, Any], chunk: int | None = None) -> torch.Tensor:
        """Values V(s_t) of the states before each completion token, (B, T) float32 (verl dp_critic)."""
        input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        t = batch["completion_ids"].size(1)
        chunk = chunk or input_ids.size(0)
        parts = [self.critic(input_ids=input_ids[i:i + chunk], attention_mask=attention[i:i + chunk])
                 for i in range(0, input_ids.size(0), chunk)]
        return torch.cat(parts)[:, -t - 1:-1]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:  # type: ignore[override]
        out = super()._generate_and_score_completions(inputs)
        algo = self.rb.algorithm
        assert self._rb_rewards is not None
        rewards = torch.nansum(self._rb_rewards, dim=1)
        rewards[torch.isnan(self._rb_rewards).all(dim=1)] = float("nan")
        b = out["completion_mask"].size(0)
        rewards = rewards[self.accelerator.process_index * b:(self.accelerator.process_index + 1) * b]
        mask = out["completion_mask"] * out["rb_keep"].unsqueeze(1)
        mode = "train" if self.model.training else "eval"
        with torch.no_grad(), self.compute_loss_context_manager():
            values = self._critic_values(out, chunk=self.args.per_device_train_batch_size).float()
        values = values * mask
        scores = token_level_rewards(rewards.to(mask.device), mask)
        adv, returns = gae(scores, values, mask, gamma=algo.gamma, lam=algo.lam, whiten=False)

        def reduce_sum(x: torch.Tensor) -> torch.Tensor:
            return self.accelerator.reduce(x, reduction="sum")

        out["advantages"] = whiten_global(adv, mask, reduce_sum)
        out["old_values"] = values
        out["returns"] = returns
        self._metrics[mode]["rb/value_mean"].append(self._global_mean(values, mask))
        return out

    # ------------------------------------------------------------------ loss side

    def _actor_frozen(self) -> bool:
        return self.model.training and self.state.global_step < self.rb.algorithm.critic_warmup_steps

    def _compute_loss(self, model, inputs):  # type: ignore[override]
        training = self.model.training and torch.is_grad_enabled()
        if training:
            self._rb_micro = inputs  # the critic trains on the same micro-batch, in training_step
        if not self._actor_frozen():
            return super()._compute_loss(model, inputs)
        # Critic warmup (verl trainer.critic_warmup): no actor gradient at all, so the optimizer skips every
        # parameter (no weight decay, no Adam state); the policy loss is still computed for the logs.
        with torch.no_grad():
            loss = super()._compute_loss(model, inputs)
        return loss.detach().requires_grad_()

    def training_step(self, model, inputs, num_items_in_batch):  # type: ignore[override]
        loss = super().training_step(model, inputs, num_items_in_batch)
        batch, self._rb_micro = self._rb_micro, None
        if batch is not None:
            self._critic_micro_step(batch)
        # The Trainer sets sync_gradients on the micro-step after which it steps the policy optimizer.
        if self.accelerator.sync_gradients:
            self._critic_optimizer_step()
        return loss

    def _critic_micro_step(self, batch: dict[str, Any]) -> None:
        algo = self.rb.algorithm
        mask = batch["completion_mask"] * batch["rb_keep"].unsqueeze(1)
        with self.compute_loss_context_manager():
            values = self._critic_values(batch)
        loss, clip_frac = value_loss(values, batch["old_values"], batch["returns"], mask,
                                     clip=algo.value_clip)
        # Mean over each micro-batch's tokens, divided by the accumulation steps (verl dp_critic).
        sync = self.accelerator.sync_gradients
        with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.critic):
            self.accelerator.backward(loss / self.current_gradient_accumulation_steps)
        metrics = self._metrics["train"]
        metrics["rb/value_loss"].append(float(self.accelerator.reduce(loss.detach(), reduction="mean")))
        metrics["rb/value_clip_frac"].append(float(self.accelerator.reduce(clip_frac, reduction="mean")))

    def _critic_optimizer_step(self) -> None:
        norm = self.accelerator.clip_grad_norm_(self.critic.parameters(), self.args.max_grad_norm)
        self.critic_optimizer.step()
        self.critic_optimizer.zero_grad(set_to_none=True)
        if norm is not None:
            self._metrics["train"]["rb/critic_grad_norm"].append(float(norm))

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, trial):  # type: ignore[override]
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        # Written before TRL's files, so a checkpoint that has trainer_state.json always has the critic too.
        out = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            self.save_critic(out)
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):  # type: ignore[override]
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.load_critic_state(Path(checkpoint))

    def save_critic(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        critic = self.accelerator.unwrap_model(self.critic)
        torch.save(critic.state_dict(), folder / CRITIC_WEIGHTS)
        torch.save(self.critic_optimizer.state_dict(), folder / CRITIC_OPTIMIZER)

    def load_critic_state(self, folder: Path) -> None:
        weights, opt = folder / CRITIC_WEIGHTS, folder / CRITIC_OPTIMIZER
        if not weights.is_file() or not opt.is_file():
            raise UserError("checkpoint has no PPO critic state", where=str(folder),
                            fix="resume from a checkpoint of a PPO run, or start again with --overwrite")
        device = self.accelerator.device
        critic = self.accelerator.unwrap_model(self.critic)
        critic.load_state_dict(torch.load(weights, map_location=device, weights_only=True))
        self.critic_optimizer.load_state_dict(torch.load(opt, map_location=device, weights_only=True))
        log.info("restored the PPO critic from %s", folder)


# ------------------------------------------------------------------------------------------ runner


def check_ppo_recipe(recipe: Recipe) -> None:
    """Reject settings the PPO runner does not support (raises UserError)."""
    algo = recipe.algorithm
    if recipe.rollout.n != 1:
        raise UserError("PPO uses one response per prompt", where="rollout.n", fix="set rollout.n=1")
    if algo.dynamic_sampling:
        raise UserError("dynamic sampling is a DAPO option, not PPO's", where="algorithm.dynamic_sampling",
                        fix="set algorithm.dynamic_sampling=false")
    if algo.overlong_buffer_len:
        # PPO's token-level rewards come from the verifier's rewards, not the shaped ones the RL runner builds.
        raise UserError("the soft overlong penalty is a DAPO option, not PPO's", where="algorithm.overlong_buffer_len",
                        fix="set algorithm.overlong_buffer_len=0")
    if recipe.model.dtype == "float16":
        # fp16 mixed precision would share one GradScaler between the policy and critic optimizers, which
        # accelerate's unscale / clip / step sequence does not support.
        raise UserError("PPO does not support float16 training", where="model.dtype",
                        fix="use model.dtype=bfloat16 (or float32)")


def build_ppo_trainer(recipe: Recipe, run: RunContext, console: Any, *, rows: list[dict[str, str]],
                      model_path: str) -> tuple[PPOTrainer, Any, Any, int]:
    """(trainer, tokenizer, reward_fn, max_steps) for a PPO recipe; the caller closes reward_fn."""
    from rlbench_cli.training.data import build_prompt_dataset
    from rlbench_cli.training.launch import vllm_seed_override
    from rlbench_cli.training.rewards import make_reward_fn

    check_ppo_recipe(recipe)
    model, tokenizer = load_policy(model_path, recipe)
    critic = load_critic(model_path, recipe)  # before the Trainer seeds, so it shifts no random draw
    dataset = build_prompt_dataset(rows, recipe, tokenizer)
    num_processes = world_size()
    max_steps = plan(recipe, num_processes, n_prompts=len(rows))["max_steps"]
    reward_fn = make_reward_fn(recipe, console)
    try:
        # The Trainer seeds at construction; nothing random may run between here and train().
        colocated = recipe.rollout.use_vllm and recipe.rollout.vllm_mode == "colocate"
        with vllm_seed_override(recipe.seed, enabled=colocated):
            trainer = PPOTrainer(
                model=model, args=ppo_config(recipe, run, max_steps, num_processes), train_dataset=dataset,
                processing_class=tokenizer, reward_funcs=[reward_fn], peft_config=peft_config(recipe),
                rb_recipe=recipe, critic=critic,
            )
    except BaseException:
        if hasattr(reward_fn, "close"):
            reward_fn.close()
        raise
    return trainer, tokenizer, reward_fn, max_steps


def train_ppo(recipe: Recipe, run: RunContext, console: Any, *, rows: list[dict[str, str]], model_path: str,
              resume: bool = False) -> Path:
    """Train PPO into `run` (metrics.jsonl, checkpoints, model/); same contract as `rl.train_rl`."""
    trainer, tokenizer, reward_fn, max_steps = build_ppo_trainer(recipe, run, console, rows=rows,
                                                                 model_path=model_path)
    try:
        fit(trainer, run, console, max_steps, resume=resume, extra_keys=PPO_EXTRA_KEYS)
        return save_final_model(trainer, tokenizer, run, model_path)
    finally:
        if hasattr(reward_fn, "close"):
            reward_fn.close()


__all__ = ["PPOConfig", "PPOTrainer", "ValueModel", "build_ppo_trainer", "load_critic", "ppo_config",
           "token_level_rewards", "train_ppo", "whiten_global"]
