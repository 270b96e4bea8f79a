"""Generation backends: per-sample seeds, batch invariance, exactness of Gumbel-max sampling, vLLM wiring."""

from __future__ import annotations

import sys

import pytest

from rlbench_cli.errors import UserError
from rlbench_cli.evaluation.generate import (
    VLLM_MISSING,
    Completion,
    HFBackend,
    VLLMBackend,
    generate_with_model,
    make_backend,
    sample_seed,
    vllm_sampling_kwargs,
)

PROMPTS = ["Problem: 1+1\nSolution:", "hi", "Problem: what is 12*13?\nSolution:", "x" * 40, "abc", "Q",
           "hello world", "Problem: 7-3\nSolution:"]


@pytest.fixture(scope="module")
def backend(tiny_random_model_dir) -> HFBackend:
    return HFBackend(tiny_random_model_dir, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def sharp_model(backend):
    """The tiny model with logits scaled up, so its next-token distribution is far from uniform."""
    import copy

    import torch

    model = copy.deepcopy(backend.model)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    return model


# ---------------------------------------------------------------- sample_seed

def test_sample_seed_is_stable_and_63_bit() -> None:
    seeds = {sample_seed(0, "math500", pid, j) for pid in ("a", "b", "c") for j in range(16)}
    assert len(seeds) == 48
    assert all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(3, "x", 1) == sample_seed(3, "x", 1)


@pytest.mark.parametrize(("a", "b"), [
    ((0, "bench", "p1", 0), (1, "bench", "p1", 0)),     # base seed
    ((0, "bench", "p1", 0), (0, "bench", "p1", 1)),     # sample index
    ((0, "bench", "p1", 0), (0, "other", "p1", 0)),     # benchmark
    ((0, "bench", "1", 0), (0, "bench", 1, 0)),         # "1" and 1 are different ids
    ((0, "ab", "c"), (0, "a", "bc")),                   # no ambiguity from concatenation
])
def test_sample_seed_distinguishes_parts(a: tuple, b: tuple) -> None:
    assert sample_seed(*a) != sample_seed(*b)


# ---------------------------------------------------------------- HF backend

def _gen(backend: HFBackend, prompts: list[str], seeds: list[int], bs: int, **kw) -> list[Completion]:
    kw = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 12} | kw
    return generate_with_model(backend.model, backend.tokenizer, prompts, seeds, batch_size=bs, **kw)


def test_same_seed_same_text_across_batch_sizes_and_orders(backend: HFBackend) -> None:
    seeds = [sample_seed(7, "t", i) for i in range(len(PROMPTS))]
    ref = _gen(backend, PROMPTS, seeds, 1)
    for bs in (3, 8):
        assert _gen(backend, PROMPTS, seeds, bs) == ref
    perm = [5, 2, 7, 0, 3, 6, 1, 4]
    shuffled = _gen(backend, [PROMPTS[i] for i in perm], [seeds[i] for i in perm], 3)
    assert [shuffled[perm.index(i)] for i in range(len(PROMPTS))] == ref
    # Changing one row's seed changes that row only.
    seeds2 = list(seeds)
    seeds2[2] += 1
    other = _gen(backend, PROMPTS, seeds2, 8)
    assert [c for i, c in enumerate(other) if i != 2] == [c for i, c in enumerate(ref) if i != 2]
    assert other[2] != ref[2]


def test_samples_vary_with_seed_and_respect_max_new_tokens(backend: HFBackend) -> None:
    outs = _gen(backend, ["hi"] * 6, [sample_seed(0, i) for i in range(6)], 6, max_new_tokens=9)
    assert len({c.text for c in outs}) > 1
    for c in outs:
        assert 1 <= c.n_tokens <= 9
        assert c.finish_reason in ("stop", "length")
        assert (c.finish_reason == "length") == (c.n_tokens == 9 and c.finish_reason != "stop")


def test_temperature_zero_is_greedy(backend: HFBackend, sharp_model) -> None:
    import torch

    tok = backend.tokenizer
    outs = generate_with_model(sharp_model, tok, PROMPTS[:3], [1, 2, 3], temperature=0.0, top_p=1.0,
                               max_new_tokens=1)
    for prompt, c in zip(PROMPTS[:3], outs, strict=True):
        with torch.no_grad():
            logits = sharp_model(torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1]
        expected = int(logits.argmax())
        assert c.n_tokens == 1
        if expected == tok.eos_token_id:
            assert c.finish_reason == "stop"
        else:
            assert tok.convert_tokens_to_ids(list(c.text)) == [expected] or c.text == tok.decode([expected])


def test_restores_training_mode(backend: HFBackend, sharp_model) -> None:
    sharp_model.train()
    generate_with_model(sharp_model, backend.tokenizer, ["hi"], [0], temperature=1.0, top_p=1.0,
                        max_new_tokens=2)
    assert sharp_model.training
    sharp_model.eval()


def _one_step_counts(model, tok, prompt: str, n: int, temperature: float, top_p: float):
    import torch

    outs = generate_with_model(model, tok, [prompt] * n, [sample_seed(11, "draw", i) for i in range(n)],
                               temperature=temperature, top_p=top_p, max_new_tokens=1, batch_size=n)
    # pad/bos/unk decode to "" (skip_special_tokens), so they share one cell: the unk id.
    blank = tok.unk_token_id
    counts = torch.zeros(len(tok), dtype=torch.float64)
    for c in outs:
        token = tok.eos_token_id if c.finish_reason == "stop" else (
            tok.convert_tokens_to_ids(c.text) if c.text else blank)
        counts[token] += 1
    with torch.no_grad():
        logits = model(torch.tensor([tok(prompt)["input_ids"]])).logits[0, -1].double()
    return counts, logits


def _pool_specials(probs, tok):
    """Move the probability of pad/bos onto the unk cell, matching how _one_step_counts counts them."""
    probs = probs.clone()
    for special in (tok.pad_token_id, tok.bos_token_id):
        probs[tok.unk_token_id] += probs[special]
        probs[special] = 0.0
    return probs


def _chisquare_p(counts, probs) -> float:
    """Chi-square goodness of fit, pooling cells with expected count < 5 into one."""
    import numpy as np
    from scipy.stats import chisquare

    n = counts.sum().item()
    exp = (probs * n).numpy()
    obs = counts.numpy()
    big = exp >= 5
    obs_c = np.append(obs[big], obs[~big].sum())
    exp_c = np.append(exp[big], exp[~big].sum())
    if exp_c[-1] == 0:
        obs_c, exp_c = obs_c[:-1], exp_c[:-1]
    return float(chisquare(obs_c, exp_c * obs_c.sum() / exp_c.sum()).pvalue)


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.5])
def test_one_step_sample_matches_softmax(backend: HFBackend, sharp_model, temperature: float) -> None:
    import torch

    tok = backend.tokenizer
    counts, logits = _one_step_counts(sharp_model, tok, "Problem: 1+1\nSolution:", 3000, temperature, 1.0)
    probs = _pool_specials(torch.softmax(logits / temperature, -1), tok)
    assert probs.max() > 0.05  # the test has power: the distribution is far from uniform (1/101)
    assert _chisquare_p(counts, probs) > 1e-3
    # A wrong temperature must be rejected by the same test.
    wrong = _pool_specials(torch.softmax(logits / (temperature * 1.6), -1), tok)
    assert _chisquare_p(counts, wrong) < 1e-3


def test_top_p_sample_matches_renormalised_nucleus(backend: HFBackend, sharp_model) -> None:
    import torch

    tok = backend.tokenizer
    top_p, temperature = 0.8, 1.0
    counts, logits = _one_step_counts(sharp_model, tok, "hello world", 3000, temperature, top_p)
    probs = torch.softmax(logits / temperature, -1)
    order = torch.argsort(probs, descending=True, stable=True)
    mass_before = torch.cumsum(probs[order], 0) - probs[order]
    nucleus = order[mass_before < top_p]
    assert 1 < len(nucleus) < len(tok)
    outside = torch.ones(len(tok), dtype=torch.bool)
    outside[nucleus] = False
    assert counts[outside].sum() == 0
    expected = torch.zeros_like(probs)
    expected[nucleus] = probs[nucleus] / probs[nucleus].sum()
    assert _chisquare_p(counts, _pool_specials(expected, tok)) > 1e-3


def test_invalid_sampling_settings_are_user_errors(backend: HFBackend) -> None:
    for kw in ({"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"max_new_tokens": 0}):
        with pytest.raises(UserError):
            _gen(backend, ["hi"], [0], 1, **kw)
    with pytest.raises(ValueError):
        _gen(backend, ["hi", "ho"], [0], 1)


def test_backend_generate_matches_generate_with_model(backend: HFBackend) -> None:
    seeds = [sample_seed(1, i) for i in range(3)]
    a = backend.generate(PROMPTS[:3], seeds, temperature=1.0, top_p=1.0, max_new_tokens=8)
    b = _gen(backend, PROMPTS[:3], seeds, 2, top_p=1.0, max_new_tokens=8)
    assert a == b


# ---------------------------------------------------------------- vLLM

def test_vllm_request_construction() -> None:
    seeds = [sample_seed(0, "math500", "p", j) for j in range(4)]
    reqs = vllm_sampling_kwargs(seeds, temperature=1.0, top_p=0.9, max_new_tokens=4096)
    assert [r["seed"] for r in reqs] == seeds
    for r in reqs:
        assert r == {"n": 1, "seed": r["seed"], "temperature": 1.0, "top_p": 0.9, "max_tokens": 4096}
    with pytest.raises(UserError):
        vllm_sampling_kwargs(seeds, temperature=1.0, top_p=0.0, max_new_tokens=10)


def test_vllm_missing_is_a_user_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(UserError, match="--backend hf") as info:
        VLLMBackend(tmp_path)
    assert VLLM_MISSING in str(info.value)
    with pytest.raises(UserError, match="CUDA"):
        make_backend("vllm", tmp_path)


def test_unknown_backend(tmp_path) -> None:
    with pytest.raises(UserError, match="unknown backend"):
        make_backend("tgi", tmp_path)
