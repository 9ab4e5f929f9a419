"""The comparison systems' own algorithms (SPEC §6). UniDetox's distillation lives here; it decodes with the
engine of ``hspd.decoding`` (both models in lockstep, each on its own KV cache), like rewriting.

UniDetox (seed 002) samples text from a prompt that is the single EOS token, scoring each next token by
``log p_base − log p_toxic`` on the base model's plausible head ``V_head = {v : p_base(v) ≥ α · max p_base}``.
Targets fine-tuned on that text become less toxic. GPT-2 samples, its ablation, are plain samples of the base.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from hspd.errors import ConfigError, DataError, ModelError

log = logging.getLogger("hspd")


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha <= 1.0:
        raise ConfigError(f"UniDetox alpha must lie in (0, 1], got {alpha}")


def unidetox_core(sb, st, *, alpha: float = 0.1):
    """UniDetox's score on float32 ``[batch, V]`` logits (a new tensor)."""
    import torch

    # p_b(v) ≥ α · max p_b is s_b(v) ≥ max s_b + ln α: the normaliser cancels.
    outside = sb < sb.amax(dim=-1, keepdim=True) + math.log(alpha)
    score = torch.log_softmax(sb, dim=-1).sub_(torch.log_softmax(st, dim=-1))
    return score.masked_fill_(outside, -math.inf)


def unidetox_logits(base_logits, toxic_logits, *, alpha: float = 0.1, vocab_size: int | None = None):
    """UniDetox's contrastive score (seed 002, SPEC §6).

    ``s(v) = log p_base(v) − log p_toxic(v)`` for ``v`` in ``V_head = {v : p_base(v) ≥ α · max p_base}``,
    ``−inf`` elsewhere; the next token is sampled from ``softmax(s)``.

    Args:
        base_logits, toxic_logits: ``[batch, width]`` logits of the base and the toxic model (the widths may
            differ when a model pads its embedding matrix; then pass ``vocab_size``).
        alpha: the plausibility threshold (0.1; 0.05 in the paper's ablation).
        vocab_size: ``V``, the shared tokenizer's length; log-probabilities are normalised over the first ``V``
            columns, and columns beyond it are ``−inf``.

    Returns:
        ``[batch, width_base]`` float32 scores.
    """
    from hspd.socd import _pad_width, _vocab_view

    _check_alpha(alpha)
    if toxic_logits is None:
        raise ModelError("UniDetox needs the toxic model's logits")
    sb, st, _ = _vocab_view(base_logits, toxic_logits, vocab_size)
    return _pad_width(unidetox_core(sb, st, alpha=alpha), base_logits.shape[1])


@dataclass(frozen=True)
class UniDetoxCombiner:
    """The decoder's combiner for UniDetox (the interface of ``hspd.socd.Combiner``)."""

    alpha: float = 0.1
    vocab_size: int | None = None
    kind: str = "unidetox"
    needs_toxic: bool = True

    def __post_init__(self):
        _check_alpha(self.alpha)

    def __call__(self, base_logits, toxic_logits=None, *, give_base: bool = False):
        from hspd.socd import _vocab_view

        if toxic_logits is None:
            raise ModelError("UniDetox needs the toxic model's logits")
        sb, st, _ = _vocab_view(base_logits, toxic_logits, self.vocab_size)
        return unidetox_core(sb, st, alpha=self.alpha), {}


def distill_combiner(alpha: float | None, vocab_size: int):
    """UniDetox's combiner for ``alpha``, or plain sampling (GPT-2 samples) for ``None``."""
    if alpha is None:
        from hspd.socd import make_combiner

        return make_combiner("prompt", vocab_size=vocab_size)
    return UniDetoxCombiner(float(alpha), int(vocab_size))


def shard_indices(n_texts: int, shard: int, n_shards: int) -> list[int]:
    """Text indices ``shard, shard + n_shards, …`` below ``n_texts``."""
    if n_texts < 1 or n_shards < 1 or not 0 <= shard < n_shards:
        raise ConfigError(f"shard {shard} of {n_shards} over {n_texts} texts is not a valid split")
    return list(range(shard, n_texts, n_shards))


def distill_shard(*, base_model, toxic_model, tokenizer, alpha: float | None, n_texts: int, shard: int,
                  n_shards: int, max_new_tokens: int = 256, batch_texts: int = 32, seed: int = 0,
                  source: str, output_path: str | os.PathLike, toxic_tokenizer=None, progress: bool = True) -> Path:
    """Sample this shard's texts from the EOS prompt and write them to ``output_path`` (JSONL), resumably.

    Text ``i`` draws its random stream from ``(seed, i)`` only, so it is the same in any shard or batch. A row
    ends at EOS or after ``max_new_tokens``. Records: ``id`` (``<source>-<i>``), ``index``, ``text``,
    ``n_tokens``, ``finish``.

    Args:
        alpha: UniDetox's plausibility threshold, or ``None`` for plain samples of ``base_model``.
        toxic_model: the toxic model (ignored for plain samples); ``toxic_tokenizer``, if given, must equal
            ``tokenizer``.
    """
    import torch
    from tqdm.auto import tqdm

    from hspd.decoding import DualModelDecoder, Row, batches_with_oom_backoff, row_seed
    from hspd.io import ResumableJsonl

    indices = shard_indices(n_texts, shard, n_shards)
    if batch_texts < 1:
        raise ConfigError(f"batch_texts must be ≥ 1, got {batch_texts}")
    bos = tokenizer.eos_token_id
    if bos is None:
        raise ModelError("the tokenizer has no EOS token to start UniDetox's samples from")
    combiner = distill_combiner(alpha, len(tokenizer))
    decoder = DualModelDecoder(base_model, toxic_model if alpha is not None else None, tokenizer, combiner,
                               max_new_tokens=max_new_tokens, toxic_tokenizer=toxic_tokenizer)
    log.info("distil %s: %d of %d texts (shard %d/%d), ≤ %d tokens each from EOS (%d)", source, len(indices),
             n_texts, shard, n_shards, max_new_tokens, bos)

    out = ResumableJsonl(output_path, key="index").open()
    try:
        todo = [i for i in indices if i not in out.done]
        bar = tqdm(total=len(indices), initial=len(indices) - len(todo), disable=not progress, desc=f"distil {source}",
                   unit="text")

        def run(batch):
            return decoder.generate([[int(bos)]], [Row(0, 1.0, row_seed(seed, i, 0)) for i in batch])

        for batch, outputs in batches_with_oom_backoff(todo, batch_texts, run):
            for i, row in zip(batch, outputs):
                out.write_unit([{"id": f"{source}-{i}", "index": i, "text": row.text, "n_tokens": row.n_tokens,
                                 "finish": row.finish}])
                bar.update(1)
        bar.close()
        return out.finalize()
    finally:
        out.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def merge_distilled(shards, *, n_texts: int, source: str):
    """The distilled corpus from its shards: every index once, in index order; texts that are empty (the sample
    ended at once) are dropped and counted.

    Returns ``(corpus, report)``: a DataFrame ``id, text, n_tokens, finish`` and a dict of counts."""
    import pandas as pd

    frames = [s for s in shards if len(s)]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["id", "index", "text"])
    missing = [c for c in ("id", "index", "text") if c not in df.columns]
    if missing:
        raise DataError(f"distilled {source}: missing column(s) {missing}; found {list(df.columns)}")
    indices = df["index"].tolist()
    if sorted(indices) != list(range(n_texts)):
        dup = sorted({i for i in indices if indices.count(i) > 1})
        absent = sorted(set(range(n_texts)) - set(indices))
        raise DataError(f"distilled {source}: the shards hold {len(indices)} texts for {n_texts} "
                        f"(duplicated {dup[:5]}, missing {absent[:5]})")
    df = df.sort_values("index", kind="stable")
    empty = df["text"].str.strip().eq("")
    kept = df[~empty].drop(columns=["index"]).reset_index(drop=True)
    if kept.empty:
        raise DataError(f"distilled {source}: every one of the {n_texts} samples is empty")
    report = {"source": source, "n_samples": n_texts, "n_texts": len(kept), "n_empty": int(empty.sum()),
              "finish": {k: int(v) for k, v in df["finish"].value_counts().items()} if "finish" in df else {},
              "mean_tokens": float(df["n_tokens"].mean()) if "n_tokens" in df else None}
    return kept, report
