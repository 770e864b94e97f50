"""/api/labeling: projects, the labeler's next pair, labels (idempotent), undo, agreement and exports.

Everything the Label tab does goes through these routes, so a labeling client can be written against
them: GET .../next for a pair, POST .../labels with what was chosen and which answer was on the left,
POST .../undo to take the last label back.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.orm import Session

from web.api.errors import ERROR_RESPONSES
from web.api.ids import ProjectId
from web.auth import CurrentUser, get_db_session
from web.schemas import (AgreementOut, CoOwnersUpdate, ErrorOut, GuidelinesUpdate, LabelingProgressOut,
                         LabelingProjectCreate, LabelingProjectOut, LabelingProjectSummaryOut, LabelOut, LabelSubmit,
                         PairOut, UndoOut)
from web.services import labeling, labeling_results

DbSession = Annotated[Session, Depends(get_db_session)]
router = APIRouter(prefix="/api/labeling", responses=ERROR_RESPONSES, tags=["labeling"])


@router.get("/projects", response_model=list[LabelingProjectSummaryOut])
def list_projects(user: CurrentUser, session: DbSession) -> Any:
    """The projects this user may label (all of them for admins and trainers), without their guidelines."""
    return labeling.list_projects(user, session=session)


@router.post("/projects", response_model=LabelingProjectOut, status_code=status.HTTP_201_CREATED)
def create_project(body: LabelingProjectCreate, user: CurrentUser, session: DbSession) -> Any:
    """Pair the answers of finished generate jobs (admins and trainers)."""
    project = labeling.create_project(session, user, **body.model_dump())
    return labeling.project_to_dict(session, project)


@router.get("/projects/{project_id}", response_model=LabelingProjectOut)
def get_project(project_id: ProjectId, user: CurrentUser, session: DbSession) -> Any:
    return labeling.get_project(project_id, user, session=session)


@router.put("/projects/{project_id}/guidelines", response_model=LabelingProjectOut)
def update_guidelines(project_id: ProjectId, body: GuidelinesUpdate, user: CurrentUser, session: DbSession) -> Any:
    """New guidelines (the project's owner and co-owners, and admins)."""
    return labeling.update_guidelines(session, user, project_id, body.guidelines)


@router.put("/projects/{project_id}/co-owners", response_model=LabelingProjectOut)
def set_co_owners(project_id: ProjectId, body: CoOwnersUpdate, user: CurrentUser, session: DbSession) -> Any:
    """Name the project's co-owners (its owner and co-owners, and admins)."""
    return labeling.set_co_owners(session, user, project_id, body.co_owner_ids)


@router.get("/projects/{project_id}/next", response_model=PairOut | None,
            responses={204: {"description": "nothing left for this labeler"}})
def next_pair(project_id: ProjectId, user: CurrentUser, session: DbSession) -> Any:
    """The next pair for this labeler; the same pair again until it is labeled. 204 when none is left."""
    pair = labeling.next_pair(session, user, project_id)
    if pair is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return pair


@router.post("/projects/{project_id}/labels", response_model=LabelOut, response_model_exclude_unset=True,
             status_code=status.HTTP_201_CREATED,
             responses={409: {"model": ErrorOut, "description": "the pair already has all its labels"}})
def submit_label(project_id: ProjectId, body: LabelSubmit, user: CurrentUser, session: DbSession,
                 response: Response,
                 and_next: Annotated[bool, Query(alias="next", description=(
                     "also answer with the labeler's next pair (`next`), as GET .../next would: one request "
                     "per label"))] = False) -> Any:
    """Store a label; repeating it (same pair, or same idempotency_key) answers 200 with the stored one."""
    stored = labeling.submit_label(session, user, project_id, **body.model_dump(), and_next=and_next)
    if stored["duplicate"]:
        response.status_code = status.HTTP_200_OK
    return stored


@router.post("/projects/{project_id}/undo", response_model=UndoOut,
             responses={409: {"model": ErrorOut, "description": "no label of yours to undo here, or another "
                                                                "request undid it a moment ago"}})
def undo_last_label(project_id: ProjectId, user: CurrentUser, session: DbSession) -> Any:
    """Remove this labeler's last label here; the answer is that pair, to label again, and the removed label's
    id (`undone`)."""
    return labeling.undo_last_label(session, user, project_id)


@router.get("/projects/{project_id}/progress", response_model=LabelingProgressOut)
def progress(project_id: ProjectId, user: CurrentUser, session: DbSession) -> Any:
    labeling.get_project(project_id, user, session=session)  # the access check
    return labeling.progress(session, user, project_id)


@router.get("/projects/{project_id}/agreement", response_model=AgreementOut)
def agreement(project_id: ProjectId, user: CurrentUser, session: DbSession) -> Any:
    """Percent agreement, Krippendorff's alpha, Cohen's kappa per labeler pair, disagreements, consensus."""
    return labeling_results.agreement_report(project_id, user, session=session)


@router.get("/projects/{project_id}/export", response_class=Response,
            responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}})
def export(project_id: ProjectId, user: CurrentUser, session: DbSession,
           format: Annotated[str, Query(pattern="^(trl|csv)$", description="trl: consensus pairs as TRL JSONL; "
                                                                        "csv: every raw label")] = "trl",
           min_labels: Annotated[int | None, Query(ge=1, le=1000)] = None) -> Response:
    if format == "csv":
        body = labeling_results.export_labels_csv(project_id, user, session=session)
        return Response(body, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="project-{project_id}-labels.csv"'})
    body = labeling_results.export_trl_jsonl(project_id, user, min_labels, session=session)
    return Response(body, media_type="application/x-ndjson", headers={
        "Content-Disposition": f'attachment; filename="project-{project_id}-pairs.jsonl"'})
