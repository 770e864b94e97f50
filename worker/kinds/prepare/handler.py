"""The `prepare` kind's handler: re-prepare a text dataset with a tokenizer and report its stats."""

from __future__ import annotations

import json

from llm.params import settings_of
from llm.prepare_config import PrepareConfig
from worker.jobs.context import JobContext, Outcome, ensure_prepared

PREPARE_FIELDS = tuple(settings_of(PrepareConfig))


def run(ctx: JobContext) -> Outcome:
    params = ctx.params
    options = {name: params[name] for name in PREPARE_FIELDS if name in params}
    # An explicit prepare job always re-prepares: that is why someone asked for it.
    out_dir = ensure_prepared(ctx, params["tokenizer"], force=True, **options)
    if out_dir is None:
        return Outcome(stopped=True, summary="stopped while preparing; nothing was written")
    stats = json.loads((out_dir / "stats.json").read_text())
    ctx.log("stats " + json.dumps({key: stats[key] for key in
                                   ("documents", "tokens", "bytes", "bytes_per_token", "duplicates_removed",
                                    "empty_removed", "train", "val") if key in stats}))
    return Outcome(summary=f"{stats['tokens']:,} tokens, {stats['bytes_per_token']:.2f} bytes per token")
