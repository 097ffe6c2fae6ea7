"""The grader's rules added for issue 14, each on cases that would fail without it: several boxes forming one
answer (and the revisions that must not), "Final Answer" lines that beat an earlier box, math-verify's
options, number spellings (thousands, decimal comma, indexed roots), the empty gold."""

import pytest

from sfn_merge_plugin.grading import (
    GradingError,
    MathOptions,
    extract_answer,
    final_answer_line,
    final_box_group,
    grade,
)

PAIRS = [  # (response, gold, expected)
    # several boxes joined only by punctuation / "and" / spacing / labels are ONE answer
    (r"so \boxed{1}, \boxed{2}, \boxed{3}", r"\{1,2,3\}", True),
    (r"\boxed{1} and \boxed{2}", r"1, 2", True),
    (r"\boxed{2} or \boxed{-3}", r"-3, 2", True),
    (r"$$\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}$$", r"(2, 2), (6, 2)", True),
    (r"\boxed{k = 45} \quad \text{and} \quad \boxed{n = 2}", r"k = 45, n = 2", True),
    (r"\(x = \boxed{1}\) or \(x = \boxed{4}\)", r"1, 4", True),
    (r"\boxed{(3, 3)} for part (a) and \boxed{(1, 1)} for part (b)", r"(3, 3), (1, 1)", True),
    (r"(a) \boxed{4} (b) \boxed{9}", r"4, 9", True),
    (r"\boxed{1} and \boxed{2}", r"2", False),  # a two-answer response does not answer a one-answer gold
    (r"\boxed{5}\n\boxed{5}", r"5", True),  # a repeated box is one answer
    # ... any other word or a sentence end between boxes: the later box is a revision
    (r"\boxed{3}. Wait, \boxed{5}", r"5", True),
    (r"\boxed{3}. Wait, \boxed{5}", r"3, 5", False),
    (r"\boxed{3} wait no \boxed{5}", r"5", True),
    (r"\boxed{3} but then \boxed{5}", r"3, 5", False),
    (r"\boxed{1}. \boxed{2}", r"2", True),
    # "Final Answer" lines: trailing prose and chat tokens cut, "<subject> is <answer>" read, later beats a box
    (r"Final Answer: The largest $n$ is 34.", r"34", True),
    (r"Final Answer: The largest $n$ is 34.", r"n", False),
    ("Final Answer: The final answer is 12,000,023. I hope it is correct. <|im_start|>user\nNext", r"12000023", True),
    (r"Final Answer: Jane started it 3 hours ago.", r"3", True),
    (r"so \boxed{255} and then 10,200 + 255. Final Answer: The final answer is $10,455$.", r"10455", True),
    (r"so \boxed{255} and then 10,200 + 255. Final Answer: The final answer is $10,455$.", r"255", False),
    ("**Final Answer**\n\\boxed{7}", r"7", True),  # a heading followed by the box: the box
    (r"Final Answer: 3. \boxed{4}", r"4", True),  # the box comes later
    (r"\boxed{4} is my final answer.\nThanks for asking!", r"4", True),  # prose, not a label
    (r"\boxed{12}. I checked that the final answer is correct.", r"12", True),  # no digit, no math: not an answer
    (r"Final Answer: Evelyn", r"\text{Evelyn}", True),  # ... but with no box it is the answer
    (r'Final Answer: The final answer is "$12$ and $13$". I hope it is correct.', r"12, 13", True),
    # number spellings
    (r"\boxed{1000,99}", r"1000.99", True),  # decimal comma, number against number
    (r"\boxed{1,5}", r"1.5", True),
    (r"\boxed{1,5}", r"1, 5", True),  # ... but a list against a list stays a list
    (r"\boxed{1,5}", r"15", False),
    (r"\boxed{12,000,023}", r"12000023", True),
    (r"\boxed{14 {, }916}", r"14916", True),
    (r"\boxed{1,000}", r"1.000", False),  # a thousands separator is never a decimal comma
    (r"\boxed{\sqrt[3]2}", r"\sqrt[3]{2}", True),
    (r"\boxed{\sqrt[3]{8}}", r"2", True),
    (r"\boxed{\sqrt[3]27}", r"3", False),  # \sqrt[3]27 is \sqrt[3]{2}7, as LaTeX reads it
    # answers with prose and math delimiters are read by math-verify as written
    (r"\boxed{Answer $ 9 $}", r"9", True),
    (r"\boxed{The solution is $x = 5$}", r"5", True),
    (r"\boxed{\$32}", r"32", True),  # \$ is a dollar sign, not math
]


@pytest.mark.parametrize("response,gold,expected", PAIRS)
def test_rule_pairs(response, gold, expected):
    assert grade(response.replace(r"\n", "\n"), gold, "math") is expected


def test_box_group_and_final_line_extraction():
    assert final_box_group(r"\boxed{1}, \boxed{} \boxed{2}") == (0, ["1", "2"])
    assert final_box_group(r"\boxed{1}. Wait \boxed{2}")[1] == ["2"]
    assert final_box_group("no box") is None
    assert extract_answer(r"\boxed{(1, 2)}, \boxed{(2, 1)}") == "(1, 2), (2, 1)"
    assert final_answer_line("Final Answer: The volume of $ABCDEFGH$ is 120. I hope it is correct.") == "120"
    assert final_answer_line("Final Answer: $\\frac{3}{4}$<|im_end|>") == r"\frac{3}{4}"
    assert final_answer_line("That is my final answer.") is None


def test_math_verify_options_change_the_verdict():
    assert MathOptions() == MathOptions(float_rounding=6, strict=True, allow_set_relation_comp=False)
    # float rounding: a 4-place decimal is not the exact fraction unless asked
    assert not grade(r"\boxed{0.3333}", r"\frac13")
    assert grade(r"\boxed{0.3333}", r"\frac13", float_rounding=4)
    assert grade(r"\boxed{0.333333}", r"\frac13")
    # strict: variables matter by default
    assert not grade(r"\boxed{f(y)}", r"f(x)")
    assert grade(r"\boxed{f(y)}", r"f(x)", strict=False)
    # set / relation: an inequality does not answer an interval gold unless allowed
    assert not grade(r"\boxed{-2 \le x \le 7}", r"x \in [-2,7]")
    assert grade(r"\boxed{-2 \le x \le 7}", r"x \in [-2,7]", allow_set_relation_comp=True)
    assert grade(r"\boxed{x \in [-2,7]}", r"-2 \le x \le 7")  # an interval for an inequality gold: always
    assert grade(r"\boxed{0.6667}", r"\frac23", float_rounding=4) and not grade(r"\boxed{0.6667}", r"\frac23")


def test_bad_options_and_empty_gold_raise():
    with pytest.raises(GradingError, match="float_rounding"):
        grade(r"\boxed{1}", "1", float_rounding=-1)
    with pytest.raises(GradingError, match="float_rounding"):
        grade(r"\boxed{1}", "1", float_rounding=2.5)
    with pytest.raises(GradingError, match="strict must be True or False"):
        grade(r"\boxed{1}", "1", strict="no")
    # an empty gold is a broken dataset, not a wrong answer: refused, for every kind, whatever the response
    for kind in ("math", "aime", "gpqa"):
        for gold in ("", "   ", None):
            with pytest.raises(GradingError, match="empty gold answer"):
                grade(r"\boxed{}", gold, kind)
    with pytest.raises(GradingError, match="AIME gold must be an integer"):
        grade("no answer at all", "1/2", "aime")  # checked before the response is read


def test_gpqa_two_boxed_letters_are_no_letter():
    assert not grade(r"\boxed{A} or \boxed{C}", "C", "gpqa")
    assert grade(r"\boxed{A}. Wait, \boxed{C}", "C", "gpqa")
    assert grade("\\boxed{C}\n\\boxed{C}", "C", "gpqa")
