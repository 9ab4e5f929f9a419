"""Fine-tune a target on a rewritten corpus; checkpoints at the configured steps (SPEC §4)."""

from hspd.io import read_table, write_json
from hspd.jobs import environment, rule_job
from hspd.models import load_causal_lm, load_tokenizer, provenance
from hspd.train import finetune_target

with rule_job(snakemake) as log:
    p, wc = snakemake.params, snakemake.wildcards
    texts = read_table(snakemake.input.texts, ["id", "text"], what="fine-tuning set")["text"].tolist()
    tokenizer = load_tokenizer(p.target, wc.target, padding_side="right")
    model = load_causal_lm(p.target, wc.target, dtype="float32")  # fp32 master weights; bf16 autocast on GPU
    log.info("fine-tuning %s on %d texts of %s (seed %s)", wc.target, len(texts), wc.corpus, wc.seed)
    finetune_target(model, tokenizer, texts, lr=p.lr, betas=tuple(p.betas), total_batch=p.total_batch,
                    per_device_batch=p.per_device_batch, max_steps=p.max_steps, save_steps=p.save_steps,
                    seed=int(wc.seed), max_length=p.max_length, lora=dict(p.lora) if p.lora["enabled"] else None,
                    output_dir=snakemake.output[0], gradient_checkpointing=p.gradient_checkpointing,
                    progress=True, log=log.info)
    write_json({"target": provenance(p.target, wc.target, model), "environment": environment()},
               f"{snakemake.output[0]}/provenance.json")
