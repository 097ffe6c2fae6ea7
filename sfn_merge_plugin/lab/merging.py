"""Merge plumbing of the lab's Table 1: an ``sfn_swap`` recipe, the stored dtype, and mergekit's own
``run_merge`` writing the merged model through ``outputs.staged_folder`` (built aside, renamed into place)."""

from __future__ import annotations

import re
from pathlib import Path

from sfn_merge_plugin.outputs import TMP_TAG, atomic_write, staged_folder


def swap_recipe(base: str, reasoning: str, modules: str, dtype: str) -> dict:
    """An ``sfn_swap`` recipe: ``modules`` of every layer from the reasoning model into the base."""
    return {"merge_method": "sfn_swap", "base_model": base, "models": [{"model": reasoning}],
            "parameters": {"modules": modules, "layers": "all"}, "dtype": dtype}


def recipe_text(recipe: dict, label: str, file_name: str) -> str:
    """The recipe as the YAML file the report links to, with the command that reruns it."""
    import yaml

    return (f"# sfn lab: Table 1, {label} of the reasoning model into the base\n"
            f"# rerun: mergekit-yaml {file_name} OUT_DIR\n" + yaml.safe_dump(recipe, sort_keys=False))


def stored_dtype(path: str) -> str:
    """The dtype a model's weights are stored in (from the safetensors headers), as mergekit spells it."""
    from sfn_merge_plugin.checkpoint import open_checkpoint

    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
    dtypes = {e.dtype for e in open_checkpoint(path).tensors.values()}
    for d in ("F32", "BF16", "F16"):
        if d in dtypes:
            return names[d]
    return "float32"


def run_recipe(recipe: dict, out: Path) -> Path:
    """mergekit's own ``run_merge`` (what ``mergekit-yaml`` runs), with SfN's hook active; the folder is
    built under a temporary name, and the model card names the final folder, not the temporary one."""
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    import mergekit.merge_methods  # noqa: F401  (the start-up hook registers sfn_swap here)

    config = MergeConfiguration.model_validate(recipe)
    with staged_folder(out, "lab merge", check=False) as tmp:
        run_merge(config, str(tmp), MergeOptions(quiet=True, copy_tokenizer=True),
                  config_source=yaml.safe_dump(recipe, sort_keys=False))
    card = out / "README.md"
    if card.is_file():  # mergekit titles the card with the folder it wrote: the temporary name
        temp = re.compile(re.escape(f".{out.name}{TMP_TAG}") + r"[\w-]*")
        atomic_write(card, temp.sub(out.name, card.read_text(encoding="utf-8")))
    return out
