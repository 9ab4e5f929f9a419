"""Applying a system's treatment when the evaluation loads it (SPEC §6): the same evaluation code then serves
every system.

- ``original`` and fine-tuned systems: a model (the chosen checkpoint of a fine-tuning run);
- ``task-arithmetic``: the target's weights edited in memory, ``θ − λ(θ_toxic − θ)`` (no copy per λ on disk);
- ``dexperts``: the target and its toxic version decoded in lockstep (``hspd.decoding``) and, for lm-eval, scored
  together (``combine``);
- ``lm-steer``: the target with its steering matrix on the output embeddings at strength ε (a hook on the LM head:
  every forward, hence generation, PPL and lm-eval, sees the steered model);
- ``detoxigen``: the target as generator and, through its soft prompt, as detoxifier: one backbone, two caches;
- ``preprompt``: a text put in front of every prompt (never part of the scored continuation nor of the PPL).

The rule passes a *treatment* (``kind``, ``value`` or the swept ``param``, ``prefix``, kind-specific ``options``)
and the treatment's *trained* part (the toxic target, the steering matrix or the soft prompt); a swept value comes
from the setting (``beta0.5``, a validation run) or from the selection record (a test run).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from hspd.errors import ConfigError
from hspd.systems import FINETUNED_KINDS, SWEPT_KINDS

log = logging.getLogger("hspd")


KINDS = ("original", "preprompt", *FINETUNED_KINDS, *SWEPT_KINDS)
TRAINED = {"dexperts": "the toxic target", "task-arithmetic": "the toxic target", "lm-steer": "its steering matrix",
           "detoxigen": "its soft prompt"}


@dataclass
class Loaded:
    """What an evaluation runs: the model and tokenizer, and for a two-model system its ``decoder`` factory
    (``max_new_tokens, top_p, top_k → DualModelDecoder``) and lm-eval ``combine``; a pre-prompt's ``prefix``."""

    model: Any
    tokenizer: Any
    name: str
    value: float | None = None
    prefix: str = ""
    decoder: Callable[..., Any] | None = None
    combine: Callable[[Any], Any] | None = None


def treatment_value(treatment: Mapping, selection: Sequence[str]) -> float | None:
    """The swept value of a treatment: given in it (a validation setting), or chosen (the selection record)."""
    if treatment.get("value") is not None:
        return float(treatment["value"])
    if treatment.get("param"):
        from hspd.selection import read_selection

        if len(selection) != 1:
            raise ConfigError(f"{treatment['kind']}: a test run needs its selection record, got {list(selection)}")
        return float(read_selection(selection[0])["value"])
    return None


def load_treated(model_spec: Mapping, treatment: Mapping, *, name: str, selection: Sequence[str] = (),
                 trained: Sequence[str] = ()) -> Loaded:
    """Load the model of a system and apply its treatment.

    Args:
        model_spec: the target's source spec, or a fine-tuning run's directory (``{"path": ...}``) whose chosen
            step ``selection`` names.
        treatment: ``{"kind", "param", "value", "prefix", "options"}`` from the rule.
        trained: the directory of what the treatment trained for this target: its toxic version (DExperts, Task
            Arithmetic), LM-Steer's matrix, DetoxiGen's soft prompt.
    """
    import functools

    from hspd.models import check_same_tokenizer, load_causal_lm, load_tokenizer
    from hspd.selection import checkpoint_spec

    kind = treatment["kind"]
    if kind not in KINDS:
        raise ConfigError(f"{name}: unknown treatment {kind!r}; known: {', '.join(KINDS)}")
    if kind in TRAINED and len(trained) != 1:
        raise ConfigError(f"{name}: {kind} needs {TRAINED[kind]}, got {list(trained)}")
    value = treatment_value(treatment, selection)
    if kind in FINETUNED_KINDS:
        spec = checkpoint_spec(model_spec, selection)
        return Loaded(load_causal_lm(spec, name), load_tokenizer(spec, name), name)
    tokenizer = load_tokenizer(model_spec, name)
    toxic_spec = {"path": trained[0]} if kind in ("dexperts", "task-arithmetic") else None
    if toxic_spec is not None:  # tokenizers are cheap: one vocabulary is checked before any model loads
        check_same_tokenizer(tokenizer, load_tokenizer(toxic_spec, f"toxic {name}"), name, f"toxic {name}")
    model = load_causal_lm(model_spec, name)
    if kind in ("original", "preprompt"):
        return Loaded(model, tokenizer, name, prefix=treatment.get("prefix") or "")
    if kind == "lm-steer":
        from hspd.baselines import attach_steering, load_steering

        attach_steering(model, load_steering(trained[0], value))
        log.info("%s: LM-Steer at steer value %s", name, value)
        return Loaded(model, tokenizer, name, value=value)
    if kind == "detoxigen":
        from hspd.baselines import SoftPromptedLM, detoxigen_logits, load_soft_prompt, sequence_scores

        top_p = float((treatment.get("options") or {}).get("top_p", 0.9))
        detoxifier = SoftPromptedLM(model, load_soft_prompt(trained[0], model.config.hidden_size).to(model.device))
        # lm-eval scores the contrast without the generator's top-p set: that set is a sampling filter (as the
        # protocol's nucleus, which no system's likelihoods see); restricted, every answer letter outside it
        # would be −inf and MMLU a tie broken towards "A".
        score = functools.partial(detoxigen_logits, alpha=value, top_p=1.0, vocab_size=len(tokenizer))
        log.info("%s: DetoxiGen at α = %s (generator top-p %s)", name, value, top_p)
        return Loaded(model, tokenizer, name, value=value,
                      decoder=functools.partial(detoxigen_decoder, model, detoxifier, tokenizer, value, top_p),
                      combine=sequence_scores(score, model, detoxifier))
    if kind == "task-arithmetic":
        from hspd.baselines import task_arithmetic

        toxic_model = load_causal_lm(toxic_spec, f"toxic {name}")
        model.load_state_dict(task_arithmetic(model.state_dict(), toxic_model.state_dict(), lam=value))
        del toxic_model
        log.info("%s: task arithmetic at λ = %s", name, value)
        return Loaded(model, tokenizer, name, value=value)
    from hspd.baselines import dexperts_logits, sequence_scores

    anti = load_causal_lm(toxic_spec, f"toxic {name}")
    score = functools.partial(dexperts_logits, beta=value, vocab_size=len(tokenizer))
    log.info("%s: DExperts at β = %s", name, value)
    return Loaded(model, tokenizer, name, value=value,
                  decoder=functools.partial(dexperts_decoder, model, anti, tokenizer, value),
                  combine=sequence_scores(score, model, anti))


def model_prompts(prompts, prefix: str):
    """The prompts as the model sees them: a pre-prompt in front of each text (ids and every other column kept).
    The continuation, its toxicity and its PPL are still those of the ToxiGen prompt alone."""
    return prompts.assign(text=prefix + prompts["text"]) if prefix else prompts


def dexperts_decoder(model, anti, tokenizer, beta: float, *, max_new_tokens: int, top_p: float, top_k: int | None):
    """The engine for DExperts' ToxiGen samples: nucleus (and top-k) filtering on the combined distribution."""
    from hspd.baselines import DExpertsCombiner
    from hspd.decoding import DualModelDecoder, SamplingConfig

    return DualModelDecoder(model, anti, tokenizer, DExpertsCombiner(beta, len(tokenizer)),
                            max_new_tokens=max_new_tokens, sampling=SamplingConfig(top_k=top_k, top_p=top_p))


def detoxigen_decoder(model, detoxifier, tokenizer, alpha: float, gen_top_p: float, *, max_new_tokens: int,
                      top_p: float, top_k: int | None):
    """The engine for DetoxiGen's ToxiGen samples: the combined score on the generator's top-``gen_top_p`` set,
    then the protocol's nucleus (and top-k) filtering, as for every system."""
    from hspd.baselines import DetoxiGenCombiner
    from hspd.decoding import DualModelDecoder, SamplingConfig

    return DualModelDecoder(model, detoxifier, tokenizer, DetoxiGenCombiner(alpha, gen_top_p, len(tokenizer)),
                            max_new_tokens=max_new_tokens, sampling=SamplingConfig(top_k=top_k, top_p=top_p))
