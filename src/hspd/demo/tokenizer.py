"""The demo world's shared tokenizer: a byte-level BPE trained on the synthetic corpus (SPEC §8).

All tiny models (Qwen2 base and toxic, GPT2 / Llama / OPT / Falcon targets) share this one tokenizer, so
SoCD and CD see one vocabulary, as Qwen2.5-0.5B/3B/7B do in the paper.

Special tokens follow Qwen2.5-Instruct:

- ``<|endoftext|>`` (id 0): padding, and the BOS id of the models' configs (Qwen2.5's ``bos_token_id`` is
  ``<|endoftext|>`` too), the token that unconditional sampling (UniDetox distillation) starts from;
- ``<|im_start|>`` (id 1) and ``<|im_end|>`` (id 2): chat turns; ``<|im_end|>`` is the EOS token, so chat
  generation stops at the end of the assistant's turn.

No token is added automatically when encoding (as for Qwen2: no BOS is prepended). ``<answer>`` and
``</answer>`` are ordinary (non-special) added tokens: one id each, kept by ``decode(skip_special_tokens=True)``,
so a rewrite's answer span and its stop string are single tokens.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from hspd.errors import ConfigError, DataError
from hspd.rewrite import ASSISTANT_PREFIX, SYSTEM_PROMPT, USER_TEMPLATE

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
ANSWER_TOKENS = ("<answer>", "</answer>")

# Qwen2-Instruct's chat template, verbatim: a default system turn when the messages have none.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The words of the rewriting prompt (SPEC §3; hspd.rewrite owns the prompt itself), so that the BPE learns
# them as whole tokens and a demonstration fits the tiny models' context.
REWRITE_SYSTEM, REWRITE_USER, REWRITE_ASSISTANT = SYSTEM_PROMPT, USER_TEMPLATE, ASSISTANT_PREFIX
CHAT_ROLES = ("system", "user", "assistant")

# Columns that hold text in the demo corpus files (hspd.demo.corpus).
TEXT_COLUMNS = ("text", "question", "choices", "toxic", "clean")
MIN_VOCAB = 256 + len(SPECIAL_TOKENS) + len(ANSWER_TOKENS) + 1  # the byte alphabet, the specials, one merge


def demo_tokenizer_texts(corpus_paths: Mapping[str, str | os.PathLike]) -> list[str]:
    """The texts the demo tokenizer trains on: every text of the corpus files, and for each rewrite pair the
    rewriting prompt filled with its toxic text followed by its clean answer.

    Args:
        corpus_paths: ``{name: path}`` as returned by ``make_demo_corpus``; any table with one of the columns
            ``text``, ``question``, ``choices``, ``toxic``, ``clean`` (MMLU ``choices`` lists are flattened).

    Returns:
        The texts, in the order of ``corpus_paths`` and of the rows (the BPE result depends on it only through
        counts, so the order just keeps the list reproducible).
    """
    from hspd.io import read_table

    if not corpus_paths:
        raise DataError("demo tokenizer: no corpus files given")
    texts: list[str] = []
    for name, path in corpus_paths.items():
        df = read_table(path, what=f"demo corpus file {name!r}")
        columns = [c for c in TEXT_COLUMNS if c in df.columns]
        if not columns:
            raise DataError(f"demo corpus file {name!r} {path}: no text column; expected one of {list(TEXT_COLUMNS)}, "
                            f"found {list(df.columns)}")
        for col in columns:
            for value in df[col].dropna():
                if isinstance(value, (list, tuple)):  # MMLU choices
                    texts.extend(str(v) for v in value)
                else:
                    texts.append(str(value))
        if {"toxic", "clean"} <= set(df.columns):
            for toxic, clean in zip(df["toxic"], df["clean"]):
                texts.append("\n".join([*CHAT_ROLES, REWRITE_SYSTEM, REWRITE_USER.replace("{text}", str(toxic)),
                                        f"{REWRITE_ASSISTANT}{clean}</answer>"]))
    return [t for t in texts if t.strip()]


def build_demo_tokenizer(texts: Iterable[str], *, vocab_size: int = 2048):
    """Train the byte-level BPE and wrap it as a ``PreTrainedTokenizerFast`` with the Qwen2 chat template.

    ``len(tokenizer) <= vocab_size``: the BPE is trained to ``vocab_size - 2`` entries (the three special
    tokens included), then ``<answer>`` and ``</answer>`` are added; a small corpus may stop short of it.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
        raise ConfigError(f"demo.tokenizer_vocab = {vocab_size!r}: a byte-level BPE needs at least {MIN_VOCAB} "
                          "entries (256 bytes, 3 special tokens, <answer>, </answer> and a merge)")
    # The answer tags become single added tokens, so they are taken out of the BPE statistics.
    corpus = [t.replace(ANSWER_TOKENS[1], " ").replace(ANSWER_TOKENS[0], " ") for t in texts]
    if not any(t.strip() for t in corpus):
        raise DataError("demo tokenizer: no non-empty training texts")

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(ANSWER_TOKENS), special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    bpe.add_tokens([AddedToken(t, normalized=False, special=False) for t in ANSWER_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=ENDOFTEXT, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=None,
        additional_special_tokens=[IM_START], chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
    )


def train_demo_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, *, vocab_size: int = 2048) -> Path:
    """Train the demo tokenizer on ``texts`` and save it so ``AutoTokenizer.from_pretrained(out_dir)`` reloads
    it offline (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``).

    Returns:
        ``out_dir``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"demo tokenizer: output folder {out} exists and is not a folder")
    tokenizer = build_demo_tokenizer(texts, vocab_size=vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out
