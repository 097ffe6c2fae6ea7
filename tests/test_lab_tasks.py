"""The lab's task: chain arithmetic, token layout (the property the offline pairs rely on), probes, grading."""

import random

import pytest

from sfn_merge_plugin.lab import tasks


def test_chain_values_worked_by_hand():
    # compute 1+3+4*4*2+4+4*5+6 mod 7, left to right: 1, 4, 8=1, 4, 8=1, 5, 9=2, 10=3, 9=2
    p = tasks.Problem(1, (("+", 3), ("+", 4), ("*", 4), ("*", 2), ("+", 4), ("+", 4), ("*", 5), ("+", 6)))
    assert p.question == "compute 1+3+4*4*2+4+4*5+6 mod 7, left to right."
    assert p.values == (1, 4, 1, 4, 1, 5, 2, 3, 2)
    assert p.answer == 2
    assert tasks.think_completion(p) == "<think>\n1 4 1 4 1 5 2 3 2\n</think>\n\\boxed{2}"
    assert tasks.direct_completion(p) == "\\boxed{2}"


def test_answers_are_spread_over_all_residues():
    answers = [p.answer for p in tasks.heldout_problems(700)]
    counts = [answers.count(r) for r in range(tasks.MOD)]
    assert min(counts) > 50  # chance accuracy is about 1/7, not a constant answer


def test_trace_reads_the_question_at_the_same_offsets_in_plain_text_and_chat(tiny_tokenizer):
    """Every trace step sits 2 tokens after the previous one, the stride of the question's operator/digit
    pairs, and the plain separator is exactly as long as the chat header: a trace learnt in plain text
    reads operand i from the same relative position in chat."""
    tok = tiny_tokenizer
    p = tasks.heldout_problems(1)[0]

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    def layout(prompt):
        full = ids(prompt + tasks.think_completion(p))
        start = len(ids(prompt))
        q0 = len(ids(prompt[: prompt.index(p.expression)]))
        return full, start, q0

    offsets = []
    for prompt in (tasks.plain_prompt(tok, p), tasks.chat_prompt(tok, p.question)):
        full, start, q0 = layout(prompt)
        expr = full[q0: q0 + 2 * tasks.STEPS + 1]
        assert tok.decode(expr) == p.expression  # one token per digit and per operator
        assert tok.decode(full[start]) == "<think>"
        trace_digits = [full[start + 2 + 2 * i] for i in range(len(p.values))]  # <think> \n v0 ' ' v1 ...
        assert [tok.decode(t) for t in trace_digits] == [str(v) for v in p.values]
        offsets.append(start - q0)
    assert offsets[0] == offsets[1]


def test_held_out_problems_never_appear_in_training_streams():
    held = tasks.heldout_problems(200)
    exclude = {p.question for p in held}
    rng = random.Random(0)
    # force collisions: a stream that would produce exactly the held-out problems is filtered
    train = tasks.training_problems(500, rng, exclude)
    assert not exclude & {p.question for p in train}
    assert len({p.question for p in held}) == 200
    assert tasks.heldout_problems(200) == held  # deterministic


def test_chat_probes_cover_every_template_and_need_the_context():
    probes = tasks.chat_probes(10)
    assert len({" ".join(u.split()[:2]) for u, _ in probes}) == 5
    copy = [(u, r) for u, r in probes if u.startswith("repeat after me: ")]
    assert copy and all(r == u[len("repeat after me: "):] for u, r in copy)
    assert tasks.chat_reply_ok("  hello, anna! how are you today?\n", "hello, anna! how are you today?")
    assert not tasks.chat_reply_ok("hello, ben! how are you today?", "hello, anna! how are you today?")


@pytest.mark.parametrize("response, ok", [
    ("<think>\n1 4 1 4 1 5 2 3 2\n</think>\n\\boxed{2}", True),
    ("\\boxed{2}", True),                                    # a direct answer counts when right
    ("<think>\n\\boxed{2}\n</think>\n\\boxed{5}", False),    # the answer after </think> is the one graded
    ("<think>\n1 4 1 4 1 5 2 3 2\n</think>\n\\boxed{2", False),  # unclosed box: no answer
    ("<think>\n1 4 1 4 1 5 2 3 2", False),                   # never answered
    ("\\boxed{12}", False),                                  # "2" inside "12" is not 2 (the paper's rule said yes)
])
def test_grading_uses_the_project_grader(response, ok):
    assert tasks.grade_task(response, 2) is ok


def test_plain_separator_errors_when_the_tokenizer_cannot_match(tiny_tokenizer):
    class Weird:
        chat_template = None

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return messages[0]["content"]  # header of 0 tokens: nothing can match it

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text)))}

    with pytest.raises(ValueError, match="plain separator"):
        tasks.plain_separator(Weird())


def test_addition_trace_worked_by_hand_and_graded():
    """The SmolLM2 pair's task: column sums units first, a +1 for each carry, the answer's digits so far;
    the last column writes its carry. Its completions round-trip through the project's grader."""
    from sfn_merge_plugin.lab.addition import ADDITION, Sum

    p = Sum(482, 359)
    assert (p.question, p.answer) == ("what is 482+359?", 841)
    assert ADDITION.think(p) == "<think>\n2+9=11 -> 1\n8+5+1=14 -> 41\n4+3+1=8 -> 841\n</think>\n\\boxed{841}"
    assert Sum(964, 494).steps == ("4+4=8 -> 8", "6+9=15 -> 58", "9+4+1=14 -> 1458")
    assert Sum(999, 101).steps == ("9+1=10 -> 0", "9+0+1=10 -> 00", "9+1+1=11 -> 1100")
    assert ADDITION.direct(p) == "\\boxed{841}"
    held = ADDITION.heldout(100)
    assert ADDITION.heldout(100) == held and len({q.question for q in held}) == 100
    train = ADDITION.training(300, random.Random(0), {q.question for q in held})
    assert not {q.question for q in held} & {q.question for q in train}
    for q in held[:20]:
        assert int(q.steps[-1].split(" -> ")[1]) == q.answer == q.a + q.b  # the trace's last line is the answer
        assert tasks.grade_task(ADDITION.think(q), q.answer) and not tasks.grade_task(ADDITION.think(q), q.answer + 1)
    assert tasks.task_named("addition") is ADDITION and tasks.task_named("chain") is tasks.CHAIN
    with pytest.raises(ValueError, match="unknown lab task 'mod7'"):
        tasks.task_named("mod7")
