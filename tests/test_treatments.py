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
                       trained=[str(saved / "toxic")])
    key = "transformer.h.0.mlp.c_fc.weight"
    torch.testing.assert_close(out.model.state_dict()[key], theta[key] - 0.5 * (toxic[key] - theta[key]))
    # λ = 0 (chosen in a selection record) is the target itself.
    write_json({"value": 0.0, "how": "validation"}, tmp_path / "sel.json")
    zero = load_treated(target, treatment("task-arithmetic", param="lam"), name="t", trained=[str(saved / "toxic")],
                        selection=[str(tmp_path / "sel.json")])
    assert all(torch.equal(zero.model.state_dict()[k], v) for k, v in theta.items())
    assert out.decoder is None and out.combine is None and out.prefix == ""


def test_dexperts_loads_an_engine_and_combined_scores(saved):
    target = {"path": str(saved / "target")}
    out = load_treated(target, treatment("dexperts", param="beta", value=1.5), name="t", trained=[str(saved / "toxic")])
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
    with pytest.raises(ConfigError, match="dexperts needs the toxic target, got"):
        load_treated(target, treatment("dexperts", param="beta", value=1.0), name="t")
    with pytest.raises(ConfigError, match="a test run needs its selection record"):
        load_treated(target, treatment("dexperts", param="beta"), name="t", trained=[str(saved / "toxic")])
    with pytest.raises(ConfigError, match="unknown treatment 'steer'"):
        load_treated(target, treatment("steer"), name="t", trained=[str(saved / "toxic")])


# --- LM-Steer and DetoxiGen: the trained part saved as data, applied when the model loads ------------------------

def test_lm_steer_loads_the_matrix_at_value_times_training_epsilon(saved, tmp_path):
    from hspd.baselines import save_steering, steering_module

    target = {"path": str(saved / "target")}
    d = tiny.gpt2(seed=0).config.n_embd
    steer = steering_module(d, epsilon=0.5, seed=3, init_std=0.2)
    save_steering(steer, tmp_path / "steer")
    ids = torch.tensor([tiny.tokenizer()("the people who live there")["input_ids"]])
    plain = tiny.gpt2(seed=0)
    with torch.inference_mode():
        own = plain(ids, output_hidden_states=True)
        hidden = own.hidden_states[-1]
        E = plain.get_output_embeddings().weight
        out = load_treated(target, treatment("lm-steer", param="eps", value=-2.0), name="t",
                           trained=[str(tmp_path / "steer")])
        got = out.model(ids).logits
        zero = load_treated(target, treatment("lm-steer", param="eps", value=0.0), name="t",
                            trained=[str(tmp_path / "steer")]).model(ids).logits
        # ε = value × ε₀ = −1: logits of the edited embeddings e + ε W e.
        edited = hidden @ (E - 1.0 * E @ steer.weight.T).T
    torch.testing.assert_close(got, edited, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(zero, own.logits)  # ε = 0 is the target itself
    assert out.decoder is None and out.combine is None and out.value == -2.0


def test_detoxigen_loads_one_backbone_as_generator_and_detoxifier(saved, tmp_path):
    from hspd.baselines import SoftPromptedLM, detoxigen_logits, save_soft_prompt

    target = {"path": str(saved / "target")}
    d = tiny.gpt2(seed=0).config.n_embd
    prompt = torch.randn(3, d, generator=torch.Generator().manual_seed(0))
    save_soft_prompt(prompt, tmp_path / "prompt")
    out = load_treated(target, {**treatment("detoxigen", param="alpha", value=2.0), "options": {"top_p": 0.8}},
                       name="t", trained=[str(tmp_path / "prompt")])
    ids = torch.tensor([tiny.tokenizer()("the people who live there")["input_ids"]])
    backbone = tiny.gpt2(seed=0)
    with torch.inference_mode():
        got = out.combine(ids)[0]
        gen = backbone(ids).logits[0]
        full = torch.cat([prompt, backbone.get_input_embeddings()(ids[0])])
        det = backbone(inputs_embeds=full.unsqueeze(0)).logits[0, 3:]
        whole = SoftPromptedLM(backbone, prompt)(ids).logits[0]
    torch.testing.assert_close(whole, det)  # the whole-sequence view drops the prompt's positions
    # lm-eval sees the whole contrast (the top-p set filters sampling only): finite at every token.
    torch.testing.assert_close(got, detoxigen_logits(gen, det, alpha=2.0, top_p=1.0, vocab_size=gen.shape[-1]))
    assert torch.isfinite(got).all()
    decoder = out.decoder(max_new_tokens=4, top_p=0.9, top_k=None)
    assert decoder.combiner.alpha == 2.0 and decoder.combiner.top_p == 0.8 and decoder.sampling.top_p == 0.9
    assert decoder.base_model is decoder.toxic_model.backbone  # one set of weights


def test_trained_parts_are_data_and_must_fit(saved, tmp_path):
    from hspd.baselines import save_soft_prompt
    from hspd.errors import ModelError

    target = {"path": str(saved / "target")}
    with pytest.raises(ConfigError, match="lm-steer needs its steering matrix, got"):
        load_treated(target, treatment("lm-steer", param="eps", value=-1.0), name="t")
    with pytest.raises(ConfigError, match="detoxigen needs its soft prompt, got"):
        load_treated(target, treatment("detoxigen", param="alpha", value=1.0), name="t")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no LM-Steer matrix here"):
        load_treated(target, treatment("lm-steer", param="eps", value=-1.0), name="t", trained=[str(tmp_path / "empty")])
    # A pickle renamed to the expected file is refused, never unpickled.
    (tmp_path / "pickled").mkdir()
    torch.save({"weight": torch.zeros(32, 32)}, tmp_path / "pickled" / "steering.safetensors")
    with pytest.raises(ModelError, match="not a readable LM-Steer matrix"):
        load_treated(target, treatment("lm-steer", param="eps", value=-1.0), name="t",
                     trained=[str(tmp_path / "pickled")])
    save_soft_prompt(torch.zeros(2, 7), tmp_path / "narrow")
    with pytest.raises(ModelError, match=r"shape \(2, 7\) does not fit the target's hidden size 32"):
        load_treated(target, treatment("detoxigen", param="alpha", value=1.0), name="t",
                     trained=[str(tmp_path / "narrow")])
