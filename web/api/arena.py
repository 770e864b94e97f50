"""/api/arena: the pool of chat models, battles between two of them anonymously, votes (one per battle, on
your own battles only, which reveal the names), the leaderboard."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.orm import Session

from db.settings import Settings
from web.api.errors import ERROR_RESPONSES
from web.auth import CurrentUser, get_app_settings, get_db_session
from web.schemas import (ArenaModelOut, ArenaPoolChange, BattleCreate, BattleOut, ErrorOut, LeaderboardRow, VoteCreate,
                         VoteOut)
from web.services import arena
from web.services.access import Action, require

DbSession = Annotated[Session, Depends(get_db_session)]
AppSettings = Annotated[Settings, Depends(get_app_settings)]
router = APIRouter(prefix="/api/arena", responses=ERROR_RESPONSES, tags=["arena"])


@router.get("/models", response_model=list[ArenaModelOut])
def arena_models(user: CurrentUser, session: DbSession,
                 everyone: Annotated[bool, Query(description="every chat model, in the pool or not")] = False) -> Any:
    """The chat models battles are drawn from (with `everyone`, every SFT and DPO model and whether it is in)."""
    require(user, Action.chat)
    return arena.arena_models(session, everyone=everyone, viewer=user)


@router.put("/models", response_model=list[ArenaModelOut])
def set_arena_models(body: ArenaPoolChange, user: CurrentUser, session: DbSession) -> Any:
    """Choose the pool: the named chat models enter, every other leaves (trainers may move only their own
    models, admins any: a pool that moves another's model is refused whole, 403)."""
    return arena.set_arena_models(session, user, body.model_ids)


@router.post("/battles", response_model=BattleOut, status_code=status.HTTP_201_CREATED)
def battle(body: BattleCreate, user: CurrentUser, session: DbSession, settings: AppSettings) -> Any:
    """Draw two models, let each answer the conversation, store both answers; the answer does not say which
    model wrote which (POST /api/arena/votes does, after the vote)."""
    require(user, Action.chat)
    left_id, right_id = arena.draw_battle(session, body.model_ids, body.seed)
    options = {"max_new_tokens": body.max_new_tokens, "temperature": body.temperature, "seed": body.seed}
    left = arena.generate_answer(settings, session, left_id, body.messages, **options)
    right = arena.generate_answer(settings, session, right_id, body.messages, **options)
    stored = arena.record_answers(session, user, body.messages, left, right)
    return {"battle_id": stored["battle_id"], "left": {"text": left["text"]}, "right": {"text": right["text"]}}


@router.post("/votes", response_model=VoteOut, status_code=status.HTTP_201_CREATED,
             responses={404: {"model": ErrorOut, "description": "no battle of yours with this id"}})
def vote(body: VoteCreate, user: CurrentUser, session: DbSession, response: Response) -> Any:
    """Vote on a battle the arena showed you; the answer tells which models wrote its answers (null for a blind
    labeler: WORKBENCH_BLIND_LABELERS). A battle takes one vote: voting again answers 200 with the first one."""
    stored = arena.vote(session, user, body.battle_id, body.choice, body.time_spent_s)
    if stored["duplicate"]:
        response.status_code = status.HTTP_200_OK
    return stored


@router.get("/leaderboard", response_model=list[LeaderboardRow])
def leaderboard(user: CurrentUser, session: DbSession) -> Any:
    """Bradley-Terry ratings on the Elo scale with 95 % bootstrap intervals and each model's vote count."""
    require(user, Action.chat)
    return arena.leaderboard(session, viewer=user)
