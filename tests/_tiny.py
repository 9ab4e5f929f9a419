"""Tiny offline stand-ins for the SoCD tests: a byte-level BPE tokenizer with a Qwen-style chat template, and
random Qwen2 models (2 layers, hidden 32) whose logit width is padded beyond the tokenizer, as Qwen's is.

Everything is built in memory from seeds in about a second and cached per process.
"""

from __future__ import annotations

import contextlib
import functools
import random

VOCAB = 2000  # tokens the tokenizer produces
WIDTH = 2048  # logit columns of the models (padded embedding matrix, like Qwen's 151,936 for 151,665 tokens)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread: tiny models gain nothing from more, and on a busy 2-core machine OpenMP threads
    waiting for each other make every forward pass tens of times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _corpus(seed: int = 0, n: int = 3000) -> list[str]:
    from hspd.rewrite import SYSTEM_PROMPT, USER_TEMPLATE, ASSISTANT_PREFIX

    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "to", "ve", "zu", "an", "er", "in", "or", "ul", "th",
                 "sh", "ch", "qu", "ex"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    texts = [SYSTEM_PROMPT, USER_TEMPLATE.format(text="this is a terrible fact."), ASSISTANT_PREFIX + "ok</answer>"]
    for _ in range(n):
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + rng.choice([".", "!", "?", ""]))
    return texts


@functools.lru_cache(maxsize=None)
def tokenizer(vocab: int = VOCAB, seed: int = 0):
    """A fast byte-level BPE tokenizer with exactly ``vocab`` tokens (specials included), left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(seed), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    assert len(fast) == vocab, len(fast)
    return fast


def qwen2(seed: int = 0, *, vocab: int = VOCAB, width: int = WIDTH, hidden: int = 32, layers: int = 2,
          heads: int = 4, kv_heads: int = 2):
    """A random Qwen2 causal LM in eval mode, fp32, logits ``[batch, seq, width]``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer(vocab)
    cfg = Qwen2Config(vocab_size=width, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    # Larger output weights than the init's 0.02 give peaked, model-specific distributions (as trained models
    # have), so that SoCD's divergences and masks are not all degenerate.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5)
    return model


def scripted(model, script: dict[int, int], strength: float = 30.0):
    """Add ``strength`` to the logit of ``script[last_token]``: a model that, after token x, almost surely says
    ``script[x]``. It keeps caching and padding semantics intact (the bias depends only on the current token)."""
    import torch

    bias = torch.zeros(model.config.vocab_size, model.config.vocab_size)
    for src, dst in script.items():
        bias[src, dst] = strength
    inner_forward = model.forward

    def forward(input_ids=None, logits_to_keep=0, **kwargs):
        out = inner_forward(input_ids=input_ids, logits_to_keep=logits_to_keep, **kwargs)
        keep = out.logits.shape[1]
        out.logits = out.logits + bias[input_ids[:, -keep:]]
        return out

    model.forward = forward
    return model


def script_after_prompt(tok, prompt_ids: list[int], continuation: str) -> dict[int, int]:
    """A successor table that makes a scripted model continue ``prompt_ids`` with ``continuation``."""
    ids = tok(continuation, add_special_tokens=False)["input_ids"]
    chain = [prompt_ids[-1]] + ids
    table = {}
    for a, b in zip(chain, chain[1:]):
        if a in table and table[a] != b:
            raise ValueError(f"continuation {continuation!r} repeats token {a} with different successors")
        table[a] = b
    return table
