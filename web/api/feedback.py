"""/api/feedback: thumbs up or down on chat answers (KTO's unpaired feedback), one per person and answer; taking one
back; your thumbs (everyone's for the training team); the export in TRL's unpaired format (JSON Lines).

Giving the same thumb twice answers 200 with the row unchanged (201 the first time); the other thumb changes it.
Every route checks the role itself (web/services/feedback.py): chatting is enough to give thumbs, the export is the
training team's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status
from fastapi.responses import PlainTextResponse
from sqlalchemy.orm import Session

from db.models import SQL_INTEGER_MAX
from web.api.errors import ERROR_RESPONSES
from web.auth import CurrentUser, get_db_session
from web.schemas import FeedbackGive, FeedbackOut, FeedbackRow, FeedbackUndone
from web.services import feedback

DbSession = Annotated[Session, Depends(get_db_session)]
FeedbackId = Annotated[int, Path(ge=1, le=SQL_INTEGER_MAX, description="a thumb's id")]
router = APIRouter(prefix="/api/feedback", responses=ERROR_RESPONSES, tags=["feedback"])


@router.put("", response_model=FeedbackOut, status_code=status.HTTP_201_CREATED)
def give(body: FeedbackGive, user: CurrentUser, session: DbSession, response: Response) -> Any:
    """Thumbs up (label true) or down on an answer a chat model gave to a conversation."""
    stored = feedback.give_feedback(session, user, body.model_id, [m.model_dump() for m in body.messages],
                                    body.answer, body.label)
    if not stored["created"]:
        response.status_code = status.HTTP_200_OK
    return stored


@router.delete("/{feedback_id}", response_model=FeedbackUndone)
def undo(feedback_id: FeedbackId, user: CurrentUser, session: DbSession) -> Any:
    """Take back one of your thumbs."""
    return feedback.undo_feedback(session, user, feedback_id)


@router.get("", response_model=list[FeedbackRow])
def list_thumbs(user: CurrentUser, session: DbSession,
                model_id: Annotated[int | None, Query(ge=1, le=SQL_INTEGER_MAX)] = None,
                everyone: Annotated[bool, Query(description="every user's (admins and trainers)")] = False) -> Any:
    """Your thumbs, newest first."""
    return feedback.list_feedback(user, model_id=model_id, everyone=everyone, session=session)


@router.get("/export", response_class=PlainTextResponse,
            responses={200: {"content": {"application/jsonl": {}}, "description": "TRL's unpaired format"}})
def export(user: CurrentUser, session: DbSession,
           model_id: Annotated[list[int] | None, Query(description="only these models' answers")] = None) -> Any:
    """Every thumb as TRL's unpaired preference format (prompt, completion, label), one JSON object a line: upload it
    as a feedback dataset, or hand it to TRL's KTOTrainer."""
    text = feedback.export_feedback(user, model_ids=model_id, session=session)
    return PlainTextResponse(text, media_type="application/jsonl",
                             headers={"Content-Disposition": 'attachment; filename="feedback.jsonl"'})
