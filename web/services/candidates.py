"""Browsing the candidate answers generate jobs made: each prompt with its K answers, which model wrote each and
with which sampling settings, searched and filtered (what a team reviews before and while it labels).

    browse_candidates(viewer, job_id=, model_id=, search=, offset=, limit=)
        {"total": prompts that match, "offset", "prompts": [{prompt_id, text, messages, answers: [{completion_id,
        text, model_id, model, job_id, sampling, seed, tokens}]}]}, newest prompts first
    candidate_sources(viewer)
        {"jobs": [{id, name, params, kind, status, owner, answers}], "models": [{id, name, answers}]}: what the
        filters offer

Candidates name the models that wrote them, so they are for the training team (`Action.read_training`), never
for labelers (who label blind).
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from db.models import Completion, Job, Model, Prompt, User
from web.services.access import Action, require
from web.services.common import InvalidInput, enum_value, reading

MAX_PAGE = 50          # prompts on one page
MAX_SEARCH_CHARS = 200


def _matching_prompts(job_id: int | None, model_id: int | None, search: str | None):
    """The ids of the prompts with a candidate answer that matches, as a subquery's select."""
    query = (select(Completion.prompt_id).join(Prompt, Prompt.id == Completion.prompt_id)
             .where(Completion.job_id.is_not(None)))  # arena answers have no job: they are no candidates
    if job_id is not None:
        query = query.where(Completion.job_id == job_id)
    if model_id is not None:
        query = query.where(Completion.model_id == model_id)
    if search:
        # The words' case ignored, on both databases; % and _ in the search are plain characters.
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(or_(func.lower(Prompt.text).like(pattern, escape="\\"),
                                func.lower(Completion.text).like(pattern, escape="\\")))
    return query.distinct()


def _whole_number(value, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}, got {value!r}", field=field)
    return value


def browse_candidates(viewer, *, job_id: int | None = None, model_id: int | None = None, search: str | None = None,
                      offset: int = 0, limit: int = 10, session: Session | None = None) -> dict:
    """A page of prompts with their candidate answers (see the module's docstring); `search` finds words in a
    prompt or in any of its answers; `job_id` and `model_id` keep the answers of that generate job or model."""
    require(viewer, Action.read_training)
    offset = _whole_number(offset, "offset", 0, 10 ** 9)
    limit = _whole_number(limit, "limit", 1, MAX_PAGE)
    search = (search or "").strip()
    if len(search) > MAX_SEARCH_CHARS:
        raise InvalidInput(f"the search is {len(search)} characters; at most {MAX_SEARCH_CHARS}", field="search")
    with reading(session) as s:
        matching = _matching_prompts(job_id, model_id, search).subquery()
        total = s.scalar(select(func.count()).select_from(matching))
        prompt_ids = list(s.scalars(select(matching.c.prompt_id).order_by(matching.c.prompt_id.desc())
                                    .offset(offset).limit(limit)))
        prompts = {p.id: p for p in s.scalars(select(Prompt).where(Prompt.id.in_(prompt_ids)))}
        answers = (select(Completion, Model.name).outerjoin(Model, Model.id == Completion.model_id)
                   .where(Completion.prompt_id.in_(prompt_ids), Completion.job_id.is_not(None))
                   .order_by(Completion.prompt_id, Completion.id))
        if job_id is not None:
            answers = answers.where(Completion.job_id == job_id)
        if model_id is not None:
            answers = answers.where(Completion.model_id == model_id)
        by_prompt: dict[int, list[dict]] = {prompt_id: [] for prompt_id in prompt_ids}
        for completion, model_name in s.execute(answers):
            by_prompt[completion.prompt_id].append({
                "completion_id": completion.id, "text": completion.text, "model_id": completion.model_id,
                "model": model_name, "job_id": completion.job_id, "sampling": completion.sampling or {},
                "seed": completion.seed, "tokens": completion.token_count})
        return {"total": total, "offset": offset,
                "prompts": [{"prompt_id": prompt_id, "text": prompts[prompt_id].text,
                             "messages": prompts[prompt_id].messages, "answers": by_prompt[prompt_id]}
                            for prompt_id in prompt_ids]}


def candidate_sources(viewer, session: Session | None = None) -> dict:
    """The generate jobs and the models that have candidate answers, with how many each, for the filters."""
    require(viewer, Action.read_training)
    with reading(session) as s:
        counts = (select(Completion.job_id, func.count(Completion.id).label("answers"))
                  .where(Completion.job_id.is_not(None)).group_by(Completion.job_id).subquery())
        jobs = s.execute(select(Job, User.name, counts.c.answers).join(counts, counts.c.job_id == Job.id)
                         .outerjoin(User, User.id == Job.owner_id).order_by(Job.id.desc()))
        models = s.execute(select(Model.id, Model.name, func.count(Completion.id))
                           .join(Completion, Completion.model_id == Model.id).where(Completion.job_id.is_not(None))
                           .group_by(Model.id, Model.name).order_by(Model.name))
        return {"jobs": [{"id": job.id, "name": job.name, "params": job.params or {}, "kind": job.kind,
                          "status": enum_value(job.status), "owner": owner, "answers": answers}
                         for job, owner, answers in jobs],
                "models": [{"id": model_id, "name": name, "answers": answers} for model_id, name, answers in models]}
