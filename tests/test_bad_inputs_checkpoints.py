"""Damaged checkpoints: each is refused when it is opened (checkpoint.py), in one line naming the file or
tensor, by `sfn delta`, `sfn plan` and the merge alike, and nothing is written."""

import json
import os
import shutil

import pytest
from bad_input_checks import assert_one_line, listing, run_sfn

from sfn_merge_plugin.checkpoint import CheckpointError, open_checkpoint


@pytest.fixture(scope="module")
def pair(tiny_pair):
    return tiny_pair("qwen2")


@pytest.fixture(scope="module")
def sharded(tiny_model):
    return tiny_model("qwen2", shard_bytes=40_000, seed=3)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _single(folder):
    return os.path.join(folder, "model.safetensors")


def _rewrite_header(file, edit):
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    edit(header)
    raw = json.dumps(header).encode()
    with open(file, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data)


def _drop_tensor(file, name):
    from safetensors.torch import load_file, save_file

    tensors = load_file(file)
    del tensors[name]
    save_file(tensors, file, metadata={"format": "pt"})


def bad_config_json(m):
    open(os.path.join(m, "config.json"), "w").write('{"model_type": "qwen2",')


def config_is_a_list(m):
    open(os.path.join(m, "config.json"), "w").write("[1, 2]")


def zero_byte_weights(m):
    open(_single(m), "wb").close()


def truncated_weights(m):
    size = os.path.getsize(_single(m))
    with open(_single(m), "r+b") as f:
        f.truncate(size // 2)


def header_longer_than_file(m):
    with open(_single(m), "wb") as f:
        f.write((10 ** 12).to_bytes(8, "little") + b"{}")


def header_not_json(m):
    with open(_single(m), "wb") as f:
        f.write((6).to_bytes(8, "little") + b"{oops}")


def offsets_past_the_end(m):
    def edit(header):
        last = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
        b, e = header[last]["data_offsets"]
        header[last]["data_offsets"] = [b + 4096, e + 4096]

    _rewrite_header(_single(m), edit)


def offsets_wrong_length(m):
    def edit(header):
        header["model.norm.weight"]["shape"] = [7]

    _rewrite_header(_single(m), edit)


def tensor_missing_from_one_layer(m):
    _drop_tensor(_single(m), "model.layers.2.mlp.up_proj.weight")


SINGLE_FILE_CASES = {
    "invalid config.json": (bad_config_json, [r"config.json is not valid JSON", r"line 1"]),
    "config.json is a list": (config_is_a_list, [r"config.json holds a list"]),
    "zero-byte safetensors": (zero_byte_weights, [r"model.safetensors: empty \(0 bytes\)"]),
    "truncated safetensors": (truncated_weights, [r"model.safetensors", r"truncated"]),
    "header length larger than the file": (header_longer_than_file, [r"header says 1000000000000 bytes but the file holds 10;"]),
    "header not JSON": (header_not_json, [r"header is not valid JSON"]),
    "data_offsets past the end": (offsets_past_the_end, [r"lies at bytes", r"truncated or damaged"]),
    "shape disagrees with data_offsets": (offsets_wrong_length, [r"'model.norm.weight'", r"data_offsets span"]),
    "tensor missing from one layer": (tensor_missing_from_one_layer, [r"model.layers.2.mlp.up_proj.weight is missing"]),
}


@pytest.mark.parametrize("case", list(SINGLE_FILE_CASES))
def test_sfn_delta_refuses_a_damaged_checkpoint(pair, tmp_path, capsys, case):
    damage, needles = SINGLE_FILE_CASES[case]
    bad = _copy(pair[1], str(tmp_path / "tuned"))
    damage(bad)
    before = listing(tmp_path)
    rc, lines, _ = run_sfn(["delta", pair[0], bad, "-o", tmp_path / "out", "--no-plots", "--no-progress"], capsys)
    assert_one_line(rc, lines, r"^sfn delta: error: ", str(tmp_path / "tuned"), *needles)
    assert listing(tmp_path) == before  # no out/, nothing half-written


def index_not_json(m):
    open(os.path.join(m, "model.safetensors.index.json"), "w").write("{")


def index_without_weight_map(m):
    open(os.path.join(m, "model.safetensors.index.json"), "w").write('{"metadata": {}}')


def shard_missing(m):
    index = json.load(open(os.path.join(m, "model.safetensors.index.json")))
    os.remove(os.path.join(m, sorted(set(index["weight_map"].values()))[-1]))


def tensor_listed_but_absent(m):
    index = json.load(open(os.path.join(m, "model.safetensors.index.json")))
    name = "model.layers.1.self_attn.o_proj.weight"
    _drop_tensor(os.path.join(m, index["weight_map"][name]), name)


SHARDED_CASES = {
    "invalid index.json": (index_not_json, [r"model.safetensors.index.json is not valid JSON"]),
    "index without weight_map": (index_without_weight_map, [r'has no "weight_map"']),
    "shard named by the index missing": (shard_missing, [r"the index names the shard model-\d+-of-\d+.safetensors, which is missing"]),
    "tensor in the index but not in its shard": (tensor_listed_but_absent,
                                                 [r"'model.layers.1.self_attn.o_proj.weight' is listed in the index"]),
}


@pytest.mark.parametrize("case", list(SHARDED_CASES))
def test_sfn_plan_refuses_a_damaged_sharded_checkpoint(sharded, tmp_path, capsys, case):
    damage, needles = SHARDED_CASES[case]
    bad = _copy(sharded, str(tmp_path / "base"))
    damage(bad)
    recipe = tmp_path / "r.yml"
    recipe.write_text(f"merge_method: sfn_destroy\nbase_model: {bad}\nmodels:\n  - model: {bad}\n"
                      "parameters:\n  modules: o_proj\n  mode: zero\n")
    before = listing(tmp_path)
    rc, lines, _ = run_sfn(["plan", recipe], capsys)
    assert_one_line(rc, lines, r"^sfn plan: error: base model: ", str(bad), *needles)
    assert listing(tmp_path) == before


def test_the_merge_refuses_a_tensor_the_index_promises(sharded, tmp_path, run_recipe):
    """The merge used to write 50 of 51 tensors and let transformers initialise the missing one randomly."""
    from sfn_merge_plugin.planning import RecipeError

    bad = _copy(sharded, str(tmp_path / "base"))
    tensor_listed_but_absent(bad)
    recipe = {"merge_method": "sfn_destroy", "base_model": bad, "models": [{"model": bad}],
              "parameters": {"modules": "mlp", "layers": "0", "mode": "zero"}}
    with pytest.raises(RecipeError, match="'model.layers.1.self_attn.o_proj.weight' is listed in the index"):
        run_recipe(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not [p for p in os.listdir(tmp_path) if "sfn-tmp" in p]


def test_an_intact_checkpoint_still_opens(pair, sharded):
    assert len(open_checkpoint(pair[0]).tensors) == len(open_checkpoint(sharded).tensors)
    with pytest.raises(CheckpointError):
        open_checkpoint(pair[0] + "-missing")
