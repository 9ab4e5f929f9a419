"""What LM-Steer or DetoxiGen learns for one target on the toxic (DGHS ID) texts, every weight of the target
frozen (SPEC §6): LM-Steer's steering matrix, DetoxiGen's soft prompt. Saved as safetensors (data, not code)."""

from hspd.baselines import save_soft_prompt, save_steering, train_soft_prompt, train_steering
from hspd.io import read_table, write_json
from hspd.jobs import environment, rule_job
from hspd.models import load_causal_lm, load_tokenizer, provenance

TRAIN = {"lm_steer": (train_steering, save_steering), "detoxigen": (train_soft_prompt, save_soft_prompt)}

with rule_job(snakemake) as log:
    p, wc, out = snakemake.params, snakemake.wildcards, snakemake.output[0]
    train, save = TRAIN[wc.part]
    texts = read_table(snakemake.input.corpus, ["id", "text"], what="ID corpus")["text"].tolist()
    tokenizer = load_tokenizer(p.init, wc.model, padding_side="right")
    model = load_causal_lm(p.init, wc.model)
    log.info("%s for %s: %d toxic texts, %s", wc.part, wc.model, len(texts), dict(p.recipe))
    trained = train(model, tokenizer, texts, **dict(p.recipe), progress=True, log=log.info)
    save(trained, out)
    write_json({"init": provenance(p.init, wc.model, model), "part": wc.part, "recipe": dict(p.recipe),
                "environment": environment()}, f"{out}/provenance.json")
