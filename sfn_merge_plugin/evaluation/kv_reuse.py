"""The KV cache of one ``HFBackend.generate`` call, kept for the next call's prompts that extend it.

Every budget-forcing round sends prompt + thinking so far (+ "Wait") again. Instead of re-prefilling it,
the backend keeps each row's keys/values from the previous call and feeds only the new tokens. A row's
cache columns may hold left padding, and the row may have generated past its own end while its batch
neighbours went on: only the columns whose tokens are a prefix of the new prompt are reused, gathered
into a left-padded cache; the new tokens are right-aligned after a masked gap, so positions (the cumsum
of the attention mask) and the attended set are exactly those of a fresh prefill of the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KEEP_CACHE_BYTES = 1 << 30  # at most this much KV cache is kept between calls (rows beyond it re-prefill)
REUSABLE_DECODING = frozenset({"do_sample", "temperature", "top_p", "top_k"})  # options that ignore the layout
_MOD = (1 << 61) - 1  # prefix hashes: a kept prompt is found in O(prompt) whatever the number of kept rows


def prefix_hashes(tokens) -> list[int]:
    """``h[n]`` = a polynomial hash of ``tokens[:n]`` (a lookup key only: hits are compared token by token)."""
    out, h = [0], 0
    for t in tokens:
        h = (h * 1000003 + int(t) + 1) % _MOD
        out.append(h)
    return out


def left_padded(prompts: list[list[int]], pad_token_id: int):
    """(input_ids, attention_mask, None): the prompts right-aligned in one batch, no cache."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask, None


@dataclass(eq=False)
class _Chunk:
    layers: list  # one generate call's (keys, values) per layer, [batch, heads, columns, head_dim]
    size: int  # their bytes


@dataclass(eq=False)
class _Row:
    chunk: _Chunk  # the kept cache this row is in
    row: int  # this row's index in that chunk
    tokens: list[int]  # the tokens whose keys/values the cache holds, in order
    columns: list[int]  # their columns in the chunk's cache (masked columns left out)


@dataclass
class KeptCache:
    """Rows of kept KV cache, found by the prompt they were generated from (a new prompt extends it)."""

    rows: dict = field(default_factory=dict)  # (len(prompt), prefix hash of prompt) -> [_Row]
    lengths: set = field(default_factory=set)  # the lengths of those prompts
    bytes: int = 0  # of the distinct chunks held
    chunks: set = field(default_factory=set)  # the chunks held (ids)
    used: set = field(default_factory=set)  # ids of the rows reused by a layout

    def _hold(self, chunk: _Chunk, budget: int) -> bool:
        if id(chunk) in self.chunks:
            return True
        if self.bytes + chunk.size > budget:
            return False
        self.chunks.add(id(chunk))
        self.bytes += chunk.size
        return True

    def _put(self, prompt_len: int, kept: _Row):
        key = (prompt_len, prefix_hashes(kept.tokens[:prompt_len])[-1])
        self.rows.setdefault(key, []).append(kept)
        self.lengths.add(prompt_len)

    def add(self, cache, sequences, input_mask, budget: int):
        """Keep a finished ``generate``'s cache (``sequences``: its output ids, ``input_mask``: its input's
        attention mask) when every layer is a plain full-attention layer and it fits the byte budget."""
        import torch
        from transformers.cache_utils import DynamicLayer

        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            return  # sliding-window, quantised or static layers: not reused
        pairs = [(layer.keys, layer.values) for layer in layers]
        chunk = _Chunk(pairs, sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in pairs))
        columns = pairs[0][0].shape[-2]
        width = input_mask.shape[1]
        if columns < width or columns > sequences.shape[1] or not self._hold(chunk, budget):
            return  # not the layout assumed below, or over the budget
        mask = torch.cat([input_mask.cpu(), torch.ones((input_mask.shape[0], columns - width), dtype=input_mask.dtype)], 1)
        seqs = sequences[:, :columns].cpu()
        for row in range(seqs.shape[0]):
            cols = mask[row].nonzero().flatten().tolist()
            self._put(int(input_mask[row].sum()), _Row(chunk, row, seqs[row, cols].tolist(), cols))

    def inherit(self, older: "KeptCache", budget: int):
        """Also keep ``older``'s rows that no layout reused (a row that left the forcing rounds early still
        gets its answer phase later), as far as the budget allows."""
        for (prompt_len, _), rows in older.rows.items():
            for kept in rows:
                if id(kept) not in older.used and self._hold(kept.chunk, budget):
                    self._put(prompt_len, kept)

    def _match(self, prompt: list[int]):
        """(row, reused length) of the kept row sharing the longest prefix with ``prompt`` (at least one new
        token is left to feed), or (None, 0)."""
        best, best_len = None, 0
        hashes = prefix_hashes(prompt)
        for n in self.lengths:
            if n >= len(prompt):
                continue
            for kept in self.rows.get((n, hashes[n]), ()):
                if kept.tokens[:n] != prompt[:n]:
                    continue  # a hash collision
                limit = min(len(kept.tokens), len(prompt) - 1)
                same = n
                while same < limit and kept.tokens[same] == prompt[same]:
                    same += 1
                if same > best_len:
                    best, best_len = kept, same
        return best, best_len

    def layout(self, prompts: list[list[int]], pad_token_id: int):
        """(input_ids, attention_mask, DynamicCache) for ``prompts`` reusing kept rows, or None when none
        of them extends a kept row. Row layout: [pad | reused prefix | masked gap | new tokens]."""
        if not self.rows:
            return None
        matches = [self._match(p) for p in prompts]
        if not any(kept is not None for kept, _ in matches):
            return None
        self.used.update(id(kept) for kept, _ in matches if kept is not None)
        import torch
        from transformers import DynamicCache

        reused = max(n for _, n in matches)
        fresh = max(len(p) - n for p, (_, n) in zip(prompts, matches))
        ids = torch.full((len(prompts), reused + fresh), pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        sources = [k for k, _ in matches if k is not None][0].chunk.layers
        data = []
        for layer, (key0, value0) in enumerate(sources):
            heads, dim = key0.shape[1], key0.shape[3]
            keys = key0.new_zeros((len(prompts), heads, reused, dim))
            values = value0.new_zeros((len(prompts), value0.shape[1], reused, value0.shape[3]))
            for row, (kept, n) in enumerate(matches):
                if kept is None or n == 0:
                    continue
                index = torch.tensor(kept.columns[:n], device=key0.device)
                keys[row, :, reused - n:] = kept.chunk.layers[layer][0][kept.row].index_select(1, index)
                values[row, :, reused - n:] = kept.chunk.layers[layer][1][kept.row].index_select(1, index)
            data.append((keys, values))
        for row, (prompt, (_, n)) in enumerate(zip(prompts, matches)):
            ids[row, reused - n:reused] = torch.tensor(prompt[:n], dtype=torch.long)
            mask[row, reused - n:reused] = 1
            tail = prompt[n:]
            ids[row, ids.shape[1] - len(tail):] = torch.tensor(tail, dtype=torch.long)
            mask[row, ids.shape[1] - len(tail):] = 1
        return ids, mask, DynamicCache(ddp_cache_data=data)
