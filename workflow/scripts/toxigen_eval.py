"""One evaluation seed of one model on the ToxiGen prompts (SPEC §5), in one job so the model loads once: 25
continuations of ≤ 20 new tokens per prompt (resumable), their Detoxify toxicity (prompt removed), TP and EMT
per category, and Dist-n."""

import gc
import os

from hspd.evaluate import toxigen_generate
from hspd.io import read_table, write_json, write_table
from hspd.jobs import rule_job
from hspd.metrics import continuations_by_prompt, diversity_metrics
from hspd.models import load_causal_lm, load_tokenizer
from hspd.scoring import ToxicityScorer, score_toxigen
from hspd.selection import checkpoint_spec

with rule_job(snakemake) as log:
    p, wc, out = snakemake.params, snakemake.wildcards, snakemake.output
    prompts = read_table(snakemake.input.prompts, ["id", "text", "category", "distribution"], what="ToxiGen prompts")
    name = f"{wc.target}/{wc.system}/{wc.setting}"
    spec = checkpoint_spec(p.model, snakemake.input.selection)  # the chosen step of a fine-tuned system
    tokenizer = load_tokenizer(spec, name)
    model = load_causal_lm(spec, name)
    log.info("%s: %d prompts × %d samples, seed %s", name, len(prompts), p.n_samples, wc.seed)
    toxigen_generate(model, tokenizer, prompts, n_samples=p.n_samples, max_new_tokens=p.max_new_tokens, top_p=p.top_p,
                     temperature=p.temperature, top_k=p.top_k, seed=int(wc.seed), batch_prompts=p.batch_prompts,
                     output_path=out.generations, progress=True)
    del model
    gc.collect()
    try:
        gens = read_table(out.generations, ["id", "sample", "continuation"], what="generations")
        scored, metrics = score_toxigen(gens, prompts, ToxicityScorer(p.scorer), threshold=p.threshold,
                                        batch_size=p.score_batch_size, progress=True)
        ids, conts = continuations_by_prompt(gens, prompts["id"].tolist())
        diversity = diversity_metrics(conts, prompts.set_index("id").loc[ids, "text"].tolist(), compat=p.dist_compat)
    except BaseException:
        # Snakemake deletes a failed job's outputs: keep the continuations as a finished partial file, so the
        # rerun scores them instead of sampling them again.
        os.replace(out.generations, f"{out.generations}.partial")
        raise
    log.info("%s\n%s", metrics, diversity)
    write_table(scored, out.scores)
    write_json(metrics, out.metrics)
    write_json(diversity, out.diversity)
