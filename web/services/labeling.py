"""Labeling projects: pairs of candidate answers, the labeler's queue, labels that are never lost or doubled.

    create_project      pairs from the completions of finished `generate` jobs (all pairs, or n random)
    next_pair           the labeler's next pair, left/right randomised for them; it holds one overlap slot
    submit_label        one label per labeler per pair, never more than the overlap per pair; with
                        `and_next`, the labeler's next pair in the same call (one request per label)
    undo_last_label     the labeler's last label removed and its pair handed back
    progress            done, left and today's count for one labeler
    labeler_choices     whom a project may be limited to

How the overlap holds with many labelers at once (tests/web/test_labeling.py, bench/bench_labeling.py):
  - A pair's `label_count` is raised by a conditional UPDATE ... WHERE label_count < overlap; a label
    that would exceed the overlap is refused (409) and nothing is stored. This alone guarantees it.
  - So that labelers are not sent pairs whose slots are all taken, `next_pair` hands a pair out with a
    `LabelingAssignment` that holds a slot for ASSIGNMENT_MINUTES; of two labelers who took a last slot
    at once, the later assignment (higher id) steps back and takes the next pair.
  - A (pair, labeler) unique constraint and an optional client idempotency key make a double click or a
    retried request store one label; the repeat gets the stored one back (a 409 when that label was undone
    meanwhile: an undone label's key is kept, `UndoneLabelKey`, so a retry arriving after the undo stores nothing).
  - `label_count` changes only with the labels themselves, in their transaction: a label raises it before its
    INSERT (a refused INSERT rolls it back), an undo lowers it before its DELETE and rolls back when the DELETE
    removed nothing (tests/web/test_labeling_races.py: concurrent labels, retries and undos).
Labels are stored un-swapped ("a": completion_a is better) with `swapped` saying what the labeler saw; the
client names the answer it showed on the left (by its opaque `answer_id`, never a completion's database id),
so a submit needs no server-side memory of the screen.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
from datetime import datetime, timedelta, timezone
from itertools import combinations
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import (MAX_TIME_SPENT_S, SQL_INTEGER_MAX, Comparison, Completion, Job, JobStatus, LabelingAssignment,
                       LabelingPair, LabelingProject, Role, User, utcnow)
from llm.preference_labels import Choice, Label
from web.services import labeling_queries as queries
from web.services.access import ALLOWED_ROLES, Action, can, require, require_owner, resolve_user
from web.services.common import Conflict, InvalidInput, NotFound, PermissionDenied, reading, refuse_unprintable

ASSIGNMENT_MINUTES = 10          # how long a handed-out pair holds its overlap slot
LOCKED_PAIR_WAITS = 10           # times a request waits for pairs other requests hold locked while they take them
LOCKED_PAIR_WAIT_S = 0.05        # (a take commits in milliseconds)
ANSWER_ID_CHARS = 20             # hex digits of an answer's id on a labeler's screen (80 bits)
MAX_OVERLAP = 20
MAX_CO_OWNERS = 20
MAX_GUIDELINES_BYTES = 64 * 1024  # Markdown a labeler's screen loads with each project it opens
MAX_SOURCE_JOBS = 100            # generate jobs one project pairs the answers of
MAX_NAMED_LABELERS = 1000        # labelers one project may be limited to
PAIRINGS = ("all", "random")


# ----------------------------------------------------------------------------- projects

def _project(session: Session, project_id: int) -> LabelingProject:
    project = session.get(LabelingProject, project_id)
    if project is None:
        raise NotFound(f"labeling project {project_id} does not exist")
    return project


def may_label(user: User | None, project: LabelingProject) -> bool:
    """Labelers named on the project (or everyone allowed to label when none are named); admins always."""
    if user is None or can(user, Action.manage_labeling):
        return True
    if not can(user, Action.label):
        return False
    return project.labeler_ids is None or user.id in project.labeler_ids


def _require_labeler(session: Session, who, project: LabelingProject) -> User | None:
    user = resolve_user(session, who)
    require(user, Action.label)
    if not may_label(user, project):
        raise PermissionDenied(f"user {user.name!r} is not one of the labelers of project {project.name!r}")
    return user


def form_pairs(completions_by_prompt: dict[int, list[int]], pairing: str, pairs_per_prompt: int | None,
               seed: int) -> list[tuple[int, int, int]]:
    """(prompt, completion, completion) triples: every two completions of a prompt ("all"), or that many
    drawn at random per prompt ("random", seeded). Completion ids are in ascending order within a pair."""
    rng = random.Random(seed)
    pairs = []
    for prompt_id in sorted(completions_by_prompt):
        candidates = list(combinations(sorted(set(completions_by_prompt[prompt_id])), 2))
        if pairing == "random":
            candidates = rng.sample(candidates, min(pairs_per_prompt or 1, len(candidates)))
            candidates.sort()
        pairs.extend((prompt_id, a, b) for a, b in candidates)
    return pairs


def create_project(session: Session, who, *, name: str, source_job_ids: list[int], pairing: str = "all",
                   pairs_per_prompt: int | None = None, overlap: int = 1, guidelines: str = "",
                   labeler_ids: list[int] | None = None, co_owner_ids: list[int] | None = None,
                   seed: int = 0) -> LabelingProject:
    """A project over the completions of finished generate jobs, owned by `who` (and `co_owner_ids`); all of it is
    stored, or nothing."""
    user = resolve_user(session, who)
    require(user, Action.manage_labeling)
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("name must be 1 to 200 characters", field="name")
    refuse_unprintable(name, "name")
    check_guidelines(guidelines)
    if pairing not in PAIRINGS:
        raise InvalidInput(f"pairing must be one of {', '.join(PAIRINGS)}", field="pairing")
    if pairing == "random" and (not isinstance(pairs_per_prompt, int) or not 1 <= pairs_per_prompt <= 1000):
        raise InvalidInput("pairs_per_prompt must be a whole number from 1 to 1000 for random pairing",
                           field="pairs_per_prompt")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 1 <= overlap <= MAX_OVERLAP:
        raise InvalidInput(f"overlap must be a whole number from 1 to {MAX_OVERLAP}", field="overlap")
    source_job_ids = list(dict.fromkeys(source_job_ids or []))  # a job named twice is one source
    if not source_job_ids:
        raise InvalidInput("choose at least one finished generate job", field="source_job_ids")
    if len(source_job_ids) > MAX_SOURCE_JOBS:
        raise InvalidInput(f"{len(source_job_ids):,} generate jobs named; a project pairs the answers of at most "
                           f"{MAX_SOURCE_JOBS}", field="source_job_ids")
    jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(
        [i for i in source_job_ids if isinstance(i, int) and 0 < i <= SQL_INTEGER_MAX])))}
    for job_id in source_job_ids:
        job = jobs.get(job_id)
        if job is None or job.kind != "generate":
            raise InvalidInput(f"job {job_id} is not a generate job", field="source_job_ids")
        if job.status != JobStatus.succeeded:
            raise InvalidInput(f"generate job {job_id} is {job.status.value}; wait until it has succeeded",
                               field="source_job_ids")
    if labeler_ids is not None:
        labeler_ids = _labelers(session, labeler_ids)
    co_owner_ids = _co_owners(session, co_owner_ids, owner_id=user.id if user else None)

    completions_by_prompt: dict[int, list[int]] = {}
    for prompt_id, completion_id in session.execute(
            select(Completion.prompt_id, Completion.id).where(Completion.job_id.in_(source_job_ids))):
        completions_by_prompt.setdefault(prompt_id, []).append(completion_id)
    pairs = form_pairs(completions_by_prompt, pairing, pairs_per_prompt, seed)
    if not pairs:
        raise InvalidInput("these jobs produced fewer than two answers per prompt: no pair to compare",
                           field="source_job_ids")
    project = LabelingProject(name=name, guidelines=guidelines or "", source_job_ids=list(source_job_ids),
                              pairing=pairing, pairs_per_prompt=pairs_per_prompt, overlap=overlap,
                              labeler_ids=labeler_ids, owner_id=user.id if user else None,
                              co_owner_ids=co_owner_ids or None)
    session.add(project)
    session.flush()
    session.add_all(LabelingPair(project_id=project.id, prompt_id=p, completion_a_id=a, completion_b_id=b,
                                 label_count=0) for p, a, b in pairs)
    session.commit()
    if session.get_bind().dialect.name == "postgresql":
        # Until autovacuum's next round (up to a minute) PostgreSQL would plan the queue query for the table
        # as it was before these rows: a sort of every open pair instead of reading the queue index up to
        # the first free one, a hundred times slower just when the first labelers arrive.
        session.execute(text("ANALYZE labeling_pairs"))
        session.commit()
    return project


def _labelers(session: Session, labeler_ids: list[int]) -> list[int]:
    """`labeler_ids` checked: each once, at most MAX_NAMED_LABELERS, accounts with the labeler role. Trainers and
    admins label every project already (may_label), so naming them would limit nothing: refused, saying so."""
    wanted = list(dict.fromkeys(labeler_ids))
    if len(wanted) > MAX_NAMED_LABELERS:
        raise InvalidInput(f"{len(wanted):,} labelers named; a project names at most {MAX_NAMED_LABELERS} (or none: "
                           "then every labeler may label it)", field="labeler_ids")
    people = {u.id: u for u in session.scalars(select(User).where(User.id.in_(wanted)))}
    for person_id in wanted:
        if person_id not in people:
            raise InvalidInput(f"no user with id {person_id}", field="labeler_ids")
        if people[person_id].role != Role.labeler:
            raise InvalidInput(f"user {people[person_id].name!r} is a {people[person_id].role.value}, who labels "
                               "every project already: labeler_ids names accounts with the labeler role only",
                               field="labeler_ids")
    return wanted


def check_guidelines(guidelines: str | None) -> None:
    """Guidelines are Markdown of at most MAX_GUIDELINES_BYTES (UTF-8): a labeler's screen loads them."""
    size = len((guidelines or "").encode("utf-8", "surrogatepass"))
    if size > MAX_GUIDELINES_BYTES:
        raise InvalidInput(f"guidelines are {size:,} bytes; the limit is {MAX_GUIDELINES_BYTES:,} "
                           f"({MAX_GUIDELINES_BYTES // 1024} KB)", field="guidelines")


def _co_owners(session: Session, co_owner_ids: list[int] | None, owner_id: int | None) -> list[int]:
    """`co_owner_ids` checked: each once, at most MAX_CO_OWNERS, people whose role may manage labeling (the
    owner needs no naming); InvalidInput naming co_owner_ids otherwise."""
    wanted = [i for i in dict.fromkeys(co_owner_ids or []) if i != owner_id]
    if len(wanted) > MAX_CO_OWNERS:
        raise InvalidInput(f"a project has at most {MAX_CO_OWNERS} co-owners", field="co_owner_ids")
    people = {u.id: u for u in session.scalars(select(User).where(User.id.in_(wanted)))}
    for person_id in wanted:
        if person_id not in people:
            raise InvalidInput(f"no user with id {person_id}", field="co_owner_ids")
        if not can(people[person_id], Action.manage_labeling):
            raise InvalidInput(f"user {people[person_id].name!r} is a {people[person_id].role.value}: co-owners "
                               "are people who manage labeling (trainers or admins)", field="co_owner_ids")
    return wanted


def project_owner_ids(project: LabelingProject) -> set[int]:
    """Who owns the project: its creator and its co-owners (admins may change it too: access.require_owner)."""
    return {project.owner_id, *(project.co_owner_ids or [])} - {None}


def require_project_owner(session: Session, who, project: LabelingProject, doing: str) -> User | None:
    """The user, if they own `project` (or co-own it), or may change anyone's; PermissionDenied otherwise."""
    user = resolve_user(session, who)
    require_owner(user, project_owner_ids(project), Action.manage_labeling, Action.change_any_project,
                  f"labeling project {project.name!r} (to {doing})")
    return user


def set_co_owners(session: Session, who, project_id: int, co_owner_ids: list[int]) -> dict:
    """Make `co_owner_ids` the project's co-owners (its owner's or an admin's decision)."""
    project = _project(session, project_id)
    require_project_owner(session, who, project, "name its co-owners")
    project.co_owner_ids = _co_owners(session, co_owner_ids, project.owner_id) or None
    session.commit()
    return project_to_dict(session, project)


def project_to_dict(session: Session, project: LabelingProject, with_guidelines: bool = True) -> dict:
    """The project and its counts; its guidelines (up to MAX_GUIDELINES_BYTES) only `with_guidelines` (a list of
    projects leaves them out: the one opened is read whole)."""
    pairs, complete = session.execute(
        select(func.count(LabelingPair.id),
               func.count(LabelingPair.id).filter(LabelingPair.label_count >= project.overlap))
        .where(LabelingPair.project_id == project.id)).one()
    labels = session.scalar(select(func.count(Comparison.id)).join(LabelingPair, Comparison.pair_id == LabelingPair.id)
                            .where(LabelingPair.project_id == project.id, Comparison.label != Label.skip))
    return {"id": project.id, "name": project.name, **({"guidelines": project.guidelines} if with_guidelines else {}),
            "source_job_ids": project.source_job_ids, "pairing": project.pairing,
            "pairs_per_prompt": project.pairs_per_prompt, "overlap": project.overlap,
            "labeler_ids": project.labeler_ids, "owner_id": project.owner_id,
            "co_owner_ids": project.co_owner_ids or [], "created_at": project.created_at.isoformat(),
            "pairs": pairs, "complete_pairs": complete, "labels": labels}


def list_projects(who, session: Session | None = None) -> list[dict]:
    """The projects `who` may label (every project for admins), newest first, without their guidelines."""
    with reading(session) as s:
        user = resolve_user(s, who)
        require(user, Action.label)
        projects = s.scalars(select(LabelingProject).order_by(LabelingProject.id.desc()))
        return [project_to_dict(s, p, with_guidelines=False) for p in projects if may_label(user, p)]


def labeler_choices(who, session: Session | None = None) -> list[dict]:
    """The enabled labelers, by name ({id, name, role}): whom a project can be limited to (trainers and admins
    label every project); for people who manage labeling (trainers cannot list users otherwise)."""
    with reading(session) as s:
        require(resolve_user(s, who), Action.manage_labeling)
        users = s.scalars(select(User).where(User.disabled.is_(False), User.role == Role.labeler).order_by(User.name))
        return [{"id": u.id, "name": u.name, "role": u.role.value} for u in users]


def co_owner_choices(who, session: Session | None = None) -> list[dict]:
    """The enabled people who may manage labeling, by name ({id, name, role}): whom a project can name as its
    co-owners (the roles are access.ALLOWED_ROLES[manage_labeling])."""
    with reading(session) as s:
        require(resolve_user(s, who), Action.manage_labeling)
        roles = ALLOWED_ROLES[Action.manage_labeling]
        users = s.scalars(select(User).where(User.disabled.is_(False), User.role.in_(roles)).order_by(User.name))
        return [{"id": u.id, "name": u.name, "role": u.role.value} for u in users]


def get_project(project_id: int, who, session: Session | None = None) -> dict:
    with reading(session) as s:
        project = _project(s, project_id)
        _require_labeler(s, who, project)
        return project_to_dict(s, project)


def update_guidelines(session: Session, who, project_id: int, guidelines: str) -> dict:
    """New guidelines for the project (its owners' or an admin's)."""
    project = _project(session, project_id)
    require_project_owner(session, who, project, "change its guidelines")
    check_guidelines(guidelines)
    project.guidelines = guidelines
    session.commit()
    return project_to_dict(session, project)


# ----------------------------------------------------------------------------- the queue

def answer_id(project: LabelingProject, pair_id: int, completion_id: int) -> str:
    """How a labeler's screen names an answer of a pair: opaque, the same every time the pair is shown, different
    in every pair. Completion ids follow the generate jobs that wrote them, hence the models: shown, they would
    tell a labeler which answers came from one model. A keyed hash (the project's own key) of the pair and the
    completion, so a submit needs no memory of the screen to learn which answer was on the left."""
    message = f"{pair_id}:{completion_id}".encode()
    return hmac.new(project.answer_key.encode(), message, hashlib.sha256).hexdigest()[:ANSWER_ID_CHARS]


def _screen(project: LabelingProject, row, pair_id: int, swapped: bool) -> dict:
    """A pair as the labeler sees it, with their progress, from a PAIR_SCREEN row."""
    answers = [{"answer_id": answer_id(project, pair_id, row.first_id), "text": row.first_text},
               {"answer_id": answer_id(project, pair_id, row.second_id), "text": row.second_text}]
    left, right = answers[::-1] if swapped else answers
    return {"pair_id": pair_id, "project_id": row.project_id,
            "prompt": {"text": row.prompt_text,
                       "messages": row.messages or [{"role": "user", "content": row.prompt_text}]},
            "left": left, "right": right, "progress": _progress_of(row)}


def _screen_parameters(project: LabelingProject, user: User, pair_id: int) -> dict:
    return {"pair_id": pair_id, **_progress_parameters(project, user)}


def _pair_screen(session: Session, project: LabelingProject, user: User, pair_id: int, swapped: bool) -> dict:
    return _screen(project, session.execute(queries.PAIR_SCREEN, _screen_parameters(project, user, pair_id)).one(),
                   pair_id, swapped)


def next_pair(session: Session, who, project_id: int) -> dict | None:
    """The next pair for this labeler (the same one again while they hold it), or None when none is left."""
    project = _project(session, project_id)
    user = _require_labeler(session, who, project)
    if user is None:
        raise InvalidInput("labeling needs a user")
    now = utcnow()
    held = session.scalar(queries.HELD_BY_LABELER, {"project_id": project.id, "user_id": user.id})
    if held is not None and held.expires_at > now:
        shown = _pair_screen(session, project, user, held.pair_id, held.swapped)
        session.commit()  # ending with a commit, the request gives its connection back without a rollback
        return shown
    if held is not None:
        # Expired holds are ignored by every query; this labeler's own is removed (it would block taking
        # the same pair again). Nothing else writes here, so fetching a pair seldom waits on a lock.
        session.delete(held)
        session.flush()
    skipped: list[int] = []
    free = {"project_id": project.id, "overlap": project.overlap, "user_id": user.id, "now": now, "skipped": skipped}
    waits = 0
    for _ in range(20 + LOCKED_PAIR_WAITS):  # a lost race for a last slot moves on to the next pair
        swapped = random.random() < 0.5
        try:
            taken = session.execute(queries.TAKE_A_FREE_PAIR, {
                **free, "swapped": swapped, "expires_at": now + timedelta(minutes=ASSIGNMENT_MINUTES)}).first()
        except IntegrityError:  # the same labeler asking twice at once: take what the other request took
            session.rollback()
            return next_pair(session, user, project_id)
        if taken is None:
            # None is "nothing left" only when no free pair was passed by for being locked a moment by another
            # labeler's request (PostgreSQL): a labeler told so while pairs still wait for them stops labeling.
            if waits < LOCKED_PAIR_WAITS and session.scalar(queries.A_FREE_PAIR_IS_LEFT, free):
                waits += 1
                time.sleep(LOCKED_PAIR_WAIT_S)
                continue
            break
        assignment_id, pair_id = taken
        # Of the live holders of this pair, the earliest (overlap - label_count) keep it. This statement sees
        # every hold committed before ours was taken: on PostgreSQL another labeler's hold on the same pair
        # was committed before TAKE_A_FREE_PAIR could lock the pair, and has the lower id.
        shown = session.execute(queries.TAKEN_PAIR_SCREEN, {**_screen_parameters(project, user, pair_id), "now": now,
                                                            "assignment_id": assignment_id}).one()
        if shown.label_count + shown.older_holds < project.overlap:
            session.commit()
            return _screen(project, shown, pair_id, swapped)
        session.execute(queries.DROP_HOLD, {"assignment_id": assignment_id})
        skipped.append(pair_id)
    session.commit()
    return None


def check_time_spent(time_spent_s: float | None) -> None:
    """InvalidInput naming time_spent_s unless it is None or 0 to MAX_TIME_SPENT_S (labels and arena votes)."""
    if time_spent_s is not None and not 0 <= time_spent_s <= MAX_TIME_SPENT_S:
        raise InvalidInput(f"time_spent_s must be between 0 and {MAX_TIME_SPENT_S} seconds", field="time_spent_s")


def comparison_to_dict(comparison: Comparison) -> dict:
    return {"id": comparison.id, "pair_id": comparison.pair_id, "label": comparison.label.value,
            "swapped": comparison.swapped, "note": comparison.note, "annotator_id": comparison.annotator_id,
            "created_at": comparison.created_at.isoformat()}


def submit_label(session: Session, who, project_id: int, pair_id: int, choice: Choice | str, left_answer_id: str,
                 note: str | None = None, time_spent_s: float | None = None,
                 idempotency_key: str | None = None, and_next: bool = False) -> dict:
    """Store one label; a repeat (same labeler and pair, or same idempotency key) returns the stored one.

    With `and_next` the answer also holds the labeler's next pair (`next`: `next_pair`'s answer, None when
    nothing is left), as a labeling screen shows it after every click: one call per label instead of two,
    and the labeler's progress counted once. A repeat gets the same next pair (it is held for them)."""
    project = _project(session, project_id)
    user = _require_labeler(session, who, project)
    if user is None:
        raise InvalidInput("labeling needs a user")
    try:
        choice = Choice(choice)
    except ValueError:
        raise InvalidInput(f"choice must be one of {', '.join(Choice)}", field="choice") from None
    if note is not None and len(note) > 5000:
        raise InvalidInput("a note is limited to 5,000 characters", field="note")
    check_time_spent(time_spent_s)
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 64:
        raise InvalidInput("idempotency_key must be 1 to 64 characters", field="idempotency_key")
    pair = session.get(LabelingPair, pair_id) if 0 < pair_id < 2 ** 63 else None
    if pair is None or pair.project_id != project.id:
        raise NotFound(f"pair {pair_id} is not in project {project_id}")
    left_completion_id = {answer_id(project, pair.id, completion_id): completion_id
                          for completion_id in (pair.completion_a_id, pair.completion_b_id)}.get(left_answer_id)
    if left_completion_id is None:
        raise InvalidInput(f"answer {str(left_answer_id)[:64]!r} is not one of pair {pair_id}'s (send the answer_id "
                           "the pair was shown with on the left)", field="left_answer_id")

    def stored_already() -> dict | None:
        """This labeler's label on this pair, or the label this idempotency key stored (one query)."""
        mine = (Comparison.pair_id == pair.id) & (Comparison.annotator_id == user.id)
        found = session.scalars(select(Comparison).where(
            mine | (Comparison.idempotency_key == idempotency_key) if idempotency_key else mine)).all()
        keyed = [c for c in found if idempotency_key and c.idempotency_key == idempotency_key]
        if keyed and (keyed[0].annotator_id != user.id or keyed[0].pair_id != pair.id):
            raise Conflict("this idempotency key was used for another label")
        stored = keyed[0] if keyed else (found[0] if found else None)
        return {**comparison_to_dict(stored), "duplicate": True} if stored is not None else None

    def answer_with_stored(otherwise: Conflict) -> dict:
        """After a write was refused: the stored label if this was a retry of it, else `otherwise` is raised."""
        session.rollback()
        already = stored_already()
        if already is None:
            raise otherwise
        return with_progress_and_next(already)

    def with_progress_and_next(stored: dict) -> dict:
        if not and_next:
            return {**stored, "progress": progress(session, user, project_id)}
        shown_next = next_pair(session, user, project_id)
        counts = shown_next["progress"] if shown_next is not None else progress(session, user, project_id)
        return {**stored, "progress": counts, "next": shown_next}

    # A retry is found by the writes themselves, not by a lookup first (one statement less per label, the
    # common case): the unique (pair, labeler) and idempotency-key constraints refuse the insert, or the
    # overlap guard finds the pair full with this labeler's own label; both answer with the stored label.
    swapped = left_completion_id == pair.completion_b_id
    label = choice.label(swapped)
    values = dict(prompt_id=pair.prompt_id, completion_a_id=pair.completion_a_id, completion_b_id=pair.completion_b_id,
                  label=label, annotator_id=user.id, source="label", time_spent_s=time_spent_s, pair_id=pair.id,
                  swapped=swapped, note=(note or None), idempotency_key=idempotency_key, created_at=utcnow())
    # The writes, back to back as plain statements (no ORM flush between them): on SQLite the database's
    # one write lock is held from the first write to the commit, and every other writer waits that long.
    try:
        if label != Label.skip:
            # The guard: at most `overlap` labels per pair, however many labelers submit at once.
            taken = session.execute(queries.TAKE_A_SLOT, {"pair_id": pair.id, "overlap": project.overlap}).rowcount
            if not taken:
                return answer_with_stored(Conflict(f"pair {pair_id} already has its {project.overlap} label(s); "
                                                   "take the next pair"))
        stored_id = session.execute(queries.STORE_LABEL, values).scalar_one()
        if idempotency_key and session.execute(queries.KEY_OF_AN_UNDONE_LABEL, {"key": idempotency_key}).first():
            session.rollback()  # a late retry of a label that was undone since: the labeler took it back
            raise Conflict(f"the label this idempotency key stored on pair {pair_id} was undone; nothing is stored: "
                           "label the pair again (with a new key)")
        session.execute(queries.RELEASE_LABELED_HOLD, {"pair_id": pair.id, "user_id": user.id})
        session.commit()
    except IntegrityError:  # stored already, by an earlier or a concurrent try (the count rolls back too)
        # ... unless the label this repeats was undone in between (a retry racing an undo): nothing is stored.
        return answer_with_stored(Conflict(f"your label on pair {pair_id} was undone while this request repeated "
                                           "it; nothing is stored: label the pair again"))
    return with_progress_and_next({**comparison_to_dict(Comparison(id=stored_id, **values)), "duplicate": False})


def undo_last_label(session: Session, who, project_id: int) -> dict:
    """Remove this labeler's latest label in the project and hand its pair back, shown as before; `undone` names
    the label removed.

    The pair's `label_count` changes only with the label's removal, in one transaction: the slot is given back
    first (locking the pair, as a label does), then the label is deleted, and when that deletes nothing (another
    undo of the same label, a double click, got there first) the whole undo rolls back and is refused (409)."""
    project = _project(session, project_id)
    user = _require_labeler(session, who, project)
    if user is None:
        raise InvalidInput("labeling needs a user")
    last = session.execute(queries.LAST_LABEL, {"project_id": project.id, "user_id": user.id}).first()
    if last is None:
        raise Conflict("there is no label of yours to undo in this project")
    if last.label != Label.skip:
        session.execute(queries.GIVE_BACK_A_SLOT, {"pair_id": last.pair_id})
    if not session.execute(queries.REMOVE_LABEL, {"label_id": last.id, "pair_id": last.pair_id, "user_id": user.id,
                                                  "label": last.label}).rowcount:
        session.rollback()
        raise Conflict(f"your label {last.id} was undone a moment ago by another request; nothing more is undone")
    if last.idempotency_key:
        session.execute(queries.KEEP_UNDONE_KEY, {"key": last.idempotency_key, "user_id": user.id, "now": utcnow()})
    session.execute(queries.RELEASE_HOLDS_IN_PROJECT, {"project_id": project.id, "user_id": user.id})
    now = utcnow()
    session.execute(queries.HOLD_A_PAIR, {"pair_id": last.pair_id, "user_id": user.id, "swapped": last.swapped,
                                          "expires_at": now + timedelta(minutes=ASSIGNMENT_MINUTES), "now": now})
    session.commit()
    return {**_pair_screen(session, project, user, last.pair_id, last.swapped), "undone": last.id}


def progress(session: Session, who, project_id: int) -> dict:
    """{done, skipped, today, left, pairs, complete_pairs} for one labeler: `done` counts the pairs they labeled
    or skipped (neither is left for them), `skipped` the skips among them (the Label tab shows them apart).

    Every pair shown and every label answers with it, so it is one cheap statement (queries.PROGRESS; a pair
    shown reads it in the same statement as the pair, queries.PAIR_SCREEN).
    `left` is the pairs still open minus those of them this labeler has labeled (one label per labeler per
    pair, so labels count pairs)."""
    project = _project(session, project_id)
    user = resolve_user(session, who)
    return _progress_of(session.execute(queries.PROGRESS, _progress_parameters(project, user)).one())


def _progress_parameters(project: LabelingProject, user: User) -> dict:
    start_of_day = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"project_id": project.id, "overlap": project.overlap, "user_id": user.id, "start_of_day": start_of_day}


def _progress_of(counts) -> dict:
    return {"done": counts.done, "skipped": counts.skipped, "today": counts.today,
            "left": counts.open - counts.done_of_open,
            "pairs": counts.pairs, "complete_pairs": counts.pairs - counts.open}


def labels_of_project(session: Session, project_id: int, include_skips: bool = False) -> list[dict[str, Any]]:
    """Every label of the project with its labeler's name, oldest first (agreement and exports read these)."""
    query = (select(Comparison, User.name).join(LabelingPair, Comparison.pair_id == LabelingPair.id)
             .join(User, Comparison.annotator_id == User.id)
             .where(LabelingPair.project_id == project_id).order_by(Comparison.id))
    if not include_skips:
        query = query.where(Comparison.label != Label.skip)
    return [{**comparison_to_dict(c), "labeler": name, "prompt_id": c.prompt_id,
             "completion_a_id": c.completion_a_id, "completion_b_id": c.completion_b_id,
             "time_spent_s": c.time_spent_s} for c, name in session.execute(query)]
