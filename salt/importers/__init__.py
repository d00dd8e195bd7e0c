"""Released video encoders as run folders: `python -m salt import-encoder {videomae,vjepa2} SOURCE OUT_DIR`.

SOURCE is a local copy of a release, in either of two formats:
  - Hugging Face transformers: a folder with config.json and safetensors weights (`save_pretrained` of
    VideoMAEModel / VideoMAEForPreTraining / VideoMAEForVideoClassification, VJEPA2Model / VJEPA2ForVideoClassification);
  - the project's own release: a .pth / .pt file of MCG-NJU/VideoMAE (a "model" / "module" entry, `encoder.` keys)
    or of facebookresearch/vjepa2 (an "encoder" / "target_encoder" entry, `module.` / `backbone.` prefixes).

Every tensor of the source is accounted for: it becomes an encoder tensor, or it belongs to a part that is not
the encoder (decoder, predictor, classifier) and is listed in the provenance as left out, with the reason;
anything else is an error naming it. The result is a run folder of its own kind, method `imported` (config.yaml, one
checkpoint holding the encoder alone, done.json with provenance), written by the training loop's writer
(salt.checkpoint); it serves as `objective.teacher_checkpoint` and as `python -m salt eval` target (no held-out
loss: it has no objective of its own).

Modules: `release` (reading a release: files, architecture), `keymaps` (its tensors under VideoViT's names, what is
left out), `run` (the run folder).
"""
from __future__ import annotations

from salt.importers.keymaps import LEFT_OUT, ImportError_
from salt.importers.release import FAMILIES, Release, read_release
from salt.importers.run import import_encoder, model_overrides, run_teacher_overrides, teacher_overrides

__all__ = ["FAMILIES", "LEFT_OUT", "ImportError_", "Release", "import_encoder", "model_overrides", "read_release",
           "run_teacher_overrides", "teacher_overrides"]
