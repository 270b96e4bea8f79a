"""Text generation backends for evaluation: Hugging Face `generate` (CPU or GPU) and vLLM (GPU).

Every sample is driven by its own seed (`sample_seed(base, benchmark, problem_id, sample_idx)`), so a result
does not depend on batch size, problem order, sharding or resume:

- HF: sampling is done by inverse CDF inside a `LogitsProcessor`, with counter-based randomness. Each row
  gets one uniform per decoding step, u = sha256(row seed, step) (53 bits); temperature scaling and top-p
  filtering are applied, and the chosen token is the first whose cumulative probability exceeds u, found for
  the whole batch in one `searchsorted`. The processor leaves only that token finite, so `generate` runs
  greedy (`do_sample=False`). This is an exact sample from softmax(logits / T) restricted to the nucleus that
  depends only on that row's seed, step and logits, and it costs a softmax and a cumsum per step instead of a
  generator reseed and a vocabulary-sized draw per row (bench/bench_generation.py measures the difference).
- vLLM: one `SamplingParams(seed=...)` per request.

Samples are reproducible per device type (CPU and CUDA random streams differ), not across backends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlbench_cli.errors import UserError

# Recorded in each eval's settings.json: samples drawn by another sampler version are never mixed on resume.
SAMPLER_VERSION = "inverse-cdf-sha256-1"

VLLM_MISSING = (
    "the vllm backend needs a CUDA machine with `pip install 'rlbench[vllm]'`; use --backend hf here"
)


@dataclass
class Completion:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" | "length"


def sample_seed(base_seed: int, *parts: str | int) -> int:
    """A stable 63-bit seed derived from sha256 of (base_seed, *parts); independent of process and order."""
    payload = json.dumps([int(base_seed), *parts], separators=(",", ":"), ensure_ascii=True)
    digest = hashlib.sha256(payload.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _check_sampling(temperature: float, top_p: float, max_new_tokens: int) -> None:
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}", fix="use 0 for greedy decoding")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def step_uniforms(seeds: list[int], step: int) -> list[float]:
    """One uniform in (0, 1) per row for a decoding step, from 53 bits of sha256(row seed, step)."""
    return [((sample_seed(seed, "u", step) >> 10) + 0.5) / 2.0**53 for seed in seeds]


def sample_tokens(scores: Any, uniforms: Any, temperature: float, top_p: float) -> Any:
    """Token ids (B,) sampled from softmax(scores / T) within the top-p nucleus, by inverse CDF at `uniforms`.

    Row-wise only (softmax, cumsum and searchsorted along the vocabulary), so a row's token does not depend on
    the other rows of the batch. float64 keeps the CDF of a 150k vocabulary accurate to ~1e-12.
    """
    import torch

    probs = torch.softmax(scores.double() / temperature, dim=-1)
    order = None
    if top_p < 1.0:
        # Keep the smallest prefix (by descending prob) whose mass reaches top_p; always keep the top token.
        probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop = mass_before >= top_p
        drop[..., 0] = False
        probs = probs.masked_fill(drop, 0.0)
    cdf = torch.cumsum(probs, dim=-1)
    target = uniforms.to(device=cdf.device, dtype=cdf.dtype).unsqueeze(1) * cdf[:, -1:]
    # right=True: the first index whose CDF exceeds the target, so zero-probability tokens are never chosen.
    picked = torch.searchsorted(cdf, target, right=True).clamp_(max=cdf.shape[-1] - 1)
    if order is not None:
        picked = order.gather(-1, picked)
    return picked.squeeze(1)


def _make_processor(seeds: list[int], prompt_len: int, temperature: float, top_p: float):
    """A transformers LogitsProcessor that turns greedy decoding into seeded per-row sampling."""
    import torch
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            step = input_ids.shape[1] - prompt_len
            u = torch.tensor(step_uniforms(seeds, step), dtype=torch.float64)
            picked = sample_tokens(scores, u, temperature, top_p)
            out = torch.full_like(scores, float("-inf"))
            return out.scatter_(1, picked.unsqueeze(1), 0.0)

    return SeededSampler()


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(e) for e in eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a rendered prompt, exactly as generation feeds it to the model (shared with training)."""
    # Chat-templated prompts already start with BOS; plain ones get the tokenizer's usual special tokens.
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])


def generate_with_model(model: Any, tokenizer: Any, prompts: list[str], seeds: list[int], *,
                        temperature: float, top_p: float, max_new_tokens: int,
                        batch_size: int = 32, em_inf: dict[str, Any] | None = None) -> list[Completion]:
    """Sample one completion per (prompt, seed) from an in-memory HF causal LM; order matches `prompts`.

    Each row's output depends only on its prompt and seed (not on batch size or the other rows), up to
    floating-point differences between batch shapes. temperature 0 is greedy decoding. `em_inf` (threshold,
    kl_weight, lr, steps) adjusts each step's logits with EM-INF (algorithms/entropy.py) before sampling.
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    _check_sampling(temperature, top_p, max_new_tokens)
    if not prompts:
        return []
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    # Longest first: similar lengths share a batch (less padding); results are mapped back by index.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    device = next(model.parameters()).device
    gen_config = GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=eos_ids or None,
        use_cache=True,
    )
    results: list[Completion | None] = [None] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), max(1, batch_size)):
            idx = order[start : start + max(1, batch_size)]
            width = max(len(encoded[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids = encoded[i]
                input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[r, width - len(ids) :] = 1
            processors = LogitsProcessorList()
            if em_inf:
                from rlbench_cli.algorithms.entropy import make_entropy_processor

                processors.append(make_entropy_processor(em_inf))
            if temperature > 0:
                processors.append(_make_processor([seeds[i] for i in idx], width, temperature, top_p))
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids.to(device), attention_mask=attention.to(device),
                    generation_config=gen_config, logits_processor=processors,
                )
            new = out[:, width:].tolist()
            for r, i in enumerate(idx):
                toks = new[r]
                stop_at = next((j for j, t in enumerate(toks) if t in eos_ids), None)
                if stop_at is None:
                    kept, n_tokens, reason = toks[:max_new_tokens], min(len(toks), max_new_tokens), "length"
                else:
                    kept, n_tokens, reason = toks[:stop_at], stop_at + 1, "stop"
                text = tokenizer.decode(kept, skip_special_tokens=True)
                results[i] = Completion(text=text, n_tokens=n_tokens, finish_reason=reason)
    finally:
        model.train(was_training)
    return [c for c in results if c is not None]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    """Batched sampling with transformers `generate`, per-sample seeds (see module docstring)."""

    name = "hf"

    def __init__(self, model_path: str | Path, *, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 32, trust_remote_code: bool = False,
                 em_inf: dict[str, Any] | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device or _default_device()
        if dtype in (None, "auto"):
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.batch_size = batch_size
        self.em_inf = em_inf
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_path), dtype=torch_dtype, trust_remote_code=trust_remote_code
        ).to(self.device)
        self.model.eval()

    def generate(self, prompts: list[str], seeds: list[int], *, temperature: float, top_p: float,
                 max_new_tokens: int) -> list[Completion]:
        return generate_with_model(
            self.model, self.tokenizer, prompts, seeds, temperature=temperature, top_p=top_p,
            max_new_tokens=max_new_tokens, batch_size=self.batch_size, em_inf=self.em_inf,
        )


def vllm_sampling_kwargs(seeds: list[int], *, temperature: float, top_p: float,
                         max_new_tokens: int) -> list[dict[str, Any]]:
    """Keyword arguments for one vLLM `SamplingParams` per request (pure; unit-tested without vLLM)."""
    _check_sampling(temperature, top_p, max_new_tokens)
    return [
        {"n": 1, "seed": int(s), "temperature": float(temperature), "top_p": float(top_p),
         "max_tokens": int(max_new_tokens)}
        for s in seeds
    ]


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise UserError(VLLM_MISSING) from e
    return vllm


class VLLMBackend:
    """vLLM offline engine with one seeded request per sample (CUDA only)."""

    name = "vllm"

    def __init__(self, model_path: str | Path, *, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", seed: int = 0,
                 trust_remote_code: bool = False) -> None:
        vllm = _import_vllm()
        self._sampling_params_cls = vllm.SamplingParams
        self.llm = vllm.LLM(
            model=str(model_path), tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, dtype=dtype, seed=seed,
            trust_remote_code=trust_remote_code,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], seeds: list[int], *, temperature: float, top_p: float,
                 max_new_tokens: int) -> list[Completion]:
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        params = [self._sampling_params_cls(**kw) for kw in vllm_sampling_kwargs(
            seeds, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        completions = []
        for out in outputs:
            o = out.outputs[0]
            reason = "length" if o.finish_reason == "length" else "stop"
            completions.append(Completion(text=o.text, n_tokens=len(o.token_ids), finish_reason=reason))
        return completions


def make_backend(name: str, model_path: str | Path, *, batch_size: int = 32, seed: int = 0,
                 tensor_parallel_size: int = 1, trust_remote_code: bool = False,
                 em_inf: dict[str, Any] | None = None) -> HFBackend | VLLMBackend:
    """Build a backend by CLI name ("hf" or "vllm")."""
    if em_inf and name != "hf":
        raise UserError("EM-INF adjusts the logits at every decoding step, which only the hf backend allows here",
                        where="--em-inf", fix="use --backend hf, or drop --em-inf")
    if name == "hf":
        return HFBackend(model_path, batch_size=batch_size, trust_remote_code=trust_remote_code, em_inf=em_inf)
    if name == "vllm":
        return VLLMBackend(model_path, tensor_parallel_size=tensor_parallel_size, seed=seed,
                           trust_remote_code=trust_remote_code)
    raise UserError(f"unknown backend {name!r}", where="--backend", fix="use 'hf' or 'vllm'")
