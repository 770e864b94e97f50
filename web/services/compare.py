"""Compare runs: models' evaluations side by side and their training curves overlaid (the Models tab's comparison).

An evaluation is what an `evaluate` job wrote for a model: its Metric rows at the step where the metric
`model_id` names that model (worker/kinds/evaluate/handler.py). For each model and dataset the newest
evaluation counts, whatever became of the rest of its job (a cancelled job keeps the models it finished).
The table is `llm.evaluation_table`'s, the one `workbench evaluate` prints. The curves are the training metrics
of the job that made each model (`Model.job_id`).
"""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from db.models import Dataset, Job, Metric, Model
from llm.evaluation_table import results_table
from db.models import User
from web.services.access import Action, require
from web.services.common import NotFound, enum_value, reading

EVALUATE_KIND = "evaluate"
CURVES = ("loss", "val_loss")  # the training metrics drawn over each other


def _models(session: Session, model_ids: list[int]) -> list[Model]:
    rows = {model.id: model for model in session.scalars(select(Model).where(Model.id.in_(model_ids)))}
    missing = [model_id for model_id in model_ids if model_id not in rows]
    if missing:
        raise NotFound(f"model {', '.join(map(str, missing))} does not exist")
    return [rows[model_id] for model_id in model_ids]


def _evaluations(session: Session, models: list[Model]) -> list[dict]:
    """The newest evaluation of each model on each dataset, in the models' order, datasets by id."""
    names = {model.id: model.name for model in models}
    # (job, step) where an evaluate job recorded one of these models, newest job first.
    marks = session.execute(
        select(Metric.job_id, Metric.step, Metric.value, Job.dataset_id, Dataset.name)
        .join(Job, Job.id == Metric.job_id).outerjoin(Dataset, Dataset.id == Job.dataset_id)
        .where(Job.kind == EVALUATE_KIND, Metric.name == "model_id", Metric.value.in_([float(i) for i in names]))
        .order_by(Metric.job_id.desc())).all()
    newest: dict[tuple[int, int | None], tuple[int, int, str | None]] = {}
    for job_id, step, model_id, dataset_id, dataset_name in marks:
        newest.setdefault((int(model_id), dataset_id), (job_id, step, dataset_name))
    if not newest:
        return []
    places = [and_(Metric.job_id == job_id, Metric.step == step) for job_id, step, _ in newest.values()]
    values: dict[tuple[int, int], dict[str, float]] = {}
    for job_id, step, name, value in session.execute(
            select(Metric.job_id, Metric.step, Metric.name, Metric.value).where(or_(*places)).order_by(Metric.id)):
        values.setdefault((job_id, step), {})[name] = value
    rows = []
    for (model_id, dataset_id), (job_id, step, dataset_name) in newest.items():
        numbers = values[(job_id, step)]
        for count in ("questions", "tokens", "bytes"):
            if count in numbers:
                numbers[count] = int(numbers[count])
        rows.append({"model_id": model_id, "model": names[model_id], "dataset_id": dataset_id,
                     "data": dataset_name or f"dataset {dataset_id} (deleted)", "job_id": job_id, **numbers})
    order = {model.id: position for position, model in enumerate(models)}
    return sorted(rows, key=lambda row: (row["dataset_id"] or 0, order[row["model_id"]]))


def _curves(session: Session, models: list[Model]) -> list[dict]:
    """Each model's training curves ({metric: [(step, value), ...]}), from the job that made it; none for an
    imported model."""
    made_by = {model.job_id: model for model in models if model.job_id is not None}
    series: dict[int, dict[str, list[tuple[int, float]]]] = {}
    if made_by:
        for job_id, step, name, value in session.execute(
                select(Metric.job_id, Metric.step, Metric.name, Metric.value)
                .where(Metric.job_id.in_(made_by), Metric.name.in_(CURVES)).order_by(Metric.job_id, Metric.step)):
            series.setdefault(job_id, {}).setdefault(name, []).append((step, value))
    return [{"model_id": model.id, "model": model.name, "job_id": model.job_id,
             "series": series.get(model.job_id, {})} for model in models]


def compare_models(model_ids: list[int], session: Session | None = None,
                   viewer: User | dict | None = None) -> dict:
    """Models side by side: {"models": [{id, name, kind}], "evaluations": [one row per model and dataset, its
    numbers by metric name], "table": {"headings", "rows"} (llm.evaluation_table), "curves": [per model]}."""
    require(viewer, Action.read_training)
    model_ids = list(dict.fromkeys(int(model_id) for model_id in model_ids))
    with reading(session) as s:
        models = _models(s, model_ids) if model_ids else []
        evaluations = _evaluations(s, models) if models else []
        curves = _curves(s, models) if models else []
        headings, rows = results_table(evaluations) if evaluations else ([], [])
        return {"models": [{"id": model.id, "name": model.name, "kind": enum_value(model.kind)} for model in models],
                "evaluations": evaluations, "table": {"headings": headings, "rows": rows}, "curves": curves}
