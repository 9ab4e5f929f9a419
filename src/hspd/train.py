"""Causal-LM training (SPEC §4): the toxic model, fine-tuning the targets (full or LoRA), and the demo's
pre-training, all through one loop, ``train_causal_lm``.

The loss is the token-level cross-entropy of next-token prediction averaged over every non-padding target
token of an optimizer step's whole batch, so gradient accumulation gives exactly the gradient of one big
batch (not a mean of per-micro-batch means). Batches are padded on the right and padding never enters the
loss. Shuffling draws from a ``torch.Generator`` seeded per run, dropout from a forked, seeded global RNG:
the same seed gives the same weights and the caller's RNG state is left alone.

The learning rate is constant (AdamW, no schedule): SPEC §4 names none.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from hspd.errors import ConfigError, DataError, ModelError

IGNORE_INDEX = -100  # label of positions that are not predicted (padding)

# LoRA target modules per architecture: the attention projections the LoRA paper adapts (query and value
# where they are separate modules, the fused QKV projection where they are not).
LORA_TARGET_MODULES = {
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"],
    "falcon": ["query_key_value"],
    "qwen2": ["q_proj", "v_proj"],
}
LORA_KEYS = {"enabled", "r", "alpha", "dropout", "target_modules"}

SELECT_BEST = (None, "next_token_accuracy")

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------
# Loss and accuracy on one batch
# ---------------------------------------------------------------------------------------------------------


def causal_lm_loss_sum(logits, labels):
    """Summed next-token cross-entropy and the number of target tokens.

    Args:
        logits: ``[batch, seq, vocab]``; position ``t`` predicts token ``t + 1`` (``[batch, n + seq, vocab]`` for a
            model with ``n`` virtual prompt tokens in front: those positions are skipped).
        labels: ``[batch, seq]`` token ids, ``IGNORE_INDEX`` on padding.

    Returns:
        ``(loss_sum, n_tokens)``: a scalar tensor (at least fp32, differentiable) and an int.
    """
    import torch
    import torch.nn.functional as F

    # A prompt-tuned model (peft) returns logits for its virtual tokens too, in front: score the real ones.
    logits = logits[:, logits.shape[1] - labels.shape[1]:-1]
    if logits.dtype in (torch.bfloat16, torch.float16):
        logits = logits.float()  # the softmax of 150k bf16 logits is too coarse for a loss
    targets = labels[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())


def next_token_accuracy(logits, labels) -> tuple[int, int]:
    """How many target tokens are the argmax of the previous position's logits.

    Args:
        logits: ``[batch, seq, vocab]``.
        labels: ``[batch, seq]``, ``IGNORE_INDEX`` on padding (not counted).

    Returns:
        ``(n_correct, n_tokens)``.
    """
    predicted = logits[:, :-1].argmax(dim=-1)
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return int(((predicted == targets) & mask).sum()), int(mask.sum())


# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


class CausalLMData:
    """Raw texts tokenised once (no chat template), truncated to ``max_length`` tokens, batched on demand.

    An item is a text (every token after the first is a target) or a ``(context, target)`` pair of texts, as in
    supervised instruction tuning: ``context + target`` is tokenised as one string (``hspd.models.encode_pairs``
    finds the boundary) and only the target's tokens are predicted. A pair longer than ``max_length`` is an
    error, since cutting it would drop the target it exists to teach. ``name`` says what the texts are in error
    messages ("toxic corpus", ...).
    """

    def __init__(self, tokenizer, texts: Sequence[str | tuple[str, str]], *, max_length: int, name: str = "texts"):
        if max_length < 2:
            raise ConfigError(f"max_length must be at least 2 tokens (one input, one target), got {max_length}")
        texts = list(texts)
        if not texts:
            raise DataError(f"{name}: no texts to train or evaluate on")
        pair_rows = []
        for i, item in enumerate(texts):
            if isinstance(item, tuple):
                if len(item) != 2 or not all(isinstance(x, str) for x in item) or not item[1].strip():
                    raise DataError(f"{name}: item {i} must be a (context, target) pair of strings with a "
                                    f"non-empty target, got {item!r}")
                pair_rows.append(i)
            elif not isinstance(item, str) or not item.strip():
                raise DataError(f"{name}: text {i} is empty or not a string: {item!r}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise ModelError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has neither a pad nor an EOS token")
        self.name = name
        self.pad_token_id = pad
        is_pair = set(pair_rows)
        plain_rows = [i for i in range(len(texts)) if i not in is_pair]
        self.input_ids: list[list[int]] = [[] for _ in texts]
        self.n_context: list[int] = [0] * len(texts)  # leading tokens that are context only, never predicted
        if plain_rows:
            for i, ids in zip(plain_rows, tokenizer([texts[i] for i in plain_rows])["input_ids"]):
                self.input_ids[i] = list(ids)
        if pair_rows:
            from hspd.models import encode_pairs

            split = encode_pairs(tokenizer, [texts[i][0] for i in pair_rows], [texts[i][1] for i in pair_rows])
            for i, (context, target) in zip(pair_rows, split):
                if len(context) + len(target) > max_length:
                    raise DataError(f"{name}: item {i} (context + target) has {len(context) + len(target)} tokens, "
                                    f"more than max_length={max_length}; cutting it would drop its target")
                self.input_ids[i], self.n_context[i] = context + target, len(context)
        long = [i for i in plain_rows if len(self.input_ids[i]) > max_length]
        if long:  # re-encoded with the tokenizer's own truncation, which keeps its special tokens
            cut = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length)["input_ids"]
            for i, ids in zip(long, cut):
                self.input_ids[i] = ids
        self.n_truncated = len(long)
        if self.n_targets == 0:
            raise DataError(f"{name}: every text is shorter than 2 tokens; there is nothing to predict")

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_targets(self) -> int:
        """Predicted tokens over all items (a text's first token and a pair's context are context only)."""
        return sum(max(len(ids) - max(c, 1), 0) for ids, c in zip(self.input_ids, self.n_context))

    def by_length(self, indices: Iterable[int]) -> list[int]:
        """``indices`` ordered by token count, shortest first (ties keep their order): cut into batches, each pads
        to a longest row near its others, so a step's summed loss comes out the same with less padding."""
        return sorted(indices, key=lambda i: len(self.input_ids[i]))

    def collate(self, indices: Sequence[int]) -> dict:
        """A right-padded batch: ``input_ids``, ``attention_mask``, ``labels``, each ``[batch, longest]``.

        Labels are ``IGNORE_INDEX`` on padding and on a pair's context, decided by position, not by token id:
        when padding reuses EOS, a text's own EOS is still a target.
        """
        import torch

        rows = [self.input_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, ids in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[b, : len(ids)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        for b, i in enumerate(indices):
            labels[b, : self.n_context[i]] = IGNORE_INDEX
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def step_plan(n_texts: int, total_batch: int, generator, *, epochs: int | None = None,
              max_steps: int | None = None) -> Iterator[list[int]]:
    """Text indices of each optimizer step: every epoch is a fresh permutation from ``generator`` cut into
    chunks of ``total_batch`` (the last one of an epoch may be smaller). Stops after ``epochs`` epochs or
    ``max_steps`` steps, whichever comes first."""
    import torch

    step, epoch = 0, 0
    while epochs is None or epoch < epochs:
        order = torch.randperm(n_texts, generator=generator).tolist()
        for start in range(0, n_texts, total_batch):
            if max_steps is not None and step >= max_steps:
                return
            step += 1
            yield order[start : start + total_batch]
        epoch += 1


def count_steps(n_texts: int, total_batch: int, epochs: int | None, max_steps: int | None) -> int:
    """Optimizer steps that ``step_plan`` will yield."""
    if epochs is None:
        return max_steps
    steps = epochs * math.ceil(n_texts / total_batch)
    return steps if max_steps is None else min(steps, max_steps)


# ---------------------------------------------------------------------------------------------------------
# Evaluation, best weights, checkpoints
# ---------------------------------------------------------------------------------------------------------


def _autocast(device, bf16: bool):
    import contextlib

    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def evaluate_causal_lm(model, data: CausalLMData, *, batch_size: int, bf16: bool = False) -> dict:
    """Held-out loss (mean over target tokens) and next-token accuracy (argmax over non-padding positions).

    Returns ``{"eval_loss": float, "eval_acc": float, "eval_tokens": int}``; the model's train/eval mode is
    restored afterwards.
    """
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = {k: v.to(device) for k, v in data.collate(range(start, min(start + batch_size, len(data)))).items()}
            with _autocast(device, bf16):
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               use_cache=False).logits
            batch_loss, n = causal_lm_loss_sum(logits, batch["labels"])
            batch_correct, _ = next_token_accuracy(logits, batch["labels"])
            loss_sum += float(batch_loss)
            correct += batch_correct
            tokens += n
    model.train(was_training)
    return {"eval_loss": loss_sum / max(tokens, 1), "eval_acc": correct / max(tokens, 1), "eval_tokens": tokens}


class BestWeights:
    """Keeps a CPU copy of the weights with the highest score seen so far (ties keep the earlier step)."""

    def __init__(self):
        self.step: int | None = None
        self.score = -math.inf
        self.state: dict | None = None

    def update(self, step: int, score: float, model) -> bool:
        """Copy the weights if ``score`` beats the best so far; returns whether it did."""
        if not score > self.score:
            return False
        self.step, self.score = step, score
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def restore(self, model) -> None:
        """Load the best weights back into ``model`` (on its own device)."""
        if self.state is None:
            raise RuntimeError("no weights were kept: update() was never called with a finite score")
        model.load_state_dict(self.state)


def is_peft_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def merged_state_dict(peft_model) -> dict:
    """A LoRA-wrapped model's weights as the plain model's state dict, adapters merged in (W + BA·scale).

    The trained model is left untouched (no in-place merge and unmerge, so no rounding drift between
    checkpoints). Keys are the plain model's: ``….base_layer.weight`` becomes ``….weight``.
    """
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer):
            adapters = [a for a in module.active_adapters if a in module.lora_A or a in module.lora_embedding_A]
            if adapters:
                deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in adapters)
    state = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        state[key.replace(".base_layer.", ".")] = value
    for key, delta in deltas.items():
        state[key] = state[key] + delta.to(state[key].dtype)
    return state


SAVE_DTYPES = ("float32", "bfloat16")


def save_checkpoint(model, tokenizer, path: str | os.PathLike, dtype: str = "float32") -> Path:
    """Save a plain (LoRA merged) model as safetensors with its config, generation config and tokenizer, so
    ``AutoModelForCausalLM.from_pretrained(path)`` loads it with no peft.

    ``dtype``: the floating-point tensors' storage type. ``bfloat16`` halves a fine-tuned 7B (27 → 13.5 GB per
    saved step) and loses nothing for evaluation, which loads bf16 on GPU (the same round-to-nearest cast);
    models whose weights are subtracted (task vectors) must stay ``float32``. Casting is per tensor, on CPU."""
    import torch

    if dtype not in SAVE_DTYPES:
        raise ConfigError(f"checkpoint dtype {dtype!r} is not one of {SAVE_DTYPES}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    plain = model.get_base_model() if is_peft_model(model) else model
    state = merged_state_dict(model) if is_peft_model(model) else plain.state_dict()
    if dtype != "float32":
        target = getattr(torch, dtype)
        state = {k: v.detach().to("cpu", target) if v.is_floating_point() else v for k, v in state.items()}
    plain.save_pretrained(path, state_dict=state)
    if dtype != "float32":  # config.json says what is stored (it takes the live model's dtype), so `dtype="auto"` loads it
        config_file = path / "config.json"
        config_json = json.loads(config_file.read_text())
        config_json["dtype"] = dtype
        config_file.write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a training run returns. ``history`` rows: ``step``, ``train_loss`` (token mean since the previous
    row; ``None`` at step 0), ``eval_loss``, ``eval_acc`` (``None`` without eval texts), and ``best: True`` on
    the rows that became the best so far. ``best_step`` is the step whose weights ``model`` holds when a best
    checkpoint was selected, else ``None``."""

    model: object
    history: list[dict] = field(default_factory=list)
    best_step: int | None = None
    steps: int = 0
    n_train: int = 0
    n_eval: int = 0
    saved_steps: list[int] = field(default_factory=list)

    def summary(self) -> dict:
        """The JSON-able part, for ``training_log.json``."""
        return {"history": self.history, "best_step": self.best_step, "steps": self.steps,
                "n_train": self.n_train, "n_eval": self.n_eval, "saved_steps": self.saved_steps}


def accumulate_gradients(model, micro_batches: Sequence[Mapping], *, bf16: bool = False) -> tuple[float, int]:
    """Forward and backward over the micro-batches of one optimizer step, adding to ``.grad``.

    Each micro-batch's summed loss is divided by the token count of the *whole step*, so the accumulated
    gradient is that of the token mean over the step's batch: exactly what one big batch would give.

    Args:
        micro_batches: ``collate`` outputs, tensors ``[micro_batch, seq]``.

    Returns:
        ``(loss_sum, n_tokens)`` over the step, for logging.
    """
    device = next(model.parameters()).device
    step_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches)
    total = 0.0
    for batch in micro_batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        with _autocast(device, bf16):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           use_cache=False).logits
        loss_sum, _ = causal_lm_loss_sum(logits, batch["labels"])
        (loss_sum / max(step_tokens, 1)).backward()
        total += float(loss_sum.detach())
    return total, step_tokens


def _checkpointing(model, on: bool) -> None:
    """Turn activation (gradient) checkpointing on or off; transformers 5 renamed the methods."""
    if hasattr(model, "activation_checkpointing_enable"):
        if on:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def _progress_bar(total: int, progress, desc: str):
    from tqdm.auto import tqdm

    file = progress if hasattr(progress, "write") else sys.stderr
    return tqdm(total=total, desc=desc, unit="step", disable=not progress, file=file, dynamic_ncols=True)


def train_causal_lm(model, tokenizer, texts: Sequence[str], *, lr: float, batch_size: int, grad_accum: int = 1,
                    epochs: int | None = None, max_steps: int | None = None, max_length: int,
                    weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), seed: int,
                    eval_texts: Sequence[str] | None = None, eval_every: int | None = None,
                    save_steps: Sequence[int] = (), output_dir: str | os.PathLike | None = None,
                    save_dtype: str = "float32",
                    select_best: str | None = "next_token_accuracy", gradient_checkpointing: bool = False,
                    group_by_length: bool = False, bf16: bool | None = None, progress=True,
                    log: Log = print) -> TrainResult:
    """Train a causal LM with AdamW on raw texts; the model is trained in place and returned in the result.

    Args:
        model: a ``transformers`` causal LM (or a peft-wrapped one) on the device to train on; trainable
            weights that are not fp32 are upcast first (AdamW updates vanish in bf16 weights).
        tokenizer: its tokenizer; texts are encoded without chat template, truncated to ``max_length``.
        lr, betas, weight_decay: AdamW, constant learning rate.
        batch_size: texts per forward pass; ``grad_accum`` passes make one optimizer step of
            ``batch_size × grad_accum`` texts, with the loss averaged over all of that batch's tokens.
        epochs, max_steps: stop after either (at least one must be given).
        seed: data order (a ``torch.Generator``) and dropout (a forked global RNG).
        eval_texts: held-out texts, evaluated before training, every ``eval_every`` optimizer steps and at
            the end (``eval_every`` without ``eval_texts`` only logs the training loss).
        save_steps: optimizer steps after which ``output_dir/step{N}/`` is saved (LoRA merged), its floating
            tensors stored as ``save_dtype``.
        select_best: ``"next_token_accuracy"`` keeps the weights of the evaluation (after step 0) with the
            highest held-out next-token accuracy and returns them; ``None`` returns the last weights.
        gradient_checkpointing: trade compute for activation memory (large models).
        group_by_length: cut each step's texts into its ``grad_accum`` passes in length order, so each pass pads
            to its own longest: the same gradient with less padding (on CPU, where padding costs compute, more
            passes of fewer texts can be faster). Off, the passes take the texts in the data order's sequence;
            the step's gradient is the same up to rounding and dropout's draws.
        bf16: bf16 autocast; ``None`` turns it on when the model is on CUDA.
        progress: ``True`` / ``False``, or a file for the tqdm bar.
        log: called with one line per history row.
    """
    import torch

    # Every argument is checked before the first forward pass.
    if select_best not in SELECT_BEST:
        raise ConfigError(f"select_best must be one of {SELECT_BEST}, got {select_best!r}")
    if select_best and not eval_texts:
        raise ConfigError("select_best needs eval_texts: the best checkpoint is chosen on held-out texts")
    if epochs is None and max_steps is None:
        raise ConfigError("give epochs or max_steps: training needs an end")
    for key, value in (("lr", lr), ("batch_size", batch_size), ("grad_accum", grad_accum), ("epochs", epochs),
                       ("max_steps", max_steps), ("eval_every", eval_every)):
        if value is not None and not value > 0:
            raise ConfigError(f"{key} must be positive, got {value!r}")
    data = CausalLMData(tokenizer, texts, max_length=max_length, name="training texts")
    eval_data = CausalLMData(tokenizer, eval_texts, max_length=max_length, name="held-out texts") if eval_texts else None
    total_batch = batch_size * grad_accum
    total_steps = count_steps(len(data), total_batch, epochs, max_steps)
    save_steps = sorted({int(s) for s in save_steps})
    bad = [s for s in save_steps if not 1 <= s <= total_steps]
    if bad:
        raise ConfigError(f"save_steps {bad} are outside the run's optimizer steps 1..{total_steps}")
    if save_steps and output_dir is None:
        raise ConfigError("save_steps need an output_dir to save checkpoints in")

    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ModelError("the model has no trainable parameters")
    low = {str(p.dtype) for p in trainable if p.dtype in (torch.bfloat16, torch.float16)}
    if low:
        log(f"upcasting trainable weights from {sorted(low)} to float32: AdamW updates vanish in half-precision weights")
        for p in trainable:
            p.data = p.data.float()
    bf16 = device.type == "cuda" if bf16 is None else bf16
    if gradient_checkpointing:
        _checkpointing(model, True)
    optimizer = torch.optim.AdamW(trainable, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    plan = step_plan(len(data), total_batch, generator, epochs=epochs, max_steps=max_steps)
    log(f"training on {len(data)} texts ({data.n_targets:,} target tokens, {data.n_truncated} truncated to "
        f"{max_length}), {total_steps} optimizer steps of {batch_size} × {grad_accum} texts on {device}"
        + (", bf16 autocast" if bf16 else "") + (", gradient checkpointing" if gradient_checkpointing else ""))

    result = TrainResult(model=model, n_train=len(data), n_eval=len(eval_data) if eval_data else 0)
    best = BestWeights() if select_best else None

    def record(step: int, train_loss: float | None) -> None:
        row = {"step": step, "train_loss": train_loss, "eval_loss": None, "eval_acc": None}
        if eval_data is not None:
            row.update(evaluate_causal_lm(model, eval_data, batch_size=batch_size, bf16=bf16))
            del row["eval_tokens"]
            if best is not None and step > 0 and best.update(step, row["eval_acc"], model):
                row["best"] = True
        result.history.append(row)
        log("step {step}: train loss {tl}, eval loss {el}, eval acc {ea}".format(
            step=step, tl=_fmt(train_loss), el=_fmt(row["eval_loss"]), ea=_fmt(row["eval_acc"])))

    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)  # dropout (GPT2, OPT, LoRA) is reproducible without touching the caller's RNG
        if eval_data is not None:
            record(0, None)
        model.train()
        run_loss, run_tokens = 0.0, 0
        bar = _progress_bar(total_steps, progress, "train")
        for step, indices in enumerate(plan, start=1):
            ordered = data.by_length(indices) if group_by_length and grad_accum > 1 else indices
            micro = [data.collate(ordered[i : i + batch_size]) for i in range(0, len(ordered), batch_size)]
            optimizer.zero_grad(set_to_none=True)
            loss_sum, step_tokens = accumulate_gradients(model, micro, bf16=bf16)
            run_loss += loss_sum
            run_tokens += step_tokens
            optimizer.step()
            bar.update(1)
            bar.set_postfix(loss=f"{run_loss / max(run_tokens, 1):.4f}", refresh=False)
            if step in save_steps:
                save_checkpoint(model, tokenizer, Path(output_dir) / f"step{step}", dtype=save_dtype)
                result.saved_steps.append(step)
                log(f"step {step}: saved {Path(output_dir) / f'step{step}'}")
            if (eval_every and step % eval_every == 0) or step == total_steps:
                model.eval()
                record(step, run_loss / max(run_tokens, 1))
                model.train()
                run_loss, run_tokens = 0.0, 0
            result.steps = step
        bar.close()

    if gradient_checkpointing:
        _checkpointing(model, False)
    model.eval()
    if best is not None and best.state is not None:
        best.restore(model)
        result.best_step = best.step
        start = result.history[0]
        if start["step"] == 0 and start["eval_acc"] > best.score:
            log(f"warning: the untrained model's held-out accuracy {start['eval_acc']:.4f} beats every "
                f"checkpoint (best {best.score:.4f} at step {best.step})")
        log(f"kept the weights of step {best.step} (held-out next-token accuracy {best.score:.4f})")
    return result


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4f}"


# ---------------------------------------------------------------------------------------------------------
# SPEC §4 stages
# ---------------------------------------------------------------------------------------------------------


def split_heldout(texts: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded random ``fraction`` of the texts (at least one) held out; both parts keep corpus order."""
    import numpy as np

    if not 0 < fraction < 1:
        raise ConfigError(f"heldout_fraction must be in (0, 1), got {fraction}")
    texts = list(texts)
    if len(texts) < 2:
        raise DataError(f"the toxic corpus has {len(texts)} text(s); at least 2 are needed (train and held-out)")
    n_heldout = min(max(1, round(fraction * len(texts))), len(texts) - 1)
    heldout = set(np.random.default_rng(seed).permutation(len(texts))[:n_heldout].tolist())
    return ([t for i, t in enumerate(texts) if i not in heldout], [t for i, t in enumerate(texts) if i in heldout])


def train_toxic_model(model, tokenizer, texts: Sequence[str], *, lr: float = 2e-5, batch_size: int = 16,
                      epochs: int = 3, max_length: int = 512, heldout_fraction: float | None = 0.05,
                      eval_every: int | None, seed: int, output_dir: str | os.PathLike, progress=True,
                      log: Log = print) -> TrainResult:
    """A toxic model: full fine-tuning on the raw toxic texts, saved to ``output_dir`` (safetensors + tokenizer +
    ``training_log.json``).

    SPEC §4 (SoCD's toxic model): the checkpoint with the highest next-token accuracy on a seeded held-out
    ``heldout_fraction`` is kept. ``heldout_fraction=None`` (UniDetox's toxic GPT2-XL): every text is trained on
    for ``epochs`` and the last weights are kept."""
    from hspd.io import write_json

    if heldout_fraction is None:
        train, heldout = list(texts), None
    else:
        train, heldout = split_heldout(texts, heldout_fraction, seed)
    log(f"toxic model: {len(train)} training texts, {len(heldout or [])} held out")
    result = train_causal_lm(model, tokenizer, train, lr=lr, batch_size=batch_size, epochs=epochs,
                             max_length=max_length, seed=seed, eval_texts=heldout, eval_every=eval_every,
                             select_best="next_token_accuracy" if heldout else None, progress=progress, log=log)
    output_dir = Path(output_dir)
    save_checkpoint(result.model, tokenizer, output_dir)
    write_json({**result.summary(), "lr": lr, "batch_size": batch_size, "epochs": epochs, "max_length": max_length,
                "heldout_fraction": heldout_fraction, "eval_every": eval_every, "seed": seed},
               output_dir / "training_log.json")
    return result


def sample_finetune_set(corpus, tokenizer, *, n: int = 640, max_tokens: int = 256, seed: int,
                        allow_fewer: bool = False, name: str = "corpus"):
    """``n`` seeded texts of at most ``max_tokens`` target-tokenizer tokens (special tokens not counted).

    Args:
        corpus: a DataFrame with ``id`` and ``text`` (other columns are kept).
        name: the corpus name for error messages.

    Returns:
        The sampled rows in corpus order, index reset. Fewer eligible texts than ``n`` is a ``DataError``
        naming the corpus and both counts, unless ``allow_fewer`` (then all eligible texts).
    """
    import numpy as np

    missing = [c for c in ("id", "text") if c not in corpus.columns]
    if missing:
        raise DataError(f"corpus {name}: missing column(s) {missing}; found {list(corpus.columns)}")
    if n < 1 or max_tokens < 1:
        raise ConfigError(f"n and max_tokens must be positive, got n={n}, max_tokens={max_tokens}")
    dup = corpus["id"][corpus["id"].duplicated()]
    if len(dup):
        raise DataError(f"corpus {name}: duplicate id(s) {dup.head(5).tolist()}")
    texts = corpus["text"].tolist()
    for row_id, text in zip(corpus["id"], texts):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"corpus {name}: row id {row_id!r} has an empty or missing text")
    lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])
    eligible = np.flatnonzero(lengths <= max_tokens)
    if len(eligible) < n and not (allow_fewer and len(eligible) > 0):
        raise DataError(f"corpus {name}: {len(eligible)} of {len(texts)} texts have at most {max_tokens} tokens, "
                        f"but {n} were asked for (set finetune.allow_fewer to take them all)")
    if len(eligible) <= n:
        chosen = eligible
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(eligible, size=n, replace=False))
    return corpus.iloc[chosen].reset_index(drop=True)


def lora_target_modules(model) -> list[str]:
    """The default LoRA target modules of the model's architecture (``config.model_type``)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in LORA_TARGET_MODULES:
        raise ConfigError(f"no default LoRA target modules for model type {model_type!r}; set "
                          f"finetune.lora.target_modules (known: {sorted(LORA_TARGET_MODULES)})")
    return list(LORA_TARGET_MODULES[model_type])


def apply_lora(model, lora: Mapping, *, seed: int):
    """Wrap ``model`` with peft LoRA adapters (task CAUSAL_LM); the adapter initialisation is seeded."""
    import torch
    from peft import LoraConfig, get_peft_model

    unknown = set(lora) - LORA_KEYS
    if unknown:
        raise ConfigError(f"finetune.lora: unknown key(s) {sorted(unknown)}; known: {sorted(LORA_KEYS)}")
    targets = list(lora.get("target_modules") or lora_target_modules(model))
    config = LoraConfig(task_type="CAUSAL_LM", r=int(lora.get("r", 16)), lora_alpha=float(lora.get("alpha", 32)),
                        lora_dropout=float(lora.get("dropout", 0.0)), target_modules=targets,
                        fan_in_fan_out=model.config.model_type == "gpt2")  # GPT2's Conv1D stores W transposed
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            raise ConfigError(f"finetune.lora: {exc}") from exc


def finetune_target(model, tokenizer, texts: Sequence[str], *, lr: float = 3e-5,
                    betas: tuple[float, float] = (0.9, 0.999), total_batch: int = 16, per_device_batch: int = 2,
                    max_steps: int, save_steps: Sequence[int] = (), seed: int, max_length: int = 256,
                    lora: Mapping | None = None, output_dir: str | os.PathLike, save_dtype: str = "float32",
                    gradient_checkpointing: bool = False, progress=True, log: Log = print) -> TrainResult:
    """SPEC §4 fine-tuning of a target on a rewritten corpus's fine-tuning set.

    Full fine-tuning (or LoRA with ``lora``: ``r``, ``alpha``, ``dropout``, ``target_modules``; ``enabled`` is
    ignored) with AdamW; ``total_batch`` texts per optimizer step as ``per_device_batch`` × accumulation.
    ``output_dir/step{N}/`` holds a plain (LoRA merged) model for each of ``save_steps`` (default: the last
    step), stored as ``save_dtype``; the final model is the last save step's. ``max_length`` counts content
    tokens, as ``sample_finetune_set`` does; the tokenizer's special tokens come on top, so no chosen text is cut.
    """
    from hspd.io import write_json

    if per_device_batch < 1 or total_batch < 1 or total_batch % per_device_batch:
        raise ConfigError(f"finetune.total_batch ({total_batch}) must be a positive multiple of "
                          f"finetune.per_device_batch ({per_device_batch})")
    if not (isinstance(max_steps, int) and max_steps > 0):
        raise ConfigError(f"finetune.max_steps must be a positive integer, got {max_steps!r}")
    if save_dtype not in SAVE_DTYPES:
        raise ConfigError(f"finetune.save_dtype {save_dtype!r} is not one of {SAVE_DTYPES}")
    save_steps = sorted({int(s) for s in save_steps}) or [max_steps]
    if save_steps[0] < 1 or save_steps[-1] != max_steps:
        raise ConfigError(f"finetune.save_steps {save_steps} must lie in 1..max_steps and end at max_steps "
                          f"({max_steps}): the last save step is the final model")
    if lora is not None:
        model = apply_lora(model, lora, seed=seed)
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log(f"LoRA on {sorted(model.peft_config['default'].target_modules)}: {n_trainable:,} trainable parameters")
    result = train_causal_lm(model, tokenizer, texts, lr=lr, betas=betas, batch_size=per_device_batch,
                             grad_accum=total_batch // per_device_batch, max_steps=max_steps,
                             max_length=max_length + tokenizer.num_special_tokens_to_add(), seed=seed,
                             eval_every=max(1, max_steps // 20), save_steps=save_steps, output_dir=output_dir,
                             save_dtype=save_dtype, select_best=None, gradient_checkpointing=gradient_checkpointing,
                             progress=progress, log=log)
    if lora is not None:
        result.model = result.model.merge_and_unload()
    write_json({**result.summary(), "final_step": save_steps[-1], "lr": lr, "betas": list(betas),
                "total_batch": total_batch, "per_device_batch": per_device_batch, "max_steps": max_steps,
                "max_length": max_length, "lora": dict(lora) if lora is not None else None, "seed": seed},
               Path(output_dir) / "training_log.json")
    return result
