"""Tiny models for the evaluation tests: a byte-level BPE tokenizer trained on the fly and randomly initialised
GPT2 / Llama models of a few hundred thousand parameters, built from their config classes (no hub)."""

from __future__ import annotations

import functools

WORDS = (
    "the people who live there are kind and they work hard every day in the city "
    "women men folks from many places believe that everyone deserves respect and a fair chance "
    "question answer science history language music water fire earth stone river mountain "
).split()


def corpus(n: int = 400) -> list[str]:
    """A deterministic toy corpus (no randomness source but the index)."""
    return [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(5 + i % 9)) for i in range(n)]


@functools.lru_cache(maxsize=None)
def tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer with ``<|endoftext|>`` as BOS, EOS and pad, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.padding_side = "left"
    return fast


def gpt2(seed: int = 0, n_positions: int = 64):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return GPT2LMHeadModel(cfg).eval()


def llama(seed: int = 0, max_position_embeddings: int = 128):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=max_position_embeddings,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(cfg).eval()
