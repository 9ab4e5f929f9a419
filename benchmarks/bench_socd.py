"""How much SoCD decoding costs, next to plain sampling and next to a straightforward implementation.

Random-weight Qwen2 models at Qwen2.5's real vocabulary (151,936 logit columns, 151,665 tokens) decode one
prompt's candidates (18 rows, every row runs all ``--new-tokens`` steps), measured side by side in one run:

- ``base`` / ``toxic``: plain sampling from each model alone (``prompt`` method, ``hspd.decoding``);
- ``socd``: the dual-model decoder with SoCD (both models in lockstep, one KV cache each);
- ``reference``: ``model.generate`` with a per-row ``LogitsProcessor`` that re-runs the toxic model on each row's
  whole prefix every step, as the released code does (given the benefit of ``logits_to_keep=1``, so the speed-up
  is a lower bound), one ``generate`` call per temperature.

Reported: ``t_socd / (t_base + t_toxic)`` (goal ≤ 1.15) and ``t_reference / t_socd`` (goal ≥ 5). Each timing is the
best of ``--repeats`` interleaved runs (other load only ever adds time).

``--profile`` adds a per-op profile of one SoCD combiner step on the logits of a short decode (``[18, 151,936]``
per step): the decoder's ``Combiner`` (``socd_core``: workspace, in place, candidate selection) next to
``socd_core_unfused`` (fresh tensors, a top-k over the vocabulary: the algorithm before issue 12, with p and q
by softmax as in the fast step), in one run.
``--repeats 0 --profile`` runs the profile alone.

    python benchmarks/bench_socd.py                      # CPU, small hidden sizes, a few minutes
    python benchmarks/bench_socd.py --device cuda --real-size --texts 8   # Qwen2.5-3B + 0.5B shapes, bf16
    python benchmarks/bench_socd.py --repeats 0 --profile                # the combiner's per-op profile only

Tokens are ids only (no text is decoded during timing): the tokenizer is a stand-in that knows the vocabulary
size and the special ids, since no real Qwen tokenizer is available offline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

QWEN_WIDTH = 151_936  # logit columns of Qwen2.5-0.5B / 3B
QWEN_VOCAB = 151_665  # len(tokenizer) of Qwen2.5-Instruct
TEMPERATURES = (0.6, 0.8, 1.0, 1.2, 1.3, 1.5)

# Shapes of the real models (config.json of Qwen/Qwen2.5-3B-Instruct and -0.5B-Instruct).
REAL = {
    "base": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "toxic": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, tie_word_embeddings=True),
}


class IdTokenizer:
    """The part of a tokenizer the decoder uses when no text is checked: length, special ids, decode."""

    def __init__(self, vocab: int, eos: int = QWEN_VOCAB - 20, pad: int = QWEN_VOCAB - 22):
        self.vocab, self.eos_token_id, self.pad_token_id = vocab, eos, pad

    def __len__(self):
        return self.vocab

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(map(str, ids))

    def batch_decode(self, seqs, skip_special_tokens=False):
        return [self.decode(s) for s in seqs]


def build_model(shape: dict, device, dtype, seed: int):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfg = Qwen2Config(vocab_size=QWEN_WIDTH, max_position_embeddings=4096, bos_token_id=None,
                      eos_token_id=QWEN_VOCAB - 20, pad_token_id=QWEN_VOCAB - 22, **shape)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    with torch.no_grad():
        # Logits with a spread like a trained model's (std ≈ 3), so SoCD's α and k are not degenerate.
        head = model.get_output_embeddings().weight
        head.normal_(0.0, 3.0 / shape["hidden_size"] ** 0.5)
    return model


def small_shape(hidden: int, layers: int) -> dict:
    heads = max(2, hidden // 64)
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=max(1, heads // 2), tie_word_embeddings=False)


def sampling_for(variant):
    """The released code samples with Qwen2.5-Instruct's generation config; the paper variant plainly."""
    from hspd.decoding import SamplingConfig

    return SamplingConfig(top_k=20, top_p=0.8, repetition_penalty=1.05) if variant == "code" else SamplingConfig()


class CombinerProbe:
    """The decoder's combiner, timed (its share of a decode, where the models' weights pass through the cache
    between steps; ``--profile`` times it on its own, cache warm) and, with ``keep_inputs``, with a copy of the
    ``(base_logits, toxic_logits)`` of every call. Everything else (``kind``, ``vocab_size``, …) is the combiner's."""

    def __init__(self, combiner, keep_inputs: bool = False):
        self.inner, self.seconds, self.calls = combiner, 0.0, 0
        self.inputs = [] if keep_inputs else None

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, base_logits, toxic_logits=None, *, give_base=False):
        if self.inputs is not None:
            self.inputs.append((base_logits.clone(), toxic_logits.clone()))
        start = time.perf_counter()
        try:
            return self.inner(base_logits, toxic_logits, give_base=give_base)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


def run_ours(base, toxic, tok, method, prompts, rows, new_tokens, variant):
    """Seconds for one ``generate`` of all rows, the rows' outputs, and the combiner's ms per step in it."""
    from hspd.decoding import DualModelDecoder
    from hspd.socd import make_combiner

    combiner = CombinerProbe(make_combiner(method, variant, vocab_size=len(tok)))
    decoder = DualModelDecoder(base, toxic, tok, combiner, max_new_tokens=new_tokens, sampling=sampling_for(variant),
                               ignore_stop=True)
    start = time.perf_counter()
    outputs = decoder.generate(prompts, rows)
    elapsed = time.perf_counter() - start
    assert all(o.n_tokens == new_tokens for o in outputs)
    return elapsed, outputs, 1e3 * combiner.seconds / max(1, combiner.calls)


def run_reference(base, toxic, tok, prompt, new_tokens, samples, method="socd-emd", variant="paper"):
    """``generate`` per temperature with a per-row processor that re-runs the toxic model on the whole prefix."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from hspd.socd import parse_method, socd_logits

    divergence = parse_method(method)[1]
    vocab = len(tok)

    class ToxicPrefixSoCD(LogitsProcessor):
        def __call__(self, input_ids, scores):
            out = scores.clone()
            for r in range(input_ids.shape[0]):
                tox = toxic(input_ids=input_ids[r:r + 1], logits_to_keep=1).logits[:, -1]
                out[r:r + 1] = socd_logits(scores[r:r + 1], tox, divergence=divergence, variant=variant,
                                           vocab_size=vocab).logits.to(out.dtype)
            return out

    ids = torch.tensor([prompt], device=base.device)
    sampling = sampling_for(variant)
    start = time.perf_counter()
    with torch.inference_mode():
        for temp in TEMPERATURES:
            out = base.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=temp,
                                top_k=sampling.top_k or 0, top_p=sampling.top_p,
                                repetition_penalty=sampling.repetition_penalty,
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                num_return_sequences=samples, logits_processor=LogitsProcessorList([ToxicPrefixSoCD()]),
                                pad_token_id=tok.pad_token_id, eos_token_id=None)
            assert out.shape[1] == ids.shape[1] + new_tokens
    return time.perf_counter() - start


def capture_combiner_inputs(base, toxic, tok, method, prompts, rows, steps, variant):
    """The ``(base_logits, toxic_logits)`` the SoCD combiner sees at each of ``steps`` decoding steps."""
    from hspd.decoding import DualModelDecoder
    from hspd.socd import make_combiner

    probe = CombinerProbe(make_combiner(method, variant, vocab_size=len(tok)), keep_inputs=True)
    DualModelDecoder(base, toxic, tok, probe, max_new_tokens=steps, sampling=sampling_for(variant),
                     ignore_stop=True).generate(prompts, rows)
    return probe.inputs


def profile_combiner(captured, method, variant, vocab, repeats=3, top=14):
    """Per-op CPU time (ms per step) of the decoder's SoCD combiner and of the unfused reference on the same
    captured logits, and each one's wall time per step (best and median of ``repeats`` passes over the steps).
    The base logits are cloned before each call (the decoder hands them over), outside the timed region."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from hspd.socd import _vocab_view, make_combiner, parse_method, socd_core_unfused

    combiner = make_combiner(method, variant, vocab_size=vocab)
    divergence = parse_method(method)[1]

    def fused(b, t):
        return combiner(b, t, give_base=True)

    def unfused(b, t):
        sb, st, _ = _vocab_view(b, t, vocab)
        return socd_core_unfused(sb, st, divergence=divergence, variant=variant)

    report = {}
    for name, fn in (("fused", fused), ("unfused", unfused)):
        fn(captured[0][0].clone(), captured[0][1])  # warm-up: workspace, allocator
        walls = []
        for _ in range(repeats):
            for b, t in captured:
                b = b.clone()
                start = time.perf_counter()
                fn(b, t)
                walls.append(time.perf_counter() - start)
        inputs = [(b.clone(), t) for b, t in captured]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b, t in inputs:
                fn(b, t)
        ops = sorted(((e.key, e.self_cpu_time_total / 1e3 / len(captured), e.count / len(captured))
                      for e in prof.key_averages()), key=lambda x: -x[1])
        report[name] = dict(best_ms=round(min(walls) * 1e3, 2), median_ms=round(statistics.median(walls) * 1e3, 2),
                            ops={k: (round(ms, 3), calls) for k, ms, calls in ops[:top]})
    return report


def print_profile(report, shape):
    print()
    print(f"SoCD combiner per step at {list(shape)} (wall ms: best / median; per-op self CPU ms per step, calls):")
    for name, r in report.items():
        print()
        print(f"{name}: {r['best_ms']:.2f} / {r['median_ms']:.2f} ms")
        print("| op | ms/step | calls/step |")
        print("|---|---:|---:|")
        for op, (ms, calls) in r["ops"].items():
            print(f"| {op} | {ms:.3f} | {calls:g} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--real-size", action="store_true", help="Qwen2.5-3B + 0.5B shapes (random weights)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32")
    parser.add_argument("--base-hidden", type=int, default=256)
    parser.add_argument("--base-layers", type=int, default=4)
    parser.add_argument("--toxic-hidden", type=int, default=128)
    parser.add_argument("--toxic-layers", type=int, default=2)
    parser.add_argument("--texts", type=int, default=1, help="texts per batch (18 candidate rows each)")
    parser.add_argument("--samples", type=int, default=3, help="samples per temperature (6 temperatures)")
    parser.add_argument("--prompt-tokens", type=int, default=120)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--method", default="socd-emd")
    parser.add_argument("--variant", default="paper", choices=["paper", "code"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", choices=["auto", "yes", "no"], default="auto",
                        help="time the per-row generate reference (auto: not with --real-size)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one combiner step per op, fused next to unfused (--repeats 0: only that)")
    parser.add_argument("--profile-steps", type=int, default=8, help="decoding steps whose logits are profiled")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import torch

    from hspd.decoding import Row, row_seed
    from hspd.models import pick_device, pick_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    shapes = REAL if args.real_size else {"base": small_shape(args.base_hidden, args.base_layers),
                                          "toxic": small_shape(args.toxic_hidden, args.toxic_layers)}
    base = build_model(shapes["base"], device, dtype, seed=0)
    toxic = build_model(shapes["toxic"], device, dtype, seed=1)
    tok = IdTokenizer(QWEN_VOCAB)
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, QWEN_VOCAB - 100, (args.texts, args.prompt_tokens), generator=g).tolist()
    rows = [Row(t, temp, row_seed(0, t, c)) for t in range(args.texts)
            for c, temp in enumerate(temp for temp in TEMPERATURES for _ in range(args.samples))]
    n_rows = len(rows)
    setting = dict(device=str(device), dtype=str(dtype).replace("torch.", ""), rows=n_rows, texts=args.texts,
                   new_tokens=args.new_tokens, prompt_tokens=args.prompt_tokens, vocab=QWEN_VOCAB, width=QWEN_WIDTH,
                   method=args.method, variant=args.variant, threads=torch.get_num_threads(),
                   base={k: shapes["base"][k] for k in ("hidden_size", "num_hidden_layers")},
                   toxic={k: shapes["toxic"][k] for k in ("hidden_size", "num_hidden_layers")})
    print(json.dumps({"setting": setting}), flush=True)

    def ours(which):
        if which == "base":
            return run_ours(base, None, tok, "prompt", prompts, rows, args.new_tokens, args.variant)
        if which == "toxic":
            return run_ours(toxic, None, tok, "prompt", prompts, rows, args.new_tokens, args.variant)
        return run_ours(base, toxic, tok, args.method, prompts, rows, args.new_tokens, args.variant)

    profile_report = None
    if args.profile:
        if not args.method.startswith("socd-"):
            parser.error("--profile profiles a SoCD method")
        captured = capture_combiner_inputs(base, toxic, tok, args.method, prompts, rows, args.profile_steps,
                                           args.variant)
        profile_report = profile_combiner(captured, args.method, args.variant, QWEN_VOCAB)
        print(json.dumps({"profile": profile_report}), flush=True)
        print_profile(profile_report, captured[0][0].shape)
        del captured
        if args.repeats == 0:
            return {"setting": setting, "profile": profile_report}

    # Warm-up (allocator, kernels), then interleaved repeats so that background load hits all alike.
    run_ours(base, toxic, tok, args.method, prompts, rows[:2], 4, args.variant)
    times = {k: [] for k in ("base", "toxic", "socd")}
    combiner_ms = []  # the SoCD combiner's ms per step inside each socd run
    for rep in range(args.repeats):
        for which in times:
            seconds, outputs, step_ms = ours(which)
            times[which].append(seconds)
            print(json.dumps({"run": which, "repeat": rep, "seconds": round(seconds, 4)}), flush=True)
            if which == "socd":
                combiner_ms.append(step_ms)
                mean_alpha = statistics.mean(o.mean_alpha for o in outputs)
                mean_k = statistics.mean(o.mean_k for o in outputs)
    best = {k: min(v) for k, v in times.items()}
    with_reference = args.reference == "yes" or (args.reference == "auto" and not args.real_size)
    if with_reference:
        if args.texts != 1:
            parser.error("the reference decodes one text: use --texts 1")
        best["reference"] = run_reference(base, toxic, tok, prompts[0], args.new_tokens, args.samples, args.method,
                                          args.variant)
        print(json.dumps({"run": "reference", "repeat": 0, "seconds": round(best["reference"], 4)}), flush=True)

    tokens = n_rows * args.new_tokens
    result = {
        "setting": setting,
        "seconds": {k: round(v, 4) for k, v in best.items()},
        "tokens_per_s": {k: round(tokens / v, 1) for k, v in best.items()},
        "median_seconds": {k: round(statistics.median(v), 4) for k, v in times.items()},
        "socd_over_base_plus_toxic": round(best["socd"] / (best["base"] + best["toxic"]), 3),
        "socd_mean_alpha": round(mean_alpha, 4),
        "socd_mean_k": round(mean_k, 1),
        # in the socd run of the best time
        "combiner_ms_per_step_in_decode": round(combiner_ms[times["socd"].index(best["socd"])], 2),
    }
    if "reference" in best:
        result["speedup_over_reference"] = round(best["reference"] / best["socd"], 2)
    if profile_report is not None:
        result["combiner_profile"] = profile_report
    print(json.dumps(result), flush=True)

    print()
    print(f"{n_rows} rows × {args.new_tokens} new tokens, prompt {args.prompt_tokens} tokens, V = {QWEN_VOCAB} "
          f"({QWEN_WIDTH} columns), {setting['device']} {setting['dtype']}, base {setting['base']}, "
          f"toxic {setting['toxic']}, {args.method} ({args.variant})")
    print()
    print("| run | seconds (best) | tokens/s |")
    print("|---|---:|---:|")
    for k, v in best.items():
        print(f"| {k} | {v:.3f} | {tokens / v:.1f} |")
    print()
    print(f"SoCD per step: mean α = {mean_alpha:.4f}, mean k = {mean_k:.0f}; the combiner "
          f"{result['combiner_ms_per_step_in_decode']:.1f} ms of the decode's "
          f"{1e3 * best['socd'] / args.new_tokens:.1f} ms a step")
    goal = result["socd_over_base_plus_toxic"]
    print(f"t_socd / (t_base + t_toxic) = {goal:.3f} (goal ≤ 1.15)")
    if "speedup_over_reference" in result:
        print(f"speed-up over the per-row generate reference = {result['speedup_over_reference']:.2f}× (goal ≥ 5)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
