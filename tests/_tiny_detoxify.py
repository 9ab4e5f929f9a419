"""A tiny random BERT saved in Detoxify's checkpoint format, so the real ``Detoxify(checkpoint=...)`` code path
runs offline in tests (about a second to build)."""

JIGSAW_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
WORDS = ("the a an and or but not is are was were be this that these those you he she they we it of to in on for "
         "with as at by from people women men group hate love good bad terrible fact text they them their our "
         "your my all some every no never always very so too just like think know say said want need go went "
         "make made see saw come came take took should would could can will must").split()


def save_tiny_detoxify(folder, classes=JIGSAW_CLASSES, **extra):
    """A random-weight BertForSequenceClassification saved the way Detoxify's training code saves it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()")
    pieces = ["##" + v + c for v in "aeiou" for c in "nrstldgmck"] + ["##s", "##ed", "##ing", "##ly", "##er"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + pieces + WORDS
    assert 200 < len(vocab) < 400
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_max_length=64)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(classes))
    config.save_pretrained(folder)
    model = BertForSequenceClassification(config).eval()
    ckpt = {
        "config": {"arch": {"args": {"model_type": str(folder), "model_name": "BertForSequenceClassification",
                                     "tokenizer_name": "BertTokenizerFast", "num_classes": len(classes)}},
                   "dataset": {"args": {"classes": list(classes)}}},
        "state_dict": model.state_dict(),
        **extra,
    }
    path = folder / "detoxify.ckpt"
    torch.save(ckpt, path)
    return path
