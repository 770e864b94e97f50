"""The statements a label runs (web/services/labeling.py), built once, with bind parameters for the values.

Each label stores itself and fetches the labeler's next pair, under load from dozens of labelers at once, in
a web process that serves every request on one interpreter. Building a SQLAlchemy statement and computing its
cache key cost more CPU than the database spends running it (bench/bench_labeling.py, "the labeling code
alone"); a statement built once keeps its cache key and its compiled form is cached, so each call only binds
values: `session.execute(STATEMENT, {"name": value, ...})`. For the same reason what a screen needs after a
pair is taken is one statement, not three: each round trip to the database also waits for the interpreter.

The parameters each statement takes are listed with it. Writes are on the tables (Core), not the mapped
classes: nothing here needs the ORM's unit of work, and a dict of values passed to an ORM INSERT would be
taken for a bulk insert.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Integer, bindparam, delete, exists, func, insert, select, true, update
from sqlalchemy.orm import aliased

from db.models import Comparison, Completion, LabelingAssignment, LabelingPair, Prompt, UndoneLabelKey, UTCDateTime
from llm.preference_labels import Label

# ----------------------------------------------------------------------------- handing out pairs

# The labeler's hold in a project, if any (expired or not).   project_id, user_id
HELD_BY_LABELER = (select(LabelingAssignment).join(LabelingPair, LabelingAssignment.pair_id == LabelingPair.id)
                   .where(LabelingPair.project_id == bindparam("project_id"),
                          LabelingAssignment.user_id == bindparam("user_id"))
                   .order_by(LabelingAssignment.id).limit(1))

# How many live holds a pair has (correlated with the LabelingPair of the enclosing statement).   now
_count_live_holds = select(func.count(LabelingAssignment.id)).where(
    LabelingAssignment.pair_id == LabelingPair.id, LabelingAssignment.expires_at > bindparam("now"))
_live_holds = _count_live_holds.scalar_subquery()
_labeled_by_this_labeler = exists().where(Comparison.pair_id == LabelingPair.id,
                                          Comparison.annotator_id == bindparam("user_id"))

# The next free pair for a labeler, held for them, in one statement: on SQLite, whose one writer at a time runs
# it whole, no other labeler can take the same last slot between finding it and holding it.
#   project_id, overlap, user_id, now, swapped, expires_at, skipped (pair ids passed over: an expanding list)
# Answers (assignment id, pair id), or nothing when no pair is left for this labeler.
TAKE_A_FREE_PAIR = (
    insert(LabelingAssignment.__table__)
    .from_select(["pair_id", "user_id", "swapped", "expires_at", "created_at"], select(
        LabelingPair.id, bindparam("user_id", type_=Integer), bindparam("swapped", type_=Boolean),
        bindparam("expires_at", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))
        # `label_count < overlap` alone first: the index skips full pairs before any holds are counted.
        .where(LabelingPair.project_id == bindparam("project_id"),
               LabelingPair.label_count < bindparam("overlap"),
               LabelingPair.label_count + _live_holds < bindparam("overlap"),
               ~_labeled_by_this_labeler, LabelingPair.id.notin_(bindparam("skipped", expanding=True)))
        # Pairs that already have labels first: the overlap completes and agreement shows sooner. Both keys
        # descending, so the queue index is read backwards and the first free pair ends the scan (with `id`
        # ascending every pair's holds would be counted, then sorted).
        .order_by(LabelingPair.label_count.desc(), LabelingPair.id.desc()).limit(1)
        # PostgreSQL: the pair stays locked until this hold is committed, so a second labeler taking it at
        # once passes it by, or takes it after our commit with a higher hold id: TAKEN_PAIR_SCREEN's
        # `older_holds` then sees the holds in the order they were taken.
        .with_for_update(of=LabelingPair, skip_locked=True))
    .returning(LabelingAssignment.id, LabelingAssignment.pair_id))

# Whether a pair TAKE_A_FREE_PAIR could take is left, locks aside: on PostgreSQL it passes by pairs another labeler's
# request holds locked for the moment of its own take (skip_locked), so finding none there does not mean none is
# left.   project_id, overlap, user_id, now, skipped
A_FREE_PAIR_IS_LEFT = select(exists().where(
    LabelingPair.project_id == bindparam("project_id"), LabelingPair.label_count < bindparam("overlap"),
    LabelingPair.label_count + _live_holds < bindparam("overlap"), ~_labeled_by_this_labeler,
    LabelingPair.id.notin_(bindparam("skipped", expanding=True))))

# Giving a hold back.   assignment_id
DROP_HOLD = delete(LabelingAssignment.__table__).where(LabelingAssignment.id == bindparam("assignment_id"))

# A labeler's hold on a pair, once it is labeled.   pair_id, user_id
RELEASE_LABELED_HOLD = delete(LabelingAssignment.__table__).where(
    LabelingAssignment.pair_id == bindparam("pair_id"), LabelingAssignment.user_id == bindparam("user_id"))

# ----------------------------------------------------------------------------- storing labels

# The overlap guard: one more label on the pair, unless it has all it may have.   pair_id, overlap
TAKE_A_SLOT = (update(LabelingPair.__table__)
               .where(LabelingPair.id == bindparam("pair_id"), LabelingPair.label_count < bindparam("overlap"))
               .values(label_count=LabelingPair.label_count + 1))

# A label (the Comparison's columns as parameters); answers its id.
STORE_LABEL = insert(Comparison.__table__).returning(Comparison.id)

# Whether a label with this idempotency key was stored and then undone (a retry of it must store nothing). Asked
# after STORE_LABEL, in its transaction: an undo of the label it repeats has committed by then (both lock the
# pair's row first, or the insert waited on the undone row's unique key).   key
KEY_OF_AN_UNDONE_LABEL = select(UndoneLabelKey.idempotency_key).where(
    UndoneLabelKey.idempotency_key == bindparam("key"))

# ----------------------------------------------------------------------------- undoing a label

# A labeler's latest label in a project: (id, pair_id, label, swapped, idempotency_key), or nothing.
#   project_id, user_id
LAST_LABEL = (select(Comparison.id, Comparison.pair_id, Comparison.label, Comparison.swapped,
                     Comparison.idempotency_key)
              .join(LabelingPair, Comparison.pair_id == LabelingPair.id)
              .where(LabelingPair.project_id == bindparam("project_id"),
                     Comparison.annotator_id == bindparam("user_id"))
              .order_by(Comparison.id.desc()).limit(1))

# The overlap guard's slot given back, for a label about to be removed. It locks the pair's row before the label's
# (as a label takes TAKE_A_SLOT before STORE_LABEL), so an undo and a label on one pair wait for each other
# instead of deadlocking; it is rolled back with the undo when REMOVE_LABEL finds the label gone.   pair_id
GIVE_BACK_A_SLOT = (update(LabelingPair.__table__).where(LabelingPair.id == bindparam("pair_id"))
                    .values(label_count=LabelingPair.label_count - 1))

# A label removed; its rowcount says whether this request removed it (0: another request did). The pair, labeler
# and label are matched too, so what is removed is what the slot was given back for.
#   label_id, pair_id, user_id, label
REMOVE_LABEL = delete(Comparison.__table__).where(
    Comparison.id == bindparam("label_id"), Comparison.pair_id == bindparam("pair_id"),
    Comparison.annotator_id == bindparam("user_id"), Comparison.label == bindparam("label"))

# An undone label's idempotency key, kept (UndoneLabelKey).   key, user_id, now
KEEP_UNDONE_KEY = insert(UndoneLabelKey.__table__).values(
    idempotency_key=bindparam("key"), user_id=bindparam("user_id"), undone_at=bindparam("now", type_=UTCDateTime()))

# Every hold of a labeler in a project.   project_id, user_id
RELEASE_HOLDS_IN_PROJECT = delete(LabelingAssignment.__table__).where(
    LabelingAssignment.user_id == bindparam("user_id"),
    LabelingAssignment.pair_id.in_(select(LabelingPair.id).where(LabelingPair.project_id == bindparam("project_id"))))

# A hold on a pair for a labeler, shown the given way round.   pair_id, user_id, swapped, expires_at, now
HOLD_A_PAIR = insert(LabelingAssignment.__table__).values(
    pair_id=bindparam("pair_id"), user_id=bindparam("user_id"), swapped=bindparam("swapped"),
    expires_at=bindparam("expires_at", type_=UTCDateTime()), created_at=bindparam("now", type_=UTCDateTime()))

# ----------------------------------------------------------------------------- progress

# A labeler's counts in a project: one statement of two counts, one over this labeler's own labels, one over
# the project's pairs on the queue index; no per-pair lookups.   project_id, overlap, user_id, start_of_day
_is_open = LabelingPair.label_count < bindparam("overlap")
_mine = (select(func.count(Comparison.id).label("done"),
                func.count(Comparison.id).filter(Comparison.label == Label.skip).label("skipped"),
                func.count(Comparison.id).filter(Comparison.created_at >= bindparam("start_of_day"))
                .label("today"),
                func.count(Comparison.id).filter(_is_open).label("done_of_open"))
         .join(LabelingPair, Comparison.pair_id == LabelingPair.id)
         .where(LabelingPair.project_id == bindparam("project_id"), Comparison.annotator_id == bindparam("user_id"))
         .subquery())
_queue = (select(func.count(LabelingPair.id).label("pairs"), func.count(LabelingPair.id).filter(_is_open).label("open"))
          .where(LabelingPair.project_id == bindparam("project_id")).subquery())
PROGRESS = select(_mine, _queue).select_from(_mine.join(_queue, true()))

# ----------------------------------------------------------------------------- what the screen shows

# A pair as the Label tab shows it (the prompt and both answers, as columns, no ORM objects) with the labeler's
# progress: one statement, as every pair shown runs it.   pair_id and PROGRESS's parameters
_first, _second = aliased(Completion), aliased(Completion)
PAIR_SCREEN = (select(LabelingPair.project_id, Prompt.text.label("prompt_text"), Prompt.messages,
                      _first.id.label("first_id"), _first.text.label("first_text"),
                      _second.id.label("second_id"), _second.text.label("second_text"), _mine, _queue)
               .select_from(LabelingPair)
               .join(Prompt, Prompt.id == LabelingPair.prompt_id)
               .join(_first, _first.id == LabelingPair.completion_a_id)
               .join(_second, _second.id == LabelingPair.completion_b_id)
               .join(_mine, true()).join(_queue, true())
               .where(LabelingPair.id == bindparam("pair_id")))

# The same for a pair just taken, with what decides whether this hold keeps it: the pair's label count and how
# many live holds of it are older than this one.   PAIR_SCREEN's parameters, now, assignment_id
TAKEN_PAIR_SCREEN = PAIR_SCREEN.add_columns(
    LabelingPair.label_count,
    _count_live_holds.where(LabelingAssignment.id < bindparam("assignment_id")).scalar_subquery().label("older_holds"))
