"""The job kinds the workbench runs, one module each; `KINDS` maps a `JobKind` to its declaration.

Adding a kind = one new module here with its `SPEC` (see `base.JobKindSpec`) + its `llm/` code,
and one line in `_DECLARED` below. Everything else (validation, the REST schema, the Train forms,
the Jobs tab's cards and plots, the worker's dispatch) reads `KINDS`.
"""

from __future__ import annotations

from db.models import JobKind
from worker.kinds import dpo, generate, pretrain, prepare, reward, sft, train_tokenizer
from worker.jobs.spec import JobKindSpec, Plot

_DECLARED = (prepare.SPEC, train_tokenizer.SPEC, pretrain.SPEC, sft.SPEC, generate.SPEC, reward.SPEC, dpo.SPEC)

KINDS: dict[JobKind, JobKindSpec] = {spec.kind: spec for spec in _DECLARED}


def get_spec(kind: str) -> JobKindSpec | None:
    """The declaration of the kind named `kind`, or None when no such kind is declared."""
    return KINDS.get(kind) if isinstance(kind, str) else None


__all__ = ["KINDS", "JobKindSpec", "Plot", "get_spec"]
