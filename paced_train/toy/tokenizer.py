"""A character-level tokenizer for the toy world, built offline and saved in Hugging Face format.

One token per printable ASCII character (plus newline), and a few special tokens that the chat
template uses. The wrapped ``PreTrainedTokenizerFast`` loads with ``AutoTokenizer.from_pretrained``
and renders a conversation as::

    <|bos|><|user|>Compute 3+4.<|end|><|assistant|>3+4=7. \\boxed{7}<|end|>

``<|end|>`` is the EOS token (every turn, and so every response, ends with it); ``<|pad|>`` pads.
Nothing is added automatically when encoding (no post-processor): the BOS token comes from the
chat template, so encoding a response on its own gives just its characters.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "CHAT_TEMPLATE", "build_tokenizer", "save_tokenizer"]

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|end|>", "<|unk|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, *ROLE_TOKENS.values()]
CHARACTERS = ["\n"] + [chr(c) for c in range(32, 127)]

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('unknown role ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>' + message['content'] + '<|end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- endif -%}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The toy tokenizer (ids: the special tokens first, then newline and printable ASCII)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS.values()),
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
        padding_side="left",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(out_dir: Path) -> PreTrainedTokenizerFast:
    """Build the tokenizer and ``save_pretrained`` it to ``out_dir``; returns it."""
    tok = build_tokenizer()
    tok.save_pretrained(str(out_dir))
    return tok
