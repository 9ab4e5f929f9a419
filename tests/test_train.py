"""Causal-LM training (SPEC §4): loss masking, exact accumulation, accuracy, best-checkpoint selection, the
toxic-model stage, the fine-tuning set and target fine-tuning (full and LoRA)."""

import json
import math

import pandas as pd
import pytest

from _tiny_tok import CLEAN, TOXIC, tiny_tokenizer
from hspd.errors import ConfigError, DataError

torch = pytest.importorskip("torch")

from hspd.train import (  # noqa: E402
    IGNORE_INDEX,
    BestWeights,
    CausalLMData,
    accumulate_gradients,
    causal_lm_loss_sum,
    finetune_target,
    lora_target_modules,
    next_token_accuracy,
    sample_finetune_set,
    split_heldout,
    step_plan,
    train_causal_lm,
    train_toxic_model,
)

TEXTS = TOXIC + CLEAN  # 12 texts of different lengths


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def tiny(arch, tok, seed=0, dtype=torch.float32):
    from hspd.demo.tiny_models import build_tiny_model

    return build_tiny_model(arch, tok, seed=seed).to(dtype)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_params(a, b, atol=0.0):
    return all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


# --- loss and accuracy on fixed tensors ---------------------------------------------------------------------


def test_next_token_accuracy_hand_computed():
    # Two rows, vocab 3. Position t predicts label t+1; row 1 is padded after 3 tokens.
    logits = torch.tensor([
        [[0.1, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0], [9.0, 0.0, 0.0]],
        [[0.0, 0.0, 5.0], [0.0, 1.0, 0.5], [7.0, 7.5, 0.0], [0.0, 0.0, 0.0]],
    ])
    labels = torch.tensor([[2, 1, 0, 2], [0, 2, 1, IGNORE_INDEX]])
    # row 0: argmax 1,0,2 vs targets 1,0,2 → 3/3;  row 1: argmax 2,1 vs targets 2,1 → 2/2 (last is padding)
    assert next_token_accuracy(logits, labels) == (5, 5)
    labels[0, 3] = 0  # now position 2 (argmax 2) misses
    assert next_token_accuracy(logits, labels) == (4, 5)


def test_loss_sum_hand_computed():
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(4.0), 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[0, 1, IGNORE_INDEX]])
    loss, n = causal_lm_loss_sum(logits, labels)
    # position 0 predicts 1 with p = 3/4; position 1 would predict padding: not counted
    assert n == 1 and loss.item() == pytest.approx(-math.log(3 / 4))


# --- data ---------------------------------------------------------------------------------------------------


def test_collate_pads_right_and_keeps_eos_that_is_also_padding(tok):
    tok_eos_pad = tiny_tokenizer()
    tok_eos_pad.pad_token = tok_eos_pad.eos_token  # like GPT2 / LLaMA-2 with pad = EOS
    data = CausalLMData(tok_eos_pad, ["hate them<|im_end|>", "the weather was mild and the market"], max_length=64)
    batch = data.collate([0, 1])
    n0, n1 = len(data.input_ids[0]), len(data.input_ids[1])
    assert n0 < n1 and batch["input_ids"].shape == (2, n1)
    eos = tok_eos_pad.eos_token_id
    assert batch["input_ids"][0, n0 - 1] == eos and batch["labels"][0, n0 - 1] == eos  # the text's own EOS
    assert (batch["labels"][0, n0:] == IGNORE_INDEX).all() and (batch["input_ids"][0, n0:] == eos).all()
    assert batch["attention_mask"][0].tolist() == [1] * n0 + [0] * (n1 - n0)
    assert (batch["labels"][1] != IGNORE_INDEX).all()


def test_data_truncates_and_rejects_bad_texts(tok):
    data = CausalLMData(tok, [TOXIC[0]], max_length=5)
    assert len(data.input_ids[0]) == 5 and data.n_truncated == 1
    with pytest.raises(DataError, match="training texts: text 1 is empty"):
        CausalLMData(tok, ["fine", "  "], max_length=8, name="training texts")
    with pytest.raises(DataError, match="text 0 is empty or not a string: None"):
        CausalLMData(tok, [None], max_length=8)
    with pytest.raises(DataError, match="no texts"):
        CausalLMData(tok, [], max_length=8)
    with pytest.raises(ConfigError, match="max_length"):
        CausalLMData(tok, ["a b"], max_length=1)


def test_step_plan_is_seeded_and_covers_each_epoch():
    def plan(seed):
        return list(step_plan(10, 4, torch.Generator().manual_seed(seed), epochs=2))

    steps = plan(3)
    assert [len(s) for s in steps] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(steps[:3], [])) == list(range(10)) and sorted(sum(steps[3:], [])) == list(range(10))
    assert steps == plan(3) and steps != plan(4)
    capped = list(step_plan(10, 4, torch.Generator().manual_seed(3), max_steps=5))
    assert capped == steps[:5]


# --- the loss: padding masked, accumulation exact ---------------------------------------------------------


def test_padded_batch_loss_equals_sequences_one_by_one(tok):
    model = tiny("qwen2", tok, dtype=torch.float64)
    data = CausalLMData(tok, TEXTS, max_length=64)
    with torch.no_grad():
        batch = data.collate(range(len(TEXTS)))
        padded, n = causal_lm_loss_sum(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                       batch["labels"])
        one_by_one, count = 0.0, 0
        for ids in data.input_ids:
            x = torch.tensor([ids])
            logp = model(input_ids=x).logits[0, :-1].log_softmax(-1)
            one_by_one -= logp.gather(1, x[0, 1:, None]).sum().item()
            count += len(ids) - 1
    assert n == count == data.n_targets
    assert padded.item() / n == pytest.approx(one_by_one / count, rel=1e-10)


def test_pairs_train_on_the_target_only(tok):
    """A (context, target) item scores exactly the target's tokens: its loss is log p(context + target) −
    log p(context), computed by hand; the context never enters the loss, plain texts in the batch still do."""
    model = tiny("qwen2", tok, dtype=torch.float64)
    items = [(TOXIC[0], " " + CLEAN[0]), CLEAN[1], (TOXIC[2], " " + CLEAN[2])]
    data = CausalLMData(tok, items, max_length=64)
    batch = data.collate(range(3))
    with torch.no_grad():
        loss, n = causal_lm_loss_sum(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                     batch["labels"])

        def logp(text):
            x = torch.tensor([tok(text)["input_ids"]])
            return model(input_ids=x).logits[0, :-1].log_softmax(-1).gather(1, x[0, 1:, None]).sum().item()

        by_hand = -(logp(TOXIC[0] + " " + CLEAN[0]) - logp(TOXIC[0]) + logp(CLEAN[1])
                    + logp(TOXIC[2] + " " + CLEAN[2]) - logp(TOXIC[2]))
    n_context = [len(tok(TOXIC[0])["input_ids"]), 0, len(tok(TOXIC[2])["input_ids"])]
    assert data.n_context == n_context
    assert n == data.n_targets == sum(len(ids) - max(c, 1) for ids, c in zip(data.input_ids, n_context))
    assert loss.item() == pytest.approx(by_hand, rel=1e-10)
    assert (batch["labels"][0, : n_context[0]] == IGNORE_INDEX).all() and batch["labels"][0, n_context[0]] >= 0


def test_pairs_bad_input_is_named(tok):
    with pytest.raises(DataError, match="item 1 must be a \\(context, target\\) pair of strings with a non-empty target"):
        CausalLMData(tok, [CLEAN[0], (TOXIC[0], " ")], max_length=64)
    with pytest.raises(DataError, match="item 0 must be a"):
        CausalLMData(tok, [(TOXIC[0], CLEAN[0], CLEAN[1])], max_length=64)
    with pytest.raises(DataError, match="item 0 \\(context \\+ target\\) has .* tokens, more than max_length=8; "
                                        "cutting it would drop its target"):
        CausalLMData(tok, [(TOXIC[0], CLEAN[0])], max_length=8)


def test_accumulated_gradient_equals_one_big_batch(tok):
    model = tiny("llama", tok, dtype=torch.float64)
    data = CausalLMData(tok, TEXTS[:8], max_length=64)

    def grads(micro):
        model.zero_grad()
        accumulate_gradients(model, micro)
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    big = grads([data.collate(range(8))])
    accumulated = grads([data.collate(range(i, i + 2)) for i in range(0, 8, 2)])
    assert all(torch.allclose(big[k], accumulated[k], rtol=1e-9, atol=1e-12) for k in big)

    # A mean of per-micro-batch means is a different gradient: the test would catch that mistake.
    model.zero_grad()
    for i in range(0, 8, 2):
        b = data.collate(range(i, i + 2))
        loss, n = causal_lm_loss_sum(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                     b["labels"])
        (loss / n / 4).backward()
    assert not all(torch.allclose(big[k], p.grad, rtol=1e-6) for k, p in model.named_parameters())


def test_training_with_accumulation_equals_one_big_batch(tok):
    runs = []
    for batch_size, grad_accum, by_length in ((8, 1, False), (2, 4, False), (3, 3, False), (2, 4, True)):
        model = tiny("qwen2", tok, dtype=torch.float64)
        train_causal_lm(model, tok, TEXTS, lr=1e-2, batch_size=batch_size, grad_accum=grad_accum, max_steps=3,
                        max_length=64, seed=0, group_by_length=by_length, select_best=None, progress=False,
                        log=lambda s: None)
        runs.append(params(model))
    assert same_params(runs[0], runs[1], atol=1e-10)
    assert same_params(runs[0], runs[3], atol=1e-10)  # passes in length order: the same step
    assert not same_params(runs[0], runs[2], atol=1e-6)  # 9 texts per step is another batch


def test_a_step_runs_its_passes_in_length_order_so_each_pads_to_its_own_longest(tok, monkeypatch):
    from hspd import train

    data = CausalLMData(tok, TEXTS, max_length=64)
    lengths = [len(ids) for ids in data.input_ids]
    assert len(set(lengths)) > 4  # texts of mixed lengths, or there is no padding to save
    passes = []
    real = train.accumulate_gradients

    def spy(model, micro_batches, **kw):
        passes.append([b["attention_mask"] for b in micro_batches])
        return real(model, micro_batches, **kw)

    monkeypatch.setattr(train, "accumulate_gradients", spy)
    model = tiny("qwen2", tok)
    kw = dict(lr=1e-2, batch_size=3, grad_accum=4, max_steps=2, max_length=64, seed=0, select_best=None,
              progress=False, log=lambda s: None)
    train_causal_lm(model, tok, TEXTS, **kw)  # off by default: the passes take the plan's order
    order = next(iter(step_plan(len(data), 12, torch.Generator().manual_seed(0), max_steps=1)))
    assert [int(n) for m in passes[0] for n in m.sum(1)] == [lengths[i] for i in order]
    passes.clear()
    train_causal_lm(model, tok, TEXTS, group_by_length=True, **kw)
    assert len(passes) == 2
    for step in passes:
        assert [m.shape[0] for m in step] == [3, 3, 3, 3]
        rows = [int(n) for m in step for n in m.sum(1)]
        assert rows == sorted(rows) and sorted(rows) == sorted(lengths)  # all 12 texts, shortest first
        assert all(m.shape[1] == int(m.sum(1).max()) for m in step)  # no pass pads beyond its longest text
    # Less padding than the same passes in the plan's order would have had.
    padded = sum(m.numel() for m in passes[0])
    unsorted = sum(3 * max(lengths[i] for i in order[j:j + 3]) for j in range(0, 12, 3))
    assert padded < unsorted


# --- the training loop --------------------------------------------------------------------------------------


def test_training_is_deterministic_given_the_seed_and_leaves_the_global_rng(tok):
    def run(seed):
        model = tiny("gpt2", tok)  # GPT2 has dropout: the seed must fix it too
        model.config.resid_pdrop = 0.1
        train_causal_lm(model, tok, TEXTS, lr=1e-3, batch_size=4, max_steps=3, max_length=32, seed=seed,
                        select_best=None, progress=False, log=lambda s: None)
        return params(model)

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert same_params(a, b)
    assert not same_params(a, c, atol=1e-7)


def test_history_and_evaluation_schedule(tok):
    model = tiny("qwen2", tok)
    lines = []
    result = train_causal_lm(model, tok, TEXTS, lr=1e-3, batch_size=4, epochs=2, max_length=32, seed=0,
                             eval_texts=TOXIC[:2], eval_every=2, progress=False, log=lines.append)
    assert result.steps == 6 and result.n_train == 12 and result.n_eval == 2
    assert [r["step"] for r in result.history] == [0, 2, 4, 6]
    assert result.history[0]["train_loss"] is None
    assert all(0 <= r["eval_acc"] <= 1 and r["eval_loss"] > 0 for r in result.history)
    best = max(result.history[1:], key=lambda r: r["eval_acc"])
    assert result.best_step == best["step"]
    assert any("kept the weights of step" in line for line in lines)
    assert not model.training


def test_best_checkpoint_is_the_one_returned(tok, tmp_path, monkeypatch):
    # A scripted held-out accuracy: step 2 is the best, later steps are worse.
    import hspd.train as train

    accuracies = iter([0.9, 0.2, 0.6, 0.4, 0.5])  # steps 0 (not eligible), 1, 2, 3, 4
    monkeypatch.setattr(train, "evaluate_causal_lm",
                        lambda model, data, **kw: {"eval_loss": 1.0, "eval_acc": next(accuracies), "eval_tokens": 1})
    model = tiny("qwen2", tok)
    result = train_causal_lm(model, tok, TEXTS, lr=1e-2, batch_size=4, max_steps=4, max_length=32, seed=0,
                             eval_texts=TOXIC[:2], eval_every=1, save_steps=[1, 2, 3, 4], output_dir=tmp_path,
                             progress=False, log=lambda s: None)
    assert result.best_step == 2 and result.saved_steps == [1, 2, 3, 4]
    from safetensors.torch import load_file

    step2, step4 = load_file(tmp_path / "step2" / "model.safetensors"), load_file(tmp_path / "step4" / "model.safetensors")
    kept = result.model.state_dict()
    assert all(torch.equal(kept[k], step2[k]) for k in step2)
    assert not all(torch.equal(kept[k], step4[k]) for k in step4)


def test_best_weights_ties_keep_the_earlier_step(tok):
    model = tiny("gpt2", tok)
    best = BestWeights()
    assert best.update(1, 0.5, model)
    first = params(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert not best.update(2, 0.5, model) and best.step == 1
    best.restore(model)
    assert same_params(params(model), first)


def test_gradient_checkpointing_gives_the_same_training(tok, monkeypatch):
    import transformers.modeling_utils

    calls = []
    checkpoint = transformers.modeling_utils.checkpoint
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k))

    def run(checkpointing):
        model = tiny("llama", tok, dtype=torch.float64)
        train_causal_lm(model, tok, TEXTS, lr=1e-2, batch_size=4, max_steps=2, max_length=32, seed=0,
                        select_best=None, gradient_checkpointing=checkpointing, progress=False, log=lambda s: None)
        flag = getattr(model, "is_activation_checkpointing", None)
        assert not (model.is_gradient_checkpointing if flag is None else flag)
        return params(model)

    plain = run(False)
    assert not calls
    assert same_params(plain, run(True), atol=1e-10)
    assert calls  # the layers really were recomputed


def test_bf16_weights_are_upcast_for_training(tok):
    model = tiny("qwen2", tok).to(torch.bfloat16)
    lines = []
    train_causal_lm(model, tok, TEXTS, lr=1e-3, batch_size=4, max_steps=1, max_length=16, seed=0,
                    select_best=None, progress=False, log=lines.append)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any("upcasting" in line for line in lines)


@pytest.mark.parametrize("kwargs, message", [
    ({"select_best": "next_token_accuracy"}, "select_best needs eval_texts"),
    ({"select_best": "loss"}, "select_best must be one of"),
    ({"max_steps": None}, "give epochs or max_steps"),
    ({"lr": 0}, "lr must be positive"),
    ({"save_steps": [5]}, r"save_steps \[5\] are outside the run's optimizer steps 1..3"),
    ({"save_steps": [2]}, "save_steps need an output_dir"),
])
def test_train_rejects_bad_arguments_before_training(tok, kwargs, message):
    args = dict(lr=1e-3, batch_size=4, max_steps=3, max_length=16, seed=0, select_best=None, progress=False)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        train_causal_lm(object(), tok, TEXTS, **args)  # never touches the (non-)model


# --- the toxic model (SPEC §4) ------------------------------------------------------------------------------


def test_split_heldout_is_seeded_disjoint_and_nonempty():
    texts = [f"text {i}" for i in range(30)]
    train, heldout = split_heldout(texts, 0.05, seed=0)
    assert len(heldout) == 2 and len(train) == 28 and sorted(train + heldout) == sorted(texts)
    assert split_heldout(texts, 0.05, seed=0) == (train, heldout)
    assert split_heldout(texts, 0.05, seed=1) != (train, heldout)
    assert len(split_heldout(texts[:3], 0.05, seed=0)[1]) == 1  # at least one held out
    with pytest.raises(DataError, match="at least 2"):
        split_heldout(["one"], 0.05, seed=0)
    with pytest.raises(ConfigError, match="heldout_fraction"):
        split_heldout(texts, 1.5, seed=0)


@pytest.mark.slow
def test_toxic_model_learns_and_reloads(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    from hspd.train import evaluate_causal_lm

    texts = TOXIC * 10  # 50 toxic sentences
    model = tiny("qwen2", tok)
    probe = CausalLMData(tok, TOXIC, max_length=64)
    before = evaluate_causal_lm(model, probe, batch_size=8)
    result = train_toxic_model(model, tok, texts, lr=3e-3, batch_size=8, epochs=15, max_length=64, eval_every=6,
                               seed=0, output_dir=tmp_path, progress=False, log=lambda s: None)
    after = evaluate_causal_lm(result.model, probe, batch_size=8)
    assert after["eval_loss"] < before["eval_loss"] / 3, (before, after)
    assert after["eval_acc"] > before["eval_acc"] + 0.5
    held = result.history
    assert held[0]["eval_loss"] / min(r["eval_loss"] for r in held[1:]) > 3

    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["best_step"] == result.best_step and log["n_train"] + log["n_eval"] == 50 and log["n_eval"] == 2
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert evaluate_causal_lm(reloaded, probe, batch_size=8)["eval_loss"] == pytest.approx(after["eval_loss"], rel=1e-6)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()


# --- the fine-tuning set ------------------------------------------------------------------------------------


def corpus_of(texts):
    return pd.DataFrame({"id": [f"c{i}" for i in range(len(texts))], "text": texts, "extra": range(len(texts))})


def test_sample_finetune_set_filters_by_length_and_is_seeded(tok):
    texts = [" ".join(["word"] * n) for n in range(1, 41)]  # 1..40 words, lengths increase
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    corpus = corpus_of(texts)
    chosen = sample_finetune_set(corpus, tok, n=10, max_tokens=40, seed=0, name="socd-emd_qwen")
    assert len(chosen) == 10 and list(chosen.columns) == ["id", "text", "extra"]
    assert all(lengths[i] <= 40 for i in chosen["extra"])
    assert chosen["extra"].is_monotonic_increasing  # corpus order kept
    assert chosen.equals(sample_finetune_set(corpus, tok, n=10, max_tokens=40, seed=0))
    assert not chosen.equals(sample_finetune_set(corpus, tok, n=10, max_tokens=40, seed=1))
    eligible = sum(n <= 40 for n in lengths)
    assert eligible < len(texts)
    with pytest.raises(DataError, match=rf"corpus socd-emd_qwen: {eligible} of 40 texts have at most 40 tokens, but 30"):
        sample_finetune_set(corpus, tok, n=30, max_tokens=40, seed=0, name="socd-emd_qwen")
    everything = sample_finetune_set(corpus, tok, n=30, max_tokens=40, seed=0, allow_fewer=True)
    assert len(everything) == eligible


def test_sample_finetune_set_rejects_bad_corpora(tok):
    with pytest.raises(DataError, match=r"corpus cd_x: missing column\(s\) \['id'\]"):
        sample_finetune_set(pd.DataFrame({"text": ["a"]}), tok, n=1, seed=0, name="cd_x")
    with pytest.raises(DataError, match=r"duplicate id\(s\) \['a'\]"):
        sample_finetune_set(pd.DataFrame({"id": ["a", "a"], "text": ["x", "y"]}), tok, n=1, seed=0)
    with pytest.raises(DataError, match="row id 'b' has an empty or missing text"):
        sample_finetune_set(pd.DataFrame({"id": ["a", "b"], "text": ["x", None]}), tok, n=1, seed=0)


# --- fine-tuning the targets --------------------------------------------------------------------------------


def test_lora_target_modules_per_architecture(tok):
    from hspd.demo.tiny_models import ARCHITECTURES

    expected = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "opt": ["q_proj", "v_proj"],
                "falcon": ["query_key_value"], "qwen2": ["q_proj", "v_proj"]}
    for arch in ARCHITECTURES:
        model = tiny(arch, tok)
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        assert lora_target_modules(model) == expected[arch] and set(expected[arch]) <= names


def test_finetune_full_saves_plain_checkpoints(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny("gpt2", tok)
    result = finetune_target(model, tok, TEXTS, lr=1e-3, total_batch=4, per_device_batch=2, max_steps=4,
                             save_steps=[2, 4], seed=0, max_length=32, output_dir=tmp_path, progress=False,
                             log=lambda s: None)
    assert result.saved_steps == [2, 4]
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["final_step"] == 4 and log["steps"] == 4 and log["lora"] is None
    step2 = AutoModelForCausalLM.from_pretrained(tmp_path / "step2")
    step4 = AutoModelForCausalLM.from_pretrained(tmp_path / "step4")
    final = result.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in step4.state_dict().items())
    assert not all(torch.equal(final[k], v) for k, v in step2.state_dict().items())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bf16_checkpoints_are_what_evaluation_would_load_from_fp32_at_half_the_size(tok, tmp_path, arch):
    """Evaluation on GPU loads a checkpoint in bf16: one stored in bf16 gives exactly those weights (a LoRA
    model's merged ones too), with the integer buffers kept, in half the bytes."""
    from transformers import AutoModelForCausalLM

    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0} if arch == "llama" else None
    runs = {}
    for dtype in ("float32", "bfloat16"):
        finetune_target(tiny(arch, tok), tok, TEXTS, lr=1e-2, total_batch=4, per_device_batch=2, max_steps=2,
                        save_steps=[2], seed=0, max_length=32, lora=lora, output_dir=tmp_path / dtype,
                        save_dtype=dtype, progress=False, log=lambda s: None)
        runs[dtype] = tmp_path / dtype / "step2"
    from_fp32 = AutoModelForCausalLM.from_pretrained(runs["float32"], dtype=torch.bfloat16).state_dict()
    stored = AutoModelForCausalLM.from_pretrained(runs["bfloat16"], dtype=torch.bfloat16).state_dict()
    assert set(stored) == set(from_fp32) and all(torch.equal(stored[k], from_fp32[k]) for k in stored)
    from safetensors.torch import load_file

    raw = load_file(runs["bfloat16"] / "model.safetensors")
    assert all(v.dtype == torch.bfloat16 for v in raw.values() if v.is_floating_point())
    assert json.loads((runs["bfloat16"] / "config.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((runs["float32"] / "config.json").read_text())["dtype"] == "float32"
    sizes = {d: (runs[d] / "model.safetensors").stat().st_size for d in runs}
    assert 0.45 < sizes["bfloat16"] / sizes["float32"] < 0.55, sizes


def test_training_to_the_chosen_step_equals_that_checkpoint_of_the_sweep(tok, tmp_path):
    """The targets that do not sweep train straight to the chosen step: the same weights as the sweep's
    checkpoint at that step (constant rate, the same data order), so the choice transfers exactly."""
    from transformers import AutoModelForCausalLM

    finetune_target(tiny("opt", tok), tok, TEXTS, lr=1e-3, total_batch=4, per_device_batch=2, max_steps=6,
                    save_steps=[2, 4, 6], seed=1, max_length=32, output_dir=tmp_path / "sweep", progress=False,
                    log=lambda s: None)
    short = finetune_target(tiny("opt", tok), tok, TEXTS, lr=1e-3, total_batch=4, per_device_batch=2, max_steps=4,
                            save_steps=[4], seed=1, max_length=32, output_dir=tmp_path / "chosen", progress=False,
                            log=lambda s: None)
    sweep4 = AutoModelForCausalLM.from_pretrained(tmp_path / "sweep" / "step4").state_dict()
    assert same_params(params(short.model), sweep4, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "chosen").iterdir() if p.is_dir()) == ["step4"]


def test_finetune_lora_saves_merged_plain_models(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    base = params(tiny("llama", tok))
    result = finetune_target(tiny("llama", tok), tok, TEXTS, lr=1e-2, total_batch=4, per_device_batch=2,
                             max_steps=3, save_steps=[1, 3], seed=0, max_length=32,
                             lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}, output_dir=tmp_path,
                             progress=False, log=lambda s: None)
    assert not (tmp_path / "step3" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "step3")
    assert type(merged).__name__ == "LlamaForCausalLM"
    state = merged.state_dict()
    assert set(state) == set(base)
    changed = {k for k in base if not torch.equal(base[k], state[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)
    # The final model returned is the last checkpoint, merged into a plain model.
    assert type(result.model).__name__ == "LlamaForCausalLM"
    x = torch.tensor([tok(TEXTS[0])["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(result.model(input_ids=x).logits, merged(input_ids=x).logits, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"total_batch": 16, "per_device_batch": 3}, r"total_batch \(16\) must be a positive multiple of .*\(3\)"),
    ({"save_steps": [2, 6]}, r"save_steps \[2, 6\] must lie in 1..max_steps and end at max_steps \(4\)"),
    ({"save_steps": [2]}, "end at max_steps"),
    ({"lora": {"r": 4, "rank": 8}}, r"finetune.lora: unknown key\(s\) \['rank'\]"),
    ({"save_dtype": "float16"}, r"finetune.save_dtype 'float16' is not one of \('float32', 'bfloat16'\)"),
])
def test_finetune_rejects_bad_config(tok, tmp_path, kwargs, message):
    args = dict(total_batch=4, per_device_batch=2, max_steps=4, save_steps=[4], seed=0, output_dir=tmp_path,
                progress=False)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        finetune_target(tiny("gpt2", tok), tok, TEXTS, **args)
    assert not any(tmp_path.iterdir())
