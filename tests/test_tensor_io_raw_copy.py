"""Tensors a merge takes unchanged from a file are copied as stored byte ranges; anything edited is re-encoded."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_checks import check_swap
from sfn_merge_plugin import tensor_io
from sfn_merge_plugin.checkpoint import _safetensors_header, safetensors_files
from sfn_merge_plugin.tensor_io import SafetensorsReader, stored_range, write_safetensors


def test_unmodified_tensors_are_copied_edited_ones_re_encoded(tmp_path):
    src = tmp_path / "a.safetensors"
    save_file({"x": torch.randn(5, 3).to(torch.bfloat16), "y": torch.randn(7)}, str(src))
    r = SafetensorsReader(str(src))
    x, y, edited = r.get_tensor("x"), r.get_tensor("y"), r.get_tensor("x")
    edited.mul_(2)  # in place: its version counter moves, so the stored range no longer describes it
    assert stored_range(x) is not None and stored_range(y.clone()) is None and stored_range(edited) is None
    assert stored_range(x.to(torch.float32)) is None and stored_range(x.reshape(15)) is None
    out = tmp_path / "o.safetensors"
    write_safetensors({"a": torch.ones(3), "x": x, "edited": edited, "y": y}, str(out))
    got, want = load_file(str(out)), load_file(str(src))
    assert torch.equal(got["x"].view(torch.int16), want["x"].view(torch.int16))
    assert torch.equal(got["y"].view(torch.int32), want["y"].view(torch.int32))
    assert torch.equal(got["edited"], want["x"] * 2) and torch.equal(got["a"], torch.ones(3))


def test_a_swap_copies_the_base_tensors_and_stays_bit_exact(tiny_pair, run_recipe, monkeypatch):
    calls, reads = [], []
    real, real_read = tensor_io.copy_bytes, tensor_io.StoredTensor.materialize
    monkeypatch.setattr(tensor_io, "copy_bytes", lambda *a: (calls.append(a[3]), real(*a))[1])
    monkeypatch.setattr(tensor_io.StoredTensor, "materialize", lambda t: (reads.append(t._sfn_name), real_read(t))[1])
    base, donor = tiny_pair("qwen2")
    out = run_recipe({"merge_method": "sfn_swap", "base_model": base, "models": [{"model": donor}],
                      "parameters": {"modules": "o_proj", "layers": "all"}})
    counts = check_swap(out, base, donor)
    data = sum(e - b for f in safetensors_files(out) for b, e in (v["data_offsets"] for v in _safetensors_header(f).values()))
    # every tensor, kept from the base or taken from the donor, went through the raw copy (neighbours in one
    # copy: bytes, not calls, are counted) and none was read into memory
    assert counts["base"] > 0 and counts["donor"] > 0 and sum(calls) == data and reads == []


@pytest.mark.skipif(not hasattr(tensor_io.os, "copy_file_range"), reason="no copy_file_range here")
def test_copy_bytes_without_copy_file_range_is_the_same(tmp_path, monkeypatch):
    data = bytes(range(256)) * 1000
    (tmp_path / "s").write_bytes(data)
    monkeypatch.delattr(tensor_io.os, "copy_file_range")
    with open(tmp_path / "s", "rb") as s, open(tmp_path / "d", "wb") as d:
        tensor_io.copy_bytes(s.fileno(), 100, d.fileno(), 200_000)
    assert (tmp_path / "d").read_bytes() == data[100:200_100]
