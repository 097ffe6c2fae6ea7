"""An index of the benchmarks' normalised texts and word n-grams, built once, queried once per training row.

A training row matches a benchmark item when their normalised texts are equal ("exact"), or when the row
contains enough of the item's distinct n-grams ("ngram"): at least one (s1's rule, ``threshold=None``), or at
least ``threshold`` of them. Items shorter than n words have no n-gram and match by exact text only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sfn_merge_plugin.data.normalize import ngrams, words

DEFAULT_N = 8  # s1's n-gram length (via open-r1's decontaminate.py, "the same approach" as s1)
DEFAULT_THRESHOLD = None  # None: one shared n-gram is enough, s1's rule; a share in (0, 1] is stricter


@dataclass(frozen=True)
class Match:
    benchmark: str  # the benchmark's name
    item: str  # the id of the benchmark item (for GPQA its Record ID): never its text
    reason: str  # "exact" (same normalised text) or "ngram" (shared word n-grams)
    shared: int  # distinct n-grams of the item found in the row
    total: int  # distinct n-grams of the item (0: shorter than n words)

    @property
    def score(self) -> float:
        """The share of the item's n-grams the row contains (1.0 for an exact match)."""
        return 1.0 if self.reason == "exact" else self.shared / self.total

    def as_dict(self) -> dict:
        return {"benchmark": self.benchmark, "item": self.item, "reason": self.reason,
                "shared_ngrams": self.shared, "item_ngrams": self.total, "score": round(self.score, 6)}


class BenchmarkIndex:
    """Exact texts and n-grams of every item of ``benchmarks`` (a list of ``benchmarks.Benchmark``)."""

    def __init__(self, benchmarks, n: int = DEFAULT_N, threshold: float | None = DEFAULT_THRESHOLD):
        self.n, self.threshold = n, threshold
        self.items: list[tuple[str, str, int]] = []  # (benchmark, item id, distinct n-grams)
        self.exact: dict[str, list[int]] = defaultdict(list)  # normalised text -> item numbers
        grams: dict[tuple, list[int]] = defaultdict(list)  # n-gram -> item numbers
        self.short = {b.name: 0 for b in benchmarks}  # items with fewer than n words, per benchmark
        for bench in benchmarks:
            for item_id, text in bench.items:
                tokens = words(text)
                own = ngrams(tokens, n)
                number = len(self.items)
                self.items.append((bench.name, item_id, len(own)))
                if tokens:
                    self.exact[" ".join(tokens)].append(number)
                self.short[bench.name] += not own
                for gram in own:
                    grams[gram].append(number)
        self.grams = dict(grams)
        self.keys = frozenset(self.grams)  # set & frozenset runs in C over the smaller set
        self.exact = dict(self.exact)

    def matches(self, text: str) -> list[Match]:
        """The best match per benchmark for one training text (exact first, then the largest share)."""
        tokens = words(text)
        found: dict[int, Match] = {}
        for number in self.exact.get(" ".join(tokens), ()):
            bench, item, total = self.items[number]
            found[number] = Match(bench, item, "exact", total, total)
        hits = ngrams(tokens, self.n) & self.keys if len(tokens) >= self.n else ()
        if hits:
            counts: dict[int, int] = defaultdict(int)
            for gram in hits:
                for number in self.grams[gram]:
                    counts[number] += 1
            for number, shared in counts.items():
                bench, item, total = self.items[number]
                if number not in found and (self.threshold is None or shared / total >= self.threshold):
                    found[number] = Match(bench, item, "ngram", shared, total)
        best: dict[str, Match] = {}
        for m in found.values():
            b = best.get(m.benchmark)
            if b is None or (m.reason == "exact", m.score, m.shared) > (b.reason == "exact", b.score, b.shared):
                best[m.benchmark] = m
        return sorted(best.values(), key=lambda m: m.benchmark)
