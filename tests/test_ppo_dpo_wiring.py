"""The PPO and iterative-DPO runners wire the pure functions in: stubbed rewards through the real runners.

PPO: one rollout through PPOTrainer; with gamma = lam = 1 GAE telescopes, so before whitening A_t = r - V_t and the
returns equal the sequence reward on every kept token; the advantages are those, whitened over the kept tokens
(unbiased variance); a row without a reward leaves the loss. DPO: sample_and_pair pairs by the grader's verdict
(reward == reward.correct, here 2 with incorrect 0.5, so "r > 0" would be wrong) and logs hand-computed stats.
"""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import tiny_recipe
from test_rl_wiring import StubReward

from rlbench_cli.config import recipe_from_dict

ROWS = [{"problem": f"Compute {i}+{i}.", "answer": str(2 * i), "solution": "", "problem_id": str(i)}
        for i in range(8)]


def test_ppo_advantages_and_returns_are_gae_of_the_critic(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    from rlbench_cli.training.context import RunContext
    from rlbench_cli.training.data import build_prompt_dataset
    from rlbench_cli.training.policy import load_policy
    from rlbench_cli.training.ppo import PPOTrainer, load_critic, ppo_config

    data = tiny_recipe("ppo", tiny_random_model_dir, tmp_path)
    data["reward"] = {}
    recipe = recipe_from_dict(data, "test")
    model, tok = load_policy(str(tiny_random_model_dir), recipe)
    critic = load_critic(str(tiny_random_model_dir), recipe)
    rewards = [1.0, -1.0, None, 1.0]
    trainer = PPOTrainer(model=model, args=ppo_config(recipe, RunContext(recipe, tmp_path / "run", "pytest"), 2),
                         train_dataset=build_prompt_dataset(ROWS, recipe, tok), processing_class=tok,
                         reward_funcs=[StubReward(rewards)], rb_recipe=recipe, critic=critic)
    trainer.model.train()
    out = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in range(4)])

    assert out["rb_keep"].tolist() == [1.0, 1.0, 0.0, 1.0]  # the reward-less row leaves the loss
    mask = out["completion_mask"] * out["rb_keep"].unsqueeze(1)
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    t = out["completion_ids"].size(1)
    with torch.no_grad():
        values = critic(input_ids=ids, attention_mask=att)[:, -t - 1:-1] * mask
    r = torch.tensor([0.0 if x is None else x for x in rewards]).unsqueeze(1)
    torch.testing.assert_close(out["old_values"], values, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["returns"], r * mask, rtol=1e-5, atol=1e-6)
    raw = (r - values) * mask
    kept = mask.bool()
    mean, var = raw[kept].mean(), raw[kept].var(unbiased=True)
    torch.testing.assert_close(out["advantages"], (raw - mean) / torch.sqrt(var + 1e-8) * mask,
                               rtol=1e-4, atol=1e-5)
    assert float(mask.sum()) > 2, "too few kept tokens for the whitening to mean anything"


def test_dpo_pairs_come_from_the_verdicts(tiny_random_model_dir: Path, tmp_path: Path) -> None:
    from rlbench_cli.training.dpo import sample_and_pair
    from rlbench_cli.training.policy import load_policy

    data = tiny_recipe("dpo", tiny_random_model_dir, tmp_path)
    data["algorithm"]["pair_strategy"] = "max_min"
    data["reward"] = {"correct": 2.0, "incorrect": 0.5}
    recipe = recipe_from_dict(data, "test")
    model, tok = load_policy(str(tiny_random_model_dir), recipe)
    n = recipe.rollout.n
    assert n == 4
    # group 0: mixed (right at 1 and 3); group 1: all right; group 2: all wrong; group 3: right at 2
    rewards = [0.5, 2.0, 0.5, 2.0, 2.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 2.0, 0.5]
    rows = ROWS[:4]
    prompts = [r["problem"] for r in rows]
    got = sample_and_pair(model, tok, recipe, StubReward(rewards), rows, prompts, iteration=0)
    assert [(p["prompt"]) for p in got.pairs] == [prompts[0], prompts[3]]
    assert got.n_responses == 16
    stats = got.stats
    assert stats["reward_mean"] == sum(rewards) / 16
    assert stats["accuracy"] == 7 / 16
    assert (stats["frac_all_correct"], stats["frac_all_wrong"], stats["kept_frac"]) == (1 / 4, 1 / 4, 2 / 4)
    # max_min: first correct vs first wrong of each group, texts as sampled (seeded per problem and sample)
    from rlbench_cli.evaluation.generate import generate_with_model, sample_seed

    seeds = [sample_seed(recipe.seed, "dpo", 0, r["problem_id"], j) for r in rows for j in range(n)]
    texts = [c.text for c in generate_with_model(model, tok, [p for p in prompts for _ in range(n)], seeds,
                                                 temperature=1.0, top_p=1.0,
                                                 max_new_tokens=recipe.rollout.max_new_tokens, batch_size=16)]
    assert (got.pairs[0]["chosen"], got.pairs[0]["rejected"]) == (texts[1], texts[0])
    assert (got.pairs[1]["chosen"], got.pairs[1]["rejected"]) == (texts[14], texts[12])
