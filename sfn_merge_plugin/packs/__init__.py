"""Module packs: the paper's "o_proj plugin" as a file you can extract, check, apply, compress and hot-swap.

An *exact pack* is a folder holding the fine-tune's values of the selected tensors (``model.safetensors``),
the fine-tune's ``config.json``, a ``manifest.json`` (selection, sources, SHA-256 of every base tensor it
expects and of its own tensors) and a model card. A *LoRA pack* is a standard PEFT adapter made from a
truncated SVD of each selected module's delta (plus the same manifest). Modules, one job each:

  manifest.py  the manifest, checksums and the checks every reader runs
  extract.py   base + fine-tune -> exact pack (streamed)
  lora.py      base + fine-tune -> PEFT LoRA adapter (truncated SVD per module)
  apply.py     base + pack -> merged model folder (raw-byte copy, checked before anything is written)
  hotswap.py   one loaded base, several packs, switch per call (``PackSet``)
  measure.py   accuracy-vs-rank curves for the lab; sizes.py: pack sizes of real models from their configs
  command.py   ``sfn pack extract|info|apply``
"""
