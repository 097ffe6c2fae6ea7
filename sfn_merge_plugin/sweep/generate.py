"""Run a (destroyed) model on the prompts: batched generation on evaluation's stack, and probe fingerprints.

Prompts go through the tokenizer's chat template (as one user turn) unless it is switched off, in which
case the raw text is the prefix to continue. Greedy by default; sampling is seeded per cell so a cell's
responses do not depend on which cells ran before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 128
    sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    chat_template: Optional[bool] = None  # None: use it when the tokenizer has one
    batch_size: int = 16


def chat_enabled(tokenizer, wanted: Optional[bool]) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if wanted and not has:
        from sfn_merge_plugin.errors import UserError

        raise UserError("--chat-template on: this tokenizer has no chat template; use --chat-template off (raw prompts)")
    return has if wanted is None else bool(wanted)


def render(tokenizer, text: str, chat: bool) -> list:
    """Prompt token ids: the chat template with one user turn, or the raw text. Never empty."""
    if chat:
        s = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"] if text else []
    if not ids:  # an empty raw prompt: start from BOS (or EOS, the usual document separator)
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ids = [start]
    return list(ids)


def stop_ids(model, tokenizer) -> list:
    """The ids that end a response: the same as evaluation's (``hf_backend.eos_ids_of``)."""
    from sfn_merge_plugin.evaluation.hf_backend import eos_ids_of

    return list(eos_ids_of(model, tokenizer))


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def input_device(model):
    return model.get_input_embeddings().weight.device


def generate(model, tokenizer, prompt_ids: list, decoding: Decoding) -> list:
    """[(response token ids up to the first stop token, decoded text)] for each prompt, in order, on the
    generation stack evaluation uses (``hf_backend.generate_ids``: length-sorted batches, KV cache, EOS)."""
    from sfn_merge_plugin.evaluation.hf_backend import generate_ids

    sampling = None
    if decoding.sample:
        sampling = {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p, "seed": decoding.seed}
    outs = generate_ids(model, tokenizer, prompt_ids, decoding.max_new_tokens, sampling=sampling,
                        batch_size=decoding.batch_size)
    return [(list(o.token_ids), tokenizer.decode(o.token_ids, skip_special_tokens=True)) for o in outs]


def logit_fingerprint(model, prompt_ids: list) -> str:
    """sha256 of the probes' float32 logits (the engine's check that a model was restored exactly)."""
    from sfn_merge_plugin.intervention import logit_fingerprint as fingerprint

    return fingerprint(model, prompt_ids)
