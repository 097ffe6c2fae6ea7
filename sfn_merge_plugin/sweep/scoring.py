"""How likely the UNDAMAGED model finds a text after a context: per-unit negative log-likelihoods.

The level classifier (``levels.py``) talks to a scorer through three calls, so it can run on any
language model: ``context(prompt)`` (``None`` = the null context, an empty user turn), ``encode(text)``
(text -> units) and ``nll([(context, units), ...])`` (one list of nats per unit for each pair).
``HFScorer`` is the one the sweep uses: units are token ids, contexts are rendered prompts.

Identical text must get identical evidence wherever it appears (a response shared by two cells may not
land on both sides of a threshold), so every pair is computed the same way whatever else is scored: the
context alone in one unpadded forward (its KV cache and last logits kept, so the three passes of a
response, and every response to the same prompt, run the context once), then the units alone on a copy
of that cache, with no padding and no batch neighbours to change the arithmetic, log-probabilities taken
in float32, and the result cached by the pair: the same pair is computed once and returned afterwards.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

from sfn_merge_plugin.sweep.generate import input_device, render

MAX_CONTEXTS = 64  # context KV caches kept (least recently used dropped); a dropped one is recomputed bit for bit


class HFScorer:
    """Teacher-forced NLL under a Hugging Face causal LM: each context's KV cache computed once (alone), each
    unit sequence continued from it alone (unpadded), results cached by pair."""

    def __init__(self, model, tokenizer, chat: bool, batch_size: int = 1, progress: bool = False):
        # batch_size is accepted for callers written against the batched scorer; every pair is scored alone
        self.model, self.tokenizer, self.chat, self.progress = model, tokenizer, chat, progress
        self.cache: dict = {}  # (context ids, unit ids) -> [nats per unit]
        self.contexts: OrderedDict = OrderedDict()  # context ids -> (KV cache of the context, float32 logits of its last position)

    def context(self, prompt):
        return tuple(render(self.tokenizer, prompt or "", self.chat))

    def encode(self, text: str) -> list:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def nll(self, pairs: list) -> list:
        keys = [(tuple(c), tuple(u)) for c, u in pairs]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        from tqdm.auto import tqdm

        for key in tqdm(todo, desc="scoring", unit="seq", leave=False, disable=not self.progress or len(todo) < 2):
            self.cache[key] = self._one(*key)
        return [list(self.cache[k]) for k in keys]

    def _context_state(self, ctx: tuple):
        """(KV cache, last-position float32 logits) of ``ctx`` run alone; kept for the next pairs."""
        if ctx in self.contexts:
            self.contexts.move_to_end(ctx)
            return self.contexts[ctx]
        import torch

        ids = torch.tensor([list(ctx)], dtype=torch.long, device=input_device(self.model))
        with torch.no_grad():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        past = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        state = (past, out.logits[0, -1].float())
        self.contexts[ctx] = state
        while len(self.contexts) > MAX_CONTEXTS:
            self.contexts.popitem(last=False)
        return state

    def _one(self, ctx: tuple, units: tuple) -> tuple:
        if not units:
            return ()
        if not ctx:
            raise ValueError("HFScorer: an empty context leaves the first unit unpredicted; contexts come from context()")
        import torch

        past, first = self._context_state(ctx)
        ids = torch.tensor([list(units)], dtype=torch.long, device=input_device(self.model))
        given = {_cache_argument(self.model): copy.deepcopy(past)}  # a copy: the forward appends the units to it
        with torch.no_grad():
            logits = self.model(input_ids=ids, use_cache=True, **given).logits[0].float()
        # the context's last position predicts units[0]; unit position j predicts units[j + 1]; the last predicts nothing
        logp = torch.log_softmax(torch.cat([first.unsqueeze(0), logits[:-1]]), dim=-1)
        target = torch.tensor(units, dtype=torch.long, device=logp.device).unsqueeze(-1)
        return tuple((-logp.gather(-1, target).squeeze(-1)).cpu().tolist())


def _cache_argument(model) -> str:
    """The forward's name for a KV cache: ``cache`` (transformers >= 5.23), ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
