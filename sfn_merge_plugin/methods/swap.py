"""``sfn_swap``: the selected modules come from the one donor, everything else from the base, bit for bit."""

import torch
from mergekit.merge_methods import BasePolicy, InputContract, TensorGroup, merge_method

from sfn_merge_plugin.methods.common import LayersParam, ModulesParam, in_memory_selection, model_path
from sfn_merge_plugin.planning import cached_selection


@merge_method(
    name="sfn_swap",
    pretty_name="SfN module swap",
    reference_url="https://github.com/Jie-Shao-NJU/SfN",
    # the planner drops the donor from tensors that are not selected, so 1 input is allowed
    contract=InputContract(base=BasePolicy.REQUIRED, min_inputs=1, max_inputs=2),
    uses_accelerator=False,
)
def sfn_swap(group: TensorGroup, modules: ModulesParam = None, layers: LayersParam = "all") -> torch.Tensor:
    """``modules`` is required in recipes (SfN's planner says so); in-memory, None swaps every tensor given."""
    base = group.base
    path, name = model_path(base), group.metadata.name
    chosen = cached_selection(path, modules, layers).get(name) if path else in_memory_selection(name, modules, layers)
    if chosen is None:
        return base.tensor
    if not group.non_base:
        raise RuntimeError(f"sfn_swap: the donor's {group.metadata.name} was not loaded")
    donor = group.non_base[0].tensor
    if not chosen.blocks:
        return donor
    out = base.tensor.clone()
    for b in chosen.blocks:
        out.narrow(b.dim, b.start, b.stop - b.start).copy_(donor.narrow(b.dim, b.start, b.stop - b.start))
    return out
