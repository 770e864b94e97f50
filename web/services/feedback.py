"""Thumbs on chat answers: a person marks one answer a model gave good (👍) or bad (👎): unpaired feedback that the
`kto` job kind trains on, and that exports as TRL's unpaired format.

    give_feedback(session, user, model_id, messages, answer, label) -> {id, label, created, changed}
    undo_feedback(session, user, feedback_id)                       -> {id, undone}
    take_back_feedback(session, user, model_id, messages, answer)   -> {id, undone} (the Chat tab's undo)
    list_feedback(user, model_id=None, everyone=False)              -> rows (your own; a trainer's `everyone`: all)
    export_feedback(user, model_ids=None)                           -> TRL unpaired JSONL text
    feedback_counts(user)                                           -> per model: good, bad, people, last given
    feedback_items(session, model_ids=None)                         -> KTO items with their row ids (lineage)

One row per (user, answer) (`db.models.answer_key_sha256`: the model, the conversation and the answer): giving the
same thumb again answers with the row unchanged (a double click or a retried request), the other thumb changes it,
undo deletes it. Everyone who may chat may give thumbs (Action.chat, checked here, whatever the caller); reading
other people's, and exporting, is the training team's (Action.read_training).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import CHAT_MODEL_KINDS, AnswerFeedback, Model, User, answer_key_sha256
from web.services.access import Action, can, require
from web.services.common import InvalidInput, NotFound, reading

MAX_MESSAGES = 200
MAX_TEXT_CHARS = 100_000  # a conversation's message or an answer: far past any model's context here
ROLES = ("system", "user", "assistant")


def _checked_messages(messages: Any) -> list[dict]:
    """The conversation a model answered: {role, content} messages ending with the user's turn."""
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list of {role, content}", field="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidInput(f"messages: at most {MAX_MESSAGES} messages", field="messages")
    checked = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES:
            raise InvalidInput(f"messages[{index}].role must be one of {', '.join(ROLES)}", field="messages")
        if not isinstance(content, str) or len(content) > MAX_TEXT_CHARS:
            raise InvalidInput(f"messages[{index}].content must be text of at most {MAX_TEXT_CHARS:,} characters",
                               field="messages")
        checked.append({"role": role, "content": content})
    if checked[-1]["role"] != "user":
        raise InvalidInput("messages must end with the user's turn the answer replies to", field="messages")
    return checked


def _row_to_dict(row: AnswerFeedback) -> dict:
    return {"id": row.id, "user_id": row.user_id, "model_id": row.model_id, "messages": row.messages,
            "answer": row.answer, "label": row.label, "created_at": row.created_at, "updated_at": row.updated_at}


def give_feedback(session: Session, user: User, model_id: int, messages: Any, answer: Any, label: bool) -> dict:
    """Store (or change) `user`'s thumb on `answer`, which model `model_id` gave to `messages`."""
    require(user, Action.chat)
    model = session.get(Model, model_id)
    if model is None or model.kind not in CHAT_MODEL_KINDS:
        raise NotFound(f"no chat model with id {model_id}")
    messages = _checked_messages(messages)
    if not isinstance(answer, str) or not answer.strip() or len(answer) > MAX_TEXT_CHARS:
        raise InvalidInput(f"answer must be non-empty text of at most {MAX_TEXT_CHARS:,} characters", field="answer")
    if not isinstance(label, bool):
        raise InvalidInput("label must be true (a good answer) or false (a bad one)", field="label")
    key = answer_key_sha256(model_id, messages, answer)
    query = select(AnswerFeedback).where(AnswerFeedback.user_id == user.id, AnswerFeedback.answer_sha256 == key)
    row = session.scalar(query)
    created = row is None
    if created:
        row = AnswerFeedback(user_id=user.id, model_id=model_id, messages=messages, answer=answer, label=label,
                             answer_sha256=key)
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # the same thumb from a request racing this one: that one stored it
            session.rollback()
            row, created = session.scalar(query), False
    changed = not created and row.label != label
    if changed:
        row.label = label
        session.commit()
    return {"id": row.id, "label": row.label, "created": created, "changed": changed}


def undo_feedback(session: Session, user: User, feedback_id: int) -> dict:
    """Take back one of `user`'s own thumbs (another person's is "not found": it is not theirs to see)."""
    require(user, Action.chat)
    row = session.get(AnswerFeedback, feedback_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"no thumb of yours with id {feedback_id}")
    session.delete(row)
    session.commit()
    return {"id": feedback_id, "undone": True}


def take_back_feedback(session: Session, user: User, model_id: int, messages: Any, answer: str) -> dict:
    """Take back `user`'s thumb on this answer, named by what it was given on (the Chat tab knows no row id); a
    thumb that is not there is nothing to take back: {"id": None, "undone": False}."""
    require(user, Action.chat)
    key = answer_key_sha256(model_id, _checked_messages(messages), answer)
    row = session.scalar(select(AnswerFeedback).where(AnswerFeedback.user_id == user.id,
                                                      AnswerFeedback.answer_sha256 == key))
    if row is None:
        return {"id": None, "undone": False}
    return undo_feedback(session, user, row.id)


def list_feedback(user: User, model_id: int | None = None, everyone: bool = False,
                  session: Session | None = None) -> list[dict]:
    """`user`'s thumbs, newest first (with `everyone`, for the training team, every user's)."""
    require(user, Action.chat)
    if everyone:
        require(user, Action.read_training)
    with reading(session) as s:
        query = select(AnswerFeedback).order_by(AnswerFeedback.id.desc())
        if not everyone:
            query = query.where(AnswerFeedback.user_id == user.id)
        if model_id is not None:
            query = query.where(AnswerFeedback.model_id == model_id)
        return [_row_to_dict(row) for row in s.scalars(query)]


def feedback_items(session: Session, model_ids: Sequence[int] | None = None) -> list[dict]:
    """Every thumb (of the models `model_ids`, or all) as a KTO item {"prompt", "completion", "label"} with where it
    came from: source "thumbs", feedback_ids (lineage), model_id. Oldest first, so a snapshot lists them in order."""
    query = select(AnswerFeedback).order_by(AnswerFeedback.id)
    if model_ids:
        query = query.where(AnswerFeedback.model_id.in_(list(model_ids)))
    return [{"prompt": [m for m in row.messages], "completion": [{"role": "assistant", "content": row.answer}],
             "label": row.label, "source": "thumbs", "feedback_ids": [row.id], "model_id": row.model_id}
            for row in session.scalars(query)]


def export_feedback(user: User, model_ids: Sequence[int] | None = None, session: Session | None = None) -> str:
    """Every thumb (of `model_ids`, or all) as TRL's unpaired preference format, one JSON object a line:
    {"prompt": [messages], "completion": [{"role": "assistant", ...}], "label": true|false} (conversational), which
    the Datasets tab takes back as a feedback dataset and `KTOTrainer` reads as it is."""
    require(user, Action.read_training)
    with reading(session) as s:
        items = feedback_items(s, model_ids)
    return "".join(json.dumps({key: item[key] for key in ("prompt", "completion", "label")}, ensure_ascii=False) + "\n"
                   for item in items)


def feedback_counts(user: User, session: Session | None = None) -> list[dict]:
    """Per model that has thumbs, most thumbs first: {model_id, model, good, bad, people, last} (the training
    team's: it counts everyone's thumbs)."""
    require(user, Action.read_training)
    good = func.sum(case((AnswerFeedback.label.is_(True), 1), else_=0))
    with reading(session) as s:
        rows = s.execute(
            select(Model.id, Model.name, func.count(AnswerFeedback.id), good,
                   func.count(func.distinct(AnswerFeedback.user_id)), func.max(AnswerFeedback.updated_at))
            .join(Model, Model.id == AnswerFeedback.model_id)
            .group_by(Model.id, Model.name).order_by(func.count(AnswerFeedback.id).desc(), Model.id)).all()
    return [{"model_id": model_id, "model": name, "good": int(good_count), "bad": int(total - good_count),
             "people": people, "last": last} for model_id, name, total, good_count, people, last in rows]


def can_export(user: User | dict | None) -> bool:
    return can(user, Action.read_training)
