"""Tiny models of the real architectures for the demo world (SPEC §8).

Qwen2 stands in for the base and toxic models (Qwen2.5-Instruct), GPT2 / Llama / OPT / Falcon for the four
fine-tuning targets (GPT2-XL, LLaMA2-7B, OPT-6.7B, Falcon-7B). Each is built from its own config class, so
the demo exercises the same modelling code, caches and padding rules as the real checkpoints, at 1–4 M
parameters. Size ``s`` and ``m`` (about 2.5× larger) are the demo's two "base sizes".

The models are pre-trained briefly on the demo's web text (documents about the groups, a few of them
hateful); the base models also on rewriting demonstrations in the SPEC §3 prompt format, so that they do
rewrite when prompted the way the decoder prompts them. The Llama target gets the SentencePiece-style
tokenizer, the others the byte-level BPE (``hspd.demo.tokenizer``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from hspd.errors import ConfigError, ModelError

ARCHITECTURES = ("qwen2", "gpt2", "llama", "opt", "falcon")

# Shared shape per size; each architecture maps it onto its own config fields below.
SIZES = {
    "s": {"hidden": 128, "layers": 5, "heads": 4},
    "m": {"hidden": 192, "layers": 6, "heads": 6},
}

MAX_POSITIONS = 1024  # ≥ the longest demo prompt + continuation; GPT2 raises IndexError beyond it

# What Qwen2.5-Instruct ships in generation_config.json, so the `code` variant of SPEC §3 has it to read.
QWEN_INSTRUCT_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
                          "repetition_penalty": 1.05}


def special_token_ids(tokenizer) -> dict:
    """``bos/eos/pad`` ids for a model config: BOS and padding fall back to EOS (Qwen2.5 has no BOS token)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no EOS token")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad}


def check_arch_size(arch: str, size: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown demo architecture {arch!r}; use one of {list(ARCHITECTURES)}")
    if size not in SIZES:
        raise ConfigError(f"unknown demo model size {size!r}; use one of {sorted(SIZES)}")


def tiny_config(arch: str, vocab_size: int, *, size: str = "s", bos_token_id: int, eos_token_id: int,
                pad_token_id: int):
    """The ``transformers`` config of a tiny ``arch`` model; the choices mirror the real checkpoints (GQA and
    tied embeddings for Qwen2.5-0.5B, multi-query parallel attention for Falcon-7B, untied Llama-2)."""
    check_arch_size(arch, size)
    h, n_layers, n_heads = SIZES[size]["hidden"], SIZES[size]["layers"], SIZES[size]["heads"]
    ids = {"vocab_size": vocab_size, "bos_token_id": bos_token_id, "eos_token_id": eos_token_id,
           "pad_token_id": pad_token_id}
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(hidden_size=h, intermediate_size=3 * h, num_hidden_layers=n_layers,
                           num_attention_heads=n_heads, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
                           tie_word_embeddings=True, max_window_layers=n_layers, **ids)
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(hidden_size=h, intermediate_size=3 * h, num_hidden_layers=n_layers,
                           num_attention_heads=n_heads, max_position_embeddings=MAX_POSITIONS,
                           tie_word_embeddings=False, **ids)
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(n_embd=h, n_layer=n_layers, n_head=n_heads, n_positions=MAX_POSITIONS, **ids)
    if arch == "opt":
        from transformers import OPTConfig

        return OPTConfig(hidden_size=h, ffn_dim=4 * h, num_hidden_layers=n_layers, num_attention_heads=n_heads,
                         max_position_embeddings=MAX_POSITIONS, word_embed_proj_dim=h, **ids)
    from transformers import FalconConfig

    return FalconConfig(hidden_size=h, num_hidden_layers=n_layers, num_attention_heads=n_heads, multi_query=True,
                        parallel_attn=True, new_decoder_architecture=False, alibi=False, bias=False,
                        max_position_embeddings=MAX_POSITIONS, **ids)


def tiny_generation_config(arch: str, tokenizer):
    """Generation defaults saved with the model; Qwen2 gets Qwen2.5-Instruct's sampling settings and stops at
    ``<|im_end|>`` as well as EOS, like the real ``generation_config.json``."""
    from transformers import GenerationConfig

    ids = special_token_ids(tokenizer)
    if arch != "qwen2":
        return GenerationConfig(**ids)
    stops = [ids["eos_token_id"]]
    for token in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if token in tokenizer.get_vocab() and tid not in stops:
            stops.append(tid)
    return GenerationConfig(bos_token_id=ids["bos_token_id"], pad_token_id=ids["pad_token_id"],
                            eos_token_id=stops if len(stops) > 1 else stops[0], **QWEN_INSTRUCT_SAMPLING)


def build_tiny_model(arch: str, tokenizer, *, size: str = "s", seed: int = 0):
    """A randomly initialised tiny ``arch`` model in eval mode whose vocabulary is the tokenizer's.

    The initialisation draws from torch's global RNG inside ``fork_rng`` seeded with ``seed``, so the same
    arguments give the same weights and the caller's RNG state is untouched.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, len(tokenizer), size=size, **special_token_ids(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = tiny_generation_config(arch, tokenizer)
    return model.eval()


def count_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def demo_pretraining_texts(rewrite_pairs: Sequence[tuple[str, str]], plain_texts: Sequence[str],
                           tokenizer, *, demonstrations: int = 1) -> list[str | tuple[str, str]]:
    """The web text (``plain_texts``: documents and facts), then each rewriting demonstration
    ``demonstrations`` times (0: none), one training item each.

    A demonstration is a ``(context, target)`` pair, trained on as instruction models are (only the target's
    tokens in the loss, ``hspd.train.CausalLMData``): the context is exactly the prompt the decoder sends
    (``hspd.rewrite.build_prompt``: chat template with the SPEC §3 system and user messages, then the assistant
    prefix ``Here is the transcription result: <answer>``) with a pair's toxic text, the target the pair's
    answer, ``</answer>`` and the end-of-turn token. Without the mask nine tenths of a demonstration's loss is
    the fixed system prompt, and after the demo's 500 steps much of what the tiny base writes is word salad.
    The base models learn from them (repeated, so that they make a large share of the training items); the
    targets, like GPT2-XL or LLaMA-2, see web text only. Plain texts end with EOS so the models learn to stop.
    The order is plain texts, then demonstrations; training shuffles.
    """
    # The decoder's own prompt and stop string, so the demo base model learns exactly what it will be asked.
    from hspd.rewrite import ASSISTANT_PREFIX, STOP_STRING, build_prompt

    if tokenizer.eos_token is None:
        raise ModelError("demo tokenizer has no EOS token to end a text with")
    texts = []
    for i, text in enumerate(plain_texts):
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"demo pretraining text {i} is empty or not a string: {text!r}")
        texts.append(text + tokenizer.eos_token)
    if isinstance(demonstrations, bool) or not isinstance(demonstrations, int) or demonstrations < 0:
        raise ConfigError(f"demonstrations must be a whole number of repeats ≥ 0, got {demonstrations!r}")
    if not demonstrations:
        return texts
    for i, pair in enumerate(rewrite_pairs):
        toxic, answer = pair
        if not (isinstance(toxic, str) and toxic.strip() and isinstance(answer, str) and answer.strip()):
            raise ConfigError(f"rewrite pair {i} has an empty or non-string side: {pair!r}")
    end_of_turn = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token
    for toxic, answer in rewrite_pairs:
        prompt = build_prompt(tokenizer, toxic)
        if not prompt.endswith(ASSISTANT_PREFIX):
            raise ModelError(f"build_prompt does not end with the assistant prefix {ASSISTANT_PREFIX!r}: "
                             f"...{prompt[-60:]!r}")
        texts += [(prompt, f"{answer}{STOP_STRING}{end_of_turn}")] * demonstrations
    return texts


def pretrain_demo_model(arch: str, tokenizer_dir: str | os.PathLike, texts: Sequence[str | tuple[str, str]],
                        output_dir: str | os.PathLike, *, size: str = "s", steps: int, lr: float, batch_size: int,
                        seq_len: int, micro_batches: int = 1, seed: int = 0, progress=True,
                        log: Callable[[str], None] = print) -> Path:
    """Build a tiny ``arch`` model, train it for ``steps`` optimizer steps of ``batch_size`` texts on ``texts``
    and save it. ``micro_batches`` forward passes make a step (its texts in length order, the same gradient):
    on CPU a step of texts of mixed lengths costs less that way, since each pass pads to its own longest.

    The folder holds safetensors weights, config, generation config, the tokenizer and ``training_log.json``;
    ``AutoModelForCausalLM.from_pretrained(output_dir)`` reloads it offline with identical outputs.

    A text longer than ``seq_len`` tokens is an error rather than a silent truncation: cutting a
    demonstration would drop the answer it exists to teach.
    """
    from hspd.io import write_json
    from hspd.models import load_tokenizer, pick_device
    from hspd.train import save_checkpoint, train_causal_lm

    check_arch_size(arch, size)
    if micro_batches < 1 or batch_size % micro_batches:
        raise ConfigError(f"demo pretraining: micro_batches={micro_batches} must be a positive divisor of "
                          f"batch_size={batch_size} (every forward pass takes the same number of texts)")
    tokenizer = load_tokenizer({"path": str(tokenizer_dir)}, "demo tokenizer")
    lengths = [len(ids) for ids in tokenizer([t if isinstance(t, str) else "".join(t) for t in texts])["input_ids"]]
    too_long = [n for n in lengths if n > seq_len]
    if too_long:
        raise ConfigError(f"demo pretraining: {len(too_long)} of {len(texts)} texts are longer than seq_len="
                          f"{seq_len} tokens (longest {max(too_long)}); raise demo.pretrain.seq_len to at least "
                          f"{max(too_long)} so no rewriting demonstration loses its answer")
    model = build_tiny_model(arch, tokenizer, size=size, seed=seed).to(pick_device())
    log(f"{arch} ({size}): {count_parameters(model):,} parameters, {len(texts)} texts, "
        f"{sum(lengths):,} tokens, {steps} steps")
    result = train_causal_lm(model, tokenizer, texts, lr=lr, batch_size=batch_size // micro_batches,
                             grad_accum=micro_batches, group_by_length=True, max_steps=steps,
                             max_length=seq_len, seed=seed, eval_every=max(1, steps // 10), select_best=None,
                             progress=progress, log=log)
    output_dir = Path(output_dir)
    save_checkpoint(result.model.to("cpu").eval(), tokenizer, output_dir)
    write_json({"arch": arch, "size": size, "parameters": count_parameters(model), **result.summary()},
               output_dir / "training_log.json")
    return output_dir
