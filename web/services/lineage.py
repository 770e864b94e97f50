"""Where a model came from and how good it is: its lineage graph and its report card.

    model_lineage(model_id)   {"nodes": [...], "edges": [...]}: dataset → job → model → child models, for the
                              model's ancestors and descendants, with the labeling projects and arena votes
                              that trained each reward / DPO model (read from the run's pairs_sources.json),
                              and the labeling projects and chat thumbs of each KTO model (feedback_sources.json),
                              the trained tokenizer a job used and the train_tokenizer job (and its data) that
                              made it; a deleted dataset stays, marked deleted (`deleted: True`)
    report_card(model_id)     kind, tokenizer, shape and parameters, the rows the kind of job that made it
                              declares (its card.py: validation bits per byte, SFT token accuracy, reward-model
                              accuracy, DPO's held-out preference accuracy and KL, tokens seen, ...), arena rating

Both read what training left behind (Model and Job rows, the final metrics, the run directory's reports);
nothing here is stored twice.
"""

from __future__ import annotations

import ast
import json
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Dataset, Job, JobEvent, JobStatus, LabelingProject, Metric, Model
from db.settings import Settings, safe_join
from llm.learning_watch import read_warning
from llm.tokenizer import BUILTIN_TOKENIZERS
from web.services.common import NotFound, enum_value, reading
from worker.kinds import get_spec

MAX_NODES = 200


def _model(session: Session, model_id: int) -> Model:
    model = session.get(Model, model_id) if 0 < model_id < 2 ** 63 else None
    if model is None:
        raise NotFound(f"model {model_id} does not exist")
    return model


def _pair_sources(settings: Settings, job: Job) -> dict:
    """What a preference job recorded of its data: pairs_sources.json (reward, DPO) or feedback_sources.json (KTO)."""
    if not job.run_dir:
        return {}
    for name in ("pairs_sources.json", "feedback_sources.json"):
        path = safe_join(settings.data_dir, job.run_dir) / name
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def model_lineage(settings: Settings, model_id: int, session: Session | None = None) -> dict:
    """The graph around a model: every ancestor and descendant, each with the job and data that made it."""
    with reading(session) as s:
        start = _model(s, model_id)
        chain: dict[int, Model] = {}
        node = start
        while node is not None and node.id not in chain and len(chain) < MAX_NODES:  # ancestors
            chain[node.id] = node
            node = s.get(Model, node.parent_model_id) if node.parent_model_id else None
        frontier = [start.id]
        while frontier and len(chain) < MAX_NODES:  # descendants, breadth first
            children = list(s.scalars(select(Model).where(Model.parent_model_id.in_(frontier))))
            frontier = [child.id for child in children if child.id not in chain]
            chain.update({child.id: child for child in children})

        nodes: dict[str, dict] = {}
        edges: list[tuple[str, str]] = []

        def add(key: str, **attributes) -> str:
            nodes.setdefault(key, {"id": key, **attributes})
            return key

        for model in chain.values():
            model_key = add(f"model:{model.id}", type="model", label=f"{model.name} ({enum_value(model.kind)})",
                            model_id=model.id, selected=model.id == start.id)
            if model.parent_model_id in chain:
                parent_key = f"model:{model.parent_model_id}"
            else:
                parent_key = None
            job = s.get(Job, model.job_id) if model.job_id else None
            if job is None:
                if parent_key:
                    edges.append((parent_key, model_key))
                continue
            job_key = _add_job(s, job, add, edges)
            edges.append((job_key, model_key))
            if parent_key:
                edges.append((parent_key, job_key))
            sources = _pair_sources(settings, job)
            for project_id in sources.get("project_ids", []):
                project = s.get(LabelingProject, project_id)
                label = f"labels: {project.name}" if project else f"labeling project {project_id}"
                edges.append((add(f"project:{project_id}", type="labels", label=label, project_id=project_id), job_key))
            arena_votes = (sources.get("counts") or {}).get("arena")
            if arena_votes:
                edges.append((add("arena", type="arena", label="arena votes"), job_key))
                nodes["arena"].setdefault("votes", {})[job.id] = arena_votes
            thumbs = (sources.get("counts") or {}).get("thumbs")
            if thumbs:
                edges.append((add("thumbs", type="arena", label="chat thumbs"), job_key))
                nodes["thumbs"].setdefault("answers", {})[job.id] = thumbs["good"] + thumbs["bad"]
            tokenizer = (job.params or {}).get("tokenizer")
            if tokenizer and tokenizer not in BUILTIN_TOKENIZERS:  # trained here: by a train_tokenizer job
                tokenizer_key = add(f"tokenizer:{tokenizer}", type="tokenizer", label=f"tokenizer {tokenizer}",
                                    tokenizer=tokenizer)
                edges.append((tokenizer_key, job_key))
                maker = _tokenizer_job(s, tokenizer)
                if maker is not None:
                    edges.append((_add_job(s, maker, add, edges), tokenizer_key))
        return {"nodes": list(nodes.values()), "edges": [{"from": a, "to": b} for a, b in dict.fromkeys(edges)]}


def _add_job(session: Session, job: Job, add, edges: list[tuple[str, str]]) -> str:
    """The job's node, with the dataset it read: a deleted one stays in the graph, marked deleted (the job keeps
    its id in its params and the deletion's event keeps its name); a dataset the clean job made, with that job and
    the raw dataset it read."""
    job_key = add(f"job:{job.id}", type="job", label=f"job #{job.id} {enum_value(job.kind)}", job_id=job.id)
    dataset_id = job.dataset_id or (job.params or {}).get("dataset_id")
    if isinstance(dataset_id, int):
        dataset = session.get(Dataset, dataset_id) if dataset_id == job.dataset_id else None
        if dataset is not None:
            key = add(f"dataset:{dataset.id}", type="dataset", label=f"{dataset.name} ({enum_value(dataset.kind)})",
                      dataset_id=dataset.id)
            # A dataset the clean job made: raw data -> clean job -> this dataset (its stats say which job).
            maker_id = ((dataset.stats or {}).get("cleaned_from") or {}).get("job_id")
            maker = session.get(Job, maker_id) if isinstance(maker_id, int) and maker_id != job.id else None
            if maker is not None:
                edges.append((_add_job(session, maker, add, edges), key))
        else:
            name = _deleted_dataset_name(session, job.id, dataset_id)
            key = add(f"dataset:{dataset_id}", type="dataset", deleted=True, dataset_id=dataset_id,
                      label=f"{name or f'dataset #{dataset_id}'} (deleted)")
        edges.append((key, job_key))
    return job_key


DELETED_DATASET = re.compile(r"^dataset #(\d+) (.+) deleted$")  # the detail services.delete_dataset records


def _deleted_dataset_name(session: Session, job_id: int, dataset_id: int) -> str | None:
    """The name a deleted dataset had, from the event its deletion left on the job."""
    details = session.scalars(select(JobEvent.detail).where(JobEvent.job_id == job_id,
                                                            JobEvent.action == "dataset_deleted"))
    for detail in details:
        found = DELETED_DATASET.match(detail or "")
        if found and int(found.group(1)) == dataset_id:
            try:
                return str(ast.literal_eval(found.group(2)))  # stored as repr(name)
            except (ValueError, SyntaxError):
                return found.group(2)
    return None


def _tokenizer_job(session: Session, name: str) -> Job | None:
    """The newest finished train_tokenizer job that made the tokenizer `name`."""
    jobs = session.scalars(select(Job).where(Job.kind == "train_tokenizer", Job.status == JobStatus.succeeded)
                           .order_by(Job.id.desc()))
    return next((job for job in jobs if (job.params or {}).get("name") == name), None)


def _final_metrics(session: Session, job_id: int) -> dict[str, float]:
    """Each metric's value at its last step."""
    rows = session.execute(select(Metric.name, Metric.step, Metric.value).where(Metric.job_id == job_id)
                           .order_by(Metric.step, Metric.id))
    return {name: value for name, _, value in rows}


def report_card(settings: Settings, model_id: int, session: Session | None = None) -> list[tuple[str, str]]:
    """(label, value) rows for the Models tab: what is known about this model, nothing made up."""
    from web.services.arena import leaderboard

    with reading(session) as s:
        model = _model(s, model_id)
        config = model.config or {}
        rows: list[tuple[str, str]] = [("kind", enum_value(model.kind)), ("tokenizer", model.tokenizer)]
        if config:
            rows.append(("shape", f"{config.get('n_layer')} layers × {config.get('n_embd')} wide, "
                                  f"context {config.get('block_size')}"))
        parameters = _parameter_count(config)
        if parameters:
            rows.append(("parameters", f"{parameters:,}"))
        job = s.get(Job, model.job_id) if model.job_id else None
        if job is not None:
            rows += _job_rows(settings, s, job)
        rating = next((row for row in leaderboard(s, rounds=50) if row["model_id"] == model.id), None)
        if rating:
            rows.append(("arena rating", f"{rating['rating']:.0f} ({rating['lower']:.0f}–{rating['upper']:.0f}, "
                                         f"{rating['votes']} votes)"))
        return rows


def _job_rows(settings: Settings, session: Session, job: Job) -> list[tuple[str, str]]:
    """The report-card rows the job's kind declares (worker/kinds/<kind>/card.py): its final metrics, then what
    its run directory reports, and the not-learning warning when its run had one."""
    spec = get_spec(job.kind)
    if spec is None:
        return []
    metrics = _final_metrics(session, job.id)
    rows = [(row.label, row.shown(metrics[row.metric])) for row in spec.report_card if row.metric in metrics]
    if spec.run_report is not None and job.run_dir:
        rows += spec.run_report(safe_join(settings.data_dir, job.run_dir))
    warning = read_warning(safe_join(settings.data_dir, job.run_dir)) if job.run_dir else None
    if warning:  # the loop's not-learning watch (llm/learning_watch.py) said so: the model may not be worth much
        rows.append(("learning watch", warning))
    return rows


def _parameter_count(config: dict) -> int | None:
    """Parameters of a GPT of this shape, counted on a model built on the meta device (no memory, no time)."""
    import torch

    from llm.model import GPT, GPTConfig

    try:
        with torch.device("meta"):
            model = GPT(GPTConfig.from_dict(config))
    except (KeyError, TypeError, ValueError):
        return None
    return sum(p.numel() for p in model.parameters())  # a tied matrix is yielded once
