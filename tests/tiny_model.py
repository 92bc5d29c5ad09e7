"""A tiny random-weight Llama and a locally trained byte-level BPE tokenizer, saved to disk.

Saving both and loading them back through ``from_pretrained`` exercises the same path a
real checkpoint takes, with no hub access. Random weights almost never pick EOS, so
``build_tiny_model`` raises the EOS row of the output head: EOS then wins greedy decoding
at a few scattered steps, and different prompts end after different numbers of tokens.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from seqsched.request import Request

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
VOCAB_SIZE = 512
MAX_POSITION_EMBEDDINGS = 256

_SUBJECTS = ["the model", "a scheduler", "my cat", "the batch", "our team", "a request", "the server"]
_VERBS = ["predicts", "writes", "waits for", "sorts", "explains", "answers", "measures", "groups"]
_OBJECTS = ["long answers", "short prompts", "the queue", "every token", "a poem", "its length", "the data"]
_TAILS = ["quickly.", "today.", "with care.", "again and again.", "before lunch.", "in order.", "?"]


def corpus(num_sentences: int = 400, seed: int = 0) -> list[str]:
    """Made-up sentences to train the tokenizer on (and to draw test prompts from)."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}"
        for _ in range(num_sentences)
    ]


def prompts(num: int, seed: int = 0) -> list[str]:
    """Test prompts of one to four sentences, so prompt lengths vary within a batch."""
    rng = random.Random(seed)
    sentences = corpus(4 * num, seed=seed + 1)
    return [" ".join(sentences[4 * i : 4 * i + rng.randint(1, 4)]) for i in range(num)]


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=ROLE_TOKENS,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, eos_scale: float = 1.0, num_heads: int = 4
) -> LlamaForCausalLM:
    """``num_heads`` 4 gives a head size of 16; vLLM's CPU attention needs 32 or more (2)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        head = model.lm_head.weight
        # A larger EOS row makes EOS the argmax at some steps, whose positions vary by prompt.
        head[tokenizer.eos_token_id] *= eos_scale
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model


def save_tiny_model(directory: str | Path, seed: int = 0, eos_scale: float = 1.0, num_heads: int = 4) -> Path:
    """Build the tokenizer and model and save both to ``directory``; return it."""
    path = Path(directory)
    tokenizer = build_tokenizer()
    build_tiny_model(tokenizer, seed=seed, eos_scale=eos_scale, num_heads=num_heads).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


NUM_REQUESTS = 24
LIMITS = (64, 48, 32, 20)  # per-request max_new_tokens, cycled


def tiny_requests(n: int = NUM_REQUESTS) -> list[Request]:
    """The engine tests' requests: prompts of the tiny model's corpus, varied limits."""
    return [
        Request(i, f"r{i}", prompt=p, max_new_tokens=LIMITS[i % len(LIMITS)]) for i, p in enumerate(prompts(n, seed=11))
    ]


def generate_alone(model: LlamaForCausalLM, request: Request) -> list[int]:
    """The reference: plain greedy generate on the prompt by itself (no padding)."""
    assert request.prompt_token_ids is not None
    ids = torch.tensor([request.prompt_token_ids])
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=request.max_new_tokens, do_sample=False)
    return list(map(int, out[0, ids.shape[1] :].tolist()))
