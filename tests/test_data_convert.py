"""`sfn data convert`: any local .jsonl/.parquet/.csv -> the very rows `sfn data s1k` writes, and clear errors."""

import csv
import json
import os

import pytest

from freeze_checks import made_up_s1k
from sfn_merge_plugin.cli import main as sfn


def s1k_rows(tmp_path, n=4):
    """made-up s1K rows with the trace as one string (CSV cannot hold a list)."""
    rows = [json.loads(line) for line in open(made_up_s1k(str(tmp_path / "raw.jsonl"), n=n))]
    for r in rows:
        r["thinking_trajectories"] = "\n".join(r["thinking_trajectories"])
    return rows


def write(path, rows):
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        from datasets import Dataset

        Dataset.from_list(rows).to_parquet(str(path))
    return path


CONVERT = ["--question-column", "question", "--answer-column", "attempt", "--thinking-column", "thinking_trajectories"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_convert_writes_the_s1k_rows_byte_for_byte(tmp_path, suffix, capsys):
    rows = s1k_rows(tmp_path)
    s1k_source = write(tmp_path / "s1k_like.jsonl", rows)
    assert sfn(["data", "s1k", "-o", str(tmp_path / "ref"), "--source", str(s1k_source)]) == 0
    source = write(tmp_path / f"mine{suffix}", rows)
    assert sfn(["data", "convert", str(source), *CONVERT, "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "mine.jsonl").read_bytes() == (tmp_path / "ref" / "s1k.jsonl").read_bytes()
    prov = json.loads((tmp_path / "out" / "mine.provenance.json").read_text())
    assert prov["written_by"] == "sfn data convert" and prov["rows"] == 4 and prov["decontamination"] is None
    assert prov["columns"] == {"question": "question", "trace": "thinking_trajectories", "answer": "attempt"}
    assert "wrote 4 rows" in capsys.readouterr().out


def test_without_thinking_column_and_numeric_answers(tmp_path):
    source = write(tmp_path / "qa.jsonl", [{"q": "Made-up: 40 + 2?", "a": 42}, {"q": "Made-up: half of 3?", "a": 1.5}])
    assert sfn(["data", "convert", str(source), "--question-column", "q", "--answer-column", "a",
                "-o", str(tmp_path / "out"), "--name", "qa_trl"]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "out" / "qa_trl.jsonl")]
    assert rows[0] == {"prompt": [{"role": "user", "content": "Made-up: 40 + 2?"}],
                       "completion": [{"role": "assistant",
                                       "content": "<|im_start|>think\n\n<|im_start|>answer\nAnswer: 42"}]}
    assert rows[1]["completion"][0]["content"].endswith("Answer: 1.5")


def test_convert_with_decontaminate_uses_the_same_filter(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SFN_DATA_DIR", raising=False)
    against = tmp_path / "my_eval.jsonl"
    against.write_text(json.dumps({"problem": "compute 3+4 mod 7, left to right.", "id": "madeup-7"}) + "\n")
    rows = s1k_rows(tmp_path, n=8)  # row i asks "compute {i%7}+{(3i+1)%7} mod 7": rows 1 is 1+4, row 5 is 5+2
    rows[2]["question"] = "Compute 3 + 4 mod 7, left to right!"
    source = write(tmp_path / "mine.csv", rows)
    assert sfn(["data", "convert", str(source), *CONVERT, "-o", str(tmp_path / "out"), "--decontaminate",
                "--against", str(against)]) == 0
    kept = [json.loads(line)["prompt"][0]["content"] for line in open(tmp_path / "out" / "mine.jsonl")]
    assert len(kept) == 7 and rows[2]["question"] not in kept
    report = json.loads((tmp_path / "out" / "mine.decontam.json").read_text())
    assert [(r["row"], r["matches"][0]["item"], r["matches"][0]["reason"]) for r in report["removed"]] == [
        (3, "madeup-7", "exact")]  # CSV row 3 = the third data row
    prov = json.loads((tmp_path / "out" / "mine.provenance.json").read_text())
    assert prov["rows"] == 7 and prov["decontamination"]["rows_removed"] == 1
    assert "my_eval" in capsys.readouterr().out
    # a later run without --decontaminate drops the stale report
    assert sfn(["data", "convert", str(source), *CONVERT, "-o", str(tmp_path / "out"), "--force"]) == 0
    assert not (tmp_path / "out" / "mine.decontam.json").exists()
    assert len((tmp_path / "out" / "mine.jsonl").read_text().splitlines()) == 8


@pytest.mark.parametrize("name,content,needle", [
    ("e.jsonl", "", "the file is empty"),
    ("e.csv", "question,attempt,thinking_trajectories\n", "no rows"),
    ("m.csv", "question,answer,notes\nq,a,n\n", "m.csv: missing column(s) thinking_trajectories, attempt; it has: question, answer, notes"),
    ("m.jsonl", '{"question": "q", "attempt": "a", "thinking_trajectories": "t"}\n{"question": "q", "answer": "a"}\n',
     "m.jsonl: line 2: missing column(s) thinking_trajectories, attempt; it has: question, answer"),
    ("b.jsonl", '{"question": "q", "attempt": "a", "thinking_trajectories": "t"}\n\n[1, 2\n', "line 3 is not valid JSON"),
    ("v.jsonl", '{"question": "q", "attempt": " ", "thinking_trajectories": "t"}\n', "v.jsonl: line 1: column 'attempt' is empty"),
    ("n.jsonl", '{"question": "q", "attempt": NaN, "thinking_trajectories": "t"}\n', "column 'attempt' is nan"),
    ("x.txt", "q\n", "unknown file type .txt"),
    # a lone surrogate escape parses as JSON but cannot be written as UTF-8 (was a traceback)
    ("s.jsonl", '{"question": "\\ud800 q", "attempt": "a", "thinking_trajectories": "t"}\n',
     "s.jsonl: line 1: holds '\\ud800', a lone UTF-16 surrogate"),
])
def test_bad_sources_are_one_line_and_write_nothing(tmp_path, capsys, name, content, needle):
    (tmp_path / name).write_text(content)
    assert sfn(["data", "convert", str(tmp_path / name), *CONVERT, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sfn data: error: ") and needle in err, err
    assert not (tmp_path / "out").exists()


def test_outputs_are_never_foreign_nor_the_input(tmp_path, capsys):
    source = write(tmp_path / "mine.jsonl", s1k_rows(tmp_path))
    assert sfn(["data", "convert", str(source), *CONVERT, "-o", str(tmp_path)]) == 2
    assert "is also the input" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.jsonl").write_text("someone else's\n")
    assert sfn(["data", "convert", str(source), *CONVERT, "-o", str(tmp_path / "out")]) == 2
    assert "exists and was not written by SfN" in capsys.readouterr().err
    assert (tmp_path / "out" / "mine.jsonl").read_text() == "someone else's\n"
    assert sorted(os.listdir(tmp_path / "out")) == ["mine.jsonl"]
    assert sfn(["data", "convert", str(source), *CONVERT, "-o", str(tmp_path / "out"), "--force"]) == 0
    assert sfn(["data", "convert", str(source), *CONVERT, "-o", str(tmp_path / "out"), "--ngram", "0",
                "--decontaminate"]) == 2
    assert "--ngram 0" in capsys.readouterr().err
