"""The public grader on tricky answer pairs: fractions, units, text, intervals, sets, several boxes, nested
braces, truncated traces, AIME integers, GPQA letters; plus the paper's lenient rule it replaces."""

import pytest

from sfn_merge_plugin.grading import (
    GradingError,
    boxed_contents,
    extract_answer,
    final_answer_line,
    grade,
    last_boxed,
    paper_lenient,
    split_thinking,
)

MATH_PAIRS = [  # (response, gold, expected)
    (r"so \boxed{\frac{1}{2}}", r"\frac12", True),
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", True),
    (r"\boxed{0.5}", r"\frac{1}{2}", True),
    (r"\boxed{\tfrac{3}{4}}", r"0.75", True),
    (r"\boxed{\frac{1}{2}}", r"\frac13", False),
    (r"\boxed{\frac{\sqrt{2}}{2}}", r"\frac{1}{\sqrt{2}}", True),
    (r"\boxed{\sqrt{2}}", r"1.414", False),
    (r"\boxed{5\text{ cm}}", r"5", True),
    (r"\boxed{10\%}", r"10", True),
    (r"\boxed{90^\circ}", r"90", True),
    (r"\boxed{\$32}", r"32", True),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True),
    (r"\boxed{\text{east}}", r"\text{west}", False),
    (r"\boxed{\text{(C)}}", r"\text{(C)}", True),
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]", True),
    (r"\boxed{(-\infty, 3)}", r"(-\infty,3]", False),
    (r"\boxed{[2,5)}", r"[2,5]", False),
    (r"\boxed{x \in [2, 5)}", r"[2,5)", True),
    (r"\boxed{\{1,2,3\}}", r"\{3,2,1\}", True),
    (r"\boxed{(1,2)}", r"(2,1)", False),
    (r"\boxed{1, -2}", r"-2, 1", True),
    (r"\boxed{2, 3}", r"3, 2, 1", False),
    (r"\boxed{x = 5}", r"5", True),
    (r"\boxed{2040}", r"204", False),
    (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", True),
    (r"\boxed{3\sqrt 3}", r"3\sqrt{3}", True),
    (r"\boxed{\pi/2}", r"\frac{\pi}{2}", True),
    (r"\boxed{\frac{9}{2}\pi}", r"\frac{9\pi}{2}", True),
    (r"\boxed{y^2+2y+1}", r"(y+1)^2", True),
    (r"\boxed{6-5i}", r"6 - 5i", True),
    (r"\boxed{1{,}000}", r"1000", True),
    (r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", True),
    (r"\boxed{\frac{a+b}{\sqrt{c}}}", r"\frac{a+b}{\sqrt{c}}", True),  # nested braces
    (r"\boxed 7", r"7", True),
    (r"\fbox{9}", r"9", True),
    (r"\boxed{2}", r"3", False),
    # several boxes (common after "Wait"): the LAST one is the answer
    (r"first \boxed{3}. Wait, \boxed{5}", r"5", True),
    (r"first \boxed{5}. Wait, \boxed{3}", r"5", False),
    (r"\boxed{\dfrac{1}{2}} and then \boxed{\left\{ 1, 2 \right\}}", r"\{1,2\}", True),
    # the answer part (after the end-of-thinking marker) is graded, not the thinking
    (r"<think>the answer is \boxed{7}</think> so \boxed{8}", r"8", True),
    (r"<think>the answer is \boxed{8}</think> so \boxed{7}", r"8", False),
    ("<|im_start|>think\nhmm\n<|im_start|>answer\nAnswer: \\boxed{12}", r"12", True),
    # truncated traces: no last-number fallback, an unclosed box is not an answer
    (r"<think>I think the answer is 42 but let me", r"42", False),
    (r"the answer is \boxed{4", r"4", False),
    (r"the answer is \boxed{4}. Wait, maybe \boxed{5", r"4", True),
    ("", r"5", False),
    # "Final Answer:" lines
    (r"Final Answer: The final answer is $12$. I hope it is correct.", r"12", True),
    ("**Final Answer**\n\n\\boxed{\\frac{3}{5}}", r"\frac35", True),
    ("Final Answer:\n 17", r"17", True),
    ("Final Answer: 18", r"17", False),
    # an empty box (an echo of the prompt's "within \boxed{}") is skipped, never the answer
    (r"\boxed{3} Wait no \boxed{}", r"3", True),
    (r"\boxed{}", r"3", False),
    ("The answer goes in \\boxed{}.", r"0", False),
    # review additions: a Unicode minus, a brace-less box inside math, adjacent boxes read as one list
    (r"\boxed{−3}", r"-3", True),
    (r"$\boxed 5$", r"5", True),
    (r"\boxed{\pm 2}", r"\pm 2", True),
    (r"\boxed{5}\boxed{6}", r"6", False),
    (r"\boxed{5}\boxed{6}", r"5, 6", True),
]

AIME_PAIRS = [
    (r"\boxed{033}", "33", True),
    (r"\boxed{204}", "204", True),
    (r"\boxed{2040}", "204", False),
    (r"\boxed{\text{204}}", 204, True),
    (r"\boxed{-3}", "3", False),
    (r"Final Answer: 73", "073", True),
    (r"\boxed{\frac{146}{2}}", "73", True),
    (r"the answer must be 73", "73", False),
]

GPQA_PAIRS = [
    (r"\boxed{C}", "C", True),
    (r"\boxed{c}", "C", True),
    (r"\boxed{\text{(B)}}", "B", True),
    (r"\boxed{D) 3.2 eV}", "D", True),
    (r"\boxed{Carbon}", "C", False),
    ("Answer: A", "A", True),
    ("ANSWER: $\\boxed{A}$", "a", True),
    ("The correct answer is (B).", "B", True),
    ("Final Answer: **C**", "C", True),
    ("The answer is B. Wait no, the answer is D", "D", True),
    ("The answer is D. Option A is wrong because it ignores spin.", "D", True),
    ("The correct option is C.", "C", True),
    ("Option A looks plausible.", "A", False),
    ("<think>answer is A</think>The answer is B", "B", True),
    ("<think>answer is A</think>The answer is B", "A", False),
    ("I cannot decide.", "A", False),  # unparseable is wrong, never a default "A"
    ("Answer: Apple juice", "A", False),
    ("answer: a", "A", False),
    # the box and the "Answer: X" line disagree: whichever comes LAST wins (the prompt asks for the line last)
    ("\\boxed{B}\nOn reflection, no.\nAnswer: C", "C", True),
    ("\\boxed{B}\nOn reflection, no.\nAnswer: C", "B", False),
    ("Answer: C\nActually it is \\boxed{B}", "B", True),
    ("\\boxed{B} then \\boxed{}\nAnswer: D", "D", True),
    # LaTeX text commands around the letter are unwrapped
    ("The answer is: $\\mathrm{(D)}$", "D", True),
    ("The answer is \\textbf{C}.", "C", True),
    ("**Answer:** $\\text{B}$", "B", True),
    ("Answer: \\(\\mathrm{A}\\)", "A", True),
    ("The answer is $\\mathrm{Apple}$", "A", False),
    # "the correct option is X" is only a fallback: a box wins even if the phrase comes later
    ("\\boxed{B}. If the correct option is C, the energy would be negative.", "B", True),
    # review additions: a letter with its option text inside \text, \mathrm in a box, two letters are no answer
    (r"\boxed{\text{(A) } 5\text{ eV}}", "A", True),
    (r"\boxed{\mathrm{D}}", "D", True),
    (r"\boxed{A} or \boxed{B}", "A", False),
    (r"\boxed{E}", "A", False),
]


@pytest.mark.parametrize("response,gold,expected", MATH_PAIRS)
def test_math_pairs(response, gold, expected):
    assert grade(response, gold, "math") is expected


@pytest.mark.parametrize("response,gold,expected", AIME_PAIRS)
def test_aime_pairs(response, gold, expected):
    assert grade(response, gold, "aime") is expected


@pytest.mark.parametrize("response,gold,expected", GPQA_PAIRS)
def test_gpqa_pairs(response, gold, expected):
    assert grade(response, gold, "gpqa") is expected


def test_pair_table_is_large_and_balanced():
    pairs = MATH_PAIRS + AIME_PAIRS + GPQA_PAIRS
    assert len(pairs) >= 40
    assert sum(e for *_, e in pairs) >= 20 and sum(not e for *_, e in pairs) >= 20


def test_nested_boxes_and_escaped_braces():
    text = r"\boxed{\frac{1}{\sqrt{2}}} then \boxed{\{1, \{2\}\}} and \boxed{4"
    assert boxed_contents(text) == [r"\frac{1}{\sqrt{2}}", r"\{1, \{2\}\}"]
    assert last_boxed(text) == r"\{1, \{2\}\}"
    assert last_boxed("no box here") is None


def test_empty_boxes_are_listed_but_never_the_last_box():
    assert boxed_contents(r"\boxed{7} \boxed{} \boxed{ }") == ["7", "", ""]
    assert last_boxed(r"\boxed{7} \boxed{} \boxed{ }") == "7"
    assert last_boxed(r"\boxed{}") is None
    assert extract_answer(r"\boxed{}", "math") is None and extract_answer(r"\boxed{}", "gpqa") is None
    # with no non-empty box, the "Final Answer:" line is used
    assert extract_answer("I put it in \\boxed{}.\nFinal Answer: 12", "math") == "12"


def test_split_thinking_uses_the_last_marker():
    assert split_thinking("a</think>b</think>c") == ("a</think>b", "c")
    assert split_thinking("x<|im_start|>answer\ny") == ("x", "\ny")
    assert split_thinking("plain") == ("", "plain")


def test_final_answer_line_cleans_the_value():
    assert final_answer_line("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.") == r"\frac{1}{2}"
    assert final_answer_line("**Final Answer:** 42.") == "42"
    assert final_answer_line("nothing") is None


def test_extract_answer_per_kind():
    assert extract_answer(r"<think>\boxed{1}</think>\boxed{2}", "math") == "2"
    assert extract_answer("The answer is (C)", "gpqa") == "C"
    assert extract_answer("no idea", "gpqa") is None


def test_bad_calls_raise_clear_errors():
    with pytest.raises(GradingError, match="unknown grading kind"):
        grade(r"\boxed{1}", "1", "maths")
    with pytest.raises(GradingError, match="option letter"):
        grade("Answer: A", "42", "gpqa")
    with pytest.raises(GradingError, match="integer"):
        grade(r"\boxed{1}", r"\frac12", "aime")
    with pytest.raises(GradingError, match="empty gold"):
        grade(r"\boxed{1}", "", "math")


def test_paper_lenient_inflates_where_grade_does_not():
    # gold is a substring of a box: the paper counted it, we do not
    assert paper_lenient(r"\boxed{2040}", "204") and not grade(r"\boxed{2040}", "204", "aime")
    # a box in the PROMPT counted too (the paper decoded prompt + response)
    prompt = r"Example: \boxed{17}. Now solve:"
    assert paper_lenient("I don't know", "17", prompt=prompt) and not grade("I don't know", "17", "math")
    # any box, not the last
    assert paper_lenient(r"\boxed{5} wait \boxed{3}", "5") and not grade(r"\boxed{5} wait \boxed{3}", "5", "math")
    # non-greedy and no nesting: a nested fraction is cut at the first "}"
    assert not paper_lenient(r"\boxed{\frac{1}{2}}", r"\frac{1}{2}")
    assert not paper_lenient("no boxes", "5")
