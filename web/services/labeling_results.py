"""What a labeling project's labels add up to: agreement, consensus pairs, and the files they export to.

    agreement_report(project_id)      percent agreement, Krippendorff's alpha (with how to read it), Cohen's
                                      kappa per labeler pair, each labeler vs. the majority, disagreements
                                      (with the prompt and both answers)
    consensus_pairs(project_id)       chosen/rejected pairs by the consensus rule: the pairs a reward or DPO
                                      job on the project trains on (worker/jobs/preference_pairs.py)
    export_trl_jsonl(project_id)      TRL's preference format: prompt / chosen / rejected, conversational
                                      when the prompt is a chat
    export_labels_csv(project_id)     every raw label, skips included

The agreement report and the CSV name the labelers: they are for the project's owners (its creator and
co-owners) and admins; the consensus pairs and the TRL export (no names) for anyone who manages labeling.

The math lives in `llm.agreement` (pure functions); which labels make which pairs is read once, by
`worker.jobs.preference_pairs.consensus_pairs`, for this export and for the training snapshot alike.
"""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from db.models import Completion, LabelingPair, LabelingProject, Prompt
from web.services.access import Action, require, resolve_user
from llm.agreement import (LabelRow, against_majority, alpha_reading, consensus, consensus_counts, disagreements,
                           krippendorff_alpha, pairwise_kappas, percent_agreement)
from web.services.common import InvalidInput, NotFound, reading
from web.services.labeling import labels_of_project, require_project_owner
from worker.jobs import preference_pairs

MIN_SHARED_FOR_KAPPA = 5  # fewer shared items make kappa mostly noise
SHOWN_CHARS = 1000        # of a disagreement's prompt and answers, in the report


def _project(session: Session, project_id: int, who, doing: str | None = None) -> LabelingProject:
    """The project, for someone who manages labeling; with `doing` (what names its labelers), for its owners and
    admins only (labeling.require_project_owner)."""
    require(resolve_user(session, who), Action.manage_labeling)
    project = session.get(LabelingProject, project_id)
    if project is None:
        raise NotFound(f"labeling project {project_id} does not exist")
    if doing is not None:
        require_project_owner(session, who, project, doing)
    return project


def _rows(labels: list[dict]) -> list[LabelRow]:
    return [LabelRow(item=label["pair_id"], labeler=label["labeler"], label=label["label"]) for label in labels]


def agreement_report(project_id: int, who, session: Session | None = None) -> dict:
    """Everything the agreement panel shows, for people who manage labeling."""
    with reading(session) as s:
        project = _project(s, project_id, who, "see its agreement, which names its labelers")
        labels = labels_of_project(s, project.id)
        rows = _rows(labels)
        alpha = krippendorff_alpha(rows)
        per_labeler: dict[str, int] = {}
        for label in labels:
            per_labeler[label["labeler"]] = per_labeler.get(label["labeler"], 0) + 1
        disagreeing = disagreements(rows)
        texts = _pair_texts(s, [item["item"] for item in disagreeing])
        return {
            "project_id": project.id, "labels": len(labels), "labelers": per_labeler,
            "percent_agreement": percent_agreement(rows), "alpha": alpha, "alpha_reading": alpha_reading(alpha),
            "kappas": pairwise_kappas(rows, MIN_SHARED_FOR_KAPPA), "against_majority": against_majority(rows),
            "disagreements": [{"pair_id": item["item"], "labels": item["labels"], **texts[item["item"]]}
                              for item in disagreeing],
            "consensus": consensus_counts(consensus(rows, project.overlap)),
            "min_labels": project.overlap,
        }


def _pair_texts(session: Session, pair_ids: list[int]) -> dict[int, dict[str, str]]:
    """{pair id: {prompt, answer_a, answer_b}}: what the labelers who disagree on a pair read (the answers in the
    pair's order, which its labels as stored name: a is its first answer), each cut to SHOWN_CHARS."""
    if not pair_ids:
        return {}
    first, second = aliased(Completion), aliased(Completion)
    query = (select(LabelingPair.id, Prompt.text, first.text, second.text)
             .join(Prompt, LabelingPair.prompt_id == Prompt.id)
             .join(first, first.id == LabelingPair.completion_a_id)
             .join(second, second.id == LabelingPair.completion_b_id)
             .where(LabelingPair.id.in_(pair_ids)))
    return {pair_id: {"prompt": _cut(prompt), "answer_a": _cut(answer_a), "answer_b": _cut(answer_b)}
            for pair_id, prompt, answer_a, answer_b in session.execute(query)}


def _cut(text: str) -> str:
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def consensus_pairs(project_id: int, who, min_labels: int | None = None,
                    session: Session | None = None) -> list[dict]:
    """[{pair_id, prompt (text), messages (or None), chosen, rejected, labels}] for pairs whose consensus is
    "a" or "b"; min_labels defaults to the project's overlap (a pair counts once it is complete). The pairs
    are the ones a reward or DPO job on this project trains on (`worker.jobs.preference_pairs`)."""
    with reading(session) as s:
        project = _project(s, project_id, who)
        if min_labels is not None and (isinstance(min_labels, bool) or not isinstance(min_labels, int)
                                       or min_labels < 1):
            raise InvalidInput("min_labels must be a whole number of at least 1", field="min_labels")
        return [{"pair_id": pair.pair_id, "prompt": pair.prompt, "messages": pair.messages, "chosen": pair.chosen,
                 "rejected": pair.rejected, "labels": pair.labels}
                for pair in preference_pairs.consensus_pairs(s, project.id, min_labels)]


def trl_record(pair: dict) -> dict:
    """One line of TRL's preference format: conversational when the prompt is a chat, standard otherwise."""
    if pair["messages"]:
        return {"prompt": pair["messages"], "chosen": [{"role": "assistant", "content": pair["chosen"]}],
                "rejected": [{"role": "assistant", "content": pair["rejected"]}]}
    return {"prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"]}


def export_trl_jsonl(project_id: int, who, min_labels: int | None = None, session: Session | None = None) -> str:
    pairs = consensus_pairs(project_id, who, min_labels, session=session)
    return "".join(json.dumps(trl_record(pair), ensure_ascii=False) + "\n" for pair in pairs)


CSV_COLUMNS = ("label_id", "pair_id", "prompt_id", "completion_a_id", "completion_b_id", "labeler", "label",
               "swapped", "note", "time_spent_s", "created_at")


def export_labels_csv(project_id: int, who, session: Session | None = None) -> str:
    """Every label as stored (un-swapped: "a" means completion_a is better), skips included."""
    with reading(session) as s:
        project = _project(s, project_id, who, "export its labels with the labelers' names")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for label in labels_of_project(s, project.id, include_skips=True):
            writer.writerow([label["id"], label["pair_id"], label["prompt_id"], label["completion_a_id"],
                             label["completion_b_id"], label["labeler"], label["label"], label["swapped"],
                             label["note"] or "", label["time_spent_s"] if label["time_spent_s"] is not None else "",
                             label["created_at"]])
        return out.getvalue()
