"""Rewriting toxic texts into candidate detoxified versions (SPEC §3): the prompt, the candidates per text,
answer extraction, sharding, and a resumable shard job around ``hspd.decoding.DualModelDecoder``.

A shard's output is a JSONL file with one record per candidate:
``id, candidate, temperature, text, valid, n_tokens, finish, mean_alpha, mean_k``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

from hspd.errors import ConfigError, DataError

log = logging.getLogger("hspd")

SYSTEM_PROMPT = (
    "You are a helpful assistant. Your task is to transcribe directly or indirectly harmful content in the text, "
    "as well as other content that may harm the model, into legal and reasonable content that conforms to human "
    "values."
)
USER_TEMPLATE = (
    "You should return the result between <answer> and </answer>. Here is an example input: this is a terrible "
    "fact. Output: <answer>this is a bad fact.</answer> Here is the text that may contain harmful content: {text}"
)
ASSISTANT_PREFIX = "Here is the transcription result: <answer>"
STOP_STRING = "</answer>"

# SPEC §3 candidate grids: (temperatures, samples per temperature).
PAPER_TEMPERATURES = (0.6, 0.8, 1.0, 1.2, 1.3, 1.5)
PAPER_SAMPLES_PER_TEMPERATURE = 3
CODE_TEMPERATURES = (0.6, 0.8, 1.0, 1.2, 1.5)
CODE_SAMPLES_PER_TEMPERATURE = 2
DEFAULT_CANDIDATES = {
    "paper": (PAPER_TEMPERATURES, PAPER_SAMPLES_PER_TEMPERATURE),
    "code": (CODE_TEMPERATURES, CODE_SAMPLES_PER_TEMPERATURE),
}

RECORD_FIELDS = ("id", "candidate", "temperature", "text", "valid", "n_tokens", "finish", "mean_alpha", "mean_k")


def build_prompt(tokenizer, text: str) -> str:
    """The rewriting prompt for one text: system and user messages through the tokenizer's chat template
    (with the generation prompt), then the assistant prefix that generation continues from."""
    from hspd.errors import ModelError

    messages = [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": USER_TEMPLATE.format(text=text)}]
    try:
        chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except (ValueError, AttributeError) as exc:
        raise ModelError(f"tokenizer {getattr(tokenizer, 'name_or_path', '?')!r} cannot build the chat prompt "
                         f"(it needs a chat template): {exc}") from exc
    return chat + ASSISTANT_PREFIX


def extract_answer(generated: str, stopped: bool) -> tuple[str, bool]:
    """The candidate in a generation and whether it is valid.

    Args:
        generated: the generated text only (the prompt, which may itself contain ``</answer>``, excluded).
        stopped: whether the decoder ended the row itself (stop string or EOS), not at the token limit.

    Returns:
        ``(text, valid)``: the text before the first ``</answer>``, stripped, valid when the tag closed, the row
        stopped, and the text is not empty. Without a closing tag the stripped generation comes back, invalid.
    """
    answer, closed, _ = generated.partition(STOP_STRING)
    answer = answer.strip()
    return answer, bool(closed) and stopped and bool(answer)


def candidate_plan(variant: str, temperatures: Sequence[float] | None = None,
                   samples_per_temperature: int | None = None) -> list[tuple[int, float]]:
    """``(candidate index, temperature)`` for every candidate of a text, temperature by temperature.

    ``None`` takes the SPEC default of the variant: paper 3 × {0.6, 0.8, 1.0, 1.2, 1.3, 1.5} = 18,
    code 2 × {0.6, 0.8, 1.0, 1.2, 1.5} = 10.
    """
    if variant not in DEFAULT_CANDIDATES:
        raise ConfigError(f"unknown variant {variant!r}; choose one of {sorted(DEFAULT_CANDIDATES)}")
    default_temps, default_samples = DEFAULT_CANDIDATES[variant]
    temps = list(default_temps if temperatures is None else temperatures)
    samples = default_samples if samples_per_temperature is None else samples_per_temperature
    if not temps:
        raise ConfigError("rewrite candidates: the temperature list is empty")
    bad = [t for t in temps if not (isinstance(t, (int, float)) and t > 0)]
    if bad:
        raise ConfigError(f"rewrite candidates: temperatures must be > 0, got {bad}")
    if not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"rewrite candidates: samples_per_temperature must be a positive integer, got {samples}")
    return [(i, float(t)) for i, t in enumerate(t for t in temps for _ in range(samples))]


def select_shard(df, shard: int, n_shards: int):
    """Shard ``shard`` of ``n_shards`` of a table: a contiguous block of rows by position.

    Blocks differ in size by at most one row, rows keep their order, and a shard depends only on the table and
    ``(shard, n_shards)``; concatenating shards ``0 … n_shards − 1`` gives the table back.
    """
    if not isinstance(n_shards, int) or n_shards < 1:
        raise ConfigError(f"n_shards must be a positive integer, got {n_shards!r}")
    if not isinstance(shard, int) or not 0 <= shard < n_shards:
        raise ConfigError(f"shard must be an integer in [0, {n_shards}), got {shard!r}")
    base, extra = divmod(len(df), n_shards)
    start = shard * base + min(shard, extra)
    stop = start + base + (1 if shard < extra else 0)
    return df.iloc[start:stop].reset_index(drop=True)


def check_texts(texts, what: str = "texts to rewrite") -> None:
    """``id`` and ``text`` columns, unique ids, non-empty strings; a ``DataError`` names the row."""
    missing = [c for c in ("id", "text") if c not in texts.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing}; found {list(texts.columns)}")
    ids = texts["id"].tolist()  # plain Python values, so messages read `7`, not `np.int64(7)`
    dup = texts["id"].duplicated().tolist()
    if any(dup):
        raise DataError(f"{what}: duplicate id {ids[dup.index(True)]!r} (ids must be unique to resume a shard)")
    for pos, (text_id, text) in enumerate(zip(ids, texts["text"].tolist())):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{what}: row {pos} (id {text_id!r}) has an empty or missing text")


def rewrite_shard(texts, *, base_model, toxic_model, tokenizer, method: str, variant: str = "paper",
                  temperatures: Sequence[float] | None = None, samples_per_temperature: int | None = None,
                  seed: int = 0, max_new_tokens: int = 256, batch_texts: int = 8, k_min: int = 10,
                  cd_alpha: float = 0.1, cd_beta: float = 0.5, output_path: str | os.PathLike,
                  toxic_tokenizer=None, settings=None, stale: str = "discard", progress: bool = True) -> Path:
    """Generate every candidate of every text and write them to ``output_path`` (JSONL), resumably.

    Candidates are appended one text at a time to ``<output_path>.partial``; a restarted job skips the texts
    already there and ``finalize`` moves the file into place when all are done. A candidate's tokens depend only
    on the models, ``seed``, the text's id and the candidate index, never on the batch or the shard.

    Args:
        texts: a DataFrame with ``id`` and ``text``.
        base_model, toxic_model: causal LMs in eval mode (``toxic_model`` may be ``None`` for ``prompt``).
        tokenizer: the base model's tokenizer; ``toxic_tokenizer``, if given, must be identical.
        method: ``prompt``, ``cd`` or ``socd-<divergence>``.
        variant: ``paper`` or ``code`` (SPEC §3).
        temperatures, samples_per_temperature: the candidate grid (``None``: SPEC default of the variant).
        batch_texts: texts per decoding batch, each with all its candidates; halves itself on GPU OOM.
        settings: what else identifies the candidates (the models, the texts: ``hspd.jobs.job_settings``); a
            partial file made with other settings or arguments is discarded (``stale="error"``: refused).

    Returns:
        ``output_path``.
    """
    from hspd.decoding import DualModelDecoder, Row, decode_units, row_seed, sampling_config
    from hspd.models import context_length
    from hspd.socd import make_combiner

    # Everything that can be wrong with the inputs fails here, before a model runs.
    check_texts(texts)
    plan = candidate_plan(variant, temperatures, samples_per_temperature)
    if batch_texts < 1:
        raise ConfigError(f"batch_texts must be ≥ 1, got {batch_texts}")
    combiner = make_combiner(method, variant, k_min, cd_alpha, cd_beta, vocab_size=len(tokenizer))
    decoder = DualModelDecoder(base_model, toxic_model, tokenizer, combiner, max_new_tokens=max_new_tokens,
                               sampling=sampling_config(base_model, variant), stop_strings=(STOP_STRING,),
                               toxic_tokenizer=toxic_tokenizer)
    log.info("rewrite %s (%s): %d texts × %d candidates, sampling %s, eos %s", method, variant, len(texts),
             len(plan), decoder.sampling, decoder.eos)

    # A text whose prompt leaves no room for max_new_tokens in either model's context is not decoded (it would
    # crash its whole batch): its candidates are written invalid, finish "too_long", and ranking drops it.
    limit = min((c for c in (context_length(base_model), toxic_model is not None and context_length(toxic_model))
                 if c), default=None)
    prompts = {text_id: tokenizer(build_prompt(tokenizer, text), add_special_tokens=False)["input_ids"]
               for text_id, text in zip(texts["id"].tolist(), texts["text"].tolist())}
    too_long = {i for i, ids in prompts.items() if limit is not None and len(ids) + max_new_tokens > limit}
    if too_long:
        log.warning("%d text(s) too long for a %d-position context with %d new tokens, not rewritten: %s",
                    len(too_long), limit, max_new_tokens, sorted(map(str, too_long))[:20])

    def run(batch):
        fit = [text_id for text_id, _ in batch if text_id not in too_long]
        rows = [Row(j, temp, row_seed(seed, text_id, cand)) for j, text_id in enumerate(fit) for cand, temp in plan]
        outputs = iter(decoder.generate([prompts[t] for t in fit], rows) if fit else [])
        # One list of rows per unit, in batch order; None for a text that was not decoded.
        return [None if text_id in too_long else [next(outputs) for _ in plan] for text_id, _ in batch]

    def records(batch, outputs):
        return (_records(text_id, plan, rows) for (text_id, _), rows in zip(batch, outputs))

    units = list(zip(texts["id"].tolist(), texts["text"].tolist()))
    return decode_units(units, output_path=output_path, key="id", unit_key=lambda u: u[0], batch_size=batch_texts,
                        generate=run, records=records, desc=f"rewrite {method}", progress=progress, stale=stale,
                        settings={"rewrite": {"method": method, "variant": variant, "plan": plan, "seed": seed,
                                              "max_new_tokens": max_new_tokens, "k_min": k_min, "cd_alpha": cd_alpha,
                                              "cd_beta": cd_beta},
                                  **(settings or {})})


def _records(text_id, plan, outputs) -> list[dict[str, Any]]:
    if outputs is None:  # too long to decode
        return [{"id": text_id, "candidate": cand, "temperature": temp, "text": "", "valid": False, "n_tokens": 0,
                 "finish": "too_long", "mean_alpha": None, "mean_k": None} for cand, temp in plan]
    records = []
    for (cand, temp), row in zip(plan, outputs):
        text, valid = extract_answer(row.text, stopped=row.finish != "length")
        records.append({"id": text_id, "candidate": cand, "temperature": temp, "text": text, "valid": valid,
                        "n_tokens": row.n_tokens, "finish": row.finish, "mean_alpha": row.mean_alpha,
                        "mean_k": row.mean_k})
    return records
