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


# --- every treatment on every target architecture ------------------------------------------------------------------
# The demo runs the decoding and weight baselines on its GPT2 target only (demo/demo.yaml); the paper config runs them
# on GPT2, Llama, OPT and Falcon. Each architecture here trains the steering matrix and the soft prompt, loads every
# swept system and samples from it with the evaluation's own code.

@pytest.mark.parametrize("arch", ["gpt2", "llama", "opt", "falcon"])
def test_every_swept_treatment_on_every_target_architecture(arch, tmp_path):
    from hspd.baselines import save_soft_prompt, save_steering, train_soft_prompt, train_steering
    from hspd.evaluate import toxigen_generate

    build = getattr(tiny, arch)
    tok = tiny.tokenizer(add_bos=arch == "llama")
    for name, seed in (("target", 0), ("toxic", 1)):
        build(seed=seed).save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    texts = tiny.corpus(8)
    quiet = dict(batch_size=4, epochs=1, max_length=24, seed=0, progress=False, log=lambda *a: None)
    tok.padding_side = "right"  # training pads on the right (train_treatment.py); the saved targets keep left
    save_steering(train_steering(build(seed=0).train(), tok, texts, epsilon=0.5, lr=1e-1, **quiet),
                  tmp_path / "lm_steer")
    save_soft_prompt(train_soft_prompt(build(seed=0).train(), tok, texts, n_virtual=2, lr=1e-1, **quiet),
                     tmp_path / "detoxigen")
    trained = {"dexperts": "toxic", "task-arithmetic": "toxic", "lm-steer": "lm_steer", "detoxigen": "detoxigen"}
    values = {"dexperts": ("beta", 1.0), "task-arithmetic": ("lam", 0.5), "lm-steer": ("eps", -2.0),
              "detoxigen": ("alpha", 1.0)}
    ids = torch.tensor([tok("the people who live there")["input_ids"]])
    prompts = pd.DataFrame({"id": ["a", "b"], "text": ["the people who", "women from many places"]})
    with torch.inference_mode():
        plain = build(seed=0)(ids).logits
    for kind, (param, value) in values.items():
        out = load_treated({"path": str(tmp_path / "target")},
                           {**treatment(kind, param=param, value=value), "options": {"top_p": 0.9}},
                           name=f"{arch}/{kind}", trained=[str(tmp_path / trained[kind])])
        with torch.inference_mode():
            scores = out.combine(ids) if out.combine is not None else out.model(ids).logits
        # Every treatment changes the target's next-token scores, and they stay finite (lm-eval reads them).
        assert scores.shape[:2] == ids.shape and scores.shape[-1] >= len(tok), (kind, scores.shape)
        assert torch.isfinite(scores).all(), kind
        assert not torch.allclose(scores[..., :len(tok)].log_softmax(-1), plain[..., :len(tok)].log_softmax(-1),
                                  atol=1e-4), kind
        decoder = out.decoder(max_new_tokens=4, top_p=0.9, top_k=None) if out.decoder is not None else None
        path = toxigen_generate(out.model, out.tokenizer, prompts, seed=42, n_samples=2, max_new_tokens=4,
                                output_path=tmp_path / f"{kind}.jsonl", decoder=decoder, progress=False)
        rows = [json.loads(line) for line in open(path)]
        assert sorted((r["id"], r["sample"]) for r in rows) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)], kind
        assert all(0 <= r["n_tokens"] <= 4 for r in rows), kind
