"""Delta Stethoscope walker on tiny checkpoints: float64 references per tensor and block, shards, tied
heads, vocabulary mismatch, missing tensors, selectors and bad inputs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_delta_stats import assert_matches_reference, binned_reference, reference

from sfn_merge_plugin.checkpoint import CheckpointError, safetensors_files
from sfn_merge_plugin.delta.measure import measure_pair
from sfn_merge_plugin.delta.pairing import DeltaError, plan_pair
from sfn_merge_plugin.delta.run import run_delta
from sfn_merge_plugin.delta.stats import HistSpec
from sfn_merge_plugin.selectors import SelectorError


def load_all(path) -> dict:
    out = {}
    for f in safetensors_files(str(path)):
        out.update(load_file(f))
    return out


def derive(src, dst, transform=lambda name, t: t, extra=None, config=None) -> str:
    """A copy of checkpoint ``src`` whose tensors went through ``transform`` (None drops one)."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in load_all(src).items():
        new = transform(name, t)
        if new is not None:
            tensors[name] = new.contiguous()
    tensors.update(extra or {})
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((Path(src) / "config.json").read_text())
    cfg.update(config or {})
    (dst / "config.json").write_text(json.dumps(cfg))
    return str(dst)


def noisy(scale, seed=0):
    g = torch.Generator().manual_seed(seed)

    def transform(name, t):
        return (t.float() + scale * t.float().std() * torch.randn(t.shape, generator=g)).to(t.dtype)

    return transform


def unit_tensors(unit, A, B):
    """The float tensors a unit compares, cut from whole checkpoints (as 2-D, like the walker)."""
    a, b = A[unit.base.name], B[unit.tuned.name]
    a = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    b = b.reshape(b.shape[0], -1) if b.ndim > 1 else b.reshape(1, -1)
    (r0, r1), (c0, c1) = unit.rows, unit.cols
    return a[r0:r1, c0:c1], b[r0:r1, c0:c1]


def check_against_reference(plan, stats):
    A, B = load_all(plan.base.path), load_all(plan.tuned.path)
    for unit, s in zip(plan.units, stats):
        a, b = unit_tensors(unit, A, B)
        assert s.numel == a.numel() == unit.numel
        ref = reference(a, b)
        assert_matches_reference(s, ref)
        counts, ambiguous = binned_reference(ref["r"], HistSpec())
        assert np.abs(s.counts - counts).sum() <= 2 * ambiguous, unit.tensor


def measure(plan, threads=2, chunk_bytes=2048):
    return measure_pair(plan, threads=threads, chunk_bytes=chunk_bytes, progress=False)[0]


@pytest.mark.parametrize("arch,kwargs", [
    ("qwen2", {"dtype": "bfloat16"}),  # q/k/v biases, bf16
    ("llama", {"bias": True, "dtype": "float16"}),
    ("gemma2", {}),  # four norms per layer
    ("phi3", {}),  # fused qkv_proj / gate_up_proj (row blocks)
    ("gpt2", {"tied": True}),  # fused c_attn (column blocks of a Conv1D), tied head
])
def test_every_tensor_and_block_matches_a_float64_reference(tiny_pair, arch, kwargs):
    base, tuned = tiny_pair(arch, **kwargs)
    plan = plan_pair(base, tuned)
    stats = measure(plan)  # 2 KB chunks: every matrix is read in several row chunks
    check_against_reference(plan, stats)
    covered = {}
    for u in plan.units:
        covered[u.tensor] = covered.get(u.tensor, 0) + u.numel
    assert covered == {n: e.numel for n, e in plan.base.tensors.items()}  # each element exactly once
    kinds = {u.module for u in plan.units}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"} <= kinds
    assert not kinds & {"qkv_proj", "gate_up_proj"}  # fused tensors are reported per block


def test_fused_blocks_say_where_they_come_from(tiny_pair):
    plan = plan_pair(*tiny_pair("phi3"))
    qkv = [u for u in plan.units if u.tensor == "model.layers.0.self_attn.qkv_proj.weight"]
    assert [(u.module, u.block_text) for u in qkv] == [("q_proj", "rows 0:64"), ("k_proj", "rows 64:96"),
                                                        ("v_proj", "rows 96:128")]
    plan = plan_pair(*tiny_pair("gpt2", tied=True))
    c_attn = [u for u in plan.units if u.tensor == "transformer.h.0.attn.c_attn.weight"]
    assert [(u.module, u.block_text) for u in c_attn] == [("q_proj", "cols 0:64"), ("k_proj", "cols 64:128"),
                                                          ("v_proj", "cols 128:192")]


def test_sharded_and_single_file_checkpoints_give_identical_results(tiny_model, tiny_pair):
    base, tuned = tiny_pair("qwen2")
    sharded = tiny_model("qwen2", shard_bytes=40_000)  # same seed: the same weights, in several files
    assert len(safetensors_files(sharded)) > 2
    single_tensors, sharded_tensors = load_all(base), load_all(sharded)
    assert all(torch.equal(single_tensors[n], sharded_tensors[n]) for n in single_tensors)
    one, many = measure(plan_pair(base, tuned)), measure(plan_pair(sharded, tuned))
    for x, y in zip(one, many):
        assert x.raw() == y.raw()
        assert (x.counts == y.counts).all()


def test_results_do_not_depend_on_threads_or_chunk_size(tiny_pair):
    plan = plan_pair(*tiny_pair("qwen2"))
    a = measure(plan, threads=1, chunk_bytes=1 << 20)
    b = measure(plan, threads=2, chunk_bytes=700)
    c = measure(plan, threads=2, chunk_bytes=700)
    for x, y, z in zip(a, b, c):
        assert y.raw() == z.raw()  # deterministic
        assert (x.counts == y.counts).all() and x.changed == y.changed
        assert y.norm_delta == pytest.approx(x.norm_delta, rel=1e-12)


def test_tied_base_is_compared_through_its_embedding(tiny_pair):
    base, tuned = tiny_pair("qwen2", tied=True, untie=True)  # base ties lm_head, the fine-tune does not
    plan = plan_pair(base, tuned)
    head = [u for u in plan.units if u.tensor == "lm_head.weight"]
    assert len(head) == 1
    assert head[0].base.name == "model.embed_tokens.weight" and head[0].tuned.name == "lm_head.weight"
    assert "ties lm_head" in head[0].note and any("ties lm_head" in n for n in plan.notes)
    check_against_reference(plan, measure(plan))

    reverse = plan_pair(tuned, base)  # untied base, tied fine-tune
    head = [u for u in reverse.units if u.tensor == "lm_head.weight"]
    assert head[0].base.name == "lm_head.weight" and head[0].tuned.name == "model.embed_tokens.weight"
    check_against_reference(reverse, measure(reverse))

    both = plan_pair(*tiny_pair("qwen2", tied=True))
    assert not [u for u in both.units if u.module == "lm_head"]
    assert any("both models tie lm_head" in n for n in both.notes)


def test_vocabulary_mismatch_compares_the_shared_rows(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    g = torch.Generator().manual_seed(5)

    def grow(name, t):
        t = noisy(0.1, seed=len(name))(name, t)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = torch.cat([t, torch.randn(16, t.shape[1], generator=g)])
        return t

    tuned = derive(base, tmp_path / "bigger-vocab", grow, config={"vocab_size": 400})
    plan = plan_pair(base, tuned)
    rows = {u.tensor: u for u in plan.units}
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert rows[name].rows == (0, 384) and rows[name].numel == 384 * 64
        assert "row counts differ (base 384, fine-tune 400)" in rows[name].note
    assert any("vocab_size: base 384, fine-tune 400" in d for d in plan.config_differences)
    check_against_reference(plan, measure(plan))


def test_missing_and_extra_tensors_are_reported_not_compared(tiny_model, tmp_path):
    base = tiny_model("qwen2")
    # a tensor kind the fine-tune lacks in every layer, and one it adds in every layer (a tensor missing from
    # ONE layer is a damaged checkpoint, refused when it is opened: tests/test_bad_inputs_checkpoints.py)
    depth = json.loads((Path(base) / "config.json").read_text())["num_hidden_layers"]
    gone = tuple(f"model.layers.{i}.self_attn.q_proj.bias" for i in range(depth))
    added = {f"model.layers.{i}.self_attn.o_proj.bias": torch.zeros(64) for i in range(depth)}
    tuned = derive(base, tmp_path / "edited", lambda n, t: None if n in gone else t, extra=added)
    plan = plan_pair(base, tuned)
    assert plan.missing == gone and plan.extra == tuple(added)
    assert not set(gone) & {u.tensor for u in plan.units} and not set(added) & {u.tensor for u in plan.units}
    assert any("not in the fine-tune" in n and gone[0] in n for n in plan.notes)
    assert any("not in the base" in n for n in plan.notes)
    stats = measure(plan)
    assert all(s.norm_delta == 0 and s.changed == 0 for s in stats)  # everything else is untouched


def test_selectors_restrict_the_walk(tiny_pair):
    base, tuned = tiny_pair("qwen2")
    plan = plan_pair(base, tuned, modules="o_proj", layers="1-2")
    assert [(u.layer, u.module) for u in plan.units] == [(1, "o_proj"), (2, "o_proj")]
    phi = plan_pair(*tiny_pair("phi3"), modules="q_proj")
    assert {(u.module, u.block_text) for u in phi.units} == {("q_proj", "rows 0:64")}
    with pytest.raises(SelectorError, match="q_norm"):
        plan_pair(base, tuned, modules="q_norm")
    with pytest.raises(SelectorError, match="out of range"):
        plan_pair(base, tuned, layers="7")


def test_bad_inputs_fail_before_reading_with_clear_errors(tiny_model, tmp_path):
    qwen = tiny_model("qwen2")
    with pytest.raises(CheckpointError, match="base model: .*no such folder"):
        plan_pair(tmp_path / "nowhere", qwen)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("not a model")
    with pytest.raises(CheckpointError, match="fine-tune: .*no config.json"):
        plan_pair(qwen, tmp_path / "notes")
    with pytest.raises(DeltaError, match="different architectures.*Qwen2ForCausalLM.*LlamaForCausalLM"):
        plan_pair(qwen, tiny_model("llama"))
    with pytest.raises(DeltaError, match="different depths: .*4 layers.*2"):
        plan_pair(qwen, tiny_model("qwen2", layers=2))
    with pytest.raises(DeltaError, match="shapes differ.*fine-tune's own base"):
        plan_pair(qwen, tiny_model("qwen2", hidden=32))
    out = tmp_path / "out"
    with pytest.raises(DeltaError, match="different architectures"):
        run_delta(qwen, [qwen, tiny_model("llama")], out, progress=False)
    assert not out.exists()  # nothing written, not even the folder
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DeltaError, match="is a file"):
        run_delta(qwen, qwen, tmp_path / "a-file", progress=False)
    with pytest.raises(DeltaError, match="bins"):
        run_delta(qwen, qwen, out, bins=1, progress=False)


def test_bin_checkpoints_need_an_explicit_opt_in(tiny_pair, tmp_path):
    base, tuned = tiny_pair("qwen2")
    as_bin = tmp_path / "tuned-bin"
    as_bin.mkdir()
    shutil.copy(Path(tuned) / "config.json", as_bin / "config.json")
    torch.save(load_all(tuned), as_bin / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="allow-bin"):
        plan_pair(base, as_bin)
    from_bin = measure(plan_pair(base, as_bin, allow_bin=True))
    from_safetensors = measure(plan_pair(base, tuned))
    for x, y in zip(from_bin, from_safetensors):
        assert x.raw() == y.raw() and (x.counts == y.counts).all()


def test_comparing_safetensors_checkpoints_does_not_import_torch(tiny_pair, tmp_path):
    # torch's start-up costs more than the walk of a small model: the safetensors path is numpy only
    import subprocess
    import sys

    base, tuned = tiny_pair("qwen2", dtype="bfloat16")
    code = ("import sys\nfrom sfn_merge_plugin.delta.run import run_delta\n"
            f"run_delta({base!r}, {tuned!r}, {str(tmp_path / 'out')!r}, plots=False, progress=False)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "out" / "delta.csv").is_file()
