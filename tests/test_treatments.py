"""Loading a system for evaluation: the chosen checkpoint, Task Arithmetic in memory, DExperts' engine and its
lm-eval scores, pre-prompts; and what a wrong treatment says."""

import json

import pandas as pd
import pytest
import torch

import _tiny_eval as tiny
from hspd.baselines import dexperts_logits
from hspd.errors import ConfigError
from hspd.io import write_json
from hspd.treatments import load_treated, model_prompts


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A target and its toxic version saved as local models."""
    root = tmp_path_factory.mktemp("models")
    tok = tiny.tokenizer()
    for name, seed in (("target", 0), ("toxic", 1)):
        tiny.gpt2(seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def treatment(kind, **kw):
    return {"kind": kind, "param": None, "value": None, "prefix": None, **kw}


def test_task_arithmetic_is_applied_in_memory(saved, tmp_path):
    target = {"path": str(saved / "target")}
    theta = tiny.gpt2(seed=0).state_dict()
    toxic = tiny.gpt2(seed=1).state_dict()
    out = load_treated(target, treatment("task-arithmetic", param="lam", value=0.5), name="t",
                       toxic=[str(saved / "toxic")])
    key = "transformer.h.0.mlp.c_fc.weight"
    torch.testing.assert_close(out.model.state_dict()[key], theta[key] - 0.5 * (toxic[key] - theta[key]))
    # λ = 0 (chosen in a selection record) is the target itself.
    write_json({"value": 0.0, "how": "validation"}, tmp_path / "sel.json")
    zero = load_treated(target, treatment("task-arithmetic", param="lam"), name="t", toxic=[str(saved / "toxic")],
                        selection=[str(tmp_path / "sel.json")])
    assert all(torch.equal(zero.model.state_dict()[k], v) for k, v in theta.items())
    assert out.decoder is None and out.combine is None and out.prefix == ""


def test_dexperts_loads_an_engine_and_combined_scores(saved):
    target = {"path": str(saved / "target")}
    out = load_treated(target, treatment("dexperts", param="beta", value=1.5), name="t", toxic=[str(saved / "toxic")])
    assert out.value == 1.5
    ids = torch.tensor([tiny.tokenizer()("the people who live there")["input_ids"]])
    with torch.inference_mode():
        got = out.combine(ids)
        a, b = out.model(ids).logits[0], tiny.gpt2(seed=1)(ids).logits[0]
    torch.testing.assert_close(got[0], dexperts_logits(a, b, beta=1.5, vocab_size=a.shape[-1]))
    decoder = out.decoder(max_new_tokens=4, top_p=0.9, top_k=None)
    assert decoder.combiner.beta == 1.5 and decoder.sampling.top_p == 0.9 and decoder.max_new_tokens == 4


def test_finetuned_and_preprompt_systems(saved, tmp_path):
    run = tmp_path / "run"
    (run / "step40").mkdir(parents=True)
    for f in (saved / "target").iterdir():
        (run / "step40" / f.name).write_bytes(f.read_bytes())
    write_json({"value": 40, "how": "validation"}, tmp_path / "sel.json")
    ft = load_treated({"path": str(run)}, treatment("hspd"), name="t", selection=[str(tmp_path / "sel.json")])
    assert ft.model.config.n_embd == 32
    pre = load_treated({"path": str(saved / "target")}, treatment("preprompt", prefix="Be kind.\n"), name="t")
    assert pre.prefix == "Be kind.\n" and pre.decoder is None
    prompts = pd.DataFrame({"id": ["a", "b"], "text": ["x y", "z"], "category": ["c", "d"]})
    seen = model_prompts(prompts, pre.prefix)
    assert seen["text"].tolist() == ["Be kind.\nx y", "Be kind.\nz"] and seen["id"].tolist() == ["a", "b"]
    assert model_prompts(prompts, "") is prompts


def test_preprompted_generation_scores_only_the_continuation(saved, tmp_path):
    from hspd.evaluate import toxigen_generate

    model, tok = tiny.gpt2(seed=0), tiny.tokenizer()
    prompts = pd.DataFrame({"id": ["a", "b"], "text": ["the people who", "women from many places"]})
    prefix = "everyone deserves respect and a fair chance\n"
    path = toxigen_generate(model, tok, model_prompts(prompts, prefix), seed=1, n_samples=3, max_new_tokens=5,
                            output_path=tmp_path / "g.jsonl", progress=False)
    rows = [json.loads(line) for line in open(path)]
    assert {r["id"] for r in rows} == {"a", "b"}
    assert not any(prefix.strip() in r["continuation"] or r["continuation"].startswith("the people") for r in rows)


def test_bad_treatments(saved):
    target = {"path": str(saved / "target")}
    with pytest.raises(ConfigError, match="dexperts needs the toxic target"):
        load_treated(target, treatment("dexperts", param="beta", value=1.0), name="t")
    with pytest.raises(ConfigError, match="a test run needs its selection record"):
        load_treated(target, treatment("dexperts", param="beta"), name="t", toxic=[str(saved / "toxic")])
    with pytest.raises(ConfigError, match="unknown treatment 'steer'"):
        load_treated(target, treatment("steer"), name="t", toxic=[str(saved / "toxic")])
