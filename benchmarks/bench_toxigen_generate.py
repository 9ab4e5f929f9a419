"""ToxiGen continuations: batched generation against one ``generate`` call per sample, same model, same prompts.

Three ways to draw 25 samples of ≤ 20 new tokens (nucleus 0.9) for each prompt, timed side by side:

- ``per-sample``: one ``model.generate`` call per sample (the naive loop);
- ``hf-batched``: HF's own sampling, a prompt's 25 samples as rows of one call, several prompts per call
  (global RNG: the samples then depend on the batch layout);
- ``hspd``: ``hspd.evaluate.sample_continuations``, the same batches with per-prompt generators (what
  ``toxigen_generate`` runs; its overhead over ``hf-batched`` is the price of batching-independent seeds).

Run: ``python benchmarks/bench_toxigen_generate.py [--model DIR] [--prompts 16] [--batch-prompts 8]``.
Without ``--model`` it uses the tiny GPT2 of the tests (random weights; ``--width`` / ``--layers`` scale it).
At the tests' size the speed-up is mostly per-call overhead; a real checkpoint on a GPU shows the batching gain.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(args):
    from hspd.models import load_causal_lm, load_tokenizer, set_offline

    set_offline(True)
    if args.model:
        spec = {"path": args.model}
        return load_causal_lm(spec, "model", device=args.device), load_tokenizer(spec, "model")
    sys.path.insert(0, str(ROOT / "tests"))
    import _tiny_eval

    model = _tiny_eval.gpt2(n_positions=128, n_embd=args.width, n_layer=args.layers)
    return model.to(args.device if args.device != "auto" else "cpu"), _tiny_eval.tokenizer()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local causal-LM folder (default: the tests' tiny GPT2)")
    parser.add_argument("--width", type=int, default=32, help="hidden size of the built-in GPT2")
    parser.add_argument("--layers", type=int, default=2, help="layers of the built-in GPT2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch

    from hspd.evaluate import _eos_ids, _left_pad, _pad_id, encode_prompts, prompt_seed, sample_continuations
    from hspd.metrics import TOP_P

    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load(args)
    words = "the people who live there are kind and they work hard every day in the city".split()
    texts = [" ".join(words[i % 5:i % 5 + 4 + i % 7]) for i in range(args.prompts)]
    encoded, _ = encode_prompts(tok, texts, None)
    eos = _eos_ids(model, tok)
    pad = _pad_id(tok, eos)
    n, new = args.samples, args.max_new_tokens
    hf_kwargs = dict(do_sample=True, top_p=TOP_P, top_k=0, max_new_tokens=new, pad_token_id=pad, eos_token_id=eos)

    def sync():
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    def per_sample():
        for ids in encoded:
            x, mask = _left_pad([ids], pad, model.device)
            for _ in range(n):
                model.generate(input_ids=x, attention_mask=mask, **hf_kwargs)

    def hf_batched():
        for start in range(0, len(encoded), args.batch_prompts):
            rows = [ids for ids in encoded[start:start + args.batch_prompts] for _ in range(n)]
            x, mask = _left_pad(rows, pad, model.device)
            model.generate(input_ids=x, attention_mask=mask, **hf_kwargs)

    def hspd():
        for start in range(0, len(encoded), args.batch_prompts):
            chunk = encoded[start:start + args.batch_prompts]
            sample_continuations(model, tok, chunk, [prompt_seed(42, start + i) for i in range(len(chunk))],
                                 n_samples=n, max_new_tokens=new, top_p=TOP_P)

    with torch.inference_mode():
        hspd()  # warm-up (kernels, allocator)
        times = {}
        for name, fn in (("per-sample", per_sample), ("hf-batched", hf_batched), ("hspd", hspd)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name] = time.perf_counter() - start

    n_seq = len(encoded) * n
    print(f"model {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params) on "
          f"{model.device}, torch threads {torch.get_num_threads()}")
    print(f"{len(encoded)} prompts × {n} samples × ≤{new} new tokens; {args.batch_prompts} prompts per batch")
    print(f"{'method':<12}{'seconds':>10}{'samples/s':>12}{'speed-up':>10}")
    for name, t in times.items():
        print(f"{name:<12}{t:>10.2f}{n_seq / t:>12.1f}{times['per-sample'] / t:>9.1f}×")


if __name__ == "__main__":
    main()
