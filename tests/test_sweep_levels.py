"""The automatic Level I-IV classifier: its text evidence on edge cases, the undamaged-model scorer against a
plain forward pass, every decision rule, and agreement with the hand-labelled set tests/data/levels_labelled.jsonl."""

import collections
import json
import math
import os
import re

import pytest
import torch

from sfn_merge_plugin.sweep import levels
from sfn_merge_plugin.sweep.levels import Calibration, Evidence, classify, modal_level, nonword_rate, novel_mask
from sfn_merge_plugin.sweep.prompts import BUILTIN

LABELLED = os.path.join(os.path.dirname(__file__), "data", "levels_labelled.jsonl")


@pytest.fixture(autouse=True, scope="module")
def _single_thread(one_torch_thread):
    """Tiny-model forwards are faster on one thread (and on a shared machine, much faster)."""


class NgramCacheScorer:
    """A stand-in undamaged model that knows some English and copies from its context: a word-level
    interpolation of bigram, cache (words of the context so far) and add-one unigram probabilities, fitted
    on Python's own documentation (pydoc_data, stdlib), which shares no text with the labelled set."""

    def __init__(self):
        import pydoc_data.topics

        toks = self.encode("\n".join(pydoc_data.topics.topics.values()))
        self.uni, self.bi, self.n = collections.Counter(toks), collections.Counter(zip(toks, toks[1:])), len(toks)

    @staticmethod
    def encode(text):
        return re.findall(r"\w+|[^\w\s]", text.lower())

    def context(self, prompt):
        return tuple(self.encode(prompt or ""))

    def _p(self, w, hist):
        prev = hist[-1] if hist else ""
        p_uni = (self.uni[w] + 1) / (self.n + len(self.uni) + 1)
        lam_bi = 0.6 if self.uni[prev] else 0.0
        p_bi = self.bi[(prev, w)] / self.uni[prev] if self.uni[prev] else 0.0
        lam_cache = 0.2 if hist else 0.0
        p_cache = hist.count(w) / len(hist) if hist else 0.0
        return lam_bi * p_bi + lam_cache * p_cache + (1 - lam_bi - lam_cache) * p_uni

    def nll(self, pairs):
        out = []
        for ctx, units in pairs:
            hist, row = list(ctx), []
            for u in units:
                row.append(-math.log(self._p(u, hist)))
                hist.append(u)
            out.append(row)
        return out


@pytest.fixture(scope="module")
def standin():
    return NgramCacheScorer()


def cal(**kw):
    base = dict(fluent_nll=2.0, shuffled_nll=8.0, fluent_order=4.0, shuffled_order=0.0, own_relevance=0.6,
                other_relevance=-0.2)
    base.update(kw)
    return Calibration(**base)


def ev(**kw):
    base = dict(tokens=40, novel=40, distinct=30, repetition=0.0, nonword_rate=0.0, nll=2.5, nll_shuffled=7.5,
                nll_null=2.9, order_gain=5.0, relevance=0.4, correct=None)
    base.update(kw)
    return Evidence(**base)


def test_text_evidence_on_edge_cases():
    assert nonword_rate("Reading books opens the mind, and it's well-known.") == 0
    assert nonword_rate("So 15% of 80 is 0.15 × 80 = 12, and x + 3 = 10 gives \\boxed{7}.") == 0
    assert nonword_rate("Paris est la capitale de la France. 北京是中国的首都。") == 0
    assert nonword_rate("ätz apple_msg()). Sure.setOnClickListener ]]); xkcdqrt ingeingeingeingeingeingeinge") > 0.5
    assert nonword_rate("ofofof booksbooksbooks") == 1 and nonword_rate("a murmur of couscous") == 0
    assert nonword_rate("!!!!!!!!!!!!") == 1 and nonword_rate("Yes -- no.") == 0 and nonword_rate("") == 0
    units = "a b c a b c a b c a b c".split()
    assert novel_mask(units) == [True] * 6 + [False] * 6  # the loop is copied after one period + 3 units
    assert all(novel_mask("one two three four five six".split()))
    from sfn_merge_plugin.sweep.text_evidence import copied_mask, tail_run

    assert tail_run(" my ideal 5- or 6- day 3- or 4-  or 5- or 6-  or  or  or  or  or  or  or") == 12  # "day", "or"
    assert tail_run("Wisps, wisps, land. Land land") == 5 and tail_run("a b c") == 2 and tail_run("") == 0
    # numbers and symbols neither count nor break a run: a sum or a large number is not a loop
    assert tail_run("6 + 6 + 6 + 6 + 6 + 6 + 6 + 6 + 6") == 0 and tail_run("A billion is 1,000,000,000") == 2
    assert copied_mask([1, 2, 3, 4, 5], [9, 1, 2, 3, 4, 8]) == [True] * 4 + [False]  # a 4-gram of the context
    assert copied_mask([1, 2, 3, 5], [1, 2, 3, 4]) == [False] * 4 and copied_mask([1, 2, 3, 4], None) == [False] * 4
    s = levels.shuffled(list(range(20)), 0)
    assert sorted(s) == list(range(20)) and s != list(range(20)) and s == levels.shuffled(list(range(20)), 0)


def test_every_rule_and_its_evidence():
    c = cal()
    assert classify(ev(tokens=0), c) == ("I", ["empty response"])
    assert classify(ev(tokens=20, distinct=2), c)[0] == "I"
    # "1000000000" spelt digit by digit: 10 units of 2 kinds, but one word; a right answer, not a loop
    assert classify(ev(tokens=10, distinct=2, words=1, correct=True), c) == ("IV", ["the grader accepts the answer"])
    assert classify(ev(tokens=10, distinct=1, words=10, correct=True), c)[0] == "I"  # "7 7 7 7 7 7 7 7 7 7"
    assert classify(ev(nonword_rate=0.6), c)[0] == "I"
    lv, why = classify(ev(nll=5.5), c)
    assert lv == "I" and "nll 5.50 > 5.00" in why[0]
    lv, why = classify(ev(order_gain=1.5), c)
    assert lv == "I" and "order gain 1.50 < 2.00" in why[0]
    assert classify(ev(order_gain=1.5, novel=5), c)[0] == "III"  # too short to judge word order
    # with fewer than 6 novel units the nll rule asks for the shuffled references' nll (8.0), not midway (5.0)
    assert classify(ev(tokens=4, novel=4, nll=6.0), c)[0] == "II"  # "The most helpful.": odd, not noise
    lv, why = classify(ev(tokens=4, novel=4, nll=8.5), c)
    assert lv == "I" and "nll 8.50 > 8.00 (shuffled tokens)" in why[0]
    assert classify(ev(relevance=0.1), c)[0] == "II"
    # less likely than a plain answer (nll > 2.6): sentences (II) only with clear word order (>= 2/3 of 0..4)
    assert classify(ev(nll=4.0, order_gain=3.0), c)[0] == "II"
    lv, why = classify(ev(nll=4.0, order_gain=2.5), c)
    assert lv == "I" and "order gain 2.50 < 2.67" in why[0]
    assert classify(ev(nll=2.5, order_gain=2.5), c)[0] == "III"  # likely text keeps its level
    assert classify(ev(relevance=0.3), c)[0] == "III"
    lv, why = classify(ev(correct=False), c)
    assert lv == "III" and "answer is wrong" in why[-1]
    assert classify(ev(correct=True, nll=6.0), c) == ("IV", ["the grader accepts the answer"])
    assert classify(ev(correct=True, nonword_rate=0.9), c)[0] == "I"  # text rules come first
    # a model that cannot tell text from its shuffle switches its rules off instead of calling everything I
    blind = cal(shuffled_nll=2.1, shuffled_order=3.99, other_relevance=0.59)
    assert not blind.reliable and len(blind.problems()) == 3
    lv, why = classify(ev(nll=5.5, order_gain=1.5, relevance=0.7), blind)
    assert lv == "III" and "unreliable" in why[-1]
    assert modal_level(["I", "III", "III", "I"]) == "I" and modal_level(["II", "IV", "IV"]) == "IV"
    assert modal_level([]) is None


def test_hf_scorer_matches_a_plain_forward_pass(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sfn_merge_plugin.sweep.scoring import HFScorer

    path = tiny_model("qwen2")
    model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    scorer = HFScorer(model, tok, chat=True, batch_size=3)
    pairs = [(scorer.context("What is 2 + 3?"), scorer.encode("It is 5.")),
             (scorer.context(None), scorer.encode("the quick brown fox jumps over the lazy dog")),
             (scorer.context("hi"), scorer.encode("hello, how are you today? i am fine")),
             (scorer.context("a much longer prompt about the importance of reading books"), scorer.encode("ok"))]
    got = scorer.nll(pairs)
    for (ctx, units), row in zip(pairs, got):
        ids = torch.tensor([list(ctx) + list(units)])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
        want = [-logp[len(ctx) + i - 1, u].item() for i, u in enumerate(units)]
        assert len(row) == len(units) and max(abs(a - b) for a, b in zip(row, want)) < 1e-4
    assert tok.decode(scorer.context(None)).startswith("<|im_start|>user\n<|im_end|>")


def test_measure_combines_the_three_passes(standin):
    prompt = "Why is the sky blue?"
    text = "The sky is blue because air scatters blue light. The sky is blue because air scatters blue light."
    units = standin.encode(text)
    (e,) = levels.measure(standin, [(prompt, units, text)])
    mask = novel_mask(units)
    own = standin.nll([(standin.context(prompt), units)])[0]
    assert e.tokens == len(units) and e.novel == sum(mask) < len(units) and 0 < e.repetition < 1
    assert e.nll == pytest.approx(sum(s for s, m in zip(own, mask) if m) / sum(mask))
    assert e.order_gain == pytest.approx(e.nll_shuffled - e.nll) and e.relevance == pytest.approx(e.nll_null - e.nll)
    assert e.relevance > 0  # the prompt's words make the answer more likely
    (empty,) = levels.measure(standin, [(prompt, [], "")])
    assert empty.nll is None and classify(empty, cal())[0] == "I"
    assert e.system_copied == 0 and e.tail_run == 2  # the stand-in's null context is empty; "scatters light."


class PersonaScorer:
    """The stand-in with a system prompt in every context, the null one included (as a chat template has)."""

    SYSTEM = "you are a helpful assistant named smol . "

    def __init__(self, inner):
        self.inner = inner

    def context(self, prompt):
        return self.inner.context(self.SYSTEM + (prompt or ""))

    def encode(self, text):
        return self.inner.encode(text)

    def nll(self, pairs):
        return self.inner.nll(pairs)


def test_relevance_leaves_out_what_the_system_prompt_says(standin):
    """A persona reply copying the system prompt: its copied units are predicted by that prompt with or without
    the user's, so relevance is measured on the others (the nll keeps them all)."""
    scorer = PersonaScorer(standin)
    prompt = "Why is the sky blue?"
    text = "I am a helpful assistant named Smol and the sky is blue because air scatters light."
    units = scorer.encode(text)
    (e,) = levels.measure(scorer, [(prompt, units, text)])
    own, null = scorer.nll([(scorer.context(prompt), units), (scorer.context(None), units)])
    keep = [i for i in range(len(units)) if not 2 <= i <= 6]  # "a helpful assistant named smol" is copied
    assert e.system_copied == 5 and e.novel == len(units)
    assert e.nll == pytest.approx(sum(own) / len(own)) and e.nll_null == pytest.approx(sum(null) / len(null))
    want = sum(null[i] for i in keep) / len(keep) - sum(own[i] for i in keep) / len(keep)
    assert e.relevance == pytest.approx(want) and e.relevance != pytest.approx(e.nll_null - e.nll)
    (only,) = levels.measure(scorer, [(prompt, scorer.encode("a helpful assistant named smol"), "")])
    assert only.system_copied == 5 and only.relevance == pytest.approx(only.nll_null - only.nll)  # all copied: all units


def test_agrees_with_the_hand_labelled_set(standin):
    from sfn_merge_plugin.grading import grade

    prompts = {p.id: p for p in BUILTIN}
    rows = [json.loads(line) for line in open(LABELLED, encoding="utf-8")]
    assert len(rows) >= 30 and {r["level"] for r in rows} == {"I", "II", "III", "IV"}
    c = levels.calibrate(standin)
    evidence = levels.measure(standin, [(prompts[r["prompt"]].text, standin.encode(r["response"]), r["response"]) for r in rows])
    got = []
    for r, e in zip(rows, evidence):
        p = prompts[r["prompt"]]
        if p.answer is not None:
            e.correct = grade(r["response"], p.answer, p.grader)
        got.append(classify(e, c)[0])
    pairs = list(zip([r["level"] for r in rows], got))
    agreement = sum(a == b for a, b in pairs) / len(pairs)
    # the stand-in knows too little English for its nll rule (flagged, so switched off) ...
    assert not c.nll_separates and c.order_separates and c.relevance_separates
    # ... yet 27 of 32 agree (measured): 4 Level I soups of code fragments / shuffled words look like text to a
    # bigram model, and one Level II sentence sits at the order-gain threshold. Relevance splits II from III.
    assert agreement >= 0.8, pairs
    assert sum(g == "I" for want, g in pairs if want != "I") <= 1
    assert all(g == "II" for want, g in pairs if want == "II" and g != "I")
    assert all(g == want for want, g in pairs if want in ("III", "IV"))
    # the text rules alone catch the degenerate loops and the non-word soups
    text_caught = [r for r, e in zip(rows, evidence) if (e.tokens >= 8 and e.distinct <= 2) or e.nonword_rate > 0.5]
    assert len(text_caught) >= 4 and all(r["level"] == "I" for r in text_caught)


# --------------------------------------------------------------------------------------------- integration


@pytest.mark.integration
@pytest.mark.slow
def test_smollm2_intact_is_level_iii_and_zero_mlp_is_level_i(tmp_path, smollm2):
    from sfn_merge_plugin.sweep.generate import Decoding
    from sfn_merge_plugin.sweep.runner import load, run_sweep

    torch.set_num_threads(2)
    model, tok = load(smollm2)
    res = run_sweep(model, "mlp", "zero", "10-20", str(tmp_path), tokenizer=tok, prompts=list(BUILTIN[:4]),
                    decoding=Decoding(max_new_tokens=48), progress=False)
    assert res.calibration.reliable, res.calibration.problems()
    assert res.cell("intact").modal("conversation") == "III"
    assert res.cell("zero(mlp)@10-20").modal() == "I"


# ------------------------------------------------------------------------------- loops, echoes, determinism


def test_echo_separates_a_restated_question_from_an_answer():
    from sfn_merge_plugin.sweep.text_evidence import echo

    assert echo("Explain in two sentences why the sky is blue.", "The sky is blue.") == (1.0, 0)
    assert echo("What is 17 + 25? Put the final answer in \\boxed{}.", "The answer is 17 + 25.") == (1.0, 0)
    copied, own = echo("What is the capital of France, and what is it famous for?", "The capital of France is Paris.")
    assert copied == pytest.approx(4 / 6) and own == 1  # "Paris" is the answer's own word
    assert echo("A farmer has 12 sheep. How many now?", "The answer is 12.") == (0.0, 0)  # an answer, not a copy
    # every word of its own copied from the prompt, even outside a 3-word phrase: an echo that adds nothing
    assert echo("Suggest a name for a new coffee shop and explain why.", "You are a new name for a coffee shop.") == (1.0, 0)
    assert echo("anything", "") == (0.0, 0)


def test_loop_and_echo_rules():
    c = cal()
    lv, why = classify(ev(tokens=40, repetition=0.6, ends_in_loop=True), c)
    assert lv == "I" and "degenerate repetition: 60%" in why[0]
    # starts to loop after a plain, likely start (nll 1.5 <= the median reference's 2.0): keeps its level
    assert classify(ev(tokens=40, repetition=0.4, ends_in_loop=True, nll=1.5), c)[0] == "III"
    assert classify(ev(tokens=40, repetition=0.6), c)[0] == "III"  # repeats itself, then breaks out with new text
    assert classify(ev(tokens=10, repetition=0.6, ends_in_loop=True), c)[0] == "III"  # too short to call a loop
    assert classify(ev(tokens=40, repetition=0.6, ends_in_loop=True, correct=True), c)[0] == "IV"
    # ends in 8+ units of one or two kinds, however it started ("my ideal 5- or 6- day ... or or or or")
    lv, why = classify(ev(tokens=40, repetition=0.35, ends_in_loop=True, tail_run=14), c)
    assert lv == "I" and "last 14 words are one or two words over and over" in why[0]
    assert classify(ev(tokens=40, tail_run=7), c)[0] == "III"
    assert classify(ev(tokens=40, tail_run=9, correct=True), c)[0] == "IV"
    # a loop after a start less likely than the median reference answer (2.0) is not a meaningful answer
    lv, why = classify(ev(repetition=0.35, ends_in_loop=True, nll=2.3, relevance=1.0), c)
    assert lv == "II" and "ends inside a loop" in why[0]
    assert classify(ev(repetition=0.35, ends_in_loop=True, nll=1.5, relevance=1.0), c)[0] == "III"
    assert classify(ev(repetition=0.35, ends_in_loop=False, nll=2.3, relevance=1.0), c)[0] == "III"
    lv, why = classify(ev(echo=0.8, own_words=0, relevance=2.0), c)
    assert lv == "II" and "echoes the prompt" in why[0]
    assert classify(ev(echo=0.8, own_words=1, relevance=2.0), c)[0] == "III"
    assert classify(ev(echo=0.4, own_words=0, relevance=2.0), c)[0] == "III"
    assert classify(ev(echo=1.0, own_words=0, correct=True), c)[0] == "IV"


def test_identical_text_gets_identical_evidence_whatever_its_neighbours(tiny_model):
    """One unpadded sequence per forward, cached by (context, units): a text scored alone, among others of
    different lengths, or twice, gets bit-identical nll lists, hence identical evidence and level."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sfn_merge_plugin.sweep.scoring import HFScorer

    path = tiny_model("qwen2")
    model, tok = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16), AutoTokenizer.from_pretrained(path)
    text, prompt = "the quick brown fox", "Why is the sky blue?"
    alone = HFScorer(model, tok, chat=True)
    want = alone.nll([(alone.context(prompt), alone.encode(text))])[0]
    crowd = HFScorer(model, tok, chat=True, batch_size=4)
    others = [(crowd.context("a much longer prompt about reading books and their importance"), crowd.encode("ok then")),
              (crowd.context(None), crowd.encode("hello there, how are you doing today, my friend?"))]
    got = crowd.nll(others + [(crowd.context(prompt), crowd.encode(text))] + others[::-1])
    assert got[2] == want and len(crowd.cache) == 3
    items = [("Why is the sky blue?", tok(text, add_special_tokens=False)["input_ids"], text)] * 2
    a, b = levels.measure(alone, items[:1]), levels.measure(crowd, [("another prompt", [5, 6, 7], "x")] + items)
    assert a[0] == b[1] == b[2]


def test_grade_responses_encodes_the_text(standin):
    rows = [("Why is the sky blue?", "The sky is blue because air scatters blue light.", None, "math"),
            ("What is 17 + 25?", "17 + 25 = 42, so the answer is \\boxed{42}.", "42", "math"),
            ("What is 17 + 25?", "The answer is 17 + 25.", None, "math"),
            ("Why is the sky blue?", "", None, "math")]
    blind = cal(shuffled_nll=2.1, shuffled_order=3.99, other_relevance=0.59)  # the model rules switched off
    got = levels.grade_responses(standin, rows, blind)
    assert [g[0] for g in got[1:]] == ["IV", "II", "I"] and got[2][1][0].startswith("echoes the prompt")
    assert got[1][2].correct is True and got[0][2].correct is None and got[0][2].echo < 0.5 < got[2][2].echo
    assert got[0][2] == levels.measure(standin, [(rows[0][0], standin.encode(rows[0][1]), rows[0][1])])[0]


class CountingScorer:
    """The stand-in, counting the (context, units) pairs it is asked to score."""

    def __init__(self, inner):
        self.inner, self.scored = inner, []

    def context(self, prompt):
        return self.inner.context(prompt)

    def encode(self, text):
        return self.inner.encode(text)

    def nll(self, pairs):
        self.scored += [(tuple(c), tuple(u)) for c, u in pairs]
        return self.inner.nll(pairs)


def test_text_decided_responses_are_not_scored_and_keep_their_level(standin):
    """text_decision is classify's first rules: where it decides, classify says the same with or without a
    calibration; measure(skip_decided=True) scores none of those responses and all the others as before."""
    c, blind = cal(), cal(shuffled_nll=2.1, shuffled_order=3.99, other_relevance=0.59)
    decided = [ev(tokens=0), ev(tokens=20, distinct=2), ev(nonword_rate=0.6), ev(correct=True, nll=6.0),
               ev(tokens=40, repetition=0.6, ends_in_loop=True), ev(correct=True, nonword_rate=0.9), ev(tail_run=8)]
    for e in decided:
        assert levels.text_decision(e) is not None and levels.text_decision(e) == classify(e, c) == classify(e, blind)
    for e in (ev(), ev(nll=5.5), ev(order_gain=1.5), ev(echo=0.8, own_words=0), ev(correct=False),
              ev(tokens=10, repetition=0.6, ends_in_loop=True), ev(tokens=40, repetition=0.6, ends_in_loop=False),
              ev(tail_run=7)):
        assert levels.text_decision(e) is None
    prompt = "What is 17 + 25? Put the final answer in \\boxed{}."
    texts = ["The sum of the two numbers is forty two, since seventeen plus twenty five makes it.",
             "land wisher land wisher land wisher land wisher land wisher land wisher land wisher",
             "17 + 25 = 42, so \\boxed{42}.", "", "ätz apple_msg()). Sure.setOnClickListener ]]); xkcdqrt ingeingeinge"]
    items = [(prompt, standin.encode(t), t) for t in texts]
    verdicts = [False, False, True, False, False]
    full = levels.measure(standin, items, correct=verdicts)
    counting = CountingScorer(standin)
    quick = levels.measure(counting, items, correct=verdicts, skip_decided=True)
    assert len(counting.scored) == 3 and counting.scored[0][1] == tuple(items[0][1])  # the three passes of the first only
    assert quick[0] == full[0] and quick[0].nll is not None and all(e.nll is None for e in quick[1:])
    assert [classify(e, c) for e in quick] == [classify(e, c) for e in full]
    assert [classify(e, c)[0] for e in quick[1:]] == ["I", "IV", "I", "I"] and quick[2].correct is True
    with pytest.raises(ValueError, match="2 verdicts for 5 items"):
        levels.measure(standin, items, correct=[True, False])


def test_calibration_scores_only_the_passes_it_uses(standin):
    """calibrate asks for the passes it reads (not the shuffled texts' null pass nor the mismatched pairs'
    shuffle) and gets exactly the thresholds of the full three passes."""
    import statistics

    counting = CountingScorer(standin)
    got = levels.calibrate(counting)
    n = len(levels.CALIBRATION)
    assert len(counting.scored) == 3 * n + 2 * n + 2 * n and len(set(counting.scored)) == 3 * n + 2 * n + n
    enc = [(p, standin.encode(a), a) for p, a in levels.CALIBRATION]
    fluent = levels.measure(standin, enc)
    mixed = levels.measure(standin, [(p, levels.shuffled(u, 1), "") for p, u, _ in enc])
    other = levels.measure(standin, [(enc[(i + 1) % n][0], u, a) for i, (_, u, a) in enumerate(enc)])
    med = statistics.median
    assert got == Calibration(med(e.nll for e in fluent), med(e.nll for e in mixed), med(e.order_gain for e in fluent),
                              med(e.order_gain for e in mixed), med(e.relevance for e in fluent),
                              med(e.relevance for e in other))
    (e,) = levels.measure(standin, enc[:1], passes=("prompt", "null"))
    assert e.nll == fluent[0].nll and e.relevance == fluent[0].relevance and e.nll_shuffled is None and e.order_gain is None
    with pytest.raises(ValueError, match="must include 'prompt'"):
        levels.measure(standin, enc[:1], passes=("null",))


def test_hf_scorer_runs_each_context_once_and_recomputes_it_bit_for_bit(tiny_model):
    """The context's KV cache is computed once (alone) and shared by every unit sequence after it; a scorer
    that has to recompute it (a fresh one, or a dropped cache) returns bit-identical nll lists."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sfn_merge_plugin.sweep.scoring import HFScorer

    path = tiny_model("qwen2")
    model, tok = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16), AutoTokenizer.from_pretrained(path)
    calls = []
    hook = model.register_forward_hook(lambda mod, args, kwargs, out: calls.append(1), with_kwargs=True)
    scorer = HFScorer(model, tok, chat=True)
    a, b = scorer.context("Why is the sky blue?"), scorer.context(None)
    units = [scorer.encode(t) for t in ("the quick brown fox", "blue light scatters more", "ok")]
    pairs = [(a, u) for u in units] + [(b, u) for u in units[:2]]
    first = scorer.nll(pairs)
    assert len(calls) == 2 + len(pairs) and list(scorer.contexts) == [a, b]  # 2 contexts + one forward per pair
    scorer.contexts.clear()
    scorer.cache.clear()
    fresh = HFScorer(model, tok, chat=True)
    assert scorer.nll(pairs) == first == fresh.nll(pairs[::-1])[::-1]
    hook.remove()
    with pytest.raises(ValueError, match="empty context"):
        scorer.nll([((), units[0])])


def test_grade_levels_command_writes_levels_and_refuses_bad_lines(tiny_model, tmp_path, capsys):
    from sfn_merge_plugin.cli import main

    path = tiny_model("qwen2")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "What is 2 + 3?", "response": "It is 5, so \\boxed{5}.", "answer": 5, "cell": "x"}) + "\n"
                   + json.dumps({"prompt": "Why?", "response": ""}) + "\n\n")
    out = tmp_path / "out.jsonl"
    assert main(["grade-levels", path, str(src), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["level"] for r in rows] == ["IV", "I"] and rows[0]["cell"] == "x" and rows[0]["answer"] == 5
    assert rows[0]["level_evidence"]["correct"] is True and rows[1]["level_reasons"] == ["empty response"]
    assert "graded 2 responses (I 1, II 0, III 0, IV 1)" in capsys.readouterr().out
    for bad, message in ((json.dumps({"response": "x"}), "line 1: \"prompt\" must be a non-empty string"),
                         ("[1]", "line 1: expected an object"),
                         (json.dumps({"prompt": "p", "response": "r", "level": "II"}), "already has 'level'"),
                         (json.dumps({"prompt": "p", "response": "r", "grader": "exact"}), "\"grader\" 'exact' is not one of"),
                         ("{oops", "line 1: not valid JSON")):
        src.write_text(bad + "\n")
        assert main(["grade-levels", path, str(src), "-o", str(tmp_path / "never.jsonl")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "never.jsonl").exists()


SMOLLM2_LABELLED = os.path.join(os.path.dirname(__file__), "data", "levels_smollm2.jsonl")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SFN_LONG_TESTS") != "1",
                    reason="scores 258 real responses (minutes to tens of minutes on 2 cores): SFN_LONG_TESTS=1")
def test_agrees_with_hand_labels_of_real_smollm2_responses(smollm2):
    """tests/data/levels_smollm2.jsonl: real SmolLM2-135M-Instruct responses from destroyed cells (40 tokens,
    greedy), each labelled by hand (label, reason). Graded as `sfn grade-levels` does, by the undamaged model;
    the thresholds were tuned on the "tuning" rows only, the "held-out" rows check them."""
    from sfn_merge_plugin.sweep.grade_command import grade_rows
    from sfn_merge_plugin.sweep.runner import load

    torch.set_num_threads(2)
    rows = [json.loads(line) for line in open(SMOLLM2_LABELLED, encoding="utf-8")]
    assert len(rows) >= 250 and {r["label"] for r in rows} >= {"I", "II", "III"}
    model, tok = load(smollm2)
    graded, cal = grade_rows(model, tok, rows, chat=True)
    assert cal.reliable, cal.problems()
    agree = collections.defaultdict(list)
    for r in graded:
        for key in (r["split"], r["split"] + ":" + r["label"], "all", r["label"]):
            agree[key].append(r["level"] == r["label"])
    share = {k: sum(v) / len(v) for k, v in agree.items()}
    misses = [(r["label"], r["level"], r["response"][:60]) for r in graded if r["level"] != r["label"]]
    # measured (benchmarks/results/levels_agreement.json): 246/258 (95.3%), held-out 80/84, new 53/54;
    # I 154/160, II 37/42, III 55/56
    assert share["all"] >= 0.95 and share["held-out"] >= 0.95 and share["new"] >= 0.95, (share, misses)
    assert share["I"] >= 0.95 and share["II"] >= 0.85 and share["III"] >= 0.95, (share, misses)


def test_rules_agree_with_hand_labels_on_recorded_smollm2_scores():
    """The rules and text features of this tree, re-applied to SmolLM2's recorded scores of the hand-labelled
    set (benchmarks/levels_agreement.py --from-cache, a fraction of a second): the committed agreement holds,
    and docs/levels.md shows it."""
    import argparse
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "levels_agreement.py")
    spec = importlib.util.spec_from_file_location("levels_agreement", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    committed = json.loads(bench.RESULTS.read_text())
    args = argparse.Namespace(data=str(bench.DATA), cache=str(bench.CACHE), from_cache=True, seed=0)
    res = bench.run(args)
    got = {k: v["agree"] for k, v in res["agreement"].items()}
    assert got == {k: v["agree"] for k, v in committed["agreement"].items()}, "rerun benchmarks/levels_agreement.py --from-cache"
    share = {k: v["share"] for k, v in res["agreement"].items()}
    # measured: 246/258 (95.3%); I 154/160, II 37/42, III 55/56; the "new" rows 53/54 (labelled blind, but seen
    # when the last four rules were written: docs/levels.md)
    assert share["all"] >= 0.95 and share["split:new"] >= 0.95, res["disagreements"]
    assert share["label:I"] >= 0.95 and share["label:II"] >= 0.85 and share["label:III"] >= 0.95, res["disagreements"]
    assert bench.docs_text(bench.DOC.read_text(), committed) == bench.DOC.read_text(), "run levels_agreement.py --write-docs"
