"""HSPD: corpus-level LLM detoxification with Soft Contrastive Decoding (SoCD).

The library behind the Snakemake workflow: every algorithm, loader, trainer and metric lives here and is
tested without Snakemake. Heavy imports (torch, transformers) happen inside the modules that need them, so
importing ``hspd`` itself stays cheap.
"""

__version__ = "0.1.0"
