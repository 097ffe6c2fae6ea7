"""``sfn_destroy``: Zero or ReInit the selected modules of the base model (the paper's Table 3)."""

import torch
from mergekit.merge_methods import BasePolicy, InputContract, TensorGroup, merge_method

from sfn_merge_plugin.destruction import destroyed
from sfn_merge_plugin.methods.common import LayersParam, MeanParam, ModeParam, ModulesParam, SeedParam, StdParam, in_memory_selection, model_path
from sfn_merge_plugin.planning import cached_selection


@merge_method(
    name="sfn_destroy",
    pretty_name="SfN destruction (Zero / ReInit)",
    reference_url="https://github.com/Jie-Shao-NJU/SfN",
    contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=1, max_inputs=1),
    uses_accelerator=False,
)
def sfn_destroy(
    group: TensorGroup,
    modules: ModulesParam = None,
    mode: ModeParam = "zero",
    layers: LayersParam = "all",
    mean: MeanParam = 0.0,
    std: StdParam = 0.02,
    seed: SeedParam = 0,
) -> torch.Tensor:
    """``modules`` and ``mode`` are required in recipes (SfN's planner says so); in-memory, ``modules``
    None destroys every tensor given and ``mode`` defaults to zero."""
    base = group.base
    path, name = model_path(base), group.metadata.name
    chosen = cached_selection(path, modules, layers).get(name) if path else in_memory_selection(name, modules, layers)
    if chosen is None:
        return base.tensor
    return destroyed(base.tensor, group.metadata.name, chosen.blocks, mode=mode, seed=seed, mean=mean, std=std)
