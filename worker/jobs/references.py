"""The rows a job's params name (its dataset, its model): they must exist, be of a kind the job takes and have
their files. Shared by the submit check (`worker.jobs.lifecycle.validate_params`) and kinds that name a second
row of their own (the `generate` kind's `model_id_b`), and what a model's delete check asks: which models a job's
params name (`models_named`)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.models import Dataset, Model
from worker.jobs.params import JobParamsError
from worker.jobs.spec import JobKindSpec


def check_reference(session: Session, spec: JobKindSpec, field: str, row_class: type, row_id: int,
                     allowed_kinds: tuple) -> Dataset | Model:
    """The dataset or model a job's `field` names: it must exist and be of a kind the job takes."""
    noun = row_class.__tablename__.rstrip("s")  # dataset | model
    row = session.get(row_class, row_id)
    if row is None:
        raise JobParamsError(field, f"no {noun} with id {row_id}")
    if row.kind not in allowed_kinds:
        wanted = " or ".join(kind.value for kind in allowed_kinds)
        raise JobParamsError(field, f"{noun} {row_id} is a {row.kind.value} {noun}; the {spec.kind} job "
                                    f"{'needs' if noun == 'dataset' else 'starts from'} a {wanted} {noun}")
    if not row.path:
        raise JobParamsError(field, f"{noun} {row_id} has no stored files")
    return row


def models_named(params: dict) -> set[int]:
    """Every model id a job's params name. Kinds name models only through params called `model_id` (the input
    model), `model_id_<x>` (another one: `generate`'s `model_id_b`) or `model_ids` (a list: `evaluate`)."""
    named: set[int] = set()
    for name, value in (params or {}).items():
        if name == "model_ids" and isinstance(value, list):
            named.update(item for item in value if isinstance(item, int))
        elif (name == "model_id" or name.startswith("model_id_")) and isinstance(value, int):
            named.add(value)
    return named
