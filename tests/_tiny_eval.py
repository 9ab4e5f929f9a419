"""Tiny models for the evaluation tests: a byte-level BPE tokenizer trained on the fly and randomly initialised
GPT2 / Llama / OPT / Falcon / Qwen2 models of a few ten thousand parameters, built from their config classes
(no hub, no files)."""

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
def tokenizer(add_bos: bool = False, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on ``corpus()``, wrapped for transformers, left padding.

    GPT2 style (default): ``<|endoftext|>`` is BOS, EOS and pad and nothing is added to a text. Llama style
    (``add_bos``): ``<s>`` is BOS and is put in front of every text; ``<|endoftext|>`` stays EOS and pad.
    Both share one vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer=trainer)
    bos = "<|endoftext|>"
    if add_bos:
        bos = "<s>"
        tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")
    fast.padding_side = "left"
    return fast


def gpt2(seed: int = 0, n_positions: int = 64, n_embd: int = 32, n_layer: int = 2):
    """A small GPT2 (learned positions: ``n_positions`` is a hard limit), for ``tokenizer()``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=2,
                     **_special_ids(tok))
    return GPT2LMHeadModel(cfg).eval()


def llama(seed: int = 0, max_position_embeddings: int = 128):
    """A 2-layer Llama with grouped-query attention, for ``tokenizer(add_bos=True)``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(add_bos=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=max_position_embeddings,
                      **_special_ids(tok))
    return LlamaForCausalLM(cfg).eval()


def _special_ids(tok) -> dict:
    # Defaults differ per architecture: always pass them explicitly.
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def opt(seed: int = 0):
    """A 2-layer OPT (learned positions, 64), for ``tokenizer()``."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=len(tok), hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=64, **_special_ids(tok))
    return OPTForCausalLM(cfg).eval()


def falcon(seed: int = 0, alibi: bool = False):
    """A 2-layer Falcon (rotary, or ALiBi as in the RW models), for ``tokenizer()``."""
    import torch
    from transformers import FalconConfig, FalconForCausalLM

    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = FalconConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, alibi=alibi,
                       max_position_embeddings=64, **_special_ids(tok))
    return FalconForCausalLM(cfg).eval()


def qwen2(seed: int = 0):
    """A 2-layer Qwen2 with grouped-query attention, for ``tokenizer()``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, **_special_ids(tok))
    return Qwen2ForCausalLM(cfg).eval()
