"""Evaluation with a model (SPEC §5): ToxiGen continuations, conditional perplexity, MMLU through lm-eval.

torch, transformers and lm_eval are imported inside the functions: importing this module costs nothing.

Sampling and reproducibility
----------------------------
``toxigen_generate`` samples through ``model.generate`` (so every architecture keeps its own cache and
position handling) with one extra logits processor, ``PerPromptSampler``: it applies HF's temperature, top-k and
top-p warpers, draws each row's next token from the *prompt's own* ``torch.Generator`` (seeded from the run
seed and the prompt id), and hands ``generate`` a distribution that puts all mass on that token (``generate``
then runs greedily). Consequences:

- the same seed, prompts and batch layout give bit-identical output (the guarantee the tests pin down);
- which other prompts share a batch does not change a prompt's random stream, so resuming an interrupted run
  or changing ``batch_prompts`` draws the same random numbers for every prompt; the samples then agree unless
  left padding moves a logit by floating-point noise across a nucleus boundary (on CPU in fp32 the tests see
  identical samples; in bf16 on GPU expect rare differences).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hspd.errors import DataError, ModelError
from hspd.metrics import TEMPERATURE, TOP_P, TOXIGEN_MAX_NEW_TOKENS, TOXIGEN_SAMPLES
from hspd.models import context_length, encode_pairs, special_prefix

log = logging.getLogger(__name__)

MMLU_LOCAL_TASK = "hspd_mmlu_local"
MMLU_CHOICES = ("A", "B", "C", "D")


# --- Shared helpers ---------------------------------------------------------------------------------------

def prompt_seed(seed: int, prompt_id) -> int:
    """A 63-bit generator seed from the run seed and a prompt id: independent of the prompt's position or batch."""
    digest = hashlib.sha256(f"{int(seed)}/{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def _plain_id(value):
    return value.item() if hasattr(value, "item") else value


def encode_prompts(tokenizer, texts: Sequence[str], max_length: int | None) -> tuple[list[list[int]], int]:
    """Token ids of each prompt, left-truncated to ``max_length`` tokens, keeping the leading special tokens.

    Returns:
        (ids per prompt, number of prompts that were truncated).
    """
    ids = [list(x) for x in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    if max_length is None:
        return ids, 0
    prefix = special_prefix(tokenizer)
    truncated = 0
    for i, x in enumerate(ids):
        if len(x) > max_length:
            keep = prefix if x[: len(prefix)] == prefix else []
            ids[i] = keep + x[len(x) - (max_length - len(keep)):]
            truncated += 1
    return ids, truncated


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ModelError(f"{type(model).__name__}: neither the generation config nor the tokenizer names an EOS token")
    return [eos] if isinstance(eos, int) else list(eos)


def _pad_id(tokenizer, eos_ids: list[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]


def _left_pad(rows: list[list[int]], pad_id: int, device):
    """``[batch, max_len]`` ids and attention mask, padded on the left (generation appends on the right)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


# --- ToxiGen continuations --------------------------------------------------------------------------------

class PerPromptSampler:
    """A logits processor (duck-typed: ``LogitsProcessorList`` only calls it) that samples each row's next token
    from its prompt's own generator and returns scores that keep only that token, so greedy ``generate`` takes it.

    Rows are grouped by prompt: rows ``[g * group_size, (g + 1) * group_size)`` belong to prompt ``g`` and draw
    from ``generators[g]``, so a prompt's draws do not depend on the other prompts in the batch.

    Args:
        generators: one ``torch.Generator`` per prompt, on the model's device.
        group_size: rows per prompt (the number of samples).
        warpers: HF logits warpers applied first (temperature, top-k, top-p).
    """

    def __init__(self, generators, group_size: int, warpers=()):
        self.generators = list(generators)
        self.group_size = group_size
        self.warpers = list(warpers)

    def __call__(self, input_ids, scores):
        """``scores`` ``[batch, vocab]`` (float32) → ``[batch, vocab]``: 0 at the sampled token, -inf elsewhere."""
        import torch

        if scores.shape[0] != len(self.generators) * self.group_size:
            raise ValueError(f"PerPromptSampler: {scores.shape[0]} rows for {len(self.generators)} prompts × "
                             f"{self.group_size} samples")
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores, dim=-1)
        n = self.group_size
        picks = [torch.multinomial(probs[g * n:(g + 1) * n], 1, generator=gen) for g, gen in enumerate(self.generators)]
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, torch.cat(picks), 0.0)


def sample_continuations(model, tokenizer, prompt_ids: Sequence[Sequence[int]], seeds: Sequence[int], *,
                         n_samples: int = TOXIGEN_SAMPLES, max_new_tokens: int = TOXIGEN_MAX_NEW_TOKENS,
                         top_p: float = TOP_P, temperature: float = TEMPERATURE, top_k: int | None = None
                         ) -> list[list[tuple[str, int]]]:
    """``n_samples`` continuations of each prompt, all in one ``generate`` call.

    Args:
        prompt_ids: token ids per prompt (already truncated to fit the context).
        seeds: one generator seed per prompt.

    Returns:
        per prompt, ``n_samples`` pairs (continuation text, number of new tokens before EOS). The text is the
        generated text minus the prompt's: ``decode(prompt_ids + new_ids)`` without its prefix
        ``decode(prompt_ids)`` (both with ``skip_special_tokens``), so ``prompt text + continuation`` is what the
        model wrote. Decoding the new ids alone would not do for a SentencePiece tokenizer: its decoder strips
        the first space of a text, so a continuation ``" who"`` would come out as ``"who"``.
    """
    import torch
    from transformers import (GenerationConfig, LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    device = model.device
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = _pad_id(tokenizer, eos_ids)
    rows = [list(p) for p in prompt_ids for _ in range(n_samples)]  # a prompt's samples are adjacent rows
    input_ids, attention_mask = _left_pad(rows, pad_id, device)

    # HF's own warpers, in HF's order, so nucleus sampling means exactly what it meant for UniDetox.
    warpers = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    sampler = PerPromptSampler(generators, n_samples, warpers)
    # Greedy over the sampler's one-hot scores. Explicit values override whatever the checkpoint's generation
    # config carries (HF fills only unset fields from it); they are HF's defaults, so its validation stays quiet.
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                              temperature=1.0, top_p=1.0, top_k=50, repetition_penalty=1.0,
                              pad_token_id=pad_id, eos_token_id=eos_ids)
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                             logits_processor=LogitsProcessorList([sampler]))
    new = out[:, input_ids.shape[1]:].tolist()
    cut = [row[: next((j for j, t in enumerate(row) if t in eos_ids), len(row))] for row in new]
    return _continuations(tokenizer, prompt_ids, cut, n_samples)


def _continuations(tokenizer, prompt_ids, new_ids, n_samples: int) -> list[list[tuple[str, int]]]:
    """Per prompt, its ``n_samples`` (continuation text, token count) from the new ids of each row (EOS cut off),
    rows grouped by prompt."""
    results = []
    for g, prompt in enumerate(prompt_ids):
        prompt = list(prompt)
        prompt_text = tokenizer.decode(prompt, skip_special_tokens=True)
        results.append([(_continuation_text(tokenizer, prompt, prompt_text, row), len(row))
                        for row in new_ids[g * n_samples:(g + 1) * n_samples]])
    return results


def sample_continuations_dual(decoder, tokenizer, prompt_ids: Sequence[Sequence[int]], prompt_keys: Sequence, *,
                              seed: int, n_samples: int = TOXIGEN_SAMPLES, temperature: float = TEMPERATURE
                              ) -> list[list[tuple[str, int]]]:
    """``n_samples`` continuations of each prompt from a two-model system (DExperts, DetoxiGen): the project's
    engine (``hspd.decoding.DualModelDecoder``: both models on their own KV caches, the prompt prefilled once,
    the combiner and its sampling filters at each step), all prompts' samples in one batch.

    Sample ``s`` of a prompt draws from the stream ``row_seed(seed, prompt key, s)``, so it does not depend on
    the batch. Returns what ``sample_continuations`` returns.
    """
    from hspd.decoding import Row, row_seed

    rows = [Row(g, temperature, row_seed(seed, key, s)) for g, key in enumerate(prompt_keys) for s in range(n_samples)]
    outputs = decoder.generate([list(p) for p in prompt_ids], rows)
    cut = [o.token_ids[:-1] if o.finish == "eos" else o.token_ids for o in outputs]
    return _continuations(tokenizer, prompt_ids, cut, n_samples)


def _continuation_text(tokenizer, prompt_ids: list[int], prompt_text: str, new_ids: list[int]) -> str:
    """The text ``new_ids`` add to ``prompt_text`` (= ``decode(prompt_ids)``), both decoded with
    ``skip_special_tokens``."""
    text = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if text.startswith(prompt_text):
        return text[len(prompt_text):]
    # The prompt's decoded text changed once new ids followed it (a character split across the boundary's
    # byte tokens, a clean-up rule that looks ahead): no exact split exists, so the new ids are decoded alone.
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def _check_prompts(prompts: pd.DataFrame) -> None:
    missing = [c for c in ("id", "text") if c not in prompts.columns]
    if missing:
        raise DataError(f"ToxiGen prompts: missing column(s) {missing}; found {list(prompts.columns)}")
    if prompts.empty:
        raise DataError("ToxiGen prompts: no rows")
    dup = prompts["id"].duplicated()
    if dup.any():
        raise DataError(f"ToxiGen prompts: id {_plain_id(prompts.loc[dup, 'id'].iloc[0])!r} appears more than once")
    for pid, text in zip(map(_plain_id, prompts["id"]), prompts["text"]):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"ToxiGen prompts: row id {pid!r} has an empty or missing `text`")


def generation_settings(*, seed: int, n_samples: int = TOXIGEN_SAMPLES, max_new_tokens: int = TOXIGEN_MAX_NEW_TOKENS,
                        top_p: float = TOP_P, temperature: float = TEMPERATURE, top_k: int | None = None, decoder=None,
                        settings=None, **_) -> dict:
    """The settings ``toxigen_generate`` stamps its resumable file with (its sampling arguments, the decoder's
    combiner, and the caller's ``settings``); ``ResumableJsonl(path, settings=...).restore()`` needs the same."""
    from hspd.decoding import describe

    own = {"seed": seed, "n_samples": n_samples, "max_new_tokens": max_new_tokens, "top_p": top_p,
           "temperature": temperature, "top_k": top_k, "decoder": None if decoder is None else describe(decoder.combiner)}
    return {"toxigen": own, **(settings or {})}


def toxigen_generate(model, tokenizer, prompts: pd.DataFrame, *, seed: int, output_path: str | os.PathLike,
                     n_samples: int = TOXIGEN_SAMPLES, max_new_tokens: int = TOXIGEN_MAX_NEW_TOKENS,
                     top_p: float = TOP_P, temperature: float = TEMPERATURE, top_k: int | None = None,
                     batch_prompts: int = 8, decoder=None, settings=None, progress=True) -> Path:
    """Sample ``n_samples`` continuations of every ToxiGen prompt into a resumable JSONL file.

    Args:
        prompts: columns ``id, text`` (others ignored); ids must be unique.
        seed: the evaluation seed; each prompt samples from a generator seeded by (seed, prompt id).
        output_path: the finished JSONL; ``<output_path>.partial`` holds finished prompts while running, and a
            restarted job continues from it. Records: ``id, sample, continuation, n_tokens``.
        top_k: None (off, the protocol) or 50 (``unidetox_compat``).
        batch_prompts: prompts per ``generate`` call; each brings its ``n_samples`` rows.
        decoder: a ``DualModelDecoder`` for a two-model system (its combiner and filters replace ``model``'s
            own sampling; ``top_p`` and ``top_k`` are then the decoder's); ``None``: ``model.generate``.
        settings: what else identifies the samples (the model, the system: ``hspd.jobs.job_settings``); a partial
            file made with other settings, or other sampling arguments, is discarded.
        progress: show a tqdm bar (True / False, or a file object to write it to).

    Prompts longer than the model's context minus ``max_new_tokens`` are left-truncated; their number is logged.
    """
    from tqdm.auto import tqdm

    from hspd.io import ResumableJsonl

    _check_prompts(prompts)
    if n_samples < 1 or max_new_tokens < 1 or batch_prompts < 1:
        raise DataError(f"toxigen_generate: n_samples ({n_samples}), max_new_tokens ({max_new_tokens}) and "
                        f"batch_prompts ({batch_prompts}) must be ≥ 1")
    if not 0.0 < top_p <= 1.0 or temperature <= 0.0:
        raise DataError(f"toxigen_generate: need 0 < top_p ≤ 1 and temperature > 0, got {top_p}, {temperature}")
    ctx = context_length(model)
    limit = None if ctx is None else ctx - max_new_tokens
    if limit is not None and limit < 1:
        raise ModelError(f"{type(model).__name__}: context of {ctx} positions leaves no room for a prompt "
                         f"and {max_new_tokens} new tokens")

    ids = [_plain_id(x) for x in prompts["id"]]
    encoded, n_truncated = encode_prompts(tokenizer, prompts["text"].tolist(), limit)
    if n_truncated:
        log.warning("%d of %d prompts exceed %d tokens (context %d − %d new) and were left-truncated",
                    n_truncated, len(ids), limit, ctx, max_new_tokens)
    for pid, x in zip(ids, encoded):
        if not x:
            raise DataError(f"ToxiGen prompts: row id {pid!r} encodes to no tokens")

    writer = ResumableJsonl(output_path, settings=generation_settings(
        seed=seed, n_samples=n_samples, max_new_tokens=max_new_tokens, top_p=top_p, temperature=temperature,
        top_k=top_k, decoder=decoder, settings=settings)).open()
    try:
        todo = [i for i, pid in enumerate(ids) if pid not in writer.done]
        if len(todo) < len(ids):
            log.info("resuming: %d of %d prompts already done", len(ids) - len(todo), len(ids))
        file = progress if hasattr(progress, "write") else None
        bar = tqdm(total=len(todo), desc="toxigen prompts", unit="prompt", disable=progress is False, file=file)
        for start in range(0, len(todo), batch_prompts):
            chunk = todo[start:start + batch_prompts]
            if decoder is not None:
                outputs = sample_continuations_dual(decoder, tokenizer, [encoded[i] for i in chunk],
                                                    [ids[i] for i in chunk], seed=seed, n_samples=n_samples,
                                                    temperature=temperature)
            else:
                outputs = sample_continuations(
                    model, tokenizer, [encoded[i] for i in chunk], [prompt_seed(seed, ids[i]) for i in chunk],
                    n_samples=n_samples, max_new_tokens=max_new_tokens, top_p=top_p, temperature=temperature,
                    top_k=top_k,
                )
            for i, samples in zip(chunk, outputs):
                writer.write_unit({"id": ids[i], "sample": s, "continuation": text, "n_tokens": n}
                                  for s, (text, n) in enumerate(samples))
            bar.update(len(chunk))
        bar.close()
    except BaseException:
        writer.close()
        raise
    return writer.finalize()


# --- Conditional perplexity -------------------------------------------------------------------------------

def conditional_perplexity(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], *,
                           batch_size: int = 32, progress=True) -> np.ndarray:
    """``exp(−mean log p(continuation tokens | prompt))`` for each (prompt, continuation) pair (SPEC §5).

    ``prompt + continuation`` is tokenised as one string with the model's tokenizer and the tokens after the
    prompt's boundary are scored (``encode_pairs``): when the string's ids start with the prompt's, the sum of
    their log-probabilities is ``log p(prompt + continuation) − log p(prompt)`` (UniDetox's loss difference) and
    the mean divides it by their number. Text-level, so it works for continuations sampled from a model with
    another tokenizer. An empty continuation gives NaN. Pairs are sorted by length and batched with right
    padding; a pair longer than the context loses prompt tokens on the left (BOS kept).

    Args:
        progress: show a tqdm bar over batches (True / False, or a file object to write it to).

    Returns:
        ``[n_pairs]`` float64 perplexities, in input order.
    """
    import torch
    from tqdm.auto import tqdm

    if len(prompts) != len(continuations):
        raise DataError(f"conditional_perplexity: {len(prompts)} prompts but {len(continuations)} continuations")
    if batch_size < 1:
        raise DataError(f"conditional_perplexity: batch_size must be ≥ 1, got {batch_size}")
    for what, texts in (("prompt", prompts), ("continuation", continuations)):
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise DataError(f"conditional_perplexity: {what} {i} is {type(t).__name__}, not a string")
    pairs = encode_pairs(tokenizer, prompts, continuations, context_length(model))
    result = np.full(len(pairs), np.nan)
    scored = [i for i, (_, c) in enumerate(pairs) if c]
    scored.sort(key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))  # similar lengths share a batch
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    file = progress if hasattr(progress, "write") else None
    device = model.device
    batches = range(0, len(scored), batch_size)
    for start in tqdm(batches, desc="perplexity", unit="batch", disable=progress is False, file=file):
        idx = scored[start:start + batch_size]
        seqs = [pairs[i][0] + pairs[i][1] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        targets = torch.zeros((len(seqs), width), dtype=torch.bool)  # positions of scored tokens
        for r, i in enumerate(idx):
            n_p, n_c = len(pairs[i][0]), len(pairs[i][1])
            ids[r, :n_p + n_c] = torch.tensor(seqs[r])
            mask[r, :n_p + n_c] = 1
            targets[r, n_p:n_p + n_c] = True
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        # logits[:, t] predicts token t + 1
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
        sel = targets[:, 1:]
        nll = -(token_logp * sel).sum(1) / sel.sum(1)
        result[idx] = torch.exp(nll).double().numpy()
    return result


# --- MMLU through lm-eval ---------------------------------------------------------------------------------

def _check_mmlu_file(path: str | os.PathLike, what: str) -> int:
    from hspd.io import read_table

    df = read_table(path, ("question", "choices", "answer"), what=what)
    if df.empty:
        raise DataError(f"{what} {path}: no questions")
    for i, row in enumerate(df.itertuples(index=False)):
        choices = row.choices
        if not isinstance(choices, (list, tuple, np.ndarray)) or len(choices) != len(MMLU_CHOICES):
            raise DataError(f"{what} {path}: row {i}, column `choices` must be a list of {len(MMLU_CHOICES)} options")
        if isinstance(row.answer, bool) or not isinstance(row.answer, (int, np.integer)) \
                or not 0 <= row.answer < len(MMLU_CHOICES):
            raise DataError(f"{what} {path}: row {i}, column `answer` must be an integer 0–3, got {row.answer!r}")
    return len(df)


def mmlu_task_yaml(test_path: str | os.PathLike, dev_path: str | os.PathLike, task: str = MMLU_LOCAL_TASK) -> str:
    """An lm-eval task over local MMLU-format JSONL files, in the prompt format of lm-eval's own ``mmlu``."""
    import json

    # json.dumps gives YAML-compatible quoted strings (YAML is a superset of JSON).
    text = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}"
            "\nAnswer:")
    return "\n".join([
        f"task: {task}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(Path(test_path).resolve()))}",
        f"    dev: {json.dumps(str(Path(dev_path).resolve()))}",
        "test_split: test",
        "fewshot_split: dev",
        "fewshot_config:",
        "  sampler: first_n",
        "output_type: multiple_choice",
        f"doc_to_text: {json.dumps(text)}",
        # lm-eval puts target_delimiter " " before a choice, so the scored continuation is " A", as in mmlu.
        f"doc_to_choice: {json.dumps(list(MMLU_CHOICES))}",
        "doc_to_target: answer",
        "metric_list:",
        "  - metric: acc",
        "    aggregation: mean",
        "    higher_is_better: true",
        "metadata:",
        "  version: 1.0",
        "",
    ])


def run_mmlu(model, tokenizer, *, task_spec: dict, num_fewshot: int, batch_size: int = 8,
             limit: int | float | None = None, combine=None, system_instruction: str | None = None) -> dict:
    """MMLU accuracy through lm-eval's ``simple_evaluate``.

    Args:
        combine: for a decoding-time system, a function ``input_ids [batch, seq] → scores [batch, seq, V]`` whose
            log-softmax is the system's next-token distribution at every position (e.g. DExperts' combined
            logits); lm-eval then scores log-likelihoods under that distribution. ``None``: ``model``'s own.
        system_instruction: text put in front of every question's context (a safety pre-prompt).
        task_spec: ``{"task": "mmlu"}`` (lm-eval's built-in task, needs the hub's ``cais/mmlu``) or
            ``{"local": test.jsonl, "dev": dev.jsonl}`` (columns ``question, choices, answer``; few-shot examples
            are the first ``num_fewshot`` dev questions).
        limit: questions per (sub)task, for smoke runs.

    Returns:
        ``{"acc", "acc_stderr", "n", "num_fewshot", "task"}``.
    """
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if num_fewshot < 0:
        raise DataError(f"run_mmlu: num_fewshot must be ≥ 0, got {num_fewshot}")
    with tempfile.TemporaryDirectory(prefix="hspd-mmlu-") as tmp:
        if "local" in task_spec:
            if "dev" not in task_spec:
                raise DataError(f"run_mmlu: a local task needs `dev` (few-shot examples) beside `local`: {task_spec}")
            _check_mmlu_file(task_spec["local"], "MMLU test file")
            n_dev = _check_mmlu_file(task_spec["dev"], "MMLU dev file")
            if num_fewshot > n_dev:
                raise DataError(f"MMLU dev file {task_spec['dev']}: {n_dev} questions, fewer than {num_fewshot} shots")
            task = MMLU_LOCAL_TASK
            Path(tmp, f"{task}.yaml").write_text(mmlu_task_yaml(task_spec["local"], task_spec["dev"], task))
            manager = TaskManager(include_path=tmp, include_defaults=False)  # skips indexing every built-in task
        elif "task" in task_spec:
            task = task_spec["task"]
            manager = TaskManager()
        else:
            raise DataError(f"run_mmlu: task_spec needs `task` or `local` + `dev`, got {task_spec}")
        # With a model object HFLM ignores simple_evaluate's batch_size: it is set here.
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        if combine is not None:
            # lm-eval reads every log-likelihood from `_model_call` (then log-softmaxes it): give it the system's.
            lm._model_call = lambda inps, attn_mask=None, labels=None: combine(inps)
        out = simple_evaluate(model=lm, tasks=[task], num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                              log_samples=False, system_instruction=system_instruction)
    res = out["results"][task]
    n = sum(v["effective"] for v in out["n-samples"].values())
    return {"acc": float(res["acc,none"]), "acc_stderr": float(res["acc_stderr,none"]), "n": int(n),
            "num_fewshot": num_fewshot, "task": task if "local" not in task_spec else f"local:{task_spec['local']}"}
