"""The preference pairs a reward or DPO job trains on, gathered once from their sources and written to the run.

Sources: an uploaded preference dataset (source "upload"), labeling projects (their consensus pairs, by
`llm.agreement.consensus`: source "label"), and arena votes (source "arena"). The job writes them to
`<run>/pairs.jsonl` when it first starts and reads that file on every later attempt, so a resumed or
repeated run sees exactly the same pairs however many labels arrived meanwhile; `llm/` reads that file,
never the database. `pairs_sources.json` beside it records which comparisons went in (lineage).

Each line: {"prompt": [messages], "chosen": [assistant message], "rejected": [...], "source", "labeler"?,
"comparison_ids"?, "margin"?} — the normal form of `llm.chat_data.read_preference` plus where it came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Comparison, Completion, Label, LabelingPair, LabelingProject, Prompt, User
from llm.agreement import LabelRow, consensus
from llm.atomic_files import atomic_write_text

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


def _prompt_messages(prompt: Prompt) -> list[dict]:
    return list(prompt.messages) if prompt.messages else [{"role": "user", "content": prompt.text}]


def _answer(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def project_pairs(session: Session, project_id: int, min_labels: int | None = None) -> list[dict]:
    """The consensus pairs of one labeling project (ties, both-bad and split votes make none)."""
    project = session.get(LabelingProject, project_id)
    if project is None:
        raise ValueError(f"labeling project {project_id} does not exist")
    rows = session.execute(
        select(Comparison.id, Comparison.pair_id, Comparison.label, User.name)
        .join(LabelingPair, Comparison.pair_id == LabelingPair.id).join(User, Comparison.annotator_id == User.id)
        .where(LabelingPair.project_id == project_id, Comparison.label != Label.skip)).all()
    labels = [LabelRow(pair_id, name, label.value) for _, pair_id, label, name in rows]
    decided = consensus(labels, min_labels or project.overlap)
    winners = {pair_id: d.label for pair_id, d in decided.items() if d.label in ("a", "b")}
    pairs = []
    for pair in session.scalars(select(LabelingPair).where(LabelingPair.id.in_(winners)).order_by(LabelingPair.id)):
        chosen_id, rejected_id = ((pair.completion_a_id, pair.completion_b_id) if winners[pair.id] == "a"
                                  else (pair.completion_b_id, pair.completion_a_id))
        labelers = sorted({name for _, pair_id, _, name in rows if pair_id == pair.id})
        pairs.append({"prompt": _prompt_messages(session.get(Prompt, pair.prompt_id)),
                      "chosen": _answer(session.get(Completion, chosen_id).text),
                      "rejected": _answer(session.get(Completion, rejected_id).text),
                      "source": "label", "labeler": ", ".join(labelers), "project_id": project_id,
                      "comparison_ids": [cid for cid, pair_id, _, _ in rows if pair_id == pair.id]})
    return pairs


def arena_pairs(session: Session) -> list[dict]:
    """Every arena vote with a winner (A or B) as a pair; ties and both-bad make none."""
    pairs = []
    query = (select(Comparison).where(Comparison.source == "arena", Comparison.label.in_([Label.a, Label.b]))
             .order_by(Comparison.id))
    for vote in session.scalars(query):
        chosen_id, rejected_id = ((vote.completion_a_id, vote.completion_b_id) if vote.label == Label.a
                                  else (vote.completion_b_id, vote.completion_a_id))
        pairs.append({"prompt": _prompt_messages(session.get(Prompt, vote.prompt_id)),
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
