"""Tiny models of the five real architectures (SPEC §8): size, determinism, batched generation with left
padding, save/reload, and the demo pre-training that teaches the base model to rewrite."""

import json

import pytest

from _tiny_tok import CLEAN, TOXIC, tiny_tokenizer
from hspd.errors import ConfigError

torch = pytest.importorskip("torch")

from hspd.demo.tiny_models import (  # noqa: E402
    ARCHITECTURES,
    build_tiny_model,
    count_parameters,
    demo_pretraining_texts,
    pretrain_demo_model,
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tok_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return path


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_sizes_and_config(arch, tok):
    small, medium = build_tiny_model(arch, tok, size="s"), build_tiny_model(arch, tok, size="m")
    n_s, n_m = count_parameters(small), count_parameters(medium)
    assert 0.9e6 <= n_s <= 2e6 and n_m <= 4e6, (n_s, n_m)
    assert 2 <= n_m / n_s <= 3
    cfg = small.config
    assert cfg.model_type == arch and cfg.vocab_size == len(tok)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (tok.eos_token_id, tok.eos_token_id,
                                                                      tok.pad_token_id)  # no BOS: EOS stands in
    assert cfg.max_position_embeddings >= 512
    assert not small.training and small.get_output_embeddings().weight.shape[0] == len(tok)


def test_build_is_deterministic_and_leaves_the_global_rng(tok):
    torch.manual_seed(7)
    state = torch.get_rng_state()
    a, b, c = (build_tiny_model("llama", tok, seed=s).state_dict() for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.layers.0.self_attn.q_proj.weight"], c["model.layers.0.self_attn.q_proj.weight"])


def test_unknown_architecture_or_size(tok, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown demo architecture 'mamba'; use one of \['qwen2'"):
        build_tiny_model("mamba", tok)
    with pytest.raises(ConfigError, match=r"unknown demo model size 'xl'"):
        build_tiny_model("gpt2", tok, size="xl")
    with pytest.raises(ConfigError, match="unknown demo model size"):
        pretrain_demo_model("gpt2", tmp_path, ["x"], tmp_path / "out", size="xl", steps=1, lr=1e-3, batch_size=1,
                            seq_len=8, progress=False)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_generate_with_left_padding_matches_unpadded(arch, tok):
    model = build_tiny_model(arch, tok, seed=1)
    prompts = [TOXIC[0], "the weather"]
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # the short prompt is padded on the left
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        together = model.generate(**batch, **kwargs)[:, batch["input_ids"].shape[1]:]
        for row, prompt in enumerate(prompts):
            alone = tok([prompt], return_tensors="pt")
            single = model.generate(**alone, **kwargs)[0, alone["input_ids"].shape[1]:]
            n = len(single)  # a row may stop early at EOS; the batch pads it afterwards
            assert together[row, :n].tolist() == single.tolist()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_and_reload_give_identical_logits(arch, tok, tmp_path):
    from transformers import AutoModelForCausalLM, GenerationConfig

    from hspd.train import save_checkpoint

    model = build_tiny_model(arch, tok, seed=2)
    save_checkpoint(model, tok, tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "generation_config.json").exists()
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    x = torch.tensor([tok(TOXIC[1])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, back.eval()(input_ids=x).logits)
    gen = GenerationConfig.from_pretrained(tmp_path)
    if arch == "qwen2":  # Qwen2.5-Instruct's sampling settings, for the `code` variant to read
        assert (gen.top_k, gen.top_p, gen.repetition_penalty, gen.do_sample) == (20, 0.8, 1.05, True)
        assert tok.convert_tokens_to_ids("<|im_end|>") in gen.eos_token_id
    else:
        assert gen.top_k in (None, 50) and gen.eos_token_id == tok.eos_token_id


def test_demo_pretraining_texts_use_the_decoders_prompt(tok):
    from hspd.rewrite import build_prompt

    texts = demo_pretraining_texts([(TOXIC[0], CLEAN[0])], [CLEAN[1]], tok)
    # A demonstration is (the decoder's prompt, the answer): only the answer is a training target.
    assert texts == [CLEAN[1] + "<|im_end|>", (build_prompt(tok, TOXIC[0]), CLEAN[0] + "</answer><|im_end|>")]
    assert texts[1][0].endswith("Here is the transcription result: <answer>")
    # Targets see the web text alone: the pairs are neither used nor checked.
    assert demo_pretraining_texts([(TOXIC[0], " ")], [CLEAN[1]], tok, demonstrations=0) == texts[:1]
    assert demo_pretraining_texts([(TOXIC[0], CLEAN[0])], [CLEAN[1]], tok, demonstrations=3) == texts + texts[1:] * 2
    with pytest.raises(ConfigError, match="demonstrations must be a whole number"):
        demo_pretraining_texts([(TOXIC[0], CLEAN[0])], [CLEAN[1]], tok, demonstrations=True)
    with pytest.raises(ConfigError, match="rewrite pair 1 has an empty or non-string side"):
        demo_pretraining_texts([(TOXIC[0], CLEAN[0]), (TOXIC[1], " ")], [], tok)
    with pytest.raises(ConfigError, match="demo pretraining text 0 is empty"):
        demo_pretraining_texts([], [""], tok, demonstrations=0)


def test_pretrain_rejects_texts_longer_than_seq_len(tok, tok_dir, tmp_path):
    texts = demo_pretraining_texts([(TOXIC[0], CLEAN[0])], CLEAN, tok)
    longest = max(len(ids) for ids in tok([t if isinstance(t, str) else "".join(t) for t in texts])["input_ids"])
    with pytest.raises(ConfigError, match=rf"1 of {len(texts)} texts are longer than seq_len=64 tokens "
                                          rf"\(longest {longest}\); raise demo.pretrain.seq_len"):
        pretrain_demo_model("qwen2", tok_dir, texts, tmp_path / "out", steps=2, lr=1e-3, batch_size=2, seq_len=64,
                            progress=False)
    assert not (tmp_path / "out").exists()


def test_pretrain_rejects_micro_batches_that_do_not_divide_the_step(tok, tok_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"micro_batches=3 must be a positive divisor of batch_size=4"):
        pretrain_demo_model("qwen2", tok_dir, CLEAN, tmp_path / "out", steps=2, lr=1e-3, batch_size=4,
                            micro_batches=3, seq_len=64, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pretrain_demo_model_trains_saves_and_reloads(tok, tok_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    texts = demo_pretraining_texts([(TOXIC[0], CLEAN[0])], (TOXIC + CLEAN) * 3, tok)
    out = pretrain_demo_model("gpt2", tok_dir, texts, tmp_path / "gpt2-s", size="s", steps=30, lr=3e-3,
                              batch_size=8, seq_len=256, seed=0, progress=False, log=lambda s: None)
    log = json.loads((out / "training_log.json").read_text())
    assert log["steps"] == 30 and log["arch"] == "gpt2" and log["n_train"] == len(texts)
    losses = [r["train_loss"] for r in log["history"]]
    assert losses[-1] < 0.75 * losses[0], losses  # ~6.0 → ~3.9 nats in 30 steps
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (out / name).exists(), name

    # Reloads offline as a plain model, and a second run with the same seed gives the same weights.
    again = pretrain_demo_model("gpt2", tok_dir, texts, tmp_path / "again", size="s", steps=30, lr=3e-3,
                                batch_size=8, seq_len=256, seed=0, progress=False, log=lambda s: None)
    a, b = AutoModelForCausalLM.from_pretrained(out).eval(), AutoModelForCausalLM.from_pretrained(again).eval()
    x = torch.tensor([tok(TOXIC[2])["input_ids"]])
    with torch.no_grad():
        assert torch.equal(a(input_ids=x).logits, b(input_ids=x).logits)
