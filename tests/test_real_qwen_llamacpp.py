"""Cross-check of the npm Qwen tokenizer against a second, independent source: llama.cpp's `ggml-vocab-qwen2.gguf`.

llama.cpp ships, inside the `llama-cpp-python` sdist on PyPI, a vocabulary-only GGUF of Qwen2's tokenizer and its
own tokenizer test cases (`.gguf.inp`: texts, `.gguf.out`: the ids llama.cpp's tokenizer gives them). The npm
package's tokenizer.json must hold the same 151,643 byte-level tokens at the same ids, the same 151,387 merges and
the same turn tokens, and Hugging Face `tokenizers` with it must reproduce llama.cpp's ids for every case.
`make install-real` downloads the sdist (no compilation) and unpacks the three files into
~/.cache/rlbench/llama-cpp-python-0.3.16/; without them this test skips.
Run: `pytest -m real tests/test_real_qwen_llamacpp.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_real_qwen import ENDOFTEXT, IM_END, IM_START, qwen_package_dir

pytestmark = [pytest.mark.slow, pytest.mark.real]

SEPARATOR = "\n__ggml_vocab_test__\n"  # how llama.cpp's test-tokenizer-0 splits the .inp file
N_REGULAR = 151_643  # byte-level BPE tokens below the first special token


def _gguf_path() -> Path:
    from rlbench_cli.testbed.model import default_cache_dir

    env = os.environ.get("RLBENCH_LLAMACPP_VOCAB")
    return Path(env) if env else default_cache_dir() / "llama-cpp-python-0.3.16" / "ggml-vocab-qwen2.gguf"


@pytest.fixture(scope="module")
def gguf_vocab() -> dict:
    path = _gguf_path()
    if not path.is_file():
        pytest.skip(f"llama.cpp's Qwen2 vocabulary not found at {path}: run `make install-real`")
    tokenizer_json = qwen_package_dir() / "models" / "tokenizer.json"
    if not tokenizer_json.is_file():
        pytest.skip(f"real Qwen tokenizer not found at {tokenizer_json}: run `make install-real`")
    gguf = pytest.importorskip("gguf", reason="the `gguf` package is not installed: run `make install-real`")
    reader = gguf.GGUFReader(str(path))

    def strings(key: str) -> list[str]:
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    def number(key: str) -> int:
        field = reader.fields[key]
        return int(field.parts[field.data[0]][0])

    return {
        "path": path, "tokens": strings("tokenizer.ggml.tokens"), "merges": strings("tokenizer.ggml.merges"),
        "eos": number("tokenizer.ggml.eos_token_id"), "tokenizer_json": json.loads(tokenizer_json.read_text()),
    }


def test_same_tokens_at_the_same_ids_and_the_same_merges(gguf_vocab) -> None:
    model = gguf_vocab["tokenizer_json"]["model"]
    by_id = {i: t for t, i in model["vocab"].items()}
    assert len(by_id) == N_REGULAR and sorted(by_id) == list(range(N_REGULAR))
    tokens = gguf_vocab["tokens"]
    assert [tokens[i] for i in range(N_REGULAR)] == [by_id[i] for i in range(N_REGULAR)]
    ours = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    assert len(ours) == len(gguf_vocab["merges"]) == 151_387
    assert ours == gguf_vocab["merges"]
    added = {t["id"]: t["content"] for t in gguf_vocab["tokenizer_json"]["added_tokens"]}
    # The turn tokens rlbench's template and EOS handling rely on; llama.cpp's file pads the other specials.
    for token_id, text in ((ENDOFTEXT, "<|endoftext|>"), (IM_START, "<|im_start|>"), (IM_END, "<|im_end|>")):
        assert tokens[token_id] == added[token_id] == text
    assert gguf_vocab["eos"] == ENDOFTEXT


def test_llamacpp_tokenizer_cases_give_llamacpp_ids(gguf_vocab) -> None:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(qwen_package_dir() / "models" / "tokenizer.json"))
    base = str(gguf_vocab["path"])
    texts = Path(base + ".inp").read_text(encoding="utf-8").split(SEPARATOR)
    expected = Path(base + ".out").read_text(encoding="utf-8").split("\n")
    assert len(texts) == len(expected) and len(texts) >= 40
    mismatches = [
        (text, ids) for text, ids in zip(texts, expected, strict=True)
        if tok(text, add_special_tokens=False)["input_ids"] != [int(x) for x in ids.split()]
    ]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} llama.cpp cases differ, e.g. {mismatches[0]!r}"
