"""The demo world (SPEC §8): everything the workflow needs to run end to end offline, on CPU, in minutes.

- ``corpus``: synthetic DGHS, ToxiGen and MMLU files in the real schemas, plus rewriting demonstrations,
  pretraining text and toxicity labels, all drawn from one seed;
- ``tokenizer``: the shared byte-level BPE tokenizer with a Qwen2-style chat template;
- ``tiny_models``: tiny Qwen2 / GPT2 / Llama / OPT / Falcon models pre-trained on the corpus;
- ``classifier``: a tiny BERT toxicity classifier saved as a Detoxify-format checkpoint.

Importing this package is cheap: the heavy libraries are imported inside the functions that use them.
"""
