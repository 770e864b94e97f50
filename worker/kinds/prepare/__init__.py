"""The `prepare` kind: clean, deduplicate, split and tokenize a text dataset into token files."""

from __future__ import annotations

import json

from db.models import DatasetKind, JobKind
from llm.params import Setting
from worker.jobs.context import JobContext, Outcome, ensure_prepared
from worker.jobs.spec import DATASET_ID, TOKENIZER, JobKindSpec

PARAMS = {
    "dataset_id": DATASET_ID,
    "tokenizer": TOKENIZER,
    "val_fraction": Setting("float", minimum=0, maximum=0.5, exclusive_minimum=True,
                            help="share of documents held out for validation (default 0.05)"),
    "seed": Setting("int", minimum=0, maximum=2**32 - 1, help="seed of the split (default 0)"),
    "scrub_pii": Setting("bool", help="replace emails and phone numbers before tokenizing"),
}


def run(ctx: JobContext) -> Outcome:
    params = ctx.params
    options = {name: params[name] for name in ("val_fraction", "seed", "scrub_pii") if name in params}
    # An explicit prepare job always re-prepares: that is why someone asked for it.
    out_dir = ensure_prepared(ctx, params["tokenizer"], force=True, **options)
    if out_dir is None:
        return Outcome(stopped=True, summary="stopped while preparing; nothing was written")
    stats = json.loads((out_dir / "stats.json").read_text())
    ctx.log("stats " + json.dumps({key: stats[key] for key in
                                   ("documents", "tokens", "bytes", "bytes_per_token", "duplicates_removed",
                                    "empty_removed", "train", "val") if key in stats}))
    return Outcome(summary=f"{stats['tokens']:,} tokens, {stats['bytes_per_token']:.2f} bytes per token")


SPEC = JobKindSpec(
    kind=JobKind.prepare, title="Prepare data",
    description="Clean, deduplicate, split and tokenize a text dataset (pretraining does this on its own).",
    params=PARAMS, handler=run, dataset_kinds=(DatasetKind.text,),
)
