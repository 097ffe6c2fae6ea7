"""`sfn lab` arguments: every bad input is one clear line before any work, and nothing is left behind;
the user's-checkpoints path (--base/--reasoning) on a local tiny pair."""

import json

import pytest

from sfn_merge_plugin.cli import main


def _fails(capsys, argv, *needles):
    rc = main(["lab"] + argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("sfn lab: error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_help_explains(capsys):
    assert main(["lab", "--help"]) == 0  # the CLI turns argparse's exit into a return code
    out = capsys.readouterr().out
    for word in ("--smoke", "--base", "--reasoning", "--seeds", "new_circuit", "skill", "o_proj", "--pair", "smollm2"):
        assert word in out


def test_base_without_reasoning(tmp_path, capsys):
    _fails(capsys, ["-o", str(tmp_path / "out"), "--base", "x"], "--base and --reasoning")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seeds, needle", [("a,b", "integers"), ("1,1", "distinct"), ("-1", "distinct")])
def test_bad_seeds(tmp_path, capsys, seeds, needle):
    _fails(capsys, ["-o", str(tmp_path / "out"), "--seeds", seeds], needle)
    assert not (tmp_path / "out").exists()


def test_unknown_stage(tmp_path, capsys):
    _fails(capsys, ["-o", str(tmp_path / "out"), "--stages", "delta,bogus"], "bogus", "stages: pairs, delta")


def test_output_that_is_a_file_or_someone_elses_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _fails(capsys, ["-o", str(f)], "is a file")
    d = tmp_path / "notes"
    d.mkdir()
    (d / "mine.txt").write_text("keep me")
    _fails(capsys, ["-o", str(d)], "not empty", "results.json")
    assert [p.name for p in d.iterdir()] == ["mine.txt"]


def test_missing_checkpoint(tmp_path, capsys):
    _fails(capsys, ["-o", str(tmp_path / "out"), "--base", str(tmp_path / "nope"), "--reasoning", str(tmp_path / "nope2")],
           "no such folder")


def test_pair_of_different_models(tmp_path, capsys, tiny_model):
    base, other = tiny_model(layers=2), tiny_model(layers=3)
    capsys.readouterr()
    _fails(capsys, ["-o", str(tmp_path / "out"), "--base", base, "--reasoning", other], "2 layers", "3", "own fine-tune")
    assert not (tmp_path / "out").exists()


def test_users_checkpoints(tmp_path, tiny_pair):
    base, tuned = tiny_pair(scale=0.05)
    out = tmp_path / "lab"
    rc = main(["lab", "--smoke", "--quiet", "-o", str(out), "--base", base, "--reasoning", tuned,
               "--stages", "delta,merge"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["pairs"]) == ["custom"]
    entry = results["pairs"]["custom"]
    assert set(entry) == {"pairs", "delta", "merge"}
    assert set(entry["pairs"]["eval"]["base"]) == {"chat"}  # the lab's own formats do not apply to a user's model
    assert entry["pairs"]["training"] == {}
    assert entry["delta"]["regime"] == "small change"  # 0.05 x each tensor's std
    assert set(entry["merge"]["rows"]) == {"o_proj", "q,k,v_proj", "mlp"}
    assert not any("model" in row for row in entry["merge"]["rows"].values())  # merged weights deleted
    md = (out / "report.md").read_text()
    assert "Not run (see `--stages`)." in md  # freeze and destruction were not asked for
    # a second run replaces the first output (through a temporary folder); Freeze on the user's base model
    assert main(["lab", "--smoke", "--quiet", "-o", str(out), "--base", base, "--reasoning", tuned,
                 "--stages", "freeze", "--freeze-seeds", "1"]) == 0
    entry = json.loads((out / "results.json").read_text())["pairs"]["custom"]
    assert set(entry) == {"pairs", "freeze"}
    runs = [r for rows in entry["freeze"]["rows"].values() for r in rows]
    assert len(runs) == 4 and all(r["moved"]["frozen_changed"] == [] for r in runs)
    assert {r["preset"] for r in runs} == {"emb_head", "oproj", "qkvo", "all"}
    assert [p.name for p in tmp_path.iterdir()] == ["lab"]
