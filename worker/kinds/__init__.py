"""The job kinds the workbench runs, one folder each; `KINDS` maps a kind's name to its declaration.

A kind's folder holds its parts, each in its own file where the kind has it:

    spec.py       the declaration `SPEC` (see `worker.jobs.spec.JobKindSpec`): params, dataset and model kinds,
                  the submit-time `check`
    estimate.py   the run's size before it is queued: the one function the form's preview and the check call
    handler.py    `run(ctx)`, what the worker runs (heavy `llm` imports inside it: importing the registry
                  loads no torch)
    card.py       its metric cards and plots for the Jobs tab, its model's report-card rows
    form.py       (optional, read by the web UI only) what its Train sub-tab has of its own; web/ui/train_tab.py
                  builds the rest of the sub-tab from the declaration
    __init__.py   exposes `SPEC`

Adding a kind = its folder + its `llm/` code, and one line in `_DECLARED` below. Everything else (validation,
the REST schema, the Train sub-tabs, the Jobs tab's cards and plots, the report card, the worker's dispatch)
reads `KINDS`.
"""

from __future__ import annotations

from worker.kinds import (clean, demo, dpo, evaluate, generate, grpo, kto, lr_find, pretrain, prepare, reward, sft,
                          train_tokenizer)
from worker.jobs.spec import JobKindSpec, Plot

_DECLARED = (clean.SPEC, prepare.SPEC, train_tokenizer.SPEC, pretrain.SPEC, sft.SPEC, generate.SPEC, reward.SPEC,
             dpo.SPEC, kto.SPEC, grpo.SPEC, evaluate.SPEC, lr_find.SPEC, demo.SPEC)

KINDS: dict[str, JobKindSpec] = {spec.kind: spec for spec in _DECLARED}


def get_spec(kind: str) -> JobKindSpec | None:
    """The declaration of the kind named `kind`, or None when no such kind is declared."""
    return KINDS.get(kind) if isinstance(kind, str) else None


__all__ = ["KINDS", "JobKindSpec", "Plot", "get_spec"]
