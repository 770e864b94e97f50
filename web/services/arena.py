"""The arena: two anonymous models answer the same prompt side by side, a person votes, the names are shown
after the vote, every vote becomes a preference pair (source "arena"), and a leaderboard ranks the models.

    arena_models(session)                      the chat models (SFT and DPO) the arena draws from
    set_arena_models(session, who, model_ids)  choose that pool (trainers move their own models, admins any)
    draw_battle(session, model_ids, seed)      two distinct models in random left/right order
    record_answers(session, who, messages, left, right)
                                               the prompt, both answers and the battle shown to `who` stored
                                               (before the vote): its id is what the vote names
    vote(session, who, battle_id, choice)      one vote per battle, on a battle of the voter's only: a
                                               Comparison (source arena), and the two names revealed (not
                                               to blind labelers: access.sees_model_names)
    leaderboard(session)                       Bradley–Terry ratings with 95 % intervals (llm/ratings.py)
    battle_table(session)                      each model's battles won/tied/lost and the win-rate matrix

Generation itself happens in the front end that shows it (the Chat tab streams it, the API generates it
whole): this module stores and decides, so both front ends share every rule.
"""

from __future__ import annotations

import functools
import random
from types import SimpleNamespace
from typing import Any, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import CHAT_MODEL_KINDS, SQL_INTEGER_MAX, ArenaBattle, Comparison, Completion, Model, Prompt, User
from llm.preference_labels import VOTES, Choice, Label
from llm.ratings import head_to_head, records
from llm.ratings import leaderboard as rate
from web.services.access import Action, require, require_owner, resolve_user, sees_model_names
from web.services.common import Conflict, InvalidInput, NotFound, reading
from web.services.labeling import check_time_spent
from web.services.models import blind_model_name

ARENA_KINDS = CHAT_MODEL_KINDS
MAX_PROMPT_CHARS = 20_000


def arena_models(session: Session | None = None, *, everyone: bool = False, viewer=None) -> list[dict]:
    """[{id, name, kind, in_arena}] of the chat models (SFT and DPO) the arena draws from, or with `everyone`
    of every chat model, in the pool or not; named as `viewer` may be told (a blind labeler: `model #<id>`)."""
    with reading(session) as s:
        query = select(Model).where(Model.kind.in_(ARENA_KINDS)).order_by(Model.id)
        if not everyone:
            query = query.where(Model.in_arena.is_(True))
        named = sees_model_names(viewer)
        return [{"id": m.id, "name": m.name if named else blind_model_name(m.id), "kind": m.kind.value,
                 "in_arena": m.in_arena} for m in s.scalars(query)]


def set_arena_models(session: Session, who, model_ids: Sequence[int]) -> list[dict]:
    """Make `model_ids` the arena's pool: those chat models enter, every other chat model leaves (a new chat
    model enters until someone takes it out). A trainer moves their own models only: a pool that would move
    another's is refused whole (PermissionDenied naming it); admins move any. Returns every chat model with its
    place."""
    user = resolve_user(session, who)
    require(user, Action.manage_arena)
    chat_models = {m.id: m for m in session.scalars(select(Model).where(Model.kind.in_(ARENA_KINDS)))}
    wanted = set(model_ids)
    unknown = sorted(wanted - set(chat_models))
    if unknown:
        raise InvalidInput(f"model {unknown[0]} is not a chat model (SFT or DPO)", field="model_ids")
    moved = [model for model_id, model in sorted(chat_models.items()) if model.in_arena != (model_id in wanted)]
    for model in moved:
        require_owner(user, model.owner_id, Action.manage_arena, Action.manage_any_arena,
                      f"model {model.name!r} (#{model.id})")
    for model in moved:
        model.in_arena = not model.in_arena
    session.commit()
    return arena_models(session, everyone=True, viewer=user)


def draw_battle(session: Session, model_ids: Sequence[int] | None = None, seed: int | None = None) -> tuple[int, int]:
    """(left model id, right model id): two of `model_ids` (default: the arena's pool) at random, in random
    order, so neither the pick nor the side tells which is which. Named models may be any chat models."""
    if model_ids:
        chat_models = {m["id"] for m in arena_models(session, everyone=True)}
        unknown = [i for i in model_ids if i not in chat_models]
        if unknown:
            raise InvalidInput(f"model {unknown[0]} is not a chat model that can enter the arena", field="model_ids")
        candidates = list(dict.fromkeys(model_ids))
    else:
        candidates = [m["id"] for m in arena_models(session)]
    if len(candidates) < 2:
        raise Conflict("the arena needs two chat models in its pool (train an SFT or DPO model, or add one to "
                       "the arena)")
    rng = random.Random(seed)
    left, right = rng.sample(candidates, 2)
    return left, right


def _check_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list of {role, content}", field="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant") \
                or not isinstance(message.get("content"), str):
            raise InvalidInput(f"message {index} must be {{role: system|user|assistant, content: text}}",
                               field=f"messages.{index}")
    if messages[-1]["role"] != "user":
        raise InvalidInput("the last message must be the user's", field="messages")
    if sum(len(m["content"]) for m in messages) > MAX_PROMPT_CHARS:
        raise InvalidInput(f"the conversation is limited to {MAX_PROMPT_CHARS:,} characters", field="messages")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def record_answers(session: Session, who, messages: list[dict], left: dict, right: dict) -> dict:
    """Store the prompt, both answers ({model_id, text, sampling, seed, token_count}) and the battle shown to
    `who`; returns {battle_id}, what their vote names. Nothing about which model is which is returned."""
    user = _person(session, who)
    messages = _check_messages(messages)
    for side in (left, right):
        if session.get(Model, side["model_id"]) is None:
            raise NotFound(f"model {side['model_id']} does not exist")
    prompt = Prompt(text=messages[-1]["content"], messages=messages)
    session.add(prompt)
    session.flush()
    stored = []
    for side in (left, right):
        completion = Completion(prompt_id=prompt.id, model_id=side["model_id"], text=side["text"],
                                sampling=side.get("sampling") or {}, seed=side.get("seed"),
                                token_count=side.get("token_count"))
        session.add(completion)
        stored.append(completion)
    session.flush()
    battle = ArenaBattle(user_id=user.id, prompt_id=prompt.id, left_completion_id=stored[0].id,
                         right_completion_id=stored[1].id)
    session.add(battle)
    session.commit()
    return {"battle_id": battle.id}


def _person(session: Session, who) -> User:
    """The person a battle is for (battles and votes are a person's: an internal caller names one)."""
    user = resolve_user(session, who)
    require(user, Action.chat)
    if user is None:
        raise InvalidInput("an arena battle is shown to a person: name the user")
    return user


def vote(session: Session, who, battle_id: int, choice: Choice | str, time_spent_s: float | None = None) -> dict:
    """Store the vote on a battle the arena showed `who` as a comparison (completion_a = the left answer) and
    tell which models wrote the two answers.

    A battle takes one vote: voting on it again answers with the first vote (`duplicate`), whatever the choice.
    Another person's battle, or an id that is no battle, is not found (404): a vote can name no other answers."""
    user = _person(session, who)
    if choice not in VOTES:
        raise InvalidInput(f"choice must be one of {', '.join(VOTES)}", field="choice")
    check_time_spent(time_spent_s)
    battle = session.get(ArenaBattle, battle_id) if 0 < battle_id <= SQL_INTEGER_MAX else None
    if battle is None or battle.user_id != user.id:
        raise NotFound(f"no arena battle {battle_id} of yours")
    comparison = None
    if battle.comparison_id is None:
        comparison = Comparison(prompt_id=battle.prompt_id, completion_a_id=battle.left_completion_id,
                                completion_b_id=battle.right_completion_id, label=Choice(choice).label(),
                                annotator_id=user.id, source="arena", time_spent_s=time_spent_s, swapped=False)
        session.add(comparison)
        session.flush()
        # The battle takes this vote only if it has none yet: of two votes at once, one is stored.
        taken = session.execute(update(ArenaBattle).where(ArenaBattle.id == battle.id,
                                                          ArenaBattle.comparison_id.is_(None))
                                .values(comparison_id=comparison.id)).rowcount
        if taken:
            session.commit()
        else:
            session.rollback()
            comparison = None
    duplicate = comparison is None
    if duplicate:
        session.refresh(battle)
        comparison = session.get(Comparison, battle.comparison_id)
    answer = {"battle_id": battle.id, "comparison_id": comparison.id, "label": comparison.label.value,
              "duplicate": duplicate, "left_model": None, "right_model": None}
    if not sees_model_names(user):  # a blind labeler learns no model's style from its votes
        return answer
    left = session.get(Completion, battle.left_completion_id)
    right = session.get(Completion, battle.right_completion_id)
    names = {m.id: m.name for m in session.scalars(select(Model).where(Model.id.in_([left.model_id, right.model_id])))}
    return {**answer, "left_model": {"id": left.model_id, "name": names.get(left.model_id)},
            "right_model": {"id": right.model_id, "name": names.get(right.model_id)}}


def arena_votes(session: Session) -> list[tuple[int, int, str]]:
    """Every arena vote as (left model id, right model id, outcome a/b/tie/both_bad)."""
    left, right = Completion.__table__.alias("left_answer"), Completion.__table__.alias("right_answer")
    query = (select(left.c.model_id, right.c.model_id, Comparison.label)
             .join(left, Comparison.completion_a_id == left.c.id).join(right, Comparison.completion_b_id == right.c.id)
             .where(Comparison.source == "arena", Comparison.label != Label.skip).order_by(Comparison.id))
    return [(a, b, label.value) for a, b, label in session.execute(query) if a is not None and b is not None]


@functools.lru_cache(maxsize=8)
def _ratings(votes: tuple[tuple[int, int, str], ...], rounds: int) -> list[dict]:
    # The bootstrap refits the ratings `rounds` times; the Models tab's report card asks on every pick, so
    # the same votes are rated once (the votes themselves are the key: a new vote is a new key).
    return rate(votes, rounds=rounds, seed=0)


def leaderboard(session: Session | None = None, rounds: int = 100, viewer=None) -> list[dict]:
    """[{model_id, name, kind, rating, lower, upper, votes}] best first, named as `viewer` may be told."""
    with reading(session) as s:
        rows = _ratings(tuple(arena_votes(s)), rounds)
        models = {m.id: m for m in s.scalars(select(Model).where(Model.id.in_([r["model"] for r in rows])))}
        if not sees_model_names(viewer):
            models = {model_id: SimpleNamespace(name=blind_model_name(model_id), kind=model.kind)
                      for model_id, model in models.items()}
        return [{"model_id": r["model"], "name": models[r["model"]].name if r["model"] in models else "(deleted)",
                 "kind": models[r["model"]].kind.value if r["model"] in models else None,
                 **{key: r[key] for key in ("rating", "lower", "upper", "votes")}} for r in rows]


def battle_table(session: Session | None = None, viewer=None) -> dict:
    """The leaderboard's models (in its order, named as `viewer` may be told) with their battles won, tied and
    lost, and the win-rate matrix: win_rates[i][j] is {battles, win_rate} of model i against model j (a tie or
    both bad counting half), None where the two never met."""
    with reading(session) as s:
        board = leaderboard(s, viewer=viewer)
        votes = arena_votes(s)
    played, met = records(votes), head_to_head(votes)
    order = [row["model_id"] for row in board]
    return {"models": [{"model_id": row["model_id"], "name": row["name"], **played[row["model_id"]]} for row in board],
            "win_rates": [[{"battles": met[a, b]["battles"], "win_rate": met[a, b]["score"] / met[a, b]["battles"]}
                           if (a, b) in met else None for b in order] for a in order]}


def generate_answer(settings, session: Session, model_id: int, messages: list[dict], *, max_new_tokens: int = 128,
                    temperature: float = 0.8, top_k: int | None = 50, seed: int | None = None,
                    stream: bool = False):
    """One model's answer through the web process's model cache and the one chat template: the whole
    answer as {model_id, text, sampling, seed, token_count}, or with `stream` an iterator of text deltas
    (the Chat tab streams; it stores the text it showed)."""
    from llm.generate import SamplingSettings, chat_reply
    from web.services.models import model_dir
    from web.services.model_cache import shared_cache

    directory, _ = model_dir(settings, model_id, session=session)
    model, tokenizer = shared_cache(settings.data_dir).get(directory)
    seed = seed if seed is not None else random.randrange(2 ** 31)
    sampling = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k}
    reply = chat_reply(model, tokenizer, _check_messages(messages),
                       SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                        seed=seed), stream=stream)
    if stream:
        return reply
    return {"model_id": model_id, "text": reply, "sampling": sampling, "seed": seed,
            "token_count": len(tokenizer.encode(reply))}
