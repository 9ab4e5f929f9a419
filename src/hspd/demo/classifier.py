"""The demo world's toxicity classifier: a tiny BERT saved as a Detoxify-format checkpoint (SPEC §8).

The checkpoint is what ``detoxify.Detoxify(checkpoint=path)`` loads, so the demo scores texts through the same
code path as Detoxify ``original``:

- ``config["arch"]["args"]``: ``model_type`` (the absolute path of a folder with the BERT ``config.json`` and
  the WordPiece tokenizer; Detoxify reads both from it), ``model_name`` ``BertForSequenceClassification``,
  ``tokenizer_name`` ``BertTokenizerFast``, ``num_classes`` 6;
- ``config["dataset"]["args"]["classes"]``: the Jigsaw labels, which Detoxify reports as ``toxicity``,
  ``severe_toxicity``, ``obscene``, ``threat``, ``insult``, ``identity_attack``;
- ``state_dict``: the model's own keys (``bert.…``, ``classifier.…``), which Detoxify hands to
  ``from_pretrained(None, config=..., state_dict=...)``.

The weights live only in the checkpoint; the folder holds no weights. Because ``model_type`` is absolute,
moving the output folder breaks the checkpoint: retrain it instead (well under a minute on CPU).
"""

from __future__ import annotations

import math
import numbers
import os
import random
import string
from pathlib import Path

from hspd.demo.corpus import LABELS
from hspd.errors import ConfigError, DataError

CHECKPOINT_NAME = "detoxify_demo.ckpt"
BERT_DIR = "bert"
METRICS_NAME = "metrics.json"
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_classifier_data(path) -> tuple[list[str], list[list[float]]]:
    """Texts and their six labels from a JSONL/CSV/Parquet file with ``text`` and the ``LABELS`` columns.

    Labels are soft, in [0, 1] (the share of raters who would flag the text, as Jigsaw's are): the demo marks
    mild toxicity below 1, so the classifier grades. Raises ``DataError`` naming the file, column and row for an
    empty text or a label outside [0, 1].
    """
    from hspd.io import read_table

    df = read_table(path, ["text", *LABELS], what="classifier training file")
    for i, text in enumerate(df["text"]):
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"classifier training file {path}: column 'text', row {i}: empty text")
    for col in LABELS:
        for i, value in enumerate(df[col]):
            if not isinstance(value, numbers.Real) or not 0 <= value <= 1:  # NaN and strings fail too
                raise DataError(f"classifier training file {path}: column {col!r}, row {i}: label {value!r} "
                                "is not a number between 0 and 1")
    return df["text"].tolist(), df[list(LABELS)].astype(float).values.tolist()


def split_heldout(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Row indices for training and held-out evaluation, a seeded random ``fraction`` held out."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = max(1, round(fraction * n))
    return sorted(order[k:]), sorted(order[:k])


def train_wordpiece(texts, out_dir, *, vocab_size: int, max_length: int):
    """An uncased WordPiece tokenizer for ``texts``, saved in ``out_dir`` as a ``BertTokenizerFast``.

    The vocabulary is the special tokens, every character of the texts and of ASCII (word-initial and ``##``
    continuation, so no word is ever unknown), then the most frequent whole words (ties by spelling) up to
    ``vocab_size``, counted with BERT's own normaliser and pre-tokeniser. The library's ``WordPieceTrainer`` is
    not used: its result changes from run to run (continuation pieces get hash-ordered ids, which break merge
    ties), and the demo must be reproducible from its seed.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = Counter(w for t in texts for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w} | set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = list(WORDPIECE_SPECIALS) + chars + [f"##{c}" for c in chars]
    known = set(vocab)
    for word, _ in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
    wp = Tokenizer(models.WordPiece({tok: i for i, tok in enumerate(vocab)}, unk_token="[UNK]"))
    wp.normalizer, wp.pre_tokenizer, wp.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    cls, sep = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    # model_max_length makes Detoxify's `truncation=True` cut at the model's position limit.
    tokenizer = BertTokenizerFast(tokenizer_object=wp, model_max_length=max_length, do_lower_case=True)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def train_demo_classifier(train_jsonl, out_dir, *, seed: int = 0, epochs: int = 6, batch_size: int = 64,
                          lr: float = 2e-3, hidden_size: int = 144, num_layers: int = 2, num_heads: int = 2,
                          vocab_size: int = 3000, max_length: int = 64, heldout_fraction: float = 0.15,
                          device: str = "auto", progress: bool = False) -> Path:
    """Train the demo toxicity classifier and save it as ``out_dir/detoxify_demo.ckpt``.

    A tiny ``BertForSequenceClassification`` (about 0.6M parameters at the defaults) with a WordPiece vocabulary
    trained on the training texts learns the six labels with a multi-label BCE loss. A seeded
    ``heldout_fraction`` of the rows is kept out of training; the checkpoint is then loaded back through
    ``detoxify.Detoxify`` and scored on it, and the figures go to ``out_dir/metrics.json``.

    Args:
        train_jsonl: ``classifier_train.jsonl`` of the demo corpus (``text`` and the six labels in [0, 1]).
        out_dir: the output folder; gets ``detoxify_demo.ckpt``, ``bert/`` (config and tokenizer) and
            ``metrics.json``.
        device: ``auto`` trains on CUDA when present.

    Returns:
        The checkpoint path.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import BertConfig, BertForSequenceClassification

    from hspd.io import write_json
    from hspd.models import pick_device

    if epochs < 1 or batch_size < 1 or not 0 < heldout_fraction < 1 or hidden_size % num_heads:
        raise ConfigError(f"demo classifier: need epochs >= 1, batch_size >= 1, 0 < heldout_fraction < 1 and "
                          f"hidden_size divisible by num_heads; got epochs={epochs}, batch_size={batch_size}, "
                          f"heldout_fraction={heldout_fraction}, hidden_size={hidden_size}, num_heads={num_heads}")
    texts, labels = read_classifier_data(train_jsonl)
    train_idx, held_idx = split_heldout(len(texts), heldout_fraction, seed)
    held_labels = [labels[i] for i in held_idx]
    if not any(y[0] for y in held_labels) or all(y[0] for y in held_labels):
        raise DataError(f"classifier training file {train_jsonl}: the held-out rows need toxic and non-toxic "
                        f"texts; {len(texts)} rows are too few or all alike")

    out = Path(out_dir)
    bert_dir = (out / BERT_DIR).resolve()
    bert_dir.mkdir(parents=True, exist_ok=True)
    train_texts = [texts[i] for i in train_idx]
    tokenizer = train_wordpiece(train_texts, bert_dir, vocab_size=vocab_size, max_length=max_length)

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=4 * hidden_size,
                        max_position_embeddings=max_length, num_labels=len(LABELS),
                        problem_type="multi_label_classification", pad_token_id=tokenizer.pad_token_id,
                        id2label=dict(enumerate(LABELS)), label2id={c: i for i, c in enumerate(LABELS)})
    config.save_pretrained(bert_dir)
    dev = pick_device(device)
    model = BertForSequenceClassification(config).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total = epochs * steps_per_epoch
    # Linear warm-up over the first 10% of steps, then linear decay: stable at this high learning rate.
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    rng = random.Random(seed)
    order = list(train_idx)
    model.train()
    with tqdm(total=total, desc="demo classifier", disable=not progress) as bar:
        for _ in range(epochs):
            rng.shuffle(order)
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                enc = tokenizer([texts[i] for i in batch], padding=True, truncation=True, return_tensors="pt").to(dev)
                target = torch.tensor([labels[i] for i in batch], dtype=torch.float32, device=dev)
                loss = model(**enc, labels=target).loss  # BCE with logits over the six labels
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()

    checkpoint = out / CHECKPOINT_NAME
    save_detoxify_checkpoint(model, bert_dir, checkpoint)
    metrics = heldout_metrics(checkpoint, [texts[i] for i in held_idx], held_labels)
    metrics.update(n_train=len(train_idx), n_heldout=len(held_idx), seed=seed, epochs=epochs,
                   parameters=sum(p.numel() for p in model.parameters()), final_loss=float(loss.item()))
    write_json(metrics, out / METRICS_NAME)
    return checkpoint


def save_detoxify_checkpoint(model, bert_dir, path) -> Path:
    """Save ``model`` (a ``BertForSequenceClassification``) in the format ``Detoxify(checkpoint=path)`` loads;
    written to a temporary file and renamed, so a killed job leaves no half-written checkpoint."""
    import torch

    path = Path(path)
    checkpoint = {
        "config": {
            "arch": {"args": {"model_type": str(Path(bert_dir).resolve()),
                              "model_name": "BertForSequenceClassification",
                              "tokenizer_name": "BertTokenizerFast", "num_classes": len(LABELS)}},
            "dataset": {"args": {"classes": list(LABELS)}},
        },
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def heldout_metrics(checkpoint, texts, labels, batch_size: int = 256) -> dict:
    """Scores of held-out texts through ``detoxify.Detoxify``, per Detoxify class: the accuracy at 0.5 against
    labels read at 0.5 (a mild label, below 0.5, is a negative there), and the mean score of the positives
    (label ≥ 0.5), of the mild texts (0 < label < 0.5) and of the negatives (label 0). ``mean_toxicity_toxic``,
    ``_mild`` and ``_clean`` repeat the ``toxicity`` class's."""
    from detoxify import Detoxify

    scorer = Detoxify(checkpoint=str(checkpoint), device="cpu")
    scores: dict[str, list[float]] = {c: [] for c in scorer.class_names}
    for start in range(0, len(texts), batch_size):
        out = scorer.predict(list(texts[start:start + batch_size]))
        for c in scorer.class_names:  # a one-text batch gives a float, not a list
            scores[c].extend(out[c] if isinstance(out[c], list) else [out[c]])

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    metrics: dict = {"classes": {}}
    for j, c in enumerate(scorer.class_names):
        pairs = list(zip(scores[c], (y[j] for y in labels)))
        metrics["classes"][c] = {
            "accuracy": sum((s > 0.5) == (y >= 0.5) for s, y in pairs) / len(pairs),
            "mean_positive": mean([s for s, y in pairs if y >= 0.5]),
            "mean_mild": mean([s for s, y in pairs if 0 < y < 0.5]),
            "mean_negative": mean([s for s, y in pairs if y == 0]),
            "n_positive": sum(y >= 0.5 for _, y in pairs),
            "n_mild": sum(0 < y < 0.5 for _, y in pairs),
        }
    tox = metrics["classes"]["toxicity"]
    metrics.update(mean_toxicity_toxic=tox["mean_positive"], mean_toxicity_mild=tox["mean_mild"],
                   mean_toxicity_clean=tox["mean_negative"])
    return metrics
