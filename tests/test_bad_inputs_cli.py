"""Bad option values and output paths: one line each, before any work, and no file SfN did not write is
ever replaced (nor a temporary file left behind)."""

import errno
import os
import subprocess
import sys

import pytest
from bad_input_checks import assert_one_line, listing, no_temps, run_sfn


@pytest.fixture(scope="module")
def pair(tiny_pair):
    return tiny_pair("qwen2")


# case -> (argv built from (base, tuned, out), regexes)
VALUE_CASES = {
    "delta --chunk-mb nan": (lambda b, t, o: ["delta", b, t, "-o", o, "--chunk-mb", "nan"], [r"--chunk-mb: 'nan' is not a finite number"]),
    "delta --chunk-mb 0": (lambda b, t, o: ["delta", b, t, "-o", o, "--chunk-mb", "0"], [r"--chunk-mb: 0 is too small: it must be > 0.0"]),
    "delta --bins huge": (lambda b, t, o: ["delta", b, t, "-o", o, "--bins", "100000000000"], [r"--bins: 100000000000 is too large"]),
    "delta --bins text": (lambda b, t, o: ["delta", b, t, "-o", o, "--bins", "many"], [r"--bins: 'many' is not an integer"]),
    "delta --range inf": (lambda b, t, o: ["delta", b, t, "-o", o, "--range", "inf"], [r"histogram range must be a positive number, got inf"]),
    "delta --eps 0": (lambda b, t, o: ["delta", b, t, "-o", o, "--eps", "0"], [r"eps must be a positive number", r"got 0.0"]),
    "delta --threads 0": (lambda b, t, o: ["delta", b, t, "-o", o, "--threads", "0"], [r"--threads: 0 is too small"]),
    "delta --every -1": (lambda b, t, o: ["delta", b, t, "-o", o, "--every", "-1"], [r"--every: -1 is too small"]),
    "delta-plot --every 0": (lambda b, t, o: ["delta-plot", o, "--every", "0"], [r"--every: 0 is too small"]),
    "sweep --mean inf": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--mean", "inf"],
                         [r"--mean: 'inf' is not a finite number"]),
    "sweep --std -1": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--std", "-1"],
                       [r"--std: -1 is too small: it must be >= 0.0"]),
    "sweep --std 1e300": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--std", "1e300"],
                          [r"--std: 1e300 is too large"]),
    "sweep --top-p 2": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--top-p", "2"],
                        [r"--top-p: 2 is too large: it must be <= 1.0"]),
    "sweep --temperature nan": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--temperature", "nan"],
                                [r"--temperature: 'nan' is not a finite number"]),
    "sweep --max-new-tokens 0": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--max-new-tokens", "0"],
                                 [r"--max-new-tokens: 0 is too small"]),
    "sweep --batch-size 1.5": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--batch-size", "1.5"],
                               [r"--batch-size: '1.5' is not an integer"]),
    "sweep --device bogus": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--device", "bogus"],
                             [r"--device 'bogus' is not a device; use cpu, cuda, cuda:N or mps"]),
    "sweep --device cpu:1": (lambda b, t, o: ["destroy-sweep", b, "--modules", "o_proj", "--layers", "1", "-o", o, "--device", "cpu:1"],
                             [r"--device 'cpu:1' is not a device"]),
    "tiny-pair --layers 0": (lambda b, t, o: ["tiny-pair", "-o", o, "--layers", "0"], [r"--layers: 0 is too small"]),
    "tiny-pair --scale nan": (lambda b, t, o: ["tiny-pair", "-o", o, "--scale", "nan"], [r"--scale: 'nan' is not a finite number"]),
    "remove-recipe --dtype float9": (lambda b, t, o: ["remove-recipe", b, "--layers", "1", "-o", os.path.join(o, "r.yml"), "--dtype", "float9"],
                                     [r"--dtype: invalid choice: 'float9'"]),
    "lab --threads 0": (lambda b, t, o: ["lab", "-o", o, "--threads", "0"], [r"--threads: 0 is too small"]),
    "lab --max-new-tokens nan": (lambda b, t, o: ["lab", "-o", o, "--max-new-tokens", "nan"], [r"--max-new-tokens: 'nan' is not an integer"]),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_a_bad_option_value_is_one_line_and_writes_nothing(pair, tmp_path, capsys, case):
    make, needles = VALUE_CASES[case]
    out = tmp_path / "out"
    rc, lines, _ = run_sfn(make(pair[0], pair[1], str(out)), capsys)
    assert_one_line(rc, lines, r"^sfn [a-z-]+: error: ", *needles, r"see `sfn [a-z-]+ --help`|use |number")
    assert listing(tmp_path) == set()


def test_sweep_device_cuda_without_a_gpu(pair, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    rc, lines, _ = run_sfn(["destroy-sweep", pair[0], "--modules", "o_proj", "--layers", "1", "-o", tmp_path / "o",
                            "--device", "cuda"], capsys)
    assert_one_line(rc, lines, r"--device cuda: no CUDA GPU is available", r"use --device cpu")
    assert listing(tmp_path) == set()


def test_sweep_model_folder_without_tokenizer(pair, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(pair[0], name), model / name)
    rc, lines, _ = run_sfn(["destroy-sweep", model, "--modules", "o_proj", "--layers", "1", "-o", tmp_path / "o"], capsys)
    assert_one_line(rc, lines, str(model), r"no tokenizer files here")
    assert listing(tmp_path) == {"model", "model/config.json", "model/model.safetensors"}


# ---- output paths ----

def _foreign(tmp_path, name, text="my own notes\n"):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_text(text)
    return folder


def test_delta_never_overwrites_a_users_summary(pair, tmp_path, capsys):
    folder = _foreign(tmp_path, "summary.json", '{"mine": true}\n')
    rc, lines, _ = run_sfn(["delta", *pair, "-o", folder, "--no-plots", "--no-progress"], capsys)
    assert_one_line(rc, lines, str(folder), r"not empty and was not written by SfN", r"--force")
    assert (folder / "summary.json").read_text() == '{"mine": true}\n' and listing(folder) == {"summary.json"}


def test_destroy_sweep_never_overwrites_a_users_table(pair, tmp_path, capsys):
    folder = _foreign(tmp_path, "table3.md")
    rc, lines, _ = run_sfn(["destroy-sweep", pair[0], "--modules", "o_proj", "--layers", "1", "-o", folder], capsys)
    assert_one_line(rc, lines, str(folder), r"not written by SfN", r"--force")
    assert (folder / "table3.md").read_text() == "my own notes\n" and listing(folder) == {"table3.md"}


def test_tiny_pair_never_writes_into_a_foreign_folder(tmp_path, capsys):
    folder = _foreign(tmp_path, "base")
    rc, lines, _ = run_sfn(["tiny-pair", "-o", folder], capsys)
    assert_one_line(rc, lines, str(folder), r"not written by SfN")
    assert listing(folder) == {"base"}


def test_delta_output_that_is_a_file(pair, tmp_path, capsys):
    target = tmp_path / "out.txt"
    target.write_text("x")
    rc, lines, _ = run_sfn(["delta", *pair, "-o", target, "--no-plots"], capsys)
    assert_one_line(rc, lines, str(target), r"exists and is a file")
    assert target.read_text() == "x" and listing(tmp_path) == {"out.txt"}


def test_delta_output_under_a_file(pair, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc, lines, _ = run_sfn(["delta", *pair, "-o", tmp_path / "f" / "out", "--no-plots"], capsys)
    assert_one_line(rc, lines, r"f/out", r"which is a file")
    assert listing(tmp_path) == {"f"}


def test_delta_output_on_a_read_only_filesystem(pair, tmp_path, capsys, monkeypatch):
    """Simulated (the tests may run as root, who can write anywhere): the write probe gets EROFS."""
    import pathlib

    real = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if ".sfn-write-probe" in self.name:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    rc, lines, _ = run_sfn(["delta", *pair, "-o", tmp_path / "out", "--no-plots"], capsys)
    assert_one_line(rc, lines, r"out", r"not writable \(Read-only file system\)")
    assert listing(tmp_path) == set()


def test_disk_full_while_writing_delta_leaves_no_partial_file(pair, tmp_path, capsys, monkeypatch):
    import pathlib

    real = pathlib.Path.write_text

    def write_text(self, data, *a, **k):
        if "sfn-tmp" in self.name and "summary" in self.name:
            real(self, data[:10], *a, **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data, *a, **k)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    rc, lines, _ = run_sfn(["delta", *pair, "-o", tmp_path / "out", "--no-plots", "--no-progress"], capsys)
    assert_one_line(rc, lines, r"summary.json", r"the disk is full")
    assert no_temps(tmp_path) and not (tmp_path / "out" / "summary.json").exists()


def test_delta_into_its_own_earlier_output_and_with_force(pair, tmp_path, capsys):
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces SfN's own files
        rc, _, _ = run_sfn(["delta", *pair, "-o", out, "--no-plots", "--no-progress"], capsys)
        assert rc == 0
    assert {"delta.csv", "summary.json", "histograms.json", ".sfn-output"} <= listing(out) and no_temps(tmp_path)
    folder = _foreign(tmp_path, "notes.txt")
    rc, _, _ = run_sfn(["delta", *pair, "-o", folder, "--no-plots", "--no-progress", "--force"], capsys)
    assert rc == 0 and (folder / "notes.txt").read_text() == "my own notes\n" and (folder / "summary.json").exists()


def test_remove_recipe_never_replaces_a_foreign_file(pair, tmp_path, capsys):
    target = tmp_path / "remove.yml"
    target.write_text("merge_method: linear  # mine\n")
    rc, lines, _ = run_sfn(["remove-recipe", pair[0], "--layers", "1", "-o", target], capsys)
    assert_one_line(rc, lines, str(target), r"was not written by SfN", r"--force")
    assert target.read_text() == "merge_method: linear  # mine\n"
    rc, lines, _ = run_sfn(["remove-recipe", pair[0], "--layers", "1", "-o", tmp_path], capsys)
    assert_one_line(rc, lines, str(tmp_path), r"is a folder")


def test_remove_recipe_writes_local_paths_no_tool_takes_for_a_hub_id(pair, tmp_path, capsys, monkeypatch):
    """`demo/base` (what tiny-pair makes) used to crash mergekit's model-card writer offline."""
    import yaml

    monkeypatch.chdir(os.path.dirname(os.path.dirname(pair[0])))
    rel = os.path.join(os.path.basename(os.path.dirname(pair[0])), os.path.basename(pair[0]))
    rc, _, _ = run_sfn(["remove-recipe", rel, "--layers", "1", "-o", tmp_path / "r.yml"], capsys)
    assert rc == 0
    recipe = yaml.safe_load((tmp_path / "r.yml").read_text())
    assert {s["sources"][0]["model"] for s in recipe["slices"]} == {"./" + rel}


# ---- merges: output path checks, killed runs, model card ----

def _swap(base, donor):
    return {"merge_method": "sfn_swap", "base_model": base, "models": [{"model": donor}],
            "parameters": {"modules": "o_proj", "layers": "1"}}


def test_merge_output_under_a_file(pair, tmp_path, run_recipe):
    from sfn_merge_plugin.planning import RecipeError

    (tmp_path / "f").write_text("x")
    with pytest.raises(RecipeError, match="which is a file; choose a folder path"):
        run_recipe(_swap(*pair), tmp_path / "f" / "out")
    assert listing(tmp_path) == {"f"}


def test_a_killed_merges_temporary_folder_is_cleaned_by_the_next_run(pair, tmp_path, run_recipe):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.sfn-tmp-{dead.stdout.strip()}"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    out = run_recipe(_swap(*pair), tmp_path / "out")
    assert not stale.exists() and os.path.isfile(os.path.join(out, "sfn_provenance.json")) and no_temps(tmp_path)


def test_local_a_slash_b_models_merge_offline(pair, tmp_path, run_recipe, monkeypatch):
    """mergekit's card writer asks the hub about any existing `a/b` folder; during SfN merges it is local."""
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    os.makedirs("demo")
    shutil.copytree(pair[0], "demo/base")
    shutil.copytree(pair[1], "demo/tuned")
    out = run_recipe(_swap("demo/base", "demo/tuned"), tmp_path / "out")
    assert "demo/base" in open(os.path.join(out, "README.md")).read()


# ---- mergekit's in-memory API ----

def test_in_memory_swap_resolves_selectors_against_the_names_given():
    import torch
    from mergekit.merge_methods.api import merge_state_dicts

    names = ["model.layers.0.self_attn.o_proj.weight", "model.layers.1.self_attn.o_proj.weight",
             "model.layers.1.mlp.up_proj.weight", "model.norm.weight"]
    g = torch.Generator().manual_seed(0)
    base = {n: torch.randn(4, 4, generator=g) for n in names}
    donor = {n: torch.randn(4, 4, generator=g) for n in names}
    out = merge_state_dicts([base, donor], "sfn_swap", base=0, parameters={"modules": "o_proj", "layers": "1"})
    assert torch.equal(out[names[1]], donor[names[1]])
    for n in (names[0], names[2], names[3]):
        assert torch.equal(out[n], base[n])
    zeroed = merge_state_dicts([base], "sfn_destroy", base=0, parameters={"modules": "mlp", "mode": "zero"})
    assert torch.equal(zeroed[names[2]], torch.zeros(4, 4)) and torch.equal(zeroed[names[0]], base[names[0]])
    with pytest.raises(Exception, match="finite|less than or equal"):
        merge_state_dicts([base], "sfn_destroy", base=0, parameters={"modules": "mlp", "mode": "reinit", "std": float("inf")})
    with pytest.raises(Exception, match="fractions of depth"):
        merge_state_dicts([base, donor], "sfn_swap", base=0, parameters={"modules": "o_proj", "layers": "0.5-1.0"})


# ---- TRL: duplicate keys in the recipe, errors as one line under `trl sft` ----

def test_trl_recipe_with_sfn_trainable_twice_is_refused(tmp_path, monkeypatch):
    from sfn_merge_plugin.freeze import trl_hook
    from sfn_merge_plugin.freeze.selection import FreezeError

    recipe = tmp_path / "sft.yaml"
    recipe.write_text("model_init_kwargs:\n  sfn_trainable: oproj\n  sfn_trainable: all\n")
    monkeypatch.setattr(sys, "argv", ["sft.py", "--config", str(recipe)])
    with pytest.raises(FreezeError, match=r"line 3: key 'sfn_trainable' appears twice \(first at line 2\)"):
        trl_hook._check_recipe_file()


def test_freeze_error_under_trl_sft_is_one_line_and_exit_2(monkeypatch, capsys):
    from sfn_merge_plugin.freeze import trl_hook
    from sfn_merge_plugin.freeze.selection import FreezeError

    monkeypatch.setattr(sys, "argv", ["/venv/lib/python3.11/site-packages/trl/scripts/sft.py", "--config", "x.yaml"])
    with pytest.raises(SystemExit) as exit_info:
        with trl_hook._one_line():
            raise FreezeError("sfn_trainable 'o_porj': unknown module kind")
    assert exit_info.value.code == trl_hook.REPORTED
    assert capsys.readouterr().err == "sfn: error: sfn_trainable 'o_porj': unknown module kind\n"
    monkeypatch.setattr(sys, "argv", ["pytest"])
    with pytest.raises(FreezeError):  # as a library: the exception itself
        with trl_hook._one_line():
            raise FreezeError("x")


def test_trl_launcher_adds_no_traceback_to_a_reported_error(monkeypatch):
    pytest.importorskip("trl")
    from trl.cli import accelerate_launcher

    from sfn_merge_plugin.freeze import trl_hook

    def child_failed(*args, **kwargs):
        raise subprocess.CalledProcessError(trl_hook.REPORTED, ["python", "sft.py"])

    monkeypatch.setattr(accelerate_launcher, "launch_training_script", child_failed)
    trl_hook.patch_launcher()
    with pytest.raises(SystemExit) as exit_info:
        accelerate_launcher.launch_training_script("sft.py", [], [])
    assert exit_info.value.code == trl_hook.REPORTED


def test_a_bad_aime_answer_names_the_file_and_row(tmp_path, monkeypatch):
    import json

    from sfn_merge_plugin.errors import DataError
    from sfn_merge_plugin.evaluation.datasets import load

    rows = [{"ID": "2024-I-1", "Problem": "p", "Answer": "204"}, {"ID": "2024-I-2", "Problem": "q", "Answer": "twenty"}]
    (tmp_path / "aime24.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("SFN_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"aime24.jsonl: row 2 \(ID '2024-I-2'\): Answer 'twenty' is not an integer"):
        load("aime24")


def test_lm_eval_cli_prints_an_sfn_error_in_one_line(monkeypatch, capsys):
    import lm_eval.__main__ as entry

    from sfn_merge_plugin.errors import DataError
    from sfn_merge_plugin.evaluation.lm_eval_hook import patch_cli

    def fails():
        raise DataError("SFN_DATA_DIR=/data has no aime24.jsonl; add it")

    monkeypatch.setattr(entry, "cli_evaluate", fails)
    patch_cli()
    with pytest.raises(SystemExit) as exit_info:
        entry.cli_evaluate()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "lm_eval: error: SFN_DATA_DIR=/data has no aime24.jsonl; add it\n"
