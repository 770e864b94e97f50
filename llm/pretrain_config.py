"""`PretrainConfig`: the model a pretraining run builds, a preset and the parts of its shape a run may change.

Declared once here (`llm.params.setting`) for the worker's `pretrain` kind, its Train form and `workbench
pretrain`. Imports no torch: the presets themselves are `llm.model.PRESETS`, read when a run is built or sized.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm.params import setting

# The fields of llm.model.GPTConfig a run may set on top of its preset (the context length is the training
# block_size; the vocabulary is the tokenizer's).
SHAPE_FIELDS = ("n_layer", "n_head", "n_embd", "dropout")


@dataclass
class PretrainConfig:
    preset: str = setting("tiny", help="model shape: tiny (CPU-sized), small, gpt2-124m")
    n_layer: int | None = setting(None, type="int", minimum=1, maximum=96, advanced=True,
                                  help="transformer blocks (default: the preset's)")
    n_head: int | None = setting(None, type="int", minimum=1, maximum=64, advanced=True,
                                 help="attention heads (default: the preset's)")
    n_embd: int | None = setting(None, type="int", minimum=8, maximum=8192, advanced=True,
                                 help="width (default: the preset's)")
    dropout: float | None = setting(None, type="float", minimum=0, maximum=0.9, advanced=True,
                                    help="dropout (default: the preset's)")

    @property
    def overrides(self) -> dict:
        """The shape given on top of the preset (what `llm.pretrain.pretrain` takes as `model_overrides`)."""
        return {name: getattr(self, name) for name in SHAPE_FIELDS if getattr(self, name) is not None}
