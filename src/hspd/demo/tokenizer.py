"""The demo world's tokenizers, trained on the synthetic corpus (SPEC §8): one per real tokenizer family.

Byte-level BPE (``build_demo_tokenizer``)
-----------------------------------------
Shared by the Qwen2 base and toxic models (so SoCD and CD see one vocabulary, as Qwen2.5-0.5B/3B/7B do in the
paper) and usable by the GPT2 / OPT / Falcon targets. Special tokens follow Qwen2.5-Instruct:

- ``<|endoftext|>`` (id 0): padding, and the BOS id of the models' configs (Qwen2.5's ``bos_token_id`` is
  ``<|endoftext|>`` too), the token that unconditional sampling (UniDetox distillation) starts from;
- ``<|im_start|>`` (id 1) and ``<|im_end|>`` (id 2): chat turns; ``<|im_end|>`` is the EOS token, so chat
  generation stops at the end of the assistant's turn.

No token is added automatically when encoding (as for Qwen2: no BOS is prepended). ``<answer>`` and
``</answer>`` are ordinary (non-special) added tokens: one id each, kept by ``decode(skip_special_tokens=True)``,
so a rewrite's answer span and its stop string are single tokens.

SentencePiece-style BPE (``build_demo_sp_tokenizer``)
-----------------------------------------------------
For the Llama target and the perplexity model, built as LLaMA-2's ``tokenizer.json`` is: a word-start ``▁``
instead of spaces, a BPE with byte fallback (``<0x00>`` … ``<0xFF>``), ``<unk>`` / ``<s>`` / ``</s>`` at ids
0 / 1 / 2, and ``<s>`` put in front of every text. It gives the cross-tokenizer paths (perplexity of another
model's continuations, a Llama target beside Qwen2 guides) something real to exercise: a continuation
tokenised alone gains a ``▁`` that is not in the text, and decoding drops the first space.
"""

from __future__ import annotations

import json
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
TEXT_COLUMNS = ("text", "question", "choices", "toxic", "clean", "answer")
MIN_VOCAB = 256 + len(SPECIAL_TOKENS) + len(ANSWER_TOKENS) + 1  # the byte alphabet, the specials, one merge

# LLaMA-2's special tokens, in id order, and its word-start marker.
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SP_SPECIAL_TOKENS = (UNK, BOS, EOS)
WORD_START = "\u2581"  # "▁"
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
MIN_SP_VOCAB = len(SP_SPECIAL_TOKENS) + len(BYTE_TOKENS) + 1  # the specials, the byte tokens and "▁"


def demo_tokenizer_texts(corpus_paths: Mapping[str, str | os.PathLike]) -> list[str]:
    """The texts the demo tokenizer trains on: every text of the corpus files, and for each rewrite pair the
    rewriting prompt filled with its toxic text followed by its answer (the ``answer`` column, the
    demonstration the base models learn; ``clean`` where a table has no ``answer``).

    Args:
        corpus_paths: ``{name: path}`` as returned by ``make_demo_corpus``; any table with one of the columns
            ``text``, ``question``, ``choices``, ``toxic``, ``clean``, ``answer`` (MMLU ``choices`` lists are
            flattened).

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
        answer_column = "answer" if "answer" in df.columns else "clean"
        if {"toxic", answer_column} <= set(df.columns):
            for toxic, answer in zip(df["toxic"], df[answer_column]):
                texts.append("\n".join([*CHAT_ROLES, REWRITE_SYSTEM, REWRITE_USER.replace("{text}", str(toxic)),
                                        f"{REWRITE_ASSISTANT}{answer}</answer>"]))
    return [t for t in texts if t.strip()]


def _check_vocab_size(vocab_size, minimum: int, needs: str) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ConfigError(f"demo.tokenizer_vocab = {vocab_size!r}: {needs}")


def _check_texts(corpus: list[str]) -> None:
    if not any(t.strip() for t in corpus):
        raise DataError("demo tokenizer: no non-empty training texts")


def build_demo_tokenizer(texts: Iterable[str], *, vocab_size: int = 2048):
    """Train the byte-level BPE and wrap it as a ``PreTrainedTokenizerFast`` with the Qwen2 chat template.

    ``len(tokenizer) <= vocab_size``: the BPE is trained to ``vocab_size - 2`` entries (the three special
    tokens included), then ``<answer>`` and ``</answer>`` are added; a small corpus may stop short of it.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    _check_vocab_size(vocab_size, MIN_VOCAB, f"a byte-level BPE needs at least {MIN_VOCAB} entries (256 bytes, "
                                             "3 special tokens, <answer>, </answer> and a merge)")
    # The answer tags become single added tokens, so they are taken out of the BPE statistics.
    corpus = [t.replace(ANSWER_TOKENS[1], " ").replace(ANSWER_TOKENS[0], " ") for t in texts]
    _check_texts(corpus)

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


def _sp_alphabet(normalized: list[str], size: int) -> list[str]:
    """The ``size`` most frequent characters of the normalised texts, ``▁`` always first (a ``▁`` left to byte
    fallback would decode as itself, not as a space); ties by code point, so the choice is deterministic."""
    from collections import Counter

    counts = Counter(ch for t in normalized for ch in t)
    counts.pop(WORD_START, None)
    ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))
    return [WORD_START, *ranked[: size - 1]]


def build_demo_sp_tokenizer(texts: Iterable[str], *, vocab_size: int = 2048):
    """Train the SentencePiece-style BPE and wrap it as a ``PreTrainedTokenizerFast`` that encodes and decodes
    as LLaMA-2's fast tokenizer.

    The backend mirrors LLaMA-2's ``tokenizer.json``: normalizer ``Prepend("▁")`` then ``Replace(" ", "▁")``,
    no pre-tokenizer, a BPE with ``byte_fallback`` whose vocabulary starts ``<unk>``, ``<s>``, ``</s>``,
    ``<0x00>`` … ``<0xFF>``, a ``TemplateProcessing`` that puts ``<s>`` in front, and the decoder ``Replace("▁",
    " ")``, ``ByteFallback``, ``Fuse``, ``Strip(" ", 1, 0)``. ``"word"`` encodes as ``▁word…`` and ``" word"`` as
    ``▁``, ``▁word…``; ``decode(encode(t), skip_special_tokens=True) == t`` for any text without ``▁`` (LLaMA-2
    decodes a ``▁`` of the text as a space too) and without the special tokens' strings.

    Training splits the normalised text before each ``▁`` so merges stay inside a word, as SentencePiece's do;
    no learned piece then has a ``▁`` past its first character, so no merge can cross a word start and the saved
    tokenizer needs no pre-tokenizer. Characters beyond the alphabet that fits fall back to bytes.

    The pad token is ``</s>``: LLaMA-2 has none, and ``hspd.models.load_tokenizer`` gives it EOS, so the demo
    uses the pad id the paper's runs use (padding is masked everywhere by length or attention mask).

    ``len(tokenizer) <= vocab_size``; a small corpus may stop short of it.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    _check_vocab_size(vocab_size, MIN_SP_VOCAB, f"a SentencePiece-style BPE needs at least {MIN_SP_VOCAB} entries "
                                                "(3 special tokens, 256 byte tokens and \"\u2581\")")
    corpus = list(texts)
    _check_texts(corpus)
    normalizer = normalizers.Sequence([normalizers.Prepend(WORD_START), normalizers.Replace(" ", WORD_START)])

    # 1. Learn the pieces: the trainer's vocabulary is what is left after the byte tokens.
    n_pieces = vocab_size - len(BYTE_TOKENS)
    alphabet = _sp_alphabet([normalizer.normalize_str(t) for t in corpus], n_pieces - len(SP_SPECIAL_TOKENS))
    learner = Tokenizer(models.BPE(unk_token=UNK))
    learner.normalizer = normalizer
    learner.pre_tokenizer = pre_tokenizers.Split(WORD_START, behavior="merged_with_next")
    # limit_alphabet = the given alphabet: every other character is dropped (its count is below the given ones').
    trainer = trainers.BpeTrainer(vocab_size=n_pieces, special_tokens=list(SP_SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet))
    learner.train_from_iterator(corpus, trainer)
    learned = json.loads(learner.to_str())["model"]

    # 2. LLaMA-2's layout: specials, then the byte tokens (model vocabulary, not added tokens, so that
    # skip_special_tokens keeps them), then the learned pieces in their order.
    pieces = sorted((i, t) for t, i in learned["vocab"].items() if t not in SP_SPECIAL_TOKENS)
    vocab = {t: i for i, t in enumerate([*SP_SPECIAL_TOKENS, *BYTE_TOKENS, *(t for _, t in pieces)])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    sp = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, fuse_unk=True, byte_fallback=True))
    sp.normalizer = normalizer
    sp.decoder = decoders.Sequence([decoders.Replace(WORD_START, " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    sp.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SP_SPECIAL_TOKENS])
    sp.post_processor = processors.TemplateProcessing(single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1",
                                                      special_tokens=[(BOS, vocab[BOS])])
    # PreTrainedTokenizerFast, not LlamaTokenizer: transformers 5's LlamaTokenizer rebuilds its own normalizer
    # and pre-tokenizer on loading, while this class reloads tokenizer.json as saved. add_bos_token=True is
    # LLaMA-2's setting (transformers rebuilds the same template from it); a reload takes tokenizer.json's
    # post-processor, as for the real LLaMA-2.
    return PreTrainedTokenizerFast(
        tokenizer_object=sp, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=EOS, add_bos_token=True,
        add_eos_token=False, clean_up_tokenization_spaces=False,
    )


def _output_folder(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path, checked before training so a bad path fails fast."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"demo tokenizer: output folder {out} exists and is not a folder")
    return out


def _save(tokenizer, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return out


def train_demo_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, *, vocab_size: int = 2048) -> Path:
    """Train the byte-level demo tokenizer on ``texts`` and save it so ``AutoTokenizer.from_pretrained(out_dir)``
    reloads it offline (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``).

    Returns:
        ``out_dir``.
    """
    out = _output_folder(out_dir)
    return _save(build_demo_tokenizer(texts, vocab_size=vocab_size), out)


def train_demo_sp_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, *, vocab_size: int = 2048) -> Path:
    """Train the SentencePiece-style demo tokenizer on ``texts`` and save it so
    ``AutoTokenizer.from_pretrained(out_dir)`` reloads it offline (``tokenizer.json``, ``tokenizer_config.json``).

    Returns:
        ``out_dir``.
    """
    out = _output_folder(out_dir)
    return _save(build_demo_sp_tokenizer(texts, vocab_size=vocab_size), out)


TRAINERS = {"bpe": train_demo_tokenizer, "sentencepiece": train_demo_sp_tokenizer}


def demo_tokenizer_trainer(kind: str):
    """The ``train_*`` function of a tokenizer kind: ``"bpe"`` (byte-level) or ``"sentencepiece"``."""
    if kind not in TRAINERS:
        raise ConfigError(f"demo tokenizer kind {kind!r}: expected one of {sorted(TRAINERS)}")
    return TRAINERS[kind]
