"""Bad recipe files: each gets exit 2 and one line from `sfn plan` (and `Error: ...` from mergekit-yaml)
naming the problem, and nothing is written."""

import os
import time

import pytest
from bad_input_checks import assert_one_line, listing, run_sfn


@pytest.fixture(scope="module")
def pair(tiny_pair):
    return tiny_pair("qwen2")


def swap_text(base, donor, params='  modules: "o_proj"\n', extra=""):
    return f"merge_method: sfn_swap\nbase_model: {base}\nmodels:\n  - model: {donor}\nparameters:\n{params}{extra}"


def destroy_text(base, params):
    return f"merge_method: sfn_destroy\nbase_model: {base}\nmodels:\n  - model: {base}\nparameters:\n  modules: o_proj\n{params}"


# case -> (recipe text from (base, donor), regexes the one line must hold)
CASES = {
    "duplicate modules key": (lambda b, d: swap_text(b, d, '  modules: "o_proj"\n  modules: "mlp"\n'),
                              [r"line 7", r"'modules' appears twice \(first at line 6\)"]),
    "two parameters blocks": (lambda b, d: swap_text(b, d, extra='parameters:\n  modules: "mlp"\n'),
                              [r"'parameters' appears twice"]),
    "two base_model keys": (lambda b, d: swap_text(b, d) + f"base_model: {d}\n", [r"'base_model' appears twice"]),
    "duplicate key inside a model entry": (
        lambda b, d: f"merge_method: sfn_swap\nbase_model: {b}\nmodels:\n  - model: {d}\n    model: {b}\nparameters:\n  modules: o_proj\n",
        [r"'model' appears twice"]),
    "misspelt top-level key": (lambda b, d: swap_text(b, d).replace("parameters:", "paramters:"),
                               [r"unknown top-level key 'paramters'", r"did you mean 'parameters'"]),
    "misspelt method": (lambda b, d: swap_text(b, d).replace("sfn_swap", "sfn_swapp"),
                        [r"unknown merge_method 'sfn_swapp'", r"did you mean 'sfn_swap'"]),
    "cyrillic look-alike in modules": (lambda b, d: swap_text(b, d, '  modules: "o_pr\u043e\u0458"\n'),
                                       [r"non-ASCII character", r"U\+043E CYRILLIC SMALL LETTER O", r"modules"]),
    "cyrillic look-alike in the method": (lambda b, d: swap_text(b, d).replace("sfn_swap", "sfn_sw\u0430p"),
                                          [r"merge_method", r"U\+0430 CYRILLIC SMALL LETTER A"]),
    "greek look-alike in layers": (lambda b, d: swap_text(b, d, '  modules: o_proj\n  layers: "\u03bf-3"\n'),
                                   [r"layers", r"GREEK SMALL LETTER OMICRON"]),
    "tab indentation": (lambda b, d: swap_text(b, d, '\tmodules: "o_proj"\n'), [r"line 6", r"tab character"]),
    "empty file": (lambda b, d: "", [r"is empty"]),
    "comments only": (lambda b, d: "# nothing here\n# yet\n", [r"is empty"]),
    "top level is a list": (lambda b, d: "- merge_method: sfn_swap\n", [r"top level must be a mapping", r"list"]),
    "unclosed quote": (lambda b, d: swap_text(b, d, '  modules: "o_proj\n'), [r"not valid YAML"]),
    "parameters is a list": (lambda b, d: f"merge_method: sfn_swap\nbase_model: {b}\nmodels:\n  - model: {d}\nparameters:\n  - o_proj\n",
                             [r"not a valid mergekit recipe", r"parameters"]),
    "models is a string": (lambda b, d: f"merge_method: sfn_swap\nbase_model: {b}\nmodels: {d}\nparameters:\n  modules: o_proj\n",
                           [r"not a valid mergekit recipe", r"models"]),
    "mean is infinite": (lambda b, d: destroy_text(b, "  mode: reinit\n  mean: .inf\n"), [r"mean must be a finite number", r"inf"]),
    "std is absurd": (lambda b, d: destroy_text(b, "  mode: reinit\n  std: 1.0e+300\n"), [r"std must be <= 10", r"1e\+300"]),
    "std is nan": (lambda b, d: destroy_text(b, "  mode: reinit\n  std: .nan\n"), [r"std must be a finite number", r"nan"]),
    "mean is text": (lambda b, d: destroy_text(b, "  mode: reinit\n  mean: small\n"), [r"mean must be a number", r"'small'"]),
    "seed is fractional": (lambda b, d: destroy_text(b, "  mode: reinit\n  seed: 1.5\n"), [r"seed must be an integer", r"1.5"]),
    "invalid out_dtype": (lambda b, d: swap_text(b, d) + "out_dtype: float9\n", [r"out_dtype 'float9'", r"bfloat16"]),
    "removal slice past the depth": (
        lambda b, d: f"merge_method: passthrough\nslices:\n  - sources:\n      - model: {b}\n        layer_range: [0, 8]\n",
        [r"layer_range \[0, 8\]", r"outside its 4 layers"]),
    "removal with an invalid dtype": (
        lambda b, d: f"merge_method: passthrough\ndtype: float9\nslices:\n  - sources:\n      - model: {b}\n        layer_range: [0, 2]\n",
        [r"dtype 'float9'"]),
    "base model missing (relative path)": (lambda b, d: swap_text("nope/base-model", d),
                                           [r"nope/base-model", r"relative paths resolve against the current folder"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sfn_plan_refuses_a_bad_recipe_in_one_line(pair, tmp_path, capsys, monkeypatch, case):
    make, needles = CASES[case]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(make(*pair), encoding="utf-8")
    before = listing(tmp_path)
    rc, lines, out = run_sfn(["plan", recipe], capsys)
    assert_one_line(rc, lines, r"^sfn plan: error: ", *needles)
    assert listing(tmp_path) == before and out == ""


def test_missing_recipe_file_names_it_and_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, lines, _ = run_sfn(["plan", "recipes/typo.yml"], capsys)
    assert_one_line(rc, lines, r"recipes/typo.yml", r"no such file", str(tmp_path))
    assert listing(tmp_path) == set()


def test_a_folder_given_as_the_recipe(tmp_path, capsys):
    rc, lines, _ = run_sfn(["plan", tmp_path], capsys)
    assert_one_line(rc, lines, str(tmp_path), r"is a folder")


def test_a_recipe_that_is_not_utf8(tmp_path, capsys):
    recipe = tmp_path / "r.yml"
    recipe.write_bytes(b"merge_method: sfn_swap\nbase_model: \xff\xfe\n")
    rc, lines, _ = run_sfn(["plan", recipe], capsys)
    assert_one_line(rc, lines, r"r.yml", r"not UTF-8")


def test_a_hub_id_offline_fails_at_once(pair, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tmp_path / "r.yml"
    recipe.write_text(swap_text("someorg/some-model", pair[1]))
    start = time.monotonic()
    rc, lines, _ = run_sfn(["plan", recipe], capsys)
    assert time.monotonic() - start < 5
    assert_one_line(rc, lines, r"someorg/some-model", r"HF_HUB_OFFLINE is set", r"pass its folder")


def test_duplicate_keys_in_a_foreign_recipe_only_warn(pair, tmp_path, capsys):
    """Recipes of mergekit's own methods keep mergekit's behaviour (a warning, the last value)."""
    base, donor = pair
    recipe = tmp_path / "r.yml"
    recipe.write_text(f"merge_method: linear\nmodels:\n  - model: {base}\n    parameters:\n      weight: 1.0\n      weight: 0.5\n")
    rc, lines, out = run_sfn(["plan", recipe], capsys)
    assert rc == 0 and "not an SfN method" in out
    assert len(lines) == 1 and "warning" in lines[0] and "'weight' appears twice" in lines[0]


# ---- mergekit-yaml itself (its click command, run in-process as the console script runs it) ----

def mergekit_yaml(*args):
    from click.testing import CliRunner
    from mergekit.scripts.run_yaml import main as command

    result = CliRunner().invoke(command, [str(a) for a in args])
    return result.exit_code, [ln for ln in result.stderr.splitlines() if ln.strip()], result


MERGEKIT_CASES = {
    "duplicate modules key": (lambda b, d: swap_text(b, d, '  modules: "o_proj"\n  modules: "mlp"\n'), [r"'modules' appears twice"]),
    "misspelt method": (lambda b, d: swap_text(b, d).replace("sfn_swap", "sfn_swapp"), [r"did you mean 'sfn_swap'"]),
    "tab indentation": (lambda b, d: swap_text(b, d, '\tmodules: "o_proj"\n'), [r"tab character"]),
    "empty file": (lambda b, d: "\n", [r"is empty"]),
    "parameters of the wrong type": (
        lambda b, d: f"merge_method: sfn_swap\nbase_model: {b}\nmodels:\n  - model: {d}\nparameters: o_proj\n", [r"parameters"]),
    "look-alike letter": (lambda b, d: swap_text(b, d, '  modules: "o_pr\u043ej"\n'), [r"non-ASCII"]),
    "std out of range": (lambda b, d: destroy_text(b, "  mode: reinit\n  std: -3\n"), [r"std must be >= 0"]),
}


@pytest.mark.parametrize("case", list(MERGEKIT_CASES))
def test_mergekit_yaml_reports_a_bad_sfn_recipe_in_one_line(pair, tmp_path, case):
    make, needles = MERGEKIT_CASES[case]
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(make(*pair), encoding="utf-8")
    code, lines, result = mergekit_yaml(recipe, tmp_path / "out")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert_one_line(code, lines, r"^Error: ", *needles, code=1)
    assert not (tmp_path / "out").exists() and listing(tmp_path) == {"recipe.yml"}


def test_mergekit_yaml_missing_recipe_file(tmp_path):
    code, lines, _ = mergekit_yaml(tmp_path / "nope.yml", tmp_path / "out")
    assert_one_line(code, lines, r"nope.yml", r"no such file", code=1)
    assert listing(tmp_path) == set()
