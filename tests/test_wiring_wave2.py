"""The wave-2 methods wired into the real RLBenchGRPOTrainer: a fixed rollout with stubbed rewards (TTRL: stubbed
completion texts) through TRL's generation and reward call and rlbench's rollout step and loss.

Advantages and keep mask: for every wave-2 algorithm, equal to the pure functions of algorithms/ applied to the
stubbed rewards and the rollout's own lengths, log-probs and entropies (ReMax: the stub's second call is the greedy
baseline; REINFORCE++: k1 to the reference as a token reward; GFPO: shortest 2 of 4; TTRL: majority vote, first
half trained; EM-RL: minus the mean token entropy; RiskPO: one bundle of two prompts).
Loss: the old log-probs are shifted by a fixed pattern (ratios 0.61 .. 1.65, as TRL's off-policy buffer gives),
and the sum of the accumulation micro-batch losses equals the formula written out here for each wave-2 policy
loss (and for the KL / entropy terms the wave-2 defaults switch on: k2 for REINFORCE++-baseline, the entropy bonus
of EM-RL, the dual clip of GFPO).
One trainer for the whole module (the wiring reads trainer.rb at call time); 6 generated tokens; no optimizer step.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from test_rl_wiring import N, StubReward, _k3, _logps, _micro_losses, _perturb, _recipe, _rollout, _trainer

from rlbench_cli.algorithms.advantages import compute_advantages
from rlbench_cli.algorithms.baselines import (
    gfpo_keep,
    kl_shaped_rewards,
    lite_ppo_advantage,
    opo_advantage,
    reinforce_pp_advantage,
    remax_advantage,
    riskpo_advantage,
)

REWARDS = [1.0, -1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0]  # two mixed groups: every filter and baseline has work
GREEDY = [1.0, -0.5]  # ReMax: the reward of each prompt's greedy decode (the stub's second call)


@pytest.fixture(scope="module")
def shared(tiny_random_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("wiring2")
    reward = StubReward(REWARDS)
    trainer = _trainer(_recipe("grpo", tiny_random_model_dir, out), tiny_random_model_dir, out, reward)
    _perturb(trainer.model)  # policy != reference: k1 rewards and KL terms are not 0
    return trainer, reward, out


def _use(shared, tiny_random_model_dir, algorithm: str, *batches, **algo):
    trainer, reward, out = shared
    trainer.rb = _recipe(algorithm, tiny_random_model_dir, out, algo={"dynamic_sampling": False, **algo})
    reward.batches, reward.calls = list(batches or [REWARDS]), 0
    return trainer, reward


def _entropies(trainer, out: dict) -> torch.Tensor:
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    att = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        _, ents, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, att, out["completion_ids"].size(1),
                                                                compute_entropy=True)
    return ents


R = torch.tensor(REWARDS, dtype=torch.float64)
ALL = [True] * 8


def _grouped(x: torch.Tensor) -> torch.Tensor:
    return x.view(-1, N)


def _grpo(r: torch.Tensor, estimator: str = "grpo", std_eps: float = 1e-6) -> torch.Tensor:
    return compute_advantages(r, r == 1.0, N, estimator, std_eps=std_eps).advantages


# Each: (trainer, rollout dict) -> (advantages the pure functions give, keep mask written out by hand).
def _want_lite_ppo(t, out):
    return lite_ppo_advantage(_grouped(R)).reshape(-1), ALL


def _want_opo(t, out):
    return opo_advantage(_grouped(R), _grouped(out["completion_mask"].sum(1).double())).reshape(-1), ALL


def _want_riskpo(t, out):
    adv = riskpo_advantage(_grouped(R), bundle=5, alpha=0.2, beta=0.9, mix_weight=1.5, natural_baseline=True,
                           credit="std")
    return adv.reshape(-1), ALL


def _want_remax(t, out):
    mask = out["completion_mask"]
    shaped = kl_shaped_rewards(R, _logps(t, out), out["ref_per_token_logps"], mask, 0.001)  # kl_in_reward 0.001
    assert not torch.allclose(shaped, R), "k1 is 0: the KL-in-reward check would be vacuous"
    return remax_advantage(_grouped(shaped), torch.tensor(GREEDY)).reshape(-1), ALL


def _want_reinforce_pp(t, out):
    kl = _logps(t, out) - out["ref_per_token_logps"]
    return reinforce_pp_advantage(R, out["completion_mask"], N, baseline=False, token_kl=kl, kl_coef=0.01), ALL


def _want_reinforce_pp_baseline(t, out):
    return reinforce_pp_advantage(R, out["completion_mask"], N, baseline=True), ALL


def _want_gfpo(t, out):
    rows = gfpo_keep(_grouped(R), _grouped(out["completion_mask"].sum(1).double()), 2, "length").reshape(-1)
    assert int(rows.sum()) == 4
    # GRPO over the 2 kept of each group; the filtered 2 stay in the loss with advantage 0 (gfpo_filtered zero)
    return _grpo(torch.where(rows, R, torch.full_like(R, float("nan")))), ALL


def _want_em_rl(t, out):
    m = out["completion_mask"].double()
    r = -(_entropies(t, out).double() * m).sum(1) / m.sum(1)  # minus the mean token entropy
    return compute_advantages(r, r == 1.0, N, "rloo").advantages, ALL


def _want_em_ft(t, out):
    return R.float(), ALL  # estimator reinforce: A = r (EM-FT's loss does not read it)


WANT = {
    "lite_ppo": _want_lite_ppo, "opo": _want_opo, "riskpo": _want_riskpo, "remax": _want_remax,
    "reinforce_pp": _want_reinforce_pp, "reinforce_pp_baseline": _want_reinforce_pp_baseline, "gfpo": _want_gfpo,
    "em_rl": _want_em_rl, "em_ft": _want_em_ft,
    # wave-2 policy losses on first-wave estimators
    "cispo": lambda t, out: (_grpo(R), ALL), "sapo": lambda t, out: (_grpo(R), ALL),
    "gmpo": lambda t, out: (_grpo(R, std_eps=1e-8), ALL), "kl_cov": lambda t, out: (_grpo(R), ALL),
    "clip_cov": lambda t, out: (_grpo(R), ALL), "gvpo": lambda t, out: (_grpo(R, "dr_grpo"), ALL),
}


@pytest.mark.parametrize("algorithm", sorted(WANT))
def test_wave2_advantages_and_keep_equal_the_pure_functions(shared, tiny_random_model_dir, algorithm):
    batches = [REWARDS, GREEDY] if algorithm == "remax" else [REWARDS]
    trainer, reward = _use(shared, tiny_random_model_dir, algorithm, *batches)
    got = _rollout(trainer)
    want, keep = WANT[algorithm](trainer, got)
    assert float(want.abs().sum()) > 0, "all-zero advantages would test nothing"
    torch.testing.assert_close(got["advantages"].double(), want.double(), rtol=1e-5, atol=1e-6)
    assert got["rb_keep"].bool().tolist() == keep
    assert reward.calls == len(batches)
    if algorithm == "remax":
        assert trainer._rb_rollout["greedy_reward_mean"] == pytest.approx(0.25)
    if algorithm == "gfpo":
        assert trainer._rb_rollout["gfpo_kept_frac"] == 0.5


def test_ttrl_rewards_agreement_with_the_majority_on_the_first_half(shared, tiny_random_model_dir, monkeypatch):
    import rlbench_cli.training.rollout_signals as signals

    texts = [f"so \\boxed{{{a}}}" for a in (4, 5, 4, 4, 8, 7, 7, 8)]  # majority 4 (3 of 4); tie 8/7: first seen
    monkeypatch.setattr(signals, "_texts", lambda trainer, out: list(texts))
    trainer, _ = _use(shared, tiny_random_model_dir, "ttrl")
    got = _rollout(trainer)
    # by hand: agreement [1, -1, 1, 1, 1, -1, -1, 1]; only the first 2 of each group train (vote_train_n = n/2)
    nan = float("nan")
    r = torch.tensor([1.0, -1.0, nan, nan, 1.0, -1.0, nan, nan], dtype=torch.float64)
    torch.testing.assert_close(got["advantages"].double(), _grpo(r).double())
    assert got["advantages"].tolist()[:2] == pytest.approx([0.7071063, -0.7071063], rel=1e-5)
    assert got["rb_keep"].bool().tolist() == [True, True, False, False] * 2
    assert trainer._rb_rollout["vote_share"] == pytest.approx((0.75 * 4 + 0.5 * 4) / 8)


# ---------------------------------------------------------------- loss


def _shift(batch: dict) -> torch.Tensor:
    """Old log-probs = current minus a fixed pattern of log-ratios in {-0.5, -0.25, 0, 0.25, 0.5}."""
    b, t = batch["completion_ids"].shape
    pattern = 0.25 * ((torch.arange(b).unsqueeze(1) + torch.arange(t).unsqueeze(0)) % 5 - 2).to(torch.float32)
    return pattern


def _ppo(a, ratio, low=0.2, high=0.2, dual=None):
    loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - low, 1 + high))
    return torch.where(a < 0, torch.minimum(loss, -a * dual), loss) if dual else loss


def _cov(a, lp, m):
    """Per-token covariance of advantage and log-prob over the valid tokens (means over them)."""
    mean_a, mean_lp = (a * m).sum() / m.sum(), (lp * m).sum() / m.sum()
    return torch.where(m.bool(), (a - mean_a) * (lp - mean_lp), torch.full_like(lp, -float("inf")))


def _per_token(algorithm: str, c: dict, lp: torch.Tensor, ents: torch.Tensor) -> list[torch.Tensor]:
    """The per-token loss of one micro-batch, by hand; a list when the loss is random (Clip-Cov: one per choice)."""
    a = c["advantages"].double()
    a = a.unsqueeze(1).expand_as(lp) if a.ndim == 1 else a
    m = (c["completion_mask"] * c["rb_keep"].unsqueeze(1)).double()
    d = lp - c["old_per_token_logps"].double()
    ratio = d.exp()
    if algorithm == "cispo":  # -sg(clip(rho, 0, 1.2)) A log pi
        return [-ratio.clamp(max=1.2) * a * lp]
    if algorithm == "sapo":  # -A * 4/tau sigmoid(tau (rho - 1)), tau 1.0 for A > 0, 1.05 else
        tau = torch.where(a > 0, 1.0, 1.05).double()
        return [-a * 4 / tau * torch.sigmoid(tau * (ratio - 1))]
    if algorithm == "gmpo":  # -A exp(mean_t of d clipped to [-0.4, 0.4] on the side A's sign makes count)
        dc = torch.where(a >= 0, torch.minimum(d, d.clamp(-0.4, 0.4)), torch.maximum(d, d.clamp(-0.4, 0.4)))
        seq = ((dc * m).sum(1) / m.sum(1)).exp()
        return [(-a[:, 0] * seq).unsqueeze(1).expand_as(lp)]
    if algorithm == "kl_cov":  # -A rho, plus |log rho| on the one (0.2% of < 500 tokens) top-covariance token
        top = torch.zeros_like(m, dtype=torch.bool)
        top.view(-1)[_cov(a, lp, m).reshape(-1).argmax()] = True
        return [-a * ratio + torch.where(top, d.abs(), torch.zeros_like(d))]
    if algorithm == "clip_cov":  # clip 1/1 never binds here; one random token with cov in (0, 5) detached
        base = -a * ratio
        cov = _cov(a, lp, m)
        cands = ((cov > 0) & (cov < 5) & m.bool()).reshape(-1).nonzero().flatten().tolist()
        options = []
        for k in cands or [None]:
            keep = torch.ones_like(m)
            if k is not None:
                keep.view(-1)[k] = 0.0
            options.append(base * keep)
        return options
    if algorithm == "gvpo":  # 0.5 [(s - group mean s) - A]^2 / (n - 1), s = 0.1 sum_t log rho
        s = 0.1 * (d * m).sum(1)
        s_bar = s.view(-1, N).mean(1, keepdim=True).expand(-1, N).reshape(-1)
        return [(0.5 * ((s - s_bar) - a[:, 0]) ** 2 / (N - 1)).unsqueeze(1).expand_as(lp)]
    if algorithm == "em_ft":  # the token entropy itself
        return [ents.double()]
    ref = c["ref_per_token_logps"].double()
    if algorithm == "em_rl":  # PPO clip + 0.001 low_var_kl (the entropy bonus is added per micro-batch)
        return [_ppo(a, ratio) + 0.001 * _k3(lp, ref)]
    if algorithm == "reinforce_pp_baseline":  # PPO clip + 1e-4 k2
        return [_ppo(a, ratio) + 1e-4 * 0.5 * (lp - ref) ** 2]
    if algorithm == "gfpo":  # PPO clip with dual clip 3 + 0.001 low_var_kl
        return [_ppo(a, ratio, dual=3.0) + 0.001 * _k3(lp, ref)]
    raise AssertionError(algorithm)


# How each loss is aggregated (by hand from the papers; the recipe must resolve to it).
# The tiny random model's log-probs vary too little for a covariance above Clip-Cov's default bound 1; 0 lets the
# detach act (and checks that cov_lb reaches the loss).
OVERRIDES = {"clip_cov": {"cov_lb": 0.0}}
AGG = {"cispo": "token_mean", "kl_cov": "token_mean", "clip_cov": "token_mean", "em_rl": "token_mean",
       "reinforce_pp_baseline": "token_mean", "gfpo": "token_mean", "sapo": "seq_mean_token_mean",
       "gmpo": "seq_mean_token_mean", "em_ft": "seq_mean_token_mean", "gvpo": "seq_sum_token_mean"}


@pytest.mark.parametrize("algorithm", sorted(AGG))
def test_wave2_loss_equals_the_hand_formula(shared, tiny_random_model_dir, algorithm):
    trainer, _ = _use(shared, tiny_random_model_dir, algorithm, **OVERRIDES.get(algorithm, {}))
    assert trainer.rb.algorithm.loss_agg == AGG[algorithm]
    batch = _rollout(trainer)
    batch["old_per_token_logps"] = _logps(trainer, batch) - _shift(batch)
    accum = trainer.args.gradient_accumulation_steps
    assert accum == 2
    total, chunks = _micro_losses(trainer, batch)
    kept_tokens = float((batch["completion_mask"] * batch["rb_keep"].unsqueeze(1)).sum())
    per_chunk = []  # each micro-batch's possible contributions
    for c in chunks:
        lp = _logps(trainer, c).double()
        ents = _entropies(trainer, c)
        m = (c["completion_mask"] * c["rb_keep"].unsqueeze(1)).double()
        values = []
        for per_token in _per_token(algorithm, c, lp, ents):
            seq = (per_token * m).sum(1) / m.sum(1).clamp(min=1)
            if AGG[algorithm] == "token_mean":  # one token mean over the optimizer step's kept tokens
                v = float((per_token * m).sum()) / kept_tokens
            elif AGG[algorithm] == "seq_mean_token_mean":  # mean over kept sequences, averaged over micro-batches
                v = float(seq.sum() / (m.sum(1) > 0).sum()) / accum
            else:  # GVPO: the sum of the sequence losses, averaged over micro-batches
                v = float(seq.sum()) / accum
            if algorithm == "em_rl":  # entropy bonus 0.001 x token-mean entropy of the micro-batch
                cm = c["completion_mask"].double()
                v -= 0.001 * float((ents.double() * cm).sum() / cm.sum()) / accum
            values.append(v)
        per_chunk.append(values)
    options = [sum(p) for p in itertools.product(*per_chunk)]
    assert any(total == pytest.approx(o, rel=1e-4, abs=1e-6) for o in options), (total, options)
    if algorithm == "clip_cov":
        assert len(options) > 1, "no token with covariance in (0, 5): Clip-Cov's detach went untested"


# ---------------------------------------------------------------- GVPO's whole-group shuffle


def test_gvpo_micro_batches_are_whole_groups_in_shuffled_order(shared, tiny_random_model_dir, monkeypatch):
    """_prepare_inputs: GVPO's loss centres each group's log-ratio sum on the group mean, so a micro-batch must hold
    whole groups: the rollout is shuffled by group (shuffle_groups, torch's generator), not by row (TRL), split into
    steps_per_generation micro-batches and generated again only every steps_per_generation x num_iterations steps
    (num_iterations 2 here).
    Every other loss, and GVPO outside training, take TRL's path. Seeds 1 and 0 make randperm(2) swap the two groups
    and keep them: a skipped shuffle fails the first, a row shuffle breaks the groups."""
    from trl import GRPOTrainer

    trainer, reward = _use(shared, tiny_random_model_dir, "gvpo")
    monkeypatch.setattr(trainer, "num_iterations", 2)  # ppo_epochs 2: one rollout serves 2 x 2 micro-batch steps
    assert trainer.args.steps_per_generation == 2 and trainer.model.training
    seeds = [1, 0]
    assert [torch.randperm(2, generator=torch.Generator().manual_seed(s)).tolist() for s in seeds] == [[1, 0], [0, 1]]
    rollouts: list[dict] = []
    generate = type(trainer)._generate_and_score_completions

    def recorded(self, batch):  # noqa: ANN001, ANN202
        out = generate(self, batch)
        rollouts.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in out.items()})
        torch.manual_seed(seeds[len(rollouts) - 1])  # fixes the group order shuffle_groups draws next
        return out

    monkeypatch.setattr(type(trainer), "_generate_and_score_completions", recorded)
    monkeypatch.setattr(trainer, "_buffered_inputs", None)
    batch = [trainer.train_dataset[i // N] for i in range(2 * N)]
    micro = []
    for step in range(5):
        monkeypatch.setattr(trainer, "_step", step)
        micro.append(trainer._prepare_inputs(batch))
        assert len(rollouts) == (1 if step < 4 else 2), "generated at the wrong step (buffer not reused / reused)"
    # Dr. GRPO advantages r - group mean, by hand: [1, -1, -1, 1] -> itself; [1, -1, 1, 1] -> [.5, -1.5, .5, .5]
    group = {0: [1.0, -1.0, -1.0, 1.0], 1: [0.5, -1.5, 0.5, 0.5]}
    order = [(0, 1), (0, 0), (0, 1), (0, 0), (1, 0)]  # (rollout, group) of steps 0 .. 4
    for got, (k, g) in zip(micro, order, strict=True):
        rollout = rollouts[k]
        assert got["advantages"].tolist() == group[g]
        rows = slice(g * N, (g + 1) * N)
        for key, value in rollout.items():
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and len(value) == 2 * N:
                assert torch.equal(got[key], value[rows]), key  # every column moved with its group
            else:
                assert got[key] == value if not isinstance(value, torch.Tensor) else torch.equal(got[key], value)
    assert reward.calls == 2

    monkeypatch.setattr(GRPOTrainer, "_prepare_inputs", lambda self, batch: ("trl's path", batch))
    trainer.model.eval()
    try:
        assert trainer._prepare_inputs(batch) == ("trl's path", batch)  # evaluation: no buffering, no group shuffle
    finally:
        trainer.model.train()
    trainer, _ = _use(shared, tiny_random_model_dir, "grpo")
    assert trainer._prepare_inputs(batch) == ("trl's path", batch)
