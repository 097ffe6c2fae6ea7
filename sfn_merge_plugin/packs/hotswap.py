"""One loaded base, several packs, switched per call without reloading.

    packs = PackSet(model)                      # a base loaded in its stored dtype (dtype="auto")
    packs.attach("reasoning", "reasoning.sfnpack/")
    packs.attach("r16", "reasoning-lora/")      # LoRA packs too (merged into new weights once, at attach)
    with packs.active("reasoning"):
        model.generate(...)                     # base + pack
    # here the model is the base again, bit for bit

Apply and restore are the project's one intervention engine (``intervention.intervene``): on the CPU a
parameter's storage is swapped for the pack's tensor and swapped back; on an accelerator the original is
kept on the host and copied back. Attaching checks the pack against its manifest and the loaded weights
against the checksums the pack expects, so a pack never runs on the wrong base.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from sfn_merge_plugin.packs.manifest import ADAPTER_WEIGHTS, MANIFEST, WEIGHTS, PackError, pack_kind, read_manifest


class PackSet:
    """Packs attached to one loaded model; at most one active at a time."""

    def __init__(self, model):
        from sfn_merge_plugin.intervention import model_layout

        self.model = model
        self.layout = model_layout(model)
        self._edits = {}  # name -> intervention.Edit
        self._active = None

    def names(self) -> list:
        return list(self._edits)

    def attach(self, name: str, path: str) -> None:
        """Read a pack (exact or LoRA) and check it against the loaded model; nothing in the model changes."""
        from sfn_merge_plugin.intervention import Edit

        if name in self._edits:
            raise PackError(f"a pack named {name!r} is attached already; detach it first or choose another name")
        kind = pack_kind(path)
        replace = exact_replacements(self.model, self.layout, path) if kind == "exact" else \
            lora_replacements(self.model, self.layout, path)
        self._edits[name] = Edit(replace, (), name)

    def detach(self, name: str) -> None:
        if name == self._active:
            raise PackError(f"pack {name!r} is active; leave its `with packs.active(...)` block first")
        self._edits.pop(name, None)

    @contextlib.contextmanager
    def active(self, name: str):
        """Inside: the model is base + pack ``name``; on exit every parameter is restored bit for bit."""
        from sfn_merge_plugin.intervention import intervene

        if name not in self._edits:
            raise PackError(f"no pack named {name!r} is attached; attached: {', '.join(self._edits) or 'none'}")
        if self._active is not None:
            raise PackError(f"pack {self._active!r} is active; packs switch one at a time (leave its block first)")
        self._active = name
        try:
            with intervene(self.model, self._edits[name], self.layout):
                yield self.model
        finally:
            self._active = None


def exact_replacements(model, layout, path) -> dict:
    """{tensor name: new values} of an exact pack, as the merged folder of ``sfn pack apply`` holds them."""
    from sfn_merge_plugin.intervention import current_tensor
    from sfn_merge_plugin.packs.check import check_model_checksums, check_pack_tensors
    from sfn_merge_plugin.tensor_io import SafetensorsReader

    manifest = read_manifest(path)
    if (layout.architecture, layout.num_layers) != (manifest.architecture, manifest.num_layers):
        raise PackError(f"pack {path} is for {manifest.architecture} with {manifest.num_layers} layers, the loaded model "
                        f"is {layout.architecture} with {layout.num_layers}")
    check_pack_tensors(path, manifest)
    check_model_checksums(model, layout, manifest, path)
    replace = {}
    with SafetensorsReader(str(Path(path) / WEIGHTS)) as r:
        for t in manifest.tensors:
            theirs = r.get_tensor(t.name)
            if t.blocks:
                out = current_tensor(model, layout, t.name).detach().to("cpu", copy=True)
                for _, dim, start, stop in t.blocks:
                    out.narrow(dim, start, stop - start).copy_(theirs.narrow(dim, start, stop - start))
                theirs = out
            replace[t.name] = theirs
    head = next((t for t in layout.tensors if t.tied_to), None)
    if head is not None and head.tied_to in replace and head.name not in replace and not manifest.untie:
        replace[head.name] = replace[head.tied_to]  # embed and head from a tied fine-tune: they stay one tensor
    return replace


def lora_replacements(model, layout, path) -> dict:
    """{tensor name: W + scale * B @ A} (and modules_to_save tensors) of a LoRA adapter over the loaded weights."""
    from sfn_merge_plugin.intervention import current_tensor
    from sfn_merge_plugin.packs.check import check_model_checksums
    from sfn_merge_plugin.packs.lora_apply import parse_adapter, scale_of
    from sfn_merge_plugin.tensor_io import SafetensorsReader

    config, lora, whole = parse_adapter(path)
    infos = layout.by_name()
    if (Path(path) / MANIFEST).is_file():
        check_model_checksums(model, layout, read_manifest(path), path)
    replace = {}
    with SafetensorsReader(str(Path(path) / ADAPTER_WEIGHTS)) as ad:
        for module, parts in lora.items():
            name = module + ".weight"
            if name not in infos or infos[name].tied_to:
                raise PackError(f"adapter {path} targets {module}, which the loaded model does not have")
            w = current_tensor(model, layout, name)
            A, B = ad.get_tensor(parts["A"]).float(), ad.get_tensor(parts["B"]).float()
            if (B.shape[0], A.shape[1]) != tuple(w.shape):
                raise PackError(f"adapter {path}: {module} is {B.shape[0]} x {A.shape[1]}, the model's {tuple(w.shape)}")
            s = scale_of(config, module)
            replace[name] = (w.detach().float().cpu() + s * (B @ A)).to(w.dtype)
            if "bias" in parts:
                b = current_tensor(model, layout, module + ".bias")
                replace[module + ".bias"] = (b.detach().float().cpu() + s * ad.get_tensor(parts["bias"]).float()).to(b.dtype)
        for name, key in whole.items():
            if name not in infos or infos[name].tied_to:
                raise PackError(f"adapter {path} saves {name}, which the loaded model does not have as its own tensor")
            replace[name] = ad.get_tensor(key).to(current_tensor(model, layout, name).dtype)
    return replace


def activate_for_run(model, path: str) -> PackSet:
    """Attach the pack at ``path`` and leave it active for the rest of the process (``sfn-hf``'s ``pack=``)."""
    packs = PackSet(model)
    packs.attach("pack", path)
    context = packs.active("pack")
    context.__enter__()
    packs._run_context = context  # kept alive with the model
    return packs
