"""Fine-tune a target on a system's text; checkpoints at every candidate step, or at the chosen one (SPEC §4, §6)."""

from hspd.io import read_table, write_json
from hspd.jobs import environment, rule_job
from hspd.models import load_causal_lm, load_tokenizer, provenance
from hspd.selection import training_steps
from hspd.train import finetune_target

with rule_job(snakemake) as log:
    p, wc, r = snakemake.params, snakemake.wildcards, snakemake.params.recipe
    steps = training_steps(r["save_steps"], snakemake.input.selection)  # before any model loads
    texts = read_table(snakemake.input.texts, ["id", "text"], what=f"{wc.system} fine-tuning text")["text"].tolist()
    tokenizer = load_tokenizer(p.target, wc.target, padding_side="right")
    model = load_causal_lm(p.target, wc.target, dtype="float32")  # fp32 master weights; bf16 autocast on GPU
    log.info("fine-tuning %s on %d texts of %s (seed %s), saving steps %s", wc.target, len(texts), wc.system,
             wc.seed, steps)
    finetune_target(model, tokenizer, texts, lr=r["lr"], betas=tuple(p.betas), total_batch=r["total_batch"],
                    per_device_batch=r["per_device_batch"], max_steps=max(steps), save_steps=steps,
                    seed=int(wc.seed), max_length=r["max_length"], lora=dict(p.lora) if p.lora["enabled"] else None,
                    output_dir=snakemake.output[0], save_dtype=p.save_dtype,
                    gradient_checkpointing=p.gradient_checkpointing,
                    progress=True, log=log.info)
    write_json({"target": provenance(p.target, wc.target, model), "system": wc.system, "environment": environment()},
               f"{snakemake.output[0]}/provenance.json")
