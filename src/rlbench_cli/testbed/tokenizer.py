"""A character-level tokenizer built locally (no hub), used by the tiny testbed model and by tests.

Every printable ASCII character is one token, so any prompt or answer round-trips exactly.
"""

from __future__ import annotations

import string

SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}

# A chat template so that the `paper` prompt template also works with tiny models.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def char_vocab() -> list[str]:
    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    return list(SPECIAL_TOKENS.values()) + chars


def build_char_tokenizer():
    """Return a transformers PreTrainedTokenizerFast with one token per character."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(char_vocab())}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIAL_TOKENS["pad"],
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
