"""`sfn data decontaminate`: exact and n-gram matches against SfN's benchmarks (through SFN_DATA_DIR), a report
that names item ids only, and one clear line for every bad input with nothing written.

Every benchmark row here is MADE UP (ids start with "madeup"): no AIME, MATH or GPQA example may appear here."""

import json
import os

import pytest

from sfn_merge_plugin.cli import main as sfn
from sfn_merge_plugin.data.normalize import normalize_text, words

AIME = [{"ID": "madeup-aime-1", "Problem": "Made-up: Let $N$ be the number of ordered pairs of positive integers "
         "$(a,b)$ with $a^2+b^2=2025$. Find $N$ modulo $1000$.", "Solution": "made up", "Answer": 7}]
MATH = [{"problem": "Made-up: What is $\\dfrac{1}{2}$ of $\\pi r^2$ when $r = 3$?", "answer": "x",
         "unique_id": "madeup/geometry/1.json"},
        {"problem": "Compute $\\dbinom{8}{4}$.", "answer": "70", "unique_id": "madeup/counting/2.json"},
        {"problem": "Made-up: a fair coin is tossed seven times in a row by Kim; what is the chance of "
                    "exactly three heads?", "answer": "x", "unique_id": "madeup/probability/3.json"}]
GPQA_SECRET = "zorblax molecule absorbs violet light near four hundred nanometres"
GPQA = [{"Question": f"Made-up: a {GPQA_SECRET} in methanol; which colour does it look?", "Correct Answer": "a",
         "Incorrect Answer 1": "b", "Incorrect Answer 2": "c", "Incorrect Answer 3": "d", "Record ID": "madeup-rec1"}]

TRAIN = [
    # 1: the AIME item again, in Unicode, other case and spacing, a thousands separator: an exact copy
    {"question": "MADE-UP: let N be the number of ordered pairs of positive integers (a, b) with a² + b² = 2,025. "
                 "Find N modulo 1000.", "id": "t1"},
    # 2: a reworded GPQA question that still shares 8-grams (11 words "a zorblax ... in"): removed
    {"question": f"Explain why a {GPQA_SECRET.split(' near')[0]} near four hundred nanometres in water.", "id": "t2"},
    # 3: the first MATH item in Unicode instead of LaTeX: the same normalised words
    {"question": "Made-up: What is ½ of π r² when r = 3?", "id": "t3"},
    # 4: a near miss: 7 consecutive words of the coin item, then something else: kept
    {"question": "My fair coin is tossed seven times in total; compute the expected number of runs.", "id": "t4"},
    # 5: the short MATH item (under 8 words) with \binom instead of \dbinom: exact after normalisation
    {"question": "compute \\binom{8}{4}", "id": "t5"},
    # 6: the short item inside a longer problem: short items match by exact text only, so kept
    {"question": "First compute $\\binom{8}{4}$, then add the number of sides of a hexagon.", "id": "t6"},
    # 7: unrelated
    {"question": "How many primes are below twenty?", "id": "t7"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def evals(tmp_path, monkeypatch):
    """A made-up SFN_DATA_DIR with the three benchmarks, in the hub schema."""
    for name in ("SFN_AIME24_PATH", "SFN_MATH500_PATH", "SFN_GPQA_DIAMOND_PATH"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "evals"
    folder.mkdir()
    write_jsonl(folder / "aime24.jsonl", AIME)
    write_jsonl(folder / "math500.jsonl", MATH)
    write_jsonl(folder / "gpqa_diamond.jsonl", GPQA)
    monkeypatch.setenv("SFN_DATA_DIR", str(folder))
    return folder


def kept_ids(path):
    return [json.loads(line)["id"] for line in open(path, encoding="utf-8")]


def test_normalisation_unicode_and_latex():
    assert normalize_text("$\\dfrac{1}{2}$ of $\\pi r^2$") == normalize_text("½ of π r²") == "frac 1 2 of pi r 2"
    assert normalize_text("\\frac12") == normalize_text("1/2") == normalize_text("\\tfrac{1}{2}")
    assert normalize_text("Erdős’ CAFÉ, x ≤ 3") == normalize_text("erdos cafe x \\le 3") == "erdos cafe x leq 3"
    assert normalize_text("ＡＢＣ１２３ costs 1,000 $") == "abc 123 costs 1000"  # full-width forms, separators
    assert normalize_text("\\left( 2x \\right)\\text{ cm}") == "2 x cm"  # formatting dropped, digits split
    assert normalize_text("{1,2,3}") == "1 2 3"  # a list is not a thousands separator
    assert words("") == [] and words("$$ \\, \\quad $$") == []


def test_decontaminate_removes_copies_keeps_near_misses_and_reports_ids_only(tmp_path, evals, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    out = tmp_path / "data" / "clean.jsonl"
    assert sfn(["data", "decontaminate", str(train), "-o", str(out)]) == 0
    assert kept_ids(out) == ["t4", "t6", "t7"]
    lines = train.read_text(encoding="utf-8").splitlines(keepends=True)
    assert out.read_text(encoding="utf-8") == "".join(lines[i] for i in (3, 5, 6))  # kept lines copied as they are
    report = json.loads((tmp_path / "data" / "clean.decontam.json").read_text())
    assert report["written_by"] == "sfn data decontaminate" and report["output"] == "clean.jsonl"
    assert (report["rows_in"], report["rows_kept"], report["rows_removed"]) == (7, 3, 4)
    assert report["ngram"] == 8 and report["threshold"] is None
    removed = {r["row"]: r["matches"] for r in report["removed"]}  # line numbers of train.jsonl
    assert sorted(removed) == [1, 2, 3, 5]
    assert [(m["benchmark"], m["item"], m["reason"]) for m in removed[1]] == [("aime24", "madeup-aime-1", "exact")]
    (gpqa,) = removed[2]
    assert (gpqa["benchmark"], gpqa["item"], gpqa["reason"]) == ("gpqa_diamond", "madeup-rec1", "ngram")
    assert (gpqa["shared_ngrams"], gpqa["item_ngrams"]) == (4, 12)  # 11 shared words; the item has 19
    assert removed[3][0]["item"] == "madeup/geometry/1.json" and removed[3][0]["reason"] == "exact"
    assert removed[5][0]["item"] == "madeup/counting/2.json" and removed[5][0]["reason"] == "exact"
    per = report["benchmarks"]
    assert {k: (v["rows_removed"], v["exact"], v["ngram"]) for k, v in per.items()} == {
        "aime24": (1, 1, 0), "math500": (2, 2, 0), "gpqa_diamond": (1, 0, 1)}
    assert per["math500"]["items"] == 3 and per["math500"]["items_under_n_words"] == 1
    assert per["gpqa_diamond"]["source"] == str(evals / "gpqa_diamond.jsonl")
    console = capsys.readouterr()
    table = console.out.splitlines()
    assert table[0].split() == ["benchmark", "items", "rows", "removed", "exact", "n-gram"]
    assert table[2].split() == ["aime24", "1", "1", "1", "0"] and table[4].split() == ["gpqa_diamond", "1", "1", "0", "1"]
    assert "kept 3 of 7 rows" in console.out
    # no text of the GPQA item (nor of the training row that copies it) anywhere: report, stdout, stderr
    for text in (json.dumps(report), console.out, console.err):
        assert "zorblax" not in text and "nanometres" not in text


def test_threshold_keeps_rows_that_share_only_a_phrase(tmp_path, evals, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    out = tmp_path / "clean.jsonl"
    assert sfn(["data", "decontaminate", str(train), "-o", str(out), "--threshold", "0.5"]) == 0
    assert kept_ids(out) == ["t2", "t4", "t6", "t7"]  # the reworded GPQA copy holds 4 of its 12 8-grams only
    assert sfn(["data", "decontaminate", str(train), "-o", str(out), "--force", "--ngram", "6"]) == 0
    assert "t4" not in kept_ids(out)  # 7 shared words hold two 6-grams: the near miss is a hit at n=6
    report = json.loads((tmp_path / "clean.decontam.json").read_text())
    assert report["ngram"] == 6 and "6-grams" in report["rule"]


def test_against_a_jsonl_file_and_prompt_completion_rows(tmp_path, monkeypatch):
    monkeypatch.delenv("SFN_DATA_DIR", raising=False)
    mine = write_jsonl(tmp_path / "my_test.jsonl", [{"question": "Made-up: how many legs do three spiders have?",
                                                     "id": "mine-1"}])
    rows = [{"prompt": [{"role": "system", "content": "be brief"},
                        {"role": "user", "content": "made-up: How many legs do three spiders have"}],
             "completion": [{"role": "assistant", "content": "24"}]},
            {"prompt": [{"role": "user", "content": "How many legs do two spiders have?"}],
             "completion": [{"role": "assistant", "content": "16"}]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "clean.jsonl"
    assert sfn(["data", "decontaminate", str(train), "--against", str(mine), "-o", str(out)]) == 0
    assert [json.loads(line) for line in open(out)] == rows[1:]
    report = json.loads((tmp_path / "clean.decontam.json").read_text())
    assert report["removed"][0]["matches"][0]["benchmark"] == "my_test"
    assert report["removed"][0]["matches"][0]["item"] == "mine-1"


def test_parquet_and_csv_inputs_stream_like_jsonl(tmp_path, evals):
    from datasets import Dataset

    Dataset.from_list(TRAIN).to_parquet(str(tmp_path / "train.parquet"))
    import csv

    with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "question"])
        writer.writeheader()
        writer.writerows(TRAIN)
    for name in ("train.parquet", "train.csv"):
        out = tmp_path / f"{name}.clean.jsonl"
        assert sfn(["data", "decontaminate", str(tmp_path / name), "-o", str(out)]) == 0
        assert kept_ids(out) == ["t4", "t6", "t7"]
        report = json.loads((tmp_path / f"{name}.clean.decontam.json").read_text())
        assert [r["row"] for r in report["removed"]] == [1, 2, 3, 5]  # 1 = the first data row


def _nothing_written(folder, before):
    assert sorted(os.listdir(folder)) == before, "a failed run must leave the folder as it was"


@pytest.mark.parametrize("content,extra,needle", [
    ("", [], r"the file is empty"),
    ("\n\n", [], r"no rows"),
    ('{"question": "q"}\n{"question": \n', [], r"line 2 is not valid JSON"),
    ('{"text": "q", "answer": "a"}\n', [], r"line 1: no question column .*it has: text, answer\. Name it with --question-column"),
    ('{"q": "a"}\n', ["--question-column", "problem"], r"line 1: missing column problem; it has: q"),
    ('{"question": 3}\n', [], r"line 1: column 'question' is int"),
    ('{"question": "q"}\n', ["--ngram", "0"], r"--ngram 0: give a whole number of words >= 1"),
    ('{"question": "q"}\n', ["--threshold", "0"], r"--threshold 0.0: give a share of the item's n-grams in \(0, 1\]"),
    ('{"question": "q"}\n', ["--threshold", "1.5"], r"--threshold 1.5"),
    ('{"question": "q"}\n', ["--threshold", "nan"], r"--threshold nan"),
    ('{"question": "q"}\n', ["--against", "sfn_aime25"], r"sfn_aime25: unknown benchmark; known: sfn_aime24, sfn_math500"),
    ('{"question": "q"}\n', ["--against", "sfn_aime24,aime24"], r"names aime24 more than once"),
    ('{"question": "q"}\n', ["--against", "my/test.json"], r"my/test.json: give a .jsonl file"),
    ('{"question": "q"}\n', ["--against", "nope.jsonl"], r"--against nope.jsonl: no such file"),
    # a JSON escape of a lone surrogate decodes, but cannot be written back as UTF-8 (was a traceback)
    ('[{"question": "\\ud800 q"}]', ["--input-suffix", ".json"], r"train.json: row 1: holds '\\ud800', a lone UTF-16 surrogate"),
])
def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, evals, capsys, content, extra, needle):
    import re

    suffix = ".jsonl"
    if extra[:1] == ["--input-suffix"]:
        suffix, extra = extra[1], extra[2:]
    train = tmp_path / f"train{suffix}"
    train.write_text(content)
    before = sorted(os.listdir(tmp_path))
    assert sfn(["data", "decontaminate", str(train), "-o", str(tmp_path / "clean.jsonl"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sfn data: error: ") and re.search(needle, err), err
    _nothing_written(tmp_path, before)


def test_bad_files_and_outputs(tmp_path, evals, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    cases = [
        ([str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "c.jsonl")], "nope.jsonl: no such file"),
        ([str(tmp_path), "-o", str(tmp_path / "c.jsonl")], "not a file"),
        ([str(tmp_path / "evals" / ".." / "train.txt"), "-o", str(tmp_path / "c.jsonl")], "no such file"),
        ([str(train), "-o", str(train)], "is also the input"),
        ([str(train), "-o", str(tmp_path / "c.txt")], "ending in .jsonl"),
        ([str(train), "-o", str(tmp_path / "evals" / "aime24.jsonl")], "exists and was not written by SfN"),
        ([str(train), "-o", str(train / "x.jsonl")], "is a file"),
    ]
    (tmp_path / "bad.jsonl").write_bytes(b'{"question": "caf\xe9"}\n')
    cases.append(([str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "c.jsonl")], "line 1 is not UTF-8 text"))
    (tmp_path / "t.csv").write_text("id,question\n1,only one field,extra\n")
    cases.append(([str(tmp_path / "t.csv"), "-o", str(tmp_path / "c.jsonl")], "t.csv: row 1 has 3 fields, the header 2"))
    (tmp_path / "t.parquet").write_text("not parquet")
    cases.append(([str(tmp_path / "t.parquet"), "-o", str(tmp_path / "c.jsonl")], "not a readable parquet file"))
    before = sorted(os.listdir(tmp_path))
    aime_before = (tmp_path / "evals" / "aime24.jsonl").read_text()
    for argv, needle in cases:
        assert sfn(["data", "decontaminate", *argv]) == 2, argv
        assert needle in capsys.readouterr().err, needle
    _nothing_written(tmp_path, before)
    assert (tmp_path / "evals" / "aime24.jsonl").read_text() == aime_before
    # an output SfN wrote is replaced with --force only
    assert sfn(["data", "decontaminate", str(train), "-o", str(tmp_path / "c.jsonl")]) == 0
    assert sfn(["data", "decontaminate", str(train), "-o", str(tmp_path / "c.jsonl")]) == 2
    assert "c.jsonl exists; pass --force to overwrite it" in capsys.readouterr().err


def test_a_missing_benchmark_file_says_how_to_go_offline(tmp_path, evals, capsys):
    (evals / "gpqa_diamond.jsonl").unlink()
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    assert sfn(["data", "decontaminate", str(train), "-o", str(tmp_path / "c.jsonl")]) == 2
    assert "has no gpqa_diamond.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "c.jsonl").exists()
    assert sfn(["data", "decontaminate", str(train), "--against", "sfn_math500", "-o", str(tmp_path / "c.jsonl")]) == 0
    assert kept_ids(tmp_path / "c.jsonl") == ["t1", "t2", "t4", "t6", "t7"]


def test_one_shared_8gram_is_enough_seven_words_are_not():
    from sfn_merge_plugin.data.benchmarks import Benchmark
    from sfn_merge_plugin.data.index import BenchmarkIndex

    w = "one two three four five six seven eight nine ten eleven twelve thirteen".split()
    item = " ".join(w[:12])
    index = BenchmarkIndex([Benchmark("b", "test", (("madeup-1", item),))])
    (hit,) = index.matches("other words then " + " ".join(w[2:10]) + " and more")
    assert (hit.item, hit.reason, hit.shared, hit.total) == ("madeup-1", "ngram", 1, 5)
    assert index.matches("other words then " + " ".join(w[2:9]) + " and more") == []
    assert index.matches(" ".join(w))[0].shared == 5  # a longer copy holds all 5
    strict = BenchmarkIndex([Benchmark("b", "test", (("madeup-1", item),))], threshold=0.6)
    assert strict.matches(" ".join(w[2:11])) == []  # 2 of 5
    assert strict.matches(" ".join(w[1:11]))[0].score == 0.6  # 3 of 5: at the threshold


def test_an_against_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    (tmp_path / "bench.jsonl").write_bytes(b'{"problem": "caf\xe9", "id": "madeup-1"}\n')  # was a traceback
    before = sorted(os.listdir(tmp_path))
    assert sfn(["data", "decontaminate", str(train), "--against", str(tmp_path / "bench.jsonl"),
                "-o", str(tmp_path / "c.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sfn data: error: --against ") and "bench.jsonl: line 1 is not UTF-8 text" in err, err
    _nothing_written(tmp_path, before)


def test_a_benchmark_file_that_is_not_utf8_says_so(tmp_path, evals, capsys):
    (evals / "math500.jsonl").write_bytes(b'{"problem": "caf\xe9", "answer": "1", "unique_id": "madeup/1"}\n')
    train = write_jsonl(tmp_path / "train.jsonl", TRAIN)
    before = sorted(os.listdir(tmp_path))
    assert sfn(["data", "decontaminate", str(train), "--against", "sfn_math500", "-o", str(tmp_path / "c.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "math500.jsonl: math500 is not UTF-8 text; save the file as UTF-8" in err, err  # not "hub schema"
    _nothing_written(tmp_path, before)
