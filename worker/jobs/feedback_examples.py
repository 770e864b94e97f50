"""The unpaired examples a KTO job trains on (answers marked good or bad), gathered once from their sources and
written to the run, as `worker/jobs/preference_pairs.py` does for pairs.

Sources:
  dataset   an uploaded feedback dataset (TRL's unpaired prompt / completion / label), or a preference dataset,
            unpaired as TRL unpairs it (chosen good, rejected bad)                           source "upload"
  thumbs    chat thumbs (web/services/feedback.py), of the chosen models or of every model   source "thumbs"
  projects  labeling projects' consensus (the one rule, `llm.agreement.consensus`):          source "label"
              "both bad"  both answers bad: the labelers said neither is acceptable, an absolute judgement;
              "a" / "b"   the preferred answer good, the other bad. A relative judgement read as an absolute one,
                          which is what TRL does with pairs and what the KTO paper trained on (its unpaired runs
                          from paired data matched DPO's); without them a project would give bad answers only.
              tie, split votes and too few labels give nothing.

`<run>/feedback.jsonl` is written when the job first starts and read on every later attempt, so a resumed run sees
the same examples however many thumbs arrived meanwhile; `feedback_sources.json` beside it records which thumbs
(answer_feedback ids) and labels (comparison ids) went in (lineage). Each line: {"prompt": [messages],
"completion": [assistant message], "label": bool, "source", "feedback_ids"?, "comparison_ids"?, "model_id"?}.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Comparison, Completion, LabelingPair, LabelingProject, Prompt, User
from llm.agreement import LabelRow, consensus
from llm.atomic_files import atomic_write_text
from llm.preference_labels import Label
from worker.jobs.preference_pairs import _conversation, project_pairs

EXAMPLES_FILE = "feedback.jsonl"
SOURCES_FILE = "feedback_sources.json"


def both_bad_answers(session: Session, project_id: int) -> list[dict]:
    """Both answers of every pair whose consensus is "both bad", as bad examples (source "label")."""
    project = session.get(LabelingProject, project_id)
    if project is None:
        raise ValueError(f"labeling project {project_id} does not exist")
    rows = session.execute(
        select(Comparison.id, Comparison.pair_id, Comparison.label, User.name)
        .join(LabelingPair, Comparison.pair_id == LabelingPair.id).join(User, Comparison.annotator_id == User.id)
        .where(LabelingPair.project_id == project_id, Comparison.label != Label.skip)
        .order_by(Comparison.id)).all()
    comparisons: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        comparisons[row.pair_id].append(row.id)
    decided = consensus([LabelRow(row.pair_id, row.name, row.label) for row in rows], project.overlap)
    items = []
    for pair_id in sorted(pair_id for pair_id, d in decided.items() if d.label == Label.both_bad):
        pair = session.get(LabelingPair, pair_id)
        prompt = session.get(Prompt, pair.prompt_id)
        for completion_id in (pair.completion_a_id, pair.completion_b_id):
            items.append({"prompt": _conversation(prompt.text, prompt.messages),
                          "completion": [{"role": "assistant", "content": session.get(Completion, completion_id).text}],
                          "label": False, "source": "label", "project_id": project_id,
                          "comparison_ids": comparisons[pair_id]})
    return items


def project_examples(session: Session, project_id: int) -> list[dict]:
    """A project's consensus as unpaired examples: "a"/"b" pairs unpaired, "both bad" pairs' answers bad."""
    from llm.kto_batches import unpair

    return unpair(project_pairs(session, project_id)) + both_bad_answers(session, project_id)


def gather_examples(session: Session, *, dataset_file: Path | None, dataset_kind: str | None,
                    project_ids: Sequence[int], include_thumbs: bool, thumbs_model_ids: Sequence[int]) -> list[dict]:
    from llm.chat_data import read_feedback, read_preference
    from llm.kto_batches import unpair
    from web.services.feedback import feedback_items

    items: list[dict] = []
    if dataset_file is not None:
        read = unpair(read_preference(dataset_file)) if dataset_kind == "preference" else read_feedback(dataset_file)
        items += [{**item, "source": "upload"} for item in read]
    if include_thumbs:
        items += feedback_items(session, thumbs_model_ids or None)
    for project_id in project_ids:
        items += project_examples(session, project_id)
    return items


def class_problem(items: Sequence[dict]) -> str | None:
    """Why KTO cannot learn from `items` (no good or no bad answer), or None."""
    good = sum(1 for item in items if item["label"])
    bad = len(items) - good
    if good and bad:
        return None
    return (f"KTO needs good and bad answers; the sources chosen give {good:,} good and {bad:,} bad: add thumbs "
            "(👍/👎 in Chat), a labeling project with consensus, or a feedback dataset with both labels")


def snapshot_examples(run_dir: Path, session: Session, *, log=print, **sources: Any) -> list[dict]:
    """The run's examples: read back from its snapshot, or gathered now (`gather_examples`) and written once."""
    path = run_dir / EXAMPLES_FILE
    if path.is_file():
        items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        log(f"using the {len(items):,} examples snapshotted when the job first started")
        return items
    items = gather_examples(session, **sources)
    problem = class_problem(items)
    if problem:
        raise ValueError(problem)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items))
    counts: dict[str, dict[str, int]] = {}
    for item in items:
        by_label = counts.setdefault(item["source"], {"good": 0, "bad": 0})
        by_label["good" if item["label"] else "bad"] += 1
    atomic_write_text(run_dir / SOURCES_FILE, json.dumps({
        "counts": counts, "project_ids": list(sources.get("project_ids") or []),
        "thumbs": bool(sources.get("include_thumbs")), "thumbs_model_ids": list(sources.get("thumbs_model_ids") or []),
        "feedback_ids": sorted({i for item in items for i in item.get("feedback_ids", [])}),
        "comparison_ids": sorted({i for item in items for i in item.get("comparison_ids", [])})}))
    log("snapshotted " + ", ".join(f"{c['good']:,} good and {c['bad']:,} bad from {source}"
                                   for source, c in counts.items()))
    return items
