"""How likely the UNDAMAGED model finds a text after a context: per-unit negative log-likelihoods.

The level classifier (``levels.py``) talks to a scorer through three calls, so it can run on any
language model: ``context(prompt)`` (``None`` = the null context, an empty user turn), ``encode(text)``
(text -> units) and ``nll([(context, units), ...])`` (one list of nats per unit for each pair).
``HFScorer`` is the one the sweep uses: units are token ids, contexts are rendered prompts.

Identical text must get identical evidence wherever it appears (a response shared by two cells may not
land on both sides of a threshold), so each (context, units) pair is scored in its own forward pass, with
no padding and no batch neighbours to change the arithmetic, log-probabilities taken in float32, and the
result cached by the pair: the same pair is computed once and returned from the cache afterwards.
"""

from __future__ import annotations

from sfn_merge_plugin.sweep.generate import input_device, render


class HFScorer:
    """Teacher-forced NLL under a Hugging Face causal LM: one unpadded sequence per forward, cached by pair."""

    def __init__(self, model, tokenizer, chat: bool, batch_size: int = 1):
        # batch_size is accepted for callers written against the batched scorer; every pair is scored alone
        self.model, self.tokenizer, self.chat = model, tokenizer, chat
        self.cache: dict = {}  # (context ids, unit ids) -> [nats per unit]

    def context(self, prompt):
        return tuple(render(self.tokenizer, prompt or "", self.chat))

    def encode(self, text: str) -> list:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def nll(self, pairs: list) -> list:
        return [list(self._one(tuple(c), tuple(u))) for c, u in pairs]

    def _one(self, ctx: tuple, units: tuple) -> tuple:
        key = (ctx, units)
        if key in self.cache:
            return self.cache[key]
        if not units:
            self.cache[key] = ()
            return ()
        import torch

        ids = torch.tensor([list(ctx) + list(units)], dtype=torch.long, device=input_device(self.model))
        with torch.no_grad():
            logits = self.model(input_ids=ids, logits_to_keep=len(units) + 1).logits[0].float()
        # row j of the last len(units)+1 positions predicts the token after it; the last row predicts nothing
        logp = torch.log_softmax(logits[:-1], dim=-1)
        target = torch.tensor(units, dtype=torch.long, device=logp.device).unsqueeze(-1)
        out = tuple((-logp.gather(-1, target).squeeze(-1)).cpu().tolist())
        self.cache[key] = out
        return out
