"""The testbed's tiny base model: a ~0.34M-parameter Llama warm-started by brief SFT on the synthetic task.

`build_base_model` trains it deterministically on CPU (fixed seed and thread count), saves it in HF format
with the char tokenizer, and caches it under `<cache>/testbed/<config hash>/`. The warm-start is deliberately
short: the model must be right sometimes but not reliably (mean@16 at T=1.0 between 15% and 50% on every
evaluation split), which leaves reinforcement learning room to improve it. `quick_mean_at_k` measures that.

Measured for the default config (2 uncontended cores): 600 steps in ~85 s wall / ~170 s CPU, then the
full-split calibration in ~25 s: mean@16 easy 0.44, medium 0.32, hard 0.25. The learning curve is steep
around these step counts (500 steps: 0.28/0.21/0.15; 1000 steps: ~0.9), so retune after any recipe change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlbench_cli.records import atomic_write_json, sha256_text
from rlbench_cli.testbed.versions import DEFAULT_VERSION, check_version, eval_splits, generate_split, task_version

# Bump when the build recipe changes in a way the config fields do not capture (invalidates caches).
RECIPE_VERSION = "testbed-recipe-1"
PROMPT_TEMPLATE = "plain"
DEFAULT_MAX_NEW_TOKENS = 80  # the longest solution (hard, 3-digit intermediates) is ~60 chars + eos


@dataclass(frozen=True)
class TestbedConfig:
    """Everything that determines the built base model; its hash names the cache folder."""

    __test__ = False  # not a pytest test class despite the name

    # Llama dims
    hidden_size: int = 96
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    max_position_embeddings: int = 160
    # SFT warm-start
    sft_examples: int = 20000
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 2  # fixed so the weights are byte-identical from run to run
    # each batch sorted by length and run as this many micro-batches, each trimmed to its own longest row (same
    # token-mean loss, less padding: the longest row of a batch is about twice the mean length)
    sft_chunks: int = 1
    # measured after the build and stored in testbed.json (0 = skip)
    calibration_problems: int = 300  # = the eval split size
    calibration_k: int = 16
    version: str = "v1"  # testbed version: which task generates the data (see testbed/versions.py)


# v2 (issue 11): a smaller, shorter warm start so that RL has accuracy and entropy to gain; see task_v2.py.
V2_CONFIG = TestbedConfig(
    hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=160,
    sft_examples=20000, steps=1000, batch_size=64, lr=2e-3, warmup_steps=50, version="v2",
)
CONFIGS = {"v1": TestbedConfig(), "v2": V2_CONFIG}


def default_config(version: str | None = None) -> TestbedConfig:
    return CONFIGS[check_version(version)]


# fields added after built testbeds were hashed: left out of the payload at their default, so those hashes stay valid
_ADDED_LATER = {"sft_chunks": 1}


def config_hash(cfg: TestbedConfig) -> str:
    """Short sha256 of the canonical config JSON, the recipe version and the task version.

    v1's payload is the one it had before versions existed (no `version` key), so v1 keeps its hash."""
    fields = asdict(cfg)
    if cfg.version == "v1":
        fields.pop("version")
    for added, default in _ADDED_LATER.items():
        if fields[added] == default:
            fields.pop(added)
    payload = json.dumps(
        {"config": fields, "recipe": RECIPE_VERSION, "task": task_version(cfg.version)}, sort_keys=True
    )
    return sha256_text(payload)[:16]


def default_cache_dir() -> Path:
    env = os.environ.get("RLBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlbench"


_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def extract_boxed_int(text: str) -> str | None:
    """The integer inside the last `\\boxed{}` of a completion, normalised (no leading zeros)."""
    found = _BOXED.findall(text)
    return str(int(found[-1])) if found else None


def _llama_config(cfg: TestbedConfig, tok: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )


def _sft_tensors(cfg: TestbedConfig, tok: Any) -> tuple[Any, Any]:
    """Right-padded input ids and labels (-100 on prompt and padding) for the warm-start data."""
    import torch

    from rlbench_cli.prompts import render_prompt

    rows = generate_split("sft", cfg.sft_examples, version=cfg.version)
    # one batched call per side gives the same ids as per-row calls (no special tokens are added); with the one-shot
    # tensors below this function takes about 4 s on v2's 20,000 examples instead of 8.5 s (one slow 2-core machine)
    prompts = tok([render_prompt(r["problem"], PROMPT_TEMPLATE) for r in rows])["input_ids"]
    answers = tok([" " + r["solution"] for r in rows])["input_ids"]
    seqs = [p + t + [tok.eos_token_id] for p, t in zip(prompts, answers, strict=True)]
    width = max(len(s) for s in seqs)
    if width > cfg.max_position_embeddings:
        raise ValueError(f"longest SFT sequence ({width}) exceeds max_position_embeddings")
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    pos = torch.arange(width)
    n_prompt = torch.tensor([len(p) for p in prompts]).unsqueeze(1)
    length = torch.tensor([len(s) for s in seqs]).unsqueeze(1)
    labels = ids.masked_fill((pos < n_prompt) | (pos >= length), -100)
    return ids, labels


def _lr_at(step: int, cfg: TestbedConfig) -> float:
    """Linear warmup then cosine decay to 10% of the peak."""
    import math

    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def _batch_loss_backward(model: Any, ids: Any, labels: Any, pad_id: int, chunks: int) -> float:
    """Backward of the batch's token-mean loss; returns the loss. With chunks > 1 the rows are sorted by length
    and run in `chunks` micro-batches, each trimmed to its longest row and weighted by its share of the batch's
    predicted tokens, so the gradient is the full batch's (up to float rounding)."""
    import torch

    lengths = (ids != pad_id).sum(1)
    if chunks <= 1:
        groups = [torch.arange(len(ids))]
    else:
        groups = list(torch.argsort(lengths, stable=True).chunk(chunks))
    n_total = int((labels[:, 1:] != -100).sum())
    total = 0.0
    for rows in groups:
        used = int(lengths[rows].max())  # trim padding columns
        c_ids, c_lab = ids[rows, :used], labels[rows, :used]
        n_chunk = int((c_lab[:, 1:] != -100).sum())
        out = model(input_ids=c_ids, attention_mask=(c_ids != pad_id).long(), labels=c_lab)
        (out.loss * (n_chunk / n_total)).backward()
        total += out.loss.detach().item() * n_chunk / n_total
    return total


def train_base_model(
    cfg: TestbedConfig, *, progress: bool = True, on_step: Callable[[int, Any, Any], None] | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """Warm-start a fresh tiny Llama by SFT; returns (model, tokenizer, stats). Caller fixes threads.

    `on_step(step, model, tok)` runs after every optimizer step (used to tune the recipe).
    """
    import torch
    from transformers import LlamaForCausalLM

    from rlbench_cli.testbed.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(_llama_config(cfg, tok))
    ids, labels = _sft_tensors(cfg, tok)
    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )
    model.train()
    order = torch.randperm(len(ids), generator=gen)
    cursor, losses = 0, []
    t0 = time.process_time()
    w0 = time.perf_counter()
    with _progress(progress, cfg.steps) as advance:
        for step in range(cfg.steps):
            if cursor + cfg.batch_size > len(order):
                order, cursor = torch.randperm(len(ids), generator=gen), 0
            idx = order[cursor : cursor + cfg.batch_size]
            cursor += cfg.batch_size
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss = _batch_loss_backward(model, ids[idx], labels[idx], tok.pad_token_id, cfg.sft_chunks)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss)
            advance(losses[-1])
            if on_step is not None:
                on_step(step + 1, model, tok)
    model.eval()
    tail = losses[-20:] or [float("nan")]
    stats = {
        "params": sum(p.numel() for p in model.parameters()),
        "final_loss": round(sum(tail) / len(tail), 5),
        "train_cpu_seconds": round(time.process_time() - t0, 1),
        "train_wall_seconds": round(time.perf_counter() - w0, 1),
    }
    return model, tok, stats


class _progress:
    """A rich progress bar with ETA and the running loss, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda loss: None
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("building testbed base model"), BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
        )
        self._bar.__enter__()
        task = self._bar.add_task("sft", total=self.total, loss=float("nan"))
        return lambda loss: self._bar.update(task, advance=1, loss=loss)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)


def build_base_model(
    cache_dir: Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    config: TestbedConfig | None = None,
    version: str | None = None,
) -> Path:
    """Build (or return the cached) testbed base model folder `<cache>/testbed/<hash>/`.

    The folder holds the HF model (safetensors), the tokenizer, `testbed.json` (config, hash, build figures,
    calibration if measured) and `rlbench.json` (prompt template for evaluation). It is written to a temp
    folder and renamed into place, so a killed build never leaves a half-built entry.
    """
    import torch

    cfg = config or default_config(version)
    h = config_hash(cfg)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    final = root / "testbed" / h
    if (final / "testbed.json").exists() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{h}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        model, tok, stats = train_base_model(cfg, progress=progress)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        meta: dict[str, Any] = {
            "testbed_hash": h, "testbed_version": cfg.version, "recipe_version": RECIPE_VERSION,
            "task_version": task_version(cfg.version),
            "config": asdict(cfg), **stats, "torch_threads": cfg.threads,
        }
        atomic_write_json(tmp / "rlbench.json", {
            "prompt_template": PROMPT_TEMPLATE, "source": "rlbench testbed", "testbed_hash": h,
        })
        if n := cfg.calibration_problems:
            t0 = time.perf_counter()
            scores = {s: quick_scores(tmp, s, k=cfg.calibration_k, n_problems=n, version=cfg.version)
                      for s in eval_splits(cfg.version)}
            meta["calibration"] = {
                "k": cfg.calibration_k, "n_problems": cfg.calibration_problems, "temperature": 1.0,
                "mean_at_k": {s: round(v["mean"], 4) for s, v in scores.items()},
                "pass_at_k": {s: round(v["pass"], 4) for s, v in scores.items()},
            }
            meta["calibration"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(tmp / "testbed.json", meta)
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            # another process finished the same build first; its result is identical
            if not (final / "testbed.json").exists():
                raise
    finally:
        torch.set_num_threads(prev_threads)
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def quick_mean_at_k(model_dir: str | Path, split: str, k: int = 16, n_problems: int | None = None,
                    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, *, batch_size: int = 512, seed: int = 0,
                    version: str | None = None) -> float:
    """mean@k at temperature 1.0 (top_p 1.0) of a testbed model on a testbed split, by exact boxed match."""
    return quick_scores(model_dir, split, k, n_problems, max_new_tokens, batch_size=batch_size, seed=seed,
                        version=version)["mean"]


def quick_scores(
    model_dir: str | Path,
    split: str,
    k: int = 16,
    n_problems: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    *,
    batch_size: int = 512,
    seed: int = 0,
    version: str | None = None,
) -> dict[str, float]:
    """mean@k and pass@k at T=1.0 on a split (exact boxed match); `version` defaults to the model's own."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from rlbench_cli.prompts import render_prompt

    if version is None:
        meta = Path(model_dir) / "testbed.json"
        version = json.loads(meta.read_text()).get("testbed_version", "v1") if meta.exists() else DEFAULT_VERSION
    rows = generate_split(split, n_problems, version=version)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = [render_prompt(r["problem"], PROMPT_TEMPLATE) for r in rows for _ in range(k)]
    golds = [r["answer"] for r in rows for _ in range(k)]
    torch.manual_seed(seed)
    hits: list[bool] = []
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            enc = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            out = model.generate(
                **enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            gold = golds[start : start + batch_size]
            hits += [extract_boxed_int(t) == g for t, g in zip(texts, gold, strict=True)]
    per_problem = [hits[i : i + k] for i in range(0, len(hits), k)]
    return {"mean": sum(hits) / max(1, len(hits)),
            "pass": sum(any(p) for p in per_problem) / max(1, len(per_problem))}
