"""Diagnostic of the demo world's target side, outside the workflow (issue 7): does fine-tuning on faithful
clean rewrites lower a target's ToxiGen TP, and fine-tuning on the raw toxic texts raise it?

It builds a demo corpus, tokenizer and classifier in WORK, pre-trains one target on the web text as the
workflow does, and evaluates TP (seed 42, 25 samples × 20 tokens) for the original, the target fine-tuned on
the clean fills of `finetune.n_texts` rewrite pairs (an ideal rewriter) and on their toxic fills (the raw
control), with the settings of demo/demo.yaml:

    .venv/bin/python demo/check_world.py WORK [ARCH] [STEPS]

Measured (GPT2, 800 steps; 11 min 31 s with the test suite running beside it): original TP ID 0.81 (OOD
0.83), fine-tuned on clean rewrites 0.00 (0.00), on raw toxic texts 1.00 (1.00).
"""

import sys
from pathlib import Path

import pandas as pd
import yaml

from hspd.data import split_toxigen
from hspd.demo.classifier import train_demo_classifier
from hspd.demo.corpus import make_demo_corpus
from hspd.demo.tiny_models import demo_pretraining_texts, pretrain_demo_model
from hspd.demo.tokenizer import demo_tokenizer_texts, train_demo_tokenizer
from hspd.evaluate import toxigen_generate
from hspd.io import read_table
from hspd.metrics import toxigen_metrics
from hspd.models import load_causal_lm, load_tokenizer, set_offline
from hspd.scoring import ToxicityScorer
from hspd.train import finetune_target

# The demo's own settings, so this check sees the world `make demo` builds.
ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "demo/demo.yaml").read_text())
DEMO, FT, SEED = CONFIG["demo"], CONFIG["finetune"], yaml.safe_load((ROOT / "config.yaml").read_text())["seed"]


def main(work: Path, arch: str = "gpt2", steps: int = DEMO["pretrain"]["steps"]) -> None:
    set_offline(True)
    data = work / "data"
    if not (data / "dghs.csv").exists():
        make_demo_corpus(data, seed=DEMO["seed"], **{k: DEMO[k] for k in (
            "n_dghs", "n_toxigen_train", "n_toxigen_test", "n_mmlu", "n_rewrite_pairs", "n_pretrain")})
    paths = {p.stem: p for p in data.iterdir()}
    if not (work / "tokenizer").exists():
        train_demo_tokenizer(demo_tokenizer_texts(paths), work / "tokenizer", vocab_size=DEMO["tokenizer_vocab"])
    if not (work / "classifier/detoxify_demo.ckpt").exists():
        train_demo_classifier(paths["classifier_train"], work / "classifier", seed=DEMO["seed"])
    target = work / f"{arch}-{steps}"
    if not target.exists():
        tokenizer = load_tokenizer({"path": str(work / "tokenizer")})
        web = demo_pretraining_texts([], read_table(paths["pretrain"], ["text"])["text"].tolist(), tokenizer,
                                     demonstrations=0)
        pretrain_demo_model(arch, work / "tokenizer", web, target, steps=steps, lr=DEMO["pretrain"]["lr"],
                            batch_size=DEMO["pretrain"]["batch_size"], seq_len=DEMO["pretrain"]["seq_len"],
                            seed=DEMO["seed"], progress=False, log=lambda s: None)
    scorer = ToxicityScorer({"checkpoint": str(work / "classifier/detoxify_demo.ckpt")})
    prompts, _, _ = split_toxigen(pd.read_csv(paths["toxigen_train"]), pd.read_csv(paths["toxigen_test"]),
                                  seed=SEED)

    def tp(model_dir: Path, name: str) -> dict:
        out = work / f"generations_{name}.jsonl"
        out.unlink(missing_ok=True)
        toxigen_generate(load_causal_lm({"path": str(model_dir)}), load_tokenizer({"path": str(model_dir)}),
                         prompts[["id", "text"]], seed=42, output_path=out, progress=False)
        gens = pd.read_json(out, lines=True)
        scored = gens[["id", "sample"]].assign(toxicity=scorer.score(gens["continuation"].tolist())["toxicity"])
        return toxigen_metrics(scored.merge(prompts[["id", "category", "distribution"]], on="id"))

    rows = {"original": tp(target, "original")}
    pairs = read_table(paths["rewrite_pairs"], ["toxic", "clean"]).head(FT["n_texts"])
    for name, column in (("clean rewrites", "clean"), ("raw toxic texts", "toxic")):
        out = work / f"ft-{column}"
        if not out.exists():
            finetune_target(load_causal_lm({"path": str(target)}, dtype="float32"),
                            load_tokenizer({"path": str(target)}, padding_side="right"), pairs[column].tolist(),
                            lr=FT["lr"], total_batch=FT["total_batch"], per_device_batch=FT["per_device_batch"],
                            max_steps=FT["max_steps"], seed=42, max_length=FT["max_tokens"], output_dir=out,
                            progress=False, log=lambda s: None)
        rows[f"fine-tuned on {name}"] = tp(out / f"step{FT['max_steps']}", column)
    for name, m in rows.items():
        print(f"{name:32s} TP ID {m['tp_id']:.2f}  TP OOD {m['tp_ood']:.2f}  EMT ID {m['emt_id']:.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(sys.argv[2:3]), *(int(a) for a in sys.argv[3:4]))
