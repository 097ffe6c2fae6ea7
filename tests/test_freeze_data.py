"""`sfn data s1k`: s1's thinking/answer layout as TRL prompt/completion rows, and strict input checks."""

import json

import pytest

from freeze_checks import made_up_s1k
from sfn_merge_plugin.cli import main as sfn
from sfn_merge_plugin.freeze.data import s1_completion


def test_s1_layout():
    assert s1_completion(["step one.", "step two."], "42") == \
        "<|im_start|>think\nstep one.\nstep two.\n<|im_start|>answer\nAnswer: 42"
    # s1K-1.1 keeps one string per trace; an attempt that already says "Answer:" is not prefixed again
    assert s1_completion("  trace \n", "So. Answer: 7 ") == \
        "<|im_start|>think\ntrace\n<|im_start|>answer\nSo. Answer: 7"


def test_sfn_data_s1k_writes_prompt_completion_rows(tmp_path, capsys):
    raw = made_up_s1k(str(tmp_path / "raw.jsonl"), n=5)
    assert sfn(["data", "s1k", "-o", str(tmp_path / "data"), "--source", raw]) == 0
    rows = [json.loads(line) for line in (tmp_path / "data" / "s1k.jsonl").read_text().splitlines()]
    first = json.loads(open(raw).readline())
    assert len(rows) == 5 and set(rows[0]) == {"prompt", "completion"}
    assert rows[0]["prompt"] == [{"role": "user", "content": first["question"]}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": (
        "<|im_start|>think\n" + "\n".join(first["thinking_trajectories"]) + "\n<|im_start|>answer\nAnswer: "
        + first["attempt"])}]
    prov = json.loads((tmp_path / "data" / "s1k.provenance.json").read_text())
    assert prov["rows"] == 5 and prov["source"] == raw
    assert "wrote 5 rows" in capsys.readouterr().out
    assert sfn(["data", "s1k", "-o", str(tmp_path / "data"), "--source", raw]) == 2  # no silent overwrite
    assert "exists; pass --force" in capsys.readouterr().err
    assert sfn(["data", "s1k", "-o", str(tmp_path / "data"), "--source", raw, "--limit", "2", "--force"]) == 0
    assert len((tmp_path / "data" / "s1k.jsonl").read_text().splitlines()) == 2


def test_trl_puts_the_loss_on_the_s1_completion_only(tiny_model, tmp_path):
    """Through SFTTrainer's own tokenization: the completion mask covers exactly the assistant turn."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    raw = made_up_s1k(str(tmp_path / "raw.jsonl"), n=2)
    assert sfn(["data", "s1k", "-o", str(tmp_path), "--source", raw]) == 0
    data = load_dataset("json", data_files=str(tmp_path / "s1k.jsonl"), split="train")
    args = SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none", max_length=256,
                     activation_checkpointing=False)
    trainer = SFTTrainer(model=tiny_model("qwen2", layers=1, hidden=32, heads=2, kv_heads=1, intermediate=64),
                         args=args, train_dataset=data)
    row = trainer.train_dataset[0]
    tok = trainer.processing_class
    ids, labels = row["input_ids"], row["labels"]  # TRL sets the label of every token without loss to -100
    assert [i for i, y in zip(ids, labels) if y != -100] == [y for y in labels if y != -100]
    trained = tok.decode([y for y in labels if y != -100])
    assert trained == data[0]["completion"][0]["content"] + "<|im_end|>\n"
    assert tok.decode([i for i, y in zip(ids, labels) if y == -100]).endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("rows,needle", [
    ([{"question": "q", "trajectory": ["t"], "attempt": "a"}],
     r"missing column\(s\) thinking_trajectories; it has: attempt, question, trajectory\. For s1K-1\.1 pass"),
    ([{"question": "q", "thinking_trajectories": ["t"], "attempt": "a"}] * 3
     + [{"question": "q", "thinking_trajectories": ["t"], "attempt": "  "}], r"row 3: column 'attempt' is empty"),
    ([{"question": "q", "thinking_trajectories": [1, 2], "attempt": "a"}], r"must be a string or a list of strings"),
])
def test_bad_rows_are_reported_and_nothing_is_written(tmp_path, capsys, rows, needle):
    import re

    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sfn(["data", "s1k", "-o", str(tmp_path / "out"), "--source", str(raw)]) == 2
    assert re.search(needle, capsys.readouterr().err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unreadable_sources_are_reported(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\nnot json\n')
    assert sfn(["data", "s1k", "-o", str(tmp_path / "out"), "--source", str(bad)]) == 2
    assert "line 2 is not valid JSON" in capsys.readouterr().err
    other = tmp_path / "rows.csv"
    other.write_text("question\n")
    assert sfn(["data", "s1k", "-o", str(tmp_path / "out"), "--source", str(other)]) == 2
    assert "unknown file type" in capsys.readouterr().err
    assert sfn(["data", "s1k", "-o", str(tmp_path / "out"), "--source", str(tmp_path / "missing.parquet")]) == 2
    assert "missing.parquet: no such file or folder" in capsys.readouterr().err


def test_parquet_source_like_the_hub_copy(tmp_path):
    """s1K on the hub is a parquet file whose thinking_trajectories column is a list of strings."""
    from datasets import Dataset

    raw = made_up_s1k(str(tmp_path / "raw.jsonl"), n=3)
    rows = [json.loads(line) for line in open(raw)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
    assert sfn(["data", "s1k", "-o", str(tmp_path / "a"), "--source", str(tmp_path / "train.parquet")]) == 0
    assert sfn(["data", "s1k", "-o", str(tmp_path / "b"), "--source", raw]) == 0
    assert (tmp_path / "a" / "s1k.jsonl").read_text() == (tmp_path / "b" / "s1k.jsonl").read_text()


def test_s1k_decontaminate_leaves_out_copies_of_benchmark_items(tmp_path, capsys, monkeypatch):
    """`sfn data s1k --decontaminate` runs the filter of `sfn data decontaminate` (made-up items, SFN_DATA_DIR)."""
    for name in ("SFN_AIME24_PATH", "SFN_MATH500_PATH", "SFN_GPQA_DIAMOND_PATH"):
        monkeypatch.delenv(name, raising=False)
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "math500.jsonl").write_text(json.dumps({"problem": "Compute $5+2$ mod $7$, left to right.", "answer": "5",
                                                     "unique_id": "madeup/algebra/9.json"}) + "\n")
    monkeypatch.setenv("SFN_DATA_DIR", str(evals))
    raw = made_up_s1k(str(tmp_path / "raw.jsonl"), n=8)  # row 5 asks "compute 5+2 mod 7, ..."
    questions = [json.loads(line)["question"] for line in open(raw)]
    copies = [i for i, q in enumerate(questions) if q == "compute 5+2 mod 7, left to right."]
    out = tmp_path / "data"
    assert sfn(["data", "s1k", "-o", str(out), "--source", raw, "--decontaminate", "--against", "sfn_math500"]) == 0
    kept = [json.loads(line)["prompt"][0]["content"] for line in (out / "s1k.jsonl").read_text().splitlines()]
    assert copies and kept == [q for i, q in enumerate(questions) if i not in copies]
    report = json.loads((out / "s1k.decontam.json").read_text())
    assert [r["row"] for r in report["removed"]] == copies  # 0-based rows of the source
    assert report["removed"][0]["matches"][0]["item"] == "madeup/algebra/9.json"
    assert report["row_numbers"] == "0-based row index in the source"
    prov = json.loads((out / "s1k.provenance.json").read_text())
    assert prov["rows"] == 8 - len(copies) and prov["decontamination"]["rows_removed"] == len(copies)
    assert f"wrote {8 - len(copies)} rows" in capsys.readouterr().out
    # bad settings are refused before s1K is read or anything is written
    assert sfn(["data", "s1k", "-o", str(tmp_path / "x"), "--source", raw, "--decontaminate", "--threshold", "2"]) == 2
    assert "--threshold 2.0" in capsys.readouterr().err and not (tmp_path / "x").exists()
