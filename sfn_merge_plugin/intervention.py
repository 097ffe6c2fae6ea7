"""The one intervention engine: apply an edit to a loaded model, run something, restore it bit for bit.

An ``Edit`` is a set of tensor replacements (``{tensor name: new values}``, names as the taxonomy writes
them, ``lm_head.weight`` of a tied model included) plus decoder layers to skip (Remove). Builders make
the edits of every SfN operation from the shared selectors:

  * ``swap_edit(model, layout, selected, donor)``: the selected tensors (or fused blocks) from a donor
    checkpoint, read per call from its safetensors (``Donor``): swap-in from a fine-tune, or revert to the
    base when the loaded model is the fine-tune and the donor is the base. The values are exactly the
    bytes ``mergekit-yaml`` with ``sfn_swap`` writes for the same selection (tied/untied, fused blocks);
  * ``destroy_edit(model, layout, selected, mode, ...)``: Zero / ReInit with ``destruction.destroyed``,
    the kernel of ``sfn_destroy``;
  * ``remove_edit(layout, layers)``: whole decoder layers skipped in the forward pass, as the paper did.

``with intervene(model, edit): ...`` applies it and restores on exit. Originals are never modified: on
the CPU a parameter's storage is swapped for the new tensor and swapped back; on an accelerator the
original is copied to host memory, the new values are written in place, and the copy is written back (so
a large model needs no room for a second copy on the device). A tied lm_head (the embedding Parameter)
is untied for the edit when the head and the embedding end up with different values, exactly as the
merge methods write an untied output; when both get equal values (both zeroed, both from a tied donor)
they stay one tensor.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from sfn_merge_plugin.errors import CheckpointError, SelectorError

LAYER_LISTS = ("model.layers", "transformer.h")  # where the taxonomy's archs keep their decoder layers


@dataclass
class Edit:
    """What one intervention changes in a loaded model."""

    replace: dict = field(default_factory=dict)  # tensor name -> new values (same shape; cast to the parameter's dtype)
    skip_layers: tuple = ()  # decoder layer indices skipped in the forward pass (Remove)
    label: str = ""  # what the edit is, for messages

    def __add__(self, other: "Edit") -> "Edit":
        twice = sorted(set(self.replace) & set(other.replace))
        if twice:
            raise SelectorError(f"edits {self.label!r} and {other.label!r} both replace {', '.join(twice)}")
        label = " + ".join(x for x in (self.label, other.label) if x)
        return Edit({**self.replace, **other.replace}, tuple(sorted(set(self.skip_layers) | set(other.skip_layers))), label)


def model_layout(model):
    """The taxonomy's layout of a loaded model, from its parameter names (tied weights listed once)."""
    from sfn_merge_plugin.taxonomy import layout_from_names

    config = model.config.to_dict()
    if not config.get("architectures"):
        config["architectures"] = [type(model).__name__]
    return layout_from_names(config, [n for n, _ in model.named_parameters()])


# ------------------------------------------------------------------------------------------------ builders


class Donor:
    """A checkpoint whose tensors are read one at a time when a cell needs them (never loaded whole)."""

    def __init__(self, path: str, layout=None):
        from sfn_merge_plugin.checkpoint import layout_of, open_checkpoint

        self.checkpoint = open_checkpoint(str(path))
        self.path = self.checkpoint.path
        self.layout = layout or layout_of(self.checkpoint)
        self._readers = {}

    def check_matches(self, layout) -> None:
        """Same architecture and depth, every tensor of ``layout`` present with the same shape: fail before any work."""
        if (self.layout.architecture, self.layout.num_layers) != (layout.architecture, layout.num_layers):
            raise CheckpointError(
                f"donor {self.path} is {self.layout.architecture} with {self.layout.num_layers} layers, the loaded model "
                f"is {layout.architecture} with {layout.num_layers}: swaps need the same architecture and depth")
        for t in layout.tensors:
            entry = self.checkpoint.tensors.get(self.source_name(t.name))
            if entry is None:
                raise CheckpointError(f"donor {self.path} has no tensor {t.name!r} (nor a tied embedding standing for it)")

    def source_name(self, name: str) -> str:
        """The stored tensor behind ``name``: a tied donor's lm_head is its embedding (as sfn_swap reads it)."""
        info = self.layout.by_name().get(name)
        return info.tied_to if info is not None and info.tied_to else name

    def read(self, name: str):
        """The donor's tensor ``name`` (CPU, its stored dtype), read from its shard without a memory map."""
        from sfn_merge_plugin.tensor_io import SafetensorsReader

        entry = self.checkpoint.tensors.get(self.source_name(name))
        if entry is None:
            raise CheckpointError(f"donor {self.path} has no tensor {name!r}")
        reader = self._readers.get(entry.file)
        if reader is None:
            reader = self._readers[entry.file] = SafetensorsReader(entry.file)
        return reader.get_tensor(entry.name)

    def close(self):
        for r in self._readers.values():
            r.close()
        self._readers.clear()


def current_tensor(model, layout, name: str):
    """The loaded model's tensor ``name`` (a tied lm_head is the embedding)."""
    params = dict(model.named_parameters())
    info = layout.by_name()[name]
    return params[info.tied_to or name].data


def swap_edit(model, layout, selected, donor: Donor, label: str = "swap") -> Edit:
    """The selected tensors (whole, or only their fused blocks) with the donor's values, as sfn_swap writes them."""
    params = dict(model.named_parameters())
    infos = layout.by_name()
    replace = {}
    for s in selected:
        here = params[infos[s.name].tied_to or s.name].data
        theirs = donor.read(s.name)
        if tuple(theirs.shape) != tuple(here.shape):
            raise CheckpointError(f"{s.name}: donor {donor.path} has shape {tuple(theirs.shape)}, the model {tuple(here.shape)}")
        if not s.blocks:
            replace[s.name] = theirs
            continue
        out = here.detach().to("cpu", copy=True)
        for b in s.blocks:
            n = b.stop - b.start
            out.narrow(b.dim, b.start, n).copy_(theirs.narrow(b.dim, b.start, n))
        replace[s.name] = out
    return Edit(replace, (), label)


def destroy_edit(model, layout, selected, mode: str, seed: int = 0, mean: float = 0.0, std: float = 0.02,
                 label: str = "") -> Edit:
    """Zero / ReInit of the selected tensors (or fused blocks) with sfn_destroy's kernel and seeds."""
    from sfn_merge_plugin.destruction import destroyed

    params = dict(model.named_parameters())
    infos = layout.by_name()
    replace = {}
    for s in selected:
        p = params[infos[s.name].tied_to or s.name].data
        replace[s.name] = destroyed(p, s.name, s.blocks, mode=mode, seed=seed, mean=mean, std=std)
    return Edit(replace, (), label or mode)


def remove_edit(layout, layers, label: str = "remove") -> Edit:
    """Skip the decoder layers ``layers`` (a selector such as "5-30"); at least one layer must stay."""
    from sfn_merge_plugin.selectors import parse_layers

    drop = parse_layers(layers).resolve(layout.num_layers)
    if len(drop) == layout.num_layers:
        raise SelectorError(f"remove: layers {layers!r} are all {layout.num_layers} layers; keep at least one")
    return Edit({}, tuple(drop), label)


# ------------------------------------------------------------------------------------------- apply/restore


@contextlib.contextmanager
def intervene(model, edit: Edit, layout=None):
    """``with intervene(model, edit): ...`` runs the body on the edited model, then restores every original."""
    layout = layout or model_layout(model)
    with _tensors_replaced(model, layout, edit.replace):
        if edit.skip_layers:
            with _layers_skipped(model, layout.num_layers, list(edit.skip_layers)):
                yield model
        else:
            yield model


@contextlib.contextmanager
def _tensors_replaced(model, layout, replace: dict):
    import torch

    params = dict(model.named_parameters())
    infos = layout.by_name()
    unknown = [n for n in replace if n not in infos]
    if unknown:
        raise SelectorError(f"edit replaces tensors the model does not have: {', '.join(sorted(unknown)[:5])}")
    head = next((t for t in layout.tensors if t.tied_to is not None), None)
    undo = []
    try:
        with torch.no_grad():
            head_new = replace.get(head.name) if head is not None else None
            embed_new = replace.get(head.tied_to) if head is not None else None
            if head is not None and (head_new is not None or embed_new is not None):
                embed = params[head.tied_to]
                if head_new is not None and embed_new is not None and torch.equal(head_new.cpu(), embed_new.cpu()):
                    head_new = None  # both get the same values: they stay one tensor
                elif head_new is None:
                    undo.append(_untie(model, embed.data))  # the head keeps the original values
                    undo.append(_swap(embed, embed_new.to(embed.device, embed.dtype)))  # new storage: the head holds the old
                    embed_new = None
                if head_new is not None:
                    undo.append(_untie(model, head_new.to(embed.device, embed.dtype)))
            for name, new in replace.items():
                if head is not None and name in (head.name, head.tied_to):
                    if name == head.tied_to and embed_new is not None:
                        p = params[name]
                        undo.append(_put(p, new))
                    continue
                undo.append(_put(params[name], new))
        yield model
    finally:
        with torch.no_grad():
            for restore in reversed(undo):
                restore()


def _put(p, new):
    if tuple(new.shape) != tuple(p.shape):
        raise SelectorError(f"edit: new values of shape {tuple(new.shape)} for a parameter of shape {tuple(p.shape)}")
    if not _in_place(p):
        return _swap(p, new.to(p.dtype))
    return _overwrite(p, new)


def _in_place(p) -> bool:
    """Accelerator parameters are overwritten in place (originals kept on the host); CPU ones get new storage."""
    return p.device.type != "cpu"


def _swap(p, new):
    original = p.data
    p.data = new if new.dtype == original.dtype else new.to(original.dtype)

    def restore():
        p.data = original

    return restore


def _overwrite(p, new):
    backup = p.data.to("cpu", copy=True)
    p.data.copy_(new.to(p.device, p.dtype))

    def restore():
        p.data.copy_(backup.to(p.device))

    return restore


def _untie(model, values):
    """The output embedding becomes its own Parameter over ``values`` until restored."""
    import torch

    head = model.get_output_embeddings()
    shared = head.weight
    head.weight = torch.nn.Parameter(values, requires_grad=False)

    def restore():
        head.weight = shared

    return restore


# --------------------------------------------------------------------------------------------------- Remove


def layer_list(model):
    """(owner module, attribute name, ModuleList) of the decoder layers."""
    for path in LAYER_LISTS:
        owner_path, _, attr = path.rpartition(".")
        try:
            owner = model.get_submodule(owner_path)
        except AttributeError:
            continue
        layers = getattr(owner, attr, None)
        if layers is not None:
            return owner, attr, layers
    raise SelectorError(
        f"remove: cannot find the decoder layers of {type(model).__name__} (looked for {', '.join(LAYER_LISTS)})"
    )


def _per_layer_config_keys(config, n: int) -> list:
    return [k for k, v in config.to_dict().items() if isinstance(v, list) and len(v) == n and k != "architectures"]


@contextlib.contextmanager
def _layers_skipped(model, num_layers: int, drop: list):
    """The layer list holds only the kept layers (layer_idx renumbered, per-layer config lists cut), as the
    passthrough merge ``remove_layers.remove_recipe`` writes; all restored on exit."""
    import torch

    owner, attr, layers = layer_list(model)
    if len(layers) != num_layers:
        raise SelectorError(f"remove: the model has {len(layers)} decoder layers but its config says {num_layers}")
    kept = [i for i in range(num_layers) if i not in set(drop)]
    config = model.config
    saved_lists = {k: getattr(config, k) for k in _per_layer_config_keys(config, num_layers)}
    renumbered = []  # (module, old layer_idx)
    try:
        for new_idx, old_idx in enumerate(kept):
            for m in layers[old_idx].modules():
                if isinstance(getattr(m, "layer_idx", None), int):
                    renumbered.append((m, m.layer_idx))
                    m.layer_idx = new_idx
        setattr(owner, attr, torch.nn.ModuleList([layers[i] for i in kept]))
        config.num_hidden_layers = len(kept)
        for k, values in saved_lists.items():
            setattr(config, k, [values[i] for i in kept])
        yield model
    finally:
        setattr(owner, attr, layers)
        config.num_hidden_layers = num_layers
        for k, values in saved_lists.items():
            setattr(config, k, values)
        for m, idx in renumbered:
            m.layer_idx = idx


def logit_fingerprint(model, prompt_ids: list) -> str:
    """sha256 of the float32 logits at every position of every probe prompt (one at a time, unpadded): two
    model states with the same fingerprint give bit-identical logits on the probes."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    device = model.get_input_embeddings().weight.device
    with torch.no_grad():
        for p in prompt_ids:
            logits = model(input_ids=torch.tensor([p], device=device)).logits.float()
            logits = logits + 0.0  # -0.0 -> +0.0: equal values hash equally
            digest.update(logits.cpu().numpy().tobytes())
    return digest.hexdigest()


def file_size(path: str) -> int:
    """Bytes of a checkpoint's safetensors shards: the model size peak RSS is compared against."""
    from sfn_merge_plugin.checkpoint import safetensors_files

    return sum(os.path.getsize(f) for f in safetensors_files(path))


@contextlib.contextmanager
def swapped(model, donor, modules: str, layers="all", layout=None):
    """``with swapped(model, "tuned/", "o_proj"): ...``: the selected tensors from ``donor`` (a folder or a
    ``Donor``), read from its checkpoint for this block only, and the model restored bit for bit after."""
    from sfn_merge_plugin.selectors import select

    layout = layout or model_layout(model)
    donor = donor if isinstance(donor, Donor) else Donor(donor)
    donor.check_matches(layout)
    edit = swap_edit(model, layout, select(layout, modules, layers), donor, label=f"swap({modules})@{layers}")
    with intervene(model, edit, layout):
        yield model
