"""The shipped TRL recipes (trl_configs/*.yaml), and scaled-down copies of them for CPU runs (tests, lab).

A scaled copy keeps every hyper-parameter of the recipe it starts from and overrides only what a small
CPU run must change (model, data, output, steps, precision), so what is tested is what ships.
"""

from __future__ import annotations

import os

# Table 2 row (preset) -> recipe file name in trl_configs/
RECIPES = {"emb_head": "freeze_emb_head", "oproj": "freeze_oproj", "qkvo": "freeze_qkvo", "all": "full"}
# rows trained as a PEFT adapter (TRL's use_peft, no sfn_trainable); the adapter is an SfN LoRA pack
PEFT_RECIPES = {"lora_oproj": "freeze_lora_oproj"}
# what a CPU run must change in a GPU recipe
CPU_OVERRIDES = {"bf16": False, "dtype": "float32", "use_cpu": True, "activation_checkpointing": False,
                 "report_to": "none", "dataloader_num_workers": 0}
# `trl sft` launch keys: meaningless for a single CPU process
_LAUNCH_KEYS = ("accelerate_config", "num_processes")


def recipe_path(preset: str) -> str:
    """The path of the shipped recipe for a Table 2 row (``emb_head``, ``oproj``, ``qkvo``, ``all``, ``lora_oproj``)."""
    from sfn_merge_plugin.freeze.selection import FreezeError
    from sfn_merge_plugin.resources import resource_dir

    files = {**RECIPES, **PEFT_RECIPES}
    if preset not in files:
        raise FreezeError(f"no recipe for {preset!r}; rows: {', '.join(files)}")
    return str(resource_dir("trl_configs") / f"{files[preset]}.yaml")


def load_recipe(preset: str) -> dict:
    import yaml

    with open(recipe_path(preset), encoding="utf-8") as f:
        return yaml.safe_load(f)


def scaled_recipe(preset: str, *, model: str, data_file: str, output_dir: str, cpu: bool = True, **overrides) -> dict:
    """The recipe of ``preset`` pointed at a small model and data file; ``overrides`` win (``None`` deletes a key)."""
    recipe = load_recipe(preset)
    recipe.update(model_name_or_path=model, output_dir=output_dir,
                  datasets=[{"path": "json", "data_files": os.path.abspath(data_file)}])
    if cpu:
        recipe.update(CPU_OVERRIDES)
        for key in _LAUNCH_KEYS:
            recipe.pop(key, None)
    for key, value in overrides.items():
        if value is None:
            recipe.pop(key, None)
        else:
            recipe[key] = value
    return recipe


def write_recipe(recipe: dict, path: str) -> str:
    """Write a recipe as YAML (atomically) and return its path."""
    import yaml

    from sfn_merge_plugin.freeze.data import write_text

    write_text(path, yaml.safe_dump(recipe, sort_keys=False))
    return path
