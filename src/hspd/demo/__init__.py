"""The demo world (SPEC §8): everything the workflow needs to run end to end offline, on CPU, in minutes.

- ``corpus``: synthetic DGHS, ToxiGen and MMLU files in the real schemas, plus rewriting demonstrations,
  web text (partly hateful) and graded toxicity labels, all drawn from one seed;
- ``tokenizer``: tokenizers of the real families: a byte-level BPE with a Qwen2-style chat template (the
  Qwen2 pair, GPT2, OPT, Falcon) and a SentencePiece-style BPE as LLaMA-2's (the Llama target, PPL model);
- ``tiny_models``: tiny Qwen2 / GPT2 / Llama / OPT / Falcon models pre-trained on the corpus;
- ``classifier``: a tiny BERT toxicity classifier saved as a Detoxify-format checkpoint.

Importing this package is cheap: the heavy libraries are imported inside the functions that use them.
"""
