"""The `pretrain` kind's own part of its Train sub-tab (web/ui/train_tab.py builds the rest): the model presets,
offered from the model code (`llm.model.PRESETS`)."""

from __future__ import annotations

from web.ui.train_tab import Chooser


def presets(settings) -> list[tuple[str, str]]:
    from llm.model import PRESETS

    return [(name, name) for name in PRESETS]


def choosers(spec) -> list[Chooser]:
    preset = spec.params["preset"]
    return [Chooser("preset", "Model preset (tiny: CPU-sized)", presets, static=True, default=preset.default,
                    info=preset.help)]
