"""Run a (destroyed) model on the prompts: batched generation, and logit fingerprints of probe prompts.

Prompts go through the tokenizer's chat template (as one user turn) unless it is switched off, in which
case the raw text is the prefix to continue. Greedy by default; sampling is seeded per cell so a cell's
responses do not depend on which cells ran before it.
"""

from __future__ import annotations

import hashlib
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
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def input_device(model):
    return model.get_input_embeddings().weight.device


def generate(model, tokenizer, prompt_ids: list, decoding: Decoding) -> list:
    """[(response token ids up to the first stop token, decoded text)] for each prompt, in order."""
    import torch
    from transformers import GenerationConfig

    stops = stop_ids(model, tokenizer)
    config = GenerationConfig(
        max_new_tokens=decoding.max_new_tokens,
        do_sample=decoding.sample,
        temperature=decoding.temperature if decoding.sample else None,
        top_p=decoding.top_p if decoding.sample else None,
        top_k=None,
        pad_token_id=pad_id(tokenizer),
        eos_token_id=stops or None,
    )
    torch.manual_seed(decoding.seed)
    out = []
    device = input_device(model)
    for start in range(0, len(prompt_ids), decoding.batch_size):
        batch = prompt_ids[start:start + decoding.batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad_id(tokenizer), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, p in enumerate(batch):  # left padding: every prompt ends where generation starts
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config)
        for row in gen[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), len(row))
            response = row[:cut]
            out.append((response, tokenizer.decode(response, skip_special_tokens=True)))
    return out


def logit_fingerprint(model, prompt_ids: list) -> str:
    """sha256 of the float32 logits at every position of every probe prompt (run one at a time, unpadded):
    two model states with the same fingerprint give bit-identical logits on the probes."""
    import torch

    digest = hashlib.sha256()
    device = input_device(model)
    with torch.no_grad():
        for p in prompt_ids:
            logits = model(input_ids=torch.tensor([p], device=device)).logits.float()
            logits = logits + 0.0  # -0.0 -> +0.0: equal values hash equally
            digest.update(logits.cpu().numpy().tobytes())
    return digest.hexdigest()
