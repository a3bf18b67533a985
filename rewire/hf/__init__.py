"""Hugging Face interop: export rewire workdirs to HF model directories, and import HF checkpoints.

rewire's param trees use Hugging Face's Flax names already (`rewire.models`), so conversion is
renaming-free on the Flax side; PyTorch needs one explicit, reversible name/transpose map, written out in
`convert.py` rather than going through transformers' torch-dependent converters.

  convert.py   names, shapes and `model.json` <-> HF config (`ModelInfo`), reading HF weight files
  export.py    workdir -> HF directory (Flax msgpack, safetensors in PyTorch names, tokenizer files)
  importer.py  HF directory -> workdir;  cli.py / __main__.py  `python -m rewire.hf export|import`

What differs between families (their HF config classes, checkpoint entries to drop or check, HF Flax
quirks) is each family's own (`rewire.models.family.Family.hf_*`). `model.json` is
`{"architecture": ..., **the family's config}`; task models add `"num_labels"` and optionally
`"label_names"` (by class id), which become HF's `id2label`; other keys (task settings, provenance) are
metadata that export ignores.

May import: the core (modules directly in rewire/), rewire.data, rewire.models.
"""

from rewire.hf.cli import main
from rewire.hf.export import export_checkpoint
from rewire.hf.importer import import_checkpoint, write_workdir

__all__ = ["export_checkpoint", "import_checkpoint", "main", "write_workdir"]
