"""The preference pairs a reward or DPO job trains on, gathered once from their sources and written to the run.

Sources: an uploaded preference dataset (source "upload"), labeling projects (their consensus pairs, by
`llm.agreement.consensus`: source "label"), and arena votes (source "arena"). `consensus_pairs` is the one
place a project's labels become pairs: the labeling export (web/services/labeling_results.py) reads them
there too, so a team that exports N pairs and trains on the project trains on exactly those N. The job writes them to
`<run>/pairs.jsonl` when it first starts and reads that file on every later attempt, so a resumed or
repeated run sees exactly the same pairs however many labels arrived meanwhile; `llm/` reads that file,
never the database. `pairs_sources.json` beside it records which comparisons went in (lineage).

Each line: {"prompt": [messages], "chosen": [assistant message], "rejected": [...], "source", "labeler"?,
"comparison_ids"?, "margin"?} — the normal form of `llm.chat_data.read_preference` plus where it came from.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Comparison, Completion, LabelingPair, LabelingProject, Prompt, User
from llm.agreement import LabelRow, consensus
from llm.atomic_files import atomic_write_text
from llm.preference_labels import WINNERS, Label

PAIRS_FILE = "pairs.jsonl"
SOURCES_FILE = "pairs_sources.json"


def parse_project_ids(text: str | None) -> list[int]:
    """ "3, 5" -> [3, 5]; ValueError naming the bad part."""
    ids = []
    for part in (text or "").replace(" ", "").split(","):
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) < 2 ** 63:
            raise ValueError(f"{part!r} is not a project id")
        ids.append(int(part))
    return ids


def _conversation(text: str, messages: list[dict] | None) -> list[dict]:
    """A prompt as messages: its conversation, or its text as one user turn."""
    return list(messages) if messages else [{"role": "user", "content": text}]


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@dataclass(frozen=True)
class ConsensusPair:
    """A labeling pair whose consensus is "a" or "b": what the export writes and a reward/DPO job trains on."""

    pair_id: int
    prompt: str                       # the prompt's text
    messages: list[dict] | None       # the conversation so far when the prompt is a chat, else None
    chosen: str                       # the completion the consensus prefers
    rejected: str
    labels: int                       # how many labels the decision counted
    labelers: tuple[str, ...]         # who gave them, by name, sorted
    comparison_ids: tuple[int, ...]   # the labels themselves (lineage)


def consensus_pairs(session: Session, project_id: int, min_labels: int | None = None) -> list[ConsensusPair]:
    """The one consensus rule applied to a project's labels, in pair order: a pair with at least `min_labels`
    non-skip labels (default: the project's overlap, so a pair counts once it is complete) takes the label
    more than half of them give (`llm.agreement.consensus`); only "a" or "b" make a pair, ties, both-bad and
    split votes make none. The labeling export and the reward/DPO snapshot both read pairs here."""
    project = session.get(LabelingProject, project_id)
    if project is None:
        raise ValueError(f"labeling project {project_id} does not exist")
    rows = session.execute(
        select(Comparison.id, Comparison.pair_id, Comparison.label, User.name)
        .join(LabelingPair, Comparison.pair_id == LabelingPair.id).join(User, Comparison.annotator_id == User.id)
        .where(LabelingPair.project_id == project_id, Comparison.label != Label.skip)
        .order_by(Comparison.id)).all()
    labels_of: dict[int, list] = defaultdict(list)
    for row in rows:
        labels_of[row.pair_id].append(row)
    decided = consensus([LabelRow(row.pair_id, row.name, row.label) for row in rows],
                        project.overlap if min_labels is None else min_labels)
    winners = {pair_id: d for pair_id, d in decided.items() if d.label in WINNERS}
    if not winners:
        return []
    pairs = {pair.id: pair for pair in session.scalars(select(LabelingPair).where(LabelingPair.id.in_(winners)))}
    completion_ids = {cid for pair in pairs.values() for cid in (pair.completion_a_id, pair.completion_b_id)}
    texts = dict(session.execute(select(Completion.id, Completion.text).where(Completion.id.in_(completion_ids))).all())
    prompts = {prompt.id: prompt for prompt in session.scalars(
        select(Prompt).where(Prompt.id.in_({pair.prompt_id for pair in pairs.values()})))}
    result = []
    for pair_id in sorted(winners):
        pair, decision = pairs[pair_id], winners[pair_id]
        chosen, rejected = ((pair.completion_a_id, pair.completion_b_id) if decision.label == Label.a
                            else (pair.completion_b_id, pair.completion_a_id))
        prompt = prompts[pair.prompt_id]
        result.append(ConsensusPair(
            pair_id=pair_id, prompt=prompt.text, messages=prompt.messages, chosen=texts[chosen],
            rejected=texts[rejected], labels=decision.labels,
            labelers=tuple(sorted({row.name for row in labels_of[pair_id]})),
            comparison_ids=tuple(row.id for row in labels_of[pair_id])))
    return result


def project_pairs(session: Session, project_id: int, min_labels: int | None = None) -> list[dict]:
    """A project's consensus pairs (`consensus_pairs`) as training pairs (source "label")."""
    return [{"prompt": _conversation(pair.prompt, pair.messages),
             "chosen": _answer(pair.chosen), "rejected": _answer(pair.rejected), "source": "label",
             "labeler": ", ".join(pair.labelers), "project_id": project_id,
             "comparison_ids": list(pair.comparison_ids)}
            for pair in consensus_pairs(session, project_id, min_labels)]


def arena_pairs(session: Session) -> list[dict]:
    """Every arena vote with a winner (A or B) as a pair; ties and both-bad make none."""
    pairs = []
    query = (select(Comparison).where(Comparison.source == "arena", Comparison.label.in_(WINNERS))
             .order_by(Comparison.id))
    for vote in session.scalars(query):
        chosen_id, rejected_id = ((vote.completion_a_id, vote.completion_b_id) if vote.label == Label.a
                                  else (vote.completion_b_id, vote.completion_a_id))
        prompt = session.get(Prompt, vote.prompt_id)
        pairs.append({"prompt": _conversation(prompt.text, prompt.messages),
                      "chosen": _answer(session.get(Completion, chosen_id).text),
                      "rejected": _answer(session.get(Completion, rejected_id).text),
                      "source": "arena", "comparison_ids": [vote.id]})
    return pairs


def gather_pairs(session: Session, *, dataset_file: Path | None, project_ids: Sequence[int],
                 include_arena: bool) -> list[dict]:
    from llm.chat_data import read_preference

    pairs: list[dict] = []
    if dataset_file is not None:
        pairs += [{**pair, "source": "upload"} for pair in read_preference(dataset_file)]
    for project_id in project_ids:
        pairs += project_pairs(session, project_id)
    if include_arena:
        pairs += arena_pairs(session)
    return pairs


def snapshot_pairs(run_dir: Path, session: Session, *, dataset_file: Path | None, project_ids: Sequence[int],
                   include_arena: bool, log=print) -> list[dict]:
    """The run's pairs: read back from its snapshot, or gathered now and written (once, atomically)."""
    path = run_dir / PAIRS_FILE
    if path.is_file():
        pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        log(f"using the {len(pairs):,} pairs snapshotted when the job first started")
        return pairs
    pairs = gather_pairs(session, dataset_file=dataset_file, project_ids=project_ids, include_arena=include_arena)
    if not pairs:
        raise ValueError("no preference pairs: the dataset, projects and arena chosen give none yet "
                         "(labeling pairs need a consensus: a or b by more than half of their labels)")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs))
    counts: dict[str, Any] = {}
    for pair in pairs:
        counts[pair["source"]] = counts.get(pair["source"], 0) + 1
    atomic_write_text(run_dir / SOURCES_FILE, json.dumps({
        "counts": counts, "project_ids": list(project_ids), "arena": include_arena,
        "comparison_ids": sorted({cid for pair in pairs for cid in pair.get("comparison_ids", [])})}))
    log("snapshotted " + ", ".join(f"{count:,} {source}" for source, count in counts.items()) + " pairs")
    return pairs
