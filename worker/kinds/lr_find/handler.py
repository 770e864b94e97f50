"""The `lr_find` kind's handler: the range test (llm/lr_find.py) of pretraining (a text dataset, tokenized on first
use) or of SFT (a chat dataset and the input model), then the curve's smoothed values and the suggestion's marker
written as metrics for the Jobs tab's chart (card.py), and the suggestion in the summary."""

from __future__ import annotations

import math
from typing import Any

from db.models import DatasetKind
from llm.lr_find import LRFindConfig, summary
from llm.params import settings_of
from llm.pretrain_config import SHAPE_FIELDS
from llm.sft_config import SFTConfig
from worker.jobs.context import JobContext, Outcome, dataset_path, ensure_prepared
from worker.jobs.training import train_config_from


def _values(config_class: type, params: dict[str, Any]) -> dict[str, Any]:
    return {name: params[name] for name in settings_of(config_class) if name in params}


def run(ctx: JobContext) -> Outcome:
    from llm.lr_find import lr_find_pretrain, lr_find_sft

    params = ctx.params
    config = LRFindConfig(**_values(LRFindConfig, params))
    loop = train_config_from(ctx)
    common = {"config": config, "train_config": loop, "data_dir": ctx.data_dir, "on_metrics": ctx.on_metrics,
              "should_stop": ctx.should_stop, "log": ctx.log}
    if ctx.dataset.kind == DatasetKind.chat:
        document = lr_find_sft(ctx.input_model_dir(), dataset_path(ctx), ctx.run_dir,
                               sft_config=SFTConfig(**_values(SFTConfig, params)), **common)
    else:
        prepared = ensure_prepared(ctx, params["tokenizer"])
        if prepared is None:
            return Outcome(stopped=True, summary="stopped while preparing the data")
        overrides = {name: params[name] for name in SHAPE_FIELDS if name in params}
        document = lr_find_pretrain(prepared, ctx.run_dir, preset=params["preset"], model_overrides=overrides or None,
                                    **common)
    if document["cancelled"]:
        return Outcome(stopped=True, summary=f"stopped at step {len(document['points'])}")
    record_curve(ctx, document)
    return Outcome(summary=summary(document))


def record_curve(ctx: JobContext, document: dict) -> None:
    """The smoothed loss at every step, the suggestion (a card) and its marker: two points, at the suggestion's step
    and the next, from the start's smoothed loss down to the lowest (card.py draws them as a line)."""
    points = document["points"]
    for point in points:
        ctx.on_metrics({"step": point["step"], "smoothed_loss": point["smoothed"]})
    suggested = document.get("suggested_lr")
    if suggested is None or len(points) < 2:
        return
    ctx.on_metrics({"step": points[-1]["step"], "suggested_lr": suggested})
    index = min(range(len(points) - 1), key=lambda i: abs(math.log(points[i]["lr"] / suggested)))
    smoothed = [p["smoothed"] for p in points]
    ctx.on_metrics({"step": points[index]["step"], "suggested_marker": smoothed[0]})
    ctx.on_metrics({"step": points[index + 1]["step"], "suggested_marker": min(smoothed)})
