"""The automatic output-level classifier (paper, Sec. 2.2): I random tokens, II fluent but off-context,
III meaningful and in context, IV reasons correctly. Every decision comes with its evidence numbers.

Evidence for one response (units = tokens of the UNDAMAGED model; repeats excluded, see below):

- ``nll``          mean negative log-likelihood (nats/unit) of the response after its prompt;
- ``order_gain``   ``nll`` of the same units in a shuffled order minus ``nll``: fluent text loses a lot
                   when its words are shuffled, random tokens lose nothing;
- ``relevance``    ``nll`` after an empty prompt minus ``nll`` after the real prompt: how much the prompt
                   raises the response's likelihood (fluent but off-context text is not helped); units
                   copied from the null context (``system_copied``: a persona reply restating the system
                   prompt, which both contexts hold) are left out of it: they say nothing about the prompt;
- ``repetition``   share of units inside a 4-gram seen earlier in the response; such units are left out
                   of the three numbers above, because a model predicts a loop by copying;
- ``nonword_rate`` share of whitespace-separated chunks that do not look like words or numbers;
- ``ends_in_loop`` most of its last ``LOOP_TAIL`` units repeat an earlier 4-gram (stuck in a loop);
- ``tail_run``     how many words at its end are one or two words over and over ("... or or or or");
- ``echo``, ``own_words`` share of its content words copied (in 3-word phrases) from the prompt, and the
                   number of content words it adds (``text_evidence.echo``);
- ``correct``      the grader's verdict (``grading.grade``) on a prompt with a known answer.

Rules, in order: empty, one or two distinct units over and over, or more than half non-words -> I;
correct -> IV; degenerate repetition (>= 12 units, ``repetition`` > 45%, ending in the loop; or ending in
``STUCK_RUN`` or more words of one or two kinds, however it started) -> I;
``nll`` above ``max_nll`` (with fewer than 6 novel units, too few to judge word order: above ``shuffled_nll``),
or (with >= 6 novel units) ``order_gain`` below ``min_order`` -> I;
an echo of the prompt (``echo`` >= 0.5, no own word) -> II; ``nll`` above ``max_meaningful_nll`` -> II, unless
(6+ novel units) its ``order_gain`` is below ``min_band_order`` -> I; ending inside a loop (>= 12 units) with
``nll`` above the median reference answer's -> II; ``relevance`` >= ``min_relevance`` -> III; else II.
Thresholds tuned on the "tuning" rows of tests/data/levels_smollm2.jsonl (real SmolLM2 responses labelled
by hand), checked on its "held-out" rows and on "new" rows (other prompts and cells, labelled before grading);
the stuck-end, system-copy, short-text and weak-loop rules were added after seeing the disagreements of all
three (docs/levels.md).

Thresholds are calibrated per undamaged model on reference answers (``calibration.py``).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Optional

from sfn_merge_plugin.sweep.calibration import CALIBRATION, Calibration  # noqa: F401 (callers read them here)
from sfn_merge_plugin.sweep.text_evidence import (  # noqa: F401
    REPEAT_N, copied_mask, echo, nonword_rate, novel_mask, shuffled, tail_run)

LEVELS = ("I", "II", "III", "IV")
STUCK_RUN = 8  # this many tokens of at most two kinds (the whole response), or words (its end) -> I: stuck
MIN_NOVEL_FOR_ORDER = 6  # the order-gain rule needs this many novel units to judge word order
NONWORD_MAX = 0.5  # more non-word chunks than this share -> I
MAX_REPETITION = 0.45  # more of the response inside repeated 4-grams than this share, ending in the loop -> I
MIN_LOOP_TOKENS = 12  # ... once the response is at least this long (a short answer may repeat a phrase)
LOOP_TAIL = 6  # "ends inside the loop": more than half of its last LOOP_TAIL units repeat an earlier 4-gram
ECHO_MIN = 0.5  # at least this share of its words copied from the prompt, and no content word of its own -> II


@dataclass
class Evidence:
    tokens: int
    novel: int
    distinct: int
    repetition: float
    nonword_rate: float
    nll: Optional[float] = None
    nll_shuffled: Optional[float] = None
    nll_null: Optional[float] = None
    order_gain: Optional[float] = None
    relevance: Optional[float] = None
    correct: Optional[bool] = None
    ends_in_loop: bool = False  # most of its last units repeat earlier 4-grams: cut off (or stopped) inside a loop
    echo: float = 0.0  # share of the response's words inside 3-grams copied from the prompt
    own_words: int = 0  # distinct content words of the response that the prompt does not have
    tail_run: int = 0  # words at its end of at most two kinds ("or or or"): stuck, however it started
    system_copied: int = 0  # novel units inside a 4-gram of the null context (the system prompt): left out of relevance
    words: int = 0  # whitespace-separated words: a number spelt digit by digit is many units but one word

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# ------------------------------------------------------------------------------------------ model evidence


PASSES = ("prompt", "shuffled", "null")  # the scoring passes of ``measure``: after the prompt, shuffled, after the null context


def measure(scorer, items: list, seed: int = 0, *, correct: Optional[list] = None, skip_decided: bool = False,
            passes: tuple = PASSES) -> list:
    """Evidence for each ``(prompt text, response units, response text)`` under ``scorer`` (the undamaged
    model): three scoring passes (after the prompt, shuffled after the prompt, after the null context).
    ``correct``: the grader's verdict per item (or None), stored as ``Evidence.correct``; ``skip_decided``:
    a response whose level ``text_decision`` already gives is not scored (its nll fields stay None);
    ``passes``: "prompt" and any of "shuffled" (for ``order_gain``), "null" (for ``relevance``)."""
    if "prompt" not in passes or not set(passes) <= set(PASSES):
        raise ValueError(f"measure: passes {passes!r} must include 'prompt' and be among {PASSES}")
    passes = tuple(p for p in PASSES if p in passes)
    null = scorer.context(None)
    pairs, plan = [], []
    verdicts = list(correct) if correct is not None else [None] * len(items)
    if len(verdicts) != len(items):
        raise ValueError(f"measure: {len(verdicts)} verdicts for {len(items)} items")
    for (prompt, units, text), verdict in zip(items, verdicts):
        units = list(units)
        mask = novel_mask(units)
        novel = [u for u, keep in zip(units, mask) if keep]
        copied, own = echo(prompt or "", text)
        # relevance's units: novel and not copied from the null context (which both of its passes hold)
        fresh = [m and not c for m, c in zip(mask, copied_mask(units, null))]
        ev = Evidence(tokens=len(units), novel=len(novel), distinct=len(set(units)),
                      repetition=(1 - len(novel) / len(units)) if units else 0.0, nonword_rate=nonword_rate(text),
                      ends_in_loop=sum(not m for m in mask[-LOOP_TAIL:]) > LOOP_TAIL / 2, echo=copied, own_words=own,
                      correct=verdict, tail_run=tail_run(text), system_copied=sum(mask) - sum(fresh),
                      words=len(text.split()))
        scored = bool(units) and not (skip_decided and text_decision(ev) is not None)
        plan.append((ev, mask, fresh if any(fresh) else mask, scored))  # all copied: judged on all novel units
        if scored:
            own = scorer.context(prompt)
            wanted = {"prompt": (own, units), "shuffled": (own, shuffled(novel, seed)), "null": (null, units)}
            pairs += [wanted[p] for p in passes]
    scores = scorer.nll(pairs) if pairs else []
    k = 0
    for ev, mask, fresh, scored in plan:
        if not scored:
            continue
        got = dict(zip(passes, scores[k:k + len(passes)]))
        k += len(passes)
        ev.nll = _mean([s for s, keep in zip(got["prompt"], mask) if keep])
        if "shuffled" in got:
            ev.nll_shuffled = _mean(got["shuffled"])
            ev.order_gain = ev.nll_shuffled - ev.nll
        if "null" in got:
            ev.nll_null = _mean([s for s, keep in zip(got["null"], mask) if keep])
            ev.relevance = (_mean([s for s, keep in zip(got["null"], fresh) if keep])
                            - _mean([s for s, keep in zip(got["prompt"], fresh) if keep]))
    return [ev for ev, *_ in plan]


def _mean(values: list) -> float:
    return float(sum(values) / len(values))


def calibrate(scorer, pairs=CALIBRATION, seed: int = 0) -> Calibration:
    """Thresholds for ``scorer``'s model from the reference answers, their shuffles and mismatched prompts."""
    if len(pairs) < 2:
        raise ValueError("calibration needs at least two (prompt, answer) pairs")
    encoded = [(p, scorer.encode(a), a) for p, a in pairs]
    fluent = measure(scorer, encoded, seed)
    # only the passes each reference needs (the null pass of ``other`` is ``fluent``'s, from the scorer's cache)
    mixed = measure(scorer, [(p, shuffled(u, seed + 1), "") for p, u, _ in encoded], seed, passes=("prompt", "shuffled"))
    other = measure(scorer, [(encoded[(i + 1) % len(encoded)][0], u, a) for i, (_, u, a) in enumerate(encoded)], seed,
                    passes=("prompt", "null"))
    med = statistics.median
    cal = Calibration(
        fluent_nll=med(e.nll for e in fluent), shuffled_nll=med(e.nll for e in mixed),
        fluent_order=med(e.order_gain for e in fluent), shuffled_order=med(e.order_gain for e in mixed),
        own_relevance=med(e.relevance for e in fluent), other_relevance=med(e.relevance for e in other),
    )
    return cal


def text_decision(ev: Evidence) -> Optional[tuple]:
    """(level, [reasons]) when the text evidence and the grader's verdict alone decide (the first rules of
    ``classify``), else None: such a response needs no model scoring (``measure(skip_decided=True)``)."""
    if ev.tokens == 0:
        return "I", ["empty response"]
    if ev.tokens >= STUCK_RUN and ev.distinct <= 2 and ev.words != 1:  # "1000000000" is one word, not a loop
        return "I", [f"degenerate: {ev.tokens} tokens, only {ev.distinct} distinct"]
    if ev.nonword_rate > NONWORD_MAX:
        return "I", [f"non-word rate {ev.nonword_rate:.2f} > {NONWORD_MAX}"]
    if ev.correct:  # after the text rules: a graded-correct answer is not random tokens
        return "IV", ["the grader accepts the answer"]
    if ev.tokens >= MIN_LOOP_TOKENS and ev.repetition > MAX_REPETITION and ev.ends_in_loop:
        return "I", [f"degenerate repetition: {ev.repetition:.0%} of its {ev.tokens} tokens repeat an earlier "
                     f"{REPEAT_N}-gram (> {MAX_REPETITION:.0%}) and it ends inside the loop"]
    if ev.tail_run >= STUCK_RUN:
        return "I", [f"degenerate repetition: its last {ev.tail_run} words are one or two words over and over "
                     f"(>= {STUCK_RUN})"]
    return None


def classify(ev: Evidence, cal: Calibration) -> tuple:
    """(level, [reasons]) for one response's evidence; the reasons quote the numbers that decided.
    A model-based Level I rule whose calibration does not separate reference text from noise is skipped."""
    decided = text_decision(ev)
    if decided is not None:
        return decided
    if cal.nll_separates and ev.novel >= MIN_NOVEL_FOR_ORDER and ev.nll > cal.max_nll:
        return "I", [f"nll {ev.nll:.2f} > {cal.max_nll:.2f} (midway between reference text {cal.fluent_nll:.2f} "
                     f"and shuffled tokens {cal.shuffled_nll:.2f})"]
    if cal.nll_separates and ev.novel < MIN_NOVEL_FOR_ORDER and ev.nll > cal.shuffled_nll:
        return "I", [f"nll {ev.nll:.2f} > {cal.shuffled_nll:.2f} (shuffled tokens): a mean over only {ev.novel} novel "
                     f"tokens, too few to judge word order (< {MIN_NOVEL_FOR_ORDER}), must be as unlikely as random ones"]
    if cal.order_separates and ev.novel >= MIN_NOVEL_FOR_ORDER and ev.order_gain < cal.min_order:
        return "I", [f"order gain {ev.order_gain:.2f} < {cal.min_order:.2f}: shuffling its tokens barely changes "
                     f"how likely it is (reference text {cal.fluent_order:.2f}, shuffled {cal.shuffled_order:.2f})"]
    if ev.echo >= ECHO_MIN and ev.own_words == 0:
        return "II", [f"echoes the prompt: {ev.echo:.0%} of its words are copied from it (>= {ECHO_MIN:.0%}) and "
                      "it adds no content word of its own"]
    if cal.nll_separates and ev.nll > cal.max_meaningful_nll:
        if cal.order_separates and ev.novel >= MIN_NOVEL_FOR_ORDER and ev.order_gain < cal.min_band_order:
            return "I", [f"nll {ev.nll:.2f} > {cal.max_meaningful_nll:.2f} (less likely than a plain answer) and order gain "
                         f"{ev.order_gain:.2f} < {cal.min_band_order:.2f}: neither likely text nor clearly ordered sentences"]
        return "II", [f"nll {ev.nll:.2f} > {cal.max_meaningful_nll:.2f} (near the reference answers' {cal.fluent_nll:.2f}): reads "
                      "like text, but the undamaged model finds it less likely than a plain answer"]
    if cal.nll_separates and ev.tokens >= MIN_LOOP_TOKENS and ev.ends_in_loop and ev.nll > cal.fluent_nll:
        return "II", [f"ends inside a loop, and the text before it (nll {ev.nll:.2f}) is less likely than the median "
                      f"reference answer ({cal.fluent_nll:.2f}): stuck after a weak start, not a meaningful answer"]
    fits = ev.relevance >= cal.min_relevance
    why = [f"relevance {ev.relevance:+.3f} {'>=' if fits else '<'} {cal.min_relevance:+.3f} (own prompt "
           f"{cal.own_relevance:+.3f}, another prompt {cal.other_relevance:+.3f})"]
    if not cal.relevance_separates:
        why.append("unreliable: the calibration could not separate on- from off-context text")
    if ev.correct is False and fits:
        why.append("in context, but the answer is wrong")
    return ("III" if fits else "II"), why


def modal_level(levels: list) -> Optional[str]:
    """The most frequent level; ties go to the lower level (the conservative reading)."""
    if not levels:
        return None
    counts = {lv: levels.count(lv) for lv in LEVELS}
    return max(LEVELS, key=lambda lv: (counts[lv], -LEVELS.index(lv)))


def grade_responses(scorer, items: list, cal: Optional[Calibration] = None, seed: int = 0) -> list:
    """[(level, reasons, Evidence)] for each ``(prompt, response text, answer or None, grader kind)``.

    Units are ``scorer.encode(response)``, never generated token ids, so the same text after the same prompt
    gets the same evidence and level wherever it appears. ``cal``: the calibration (default: calibrate now)."""
    from sfn_merge_plugin.grading import grade

    cal = cal or calibrate(scorer, seed=seed)
    verdicts = [None if answer is None else bool(grade(text, answer, kind or "math")) for _, text, answer, kind in items]
    # as the sweep does: a response the text rules decide is not scored (its nll fields stay None)
    evidence = measure(scorer, [(p, scorer.encode(text), text) for p, text, _, _ in items], seed, correct=verdicts,
                       skip_decided=True)
    return [(*classify(ev, cal), ev) for ev in evidence]
