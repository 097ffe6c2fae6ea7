"""A lazily read tensor (``SafetensorsReader(path, lazy=True)``) computes like the real one, and a writer copies
its stored bytes only while nothing was written into it."""

import torch
from safetensors.torch import load_file, save_file

from sfn_merge_plugin.tensor_io import SafetensorsReader, StoredTensor, stored_range, write_safetensors


def test_lazy_tensors_compute_like_read_ones_and_only_unchanged_ones_are_copied(tmp_path):
    src = tmp_path / "a.safetensors"
    want = {"x": torch.randn(5, 3).to(torch.bfloat16), "y": torch.randn(7), "z": torch.arange(6, dtype=torch.int32)}
    save_file(want, str(src))
    lazy = SafetensorsReader(str(src), lazy=True)
    x, y, z = (lazy.get_tensor(k) for k in ("x", "y", "z"))
    assert isinstance(x, StoredTensor) and x._sfn_value is None and x.shape == (5, 3) and x.dtype == torch.bfloat16
    # metadata and no-op conversions read nothing, and keep the stored range
    assert x.to("cpu") is x and x.to(torch.bfloat16) is x and x.is_contiguous() and x.numel() * x.element_size() == 30
    assert x._sfn_value is None and stored_range(x) is not None
    # any computation reads the data and sees the real values; reading alone leaves the range valid
    assert torch.equal(x.float(), want["x"].float()) and torch.equal(x.T.contiguous(), want["x"].T.contiguous())
    assert type(x + 0) is torch.Tensor and stored_range(x) is not None and stored_range(x.clone()) is None
    # an in-place edit, on the tensor or on a view of its data, voids the range: the edit is written
    y.mul_(2)
    view = z.view(2, 3)
    view[0, 0] = 99
    assert stored_range(y) is None and stored_range(z) is None and z[0].item() == 99
    edited = SafetensorsReader(str(src), lazy=True).get_tensor("y")
    torch.add(torch.zeros(7), 1, out=edited)  # out=: written through dispatch
    assert stored_range(edited) is None
    lazy.close()  # a StoredTensor read after its reader was closed reopens the file
    late = SafetensorsReader(str(src), lazy=True)
    w = late.get_tensor("x")
    late.close()
    out = tmp_path / "o.safetensors"
    write_safetensors({"x": x, "y": y, "z": z, "w": w, "e": edited, "c": x.to(torch.float32)}, str(out))
    got = load_file(str(out))
    assert torch.equal(got["x"].view(torch.int16), want["x"].view(torch.int16)) and torch.equal(got["w"].view(torch.int16), want["x"].view(torch.int16))
    assert torch.equal(got["y"], want["y"] * 2) and got["z"].tolist() == [99, 1, 2, 3, 4, 5]
    assert torch.equal(got["e"], torch.ones(7)) and torch.equal(got["c"], want["x"].float())
    # the same bytes as writing the real tensors
    plain = tmp_path / "p.safetensors"
    write_safetensors({"x": want["x"], "y": want["y"] * 2, "z": got["z"], "w": want["x"], "e": torch.ones(7),
                       "c": want["x"].float()}, str(plain))
    assert out.read_bytes() == plain.read_bytes()
