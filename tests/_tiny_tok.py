"""A tiny byte-level BPE tokenizer with Qwen-style special tokens and chat template, for tests (< 1 s).

Shaped like Qwen2.5-Instruct's: ``<|im_end|>`` is EOS, ``<|endoftext|>`` is padding, no BOS is added, and the
chat template wraps each message in ``<|im_start|>role\\n ... <|im_end|>\\n``.
"""

from __future__ import annotations

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TOXIC = [
    "those people are vermin and should be thrown out of the country",
    "women are too stupid to vote and should stay in the kitchen",
    "immigrants are filthy parasites who steal everything",
    "I hate them all, they are disgusting animals",
    "they are subhuman trash and deserve nothing",
]

CLEAN = [
    "the weather was mild and the market opened early in the morning",
    "people from many countries came to the city to study and work",
    "she read a book about history while the train crossed the river",
    "the committee will publish its report on housing next week",
    "a good neighbour helps carry the shopping up the stairs",
    "the library opens at nine and closes late on thursdays",
    "my grandmother grows tomatoes and beans in her small garden",
]


def tiny_tokenizer(vocab_size: int = 500):
    """A ``PreTrainedTokenizerFast`` trained on the sentences above (~0.1 s)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    from hspd.rewrite import ASSISTANT_PREFIX, SYSTEM_PROMPT, USER_TEMPLATE

    # The rewriting prompt is in the training texts, so prompts are ~100 tokens, not ~300 bytes.
    prompt = [SYSTEM_PROMPT, USER_TEMPLATE.format(text=""), ASSISTANT_PREFIX + "</answer>"]
    tok.train_from_iterator((TOXIC + CLEAN + prompt) * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast
