"""Reviewing generated candidates (issue 19 item 15): Label ▸ Candidates lists each prompt with its K answers, the
model and settings of each, found by words, generate job or model, a page at a time, for the training team only;
the disagreements of a project show the prompt and both answers. On SQLite and PostgreSQL, on the real services."""

from __future__ import annotations

import gradio as gr
import pytest

from db.models import Completion, Job, JobStatus, LabelingPair, Model, ModelKind, Prompt, Role
from db.users import create_user
from llm.preference_labels import Choice
from web.services import PermissionDenied, candidates, labeling
from web.services.labeling_results import agreement_report
from web.ui.candidates_browser import (PAGE, build, candidates_html, highlighted, page_note, prompt_text,
                                       sampling_text)
from web.ui.labeling_admin import disagreement_frame

SAMPLING = {"temperature": 0.8, "top_k": 50, "max_new_tokens": 64}


class FakeRequest:
    def __init__(self, username):
        self.username = username


def add_candidates(session, owner, models: list[Model], questions: list[str]) -> Job:
    """A finished generate job: each question answered once by each model."""
    job = Job(kind="generate", status=JobStatus.succeeded, params={"name": "review me"}, owner_id=owner.id,
              progress=1.0)
    session.add(job)
    session.flush()
    for question in questions:
        prompt = Prompt(text=question, messages=[{"role": "user", "content": question}])
        session.add(prompt)
        session.flush()
        session.add_all(Completion(prompt_id=prompt.id, job_id=job.id, model_id=model.id, sampling=SAMPLING,
                                   seed=seed, token_count=5, text=f"{model.name} says: {question.lower()} 100%")
                        for seed, model in enumerate(models))
    session.commit()
    return job


@pytest.fixture
def reviewed(session, users):
    models = [Model(name=name, kind=ModelKind.sft, tokenizer="gpt2", config={}, path=f"models/{name}")
              for name in ("sft-a", "sft-b")]
    session.add_all(models)
    session.commit()
    first = add_candidates(session, users["trainer"], models, [f"Question {i} about rivers" for i in range(12)])
    second = add_candidates(session, users["admin"], models[:1], ["Why is the SKY blue?"])
    # An arena answer is no candidate: it has no generate job.
    prompt = Prompt(text="arena question about rivers")
    session.add(prompt)
    session.flush()
    session.add(Completion(prompt_id=prompt.id, model_id=models[0].id, text="rivers in the arena", sampling={}))
    session.commit()
    return {"models": models, "first": first, "second": second}


def test_prompts_with_their_answers_filtered_searched_and_paged(session, users, reviewed):
    trainer = users["trainer"]
    page = candidates.browse_candidates(trainer, limit=PAGE, session=session)
    assert page["total"] == 13 and len(page["prompts"]) == PAGE  # 12 + 1 prompts, the arena's is no candidate
    newest = page["prompts"][0]
    assert newest["text"] == "Why is the SKY blue?" and [a["model"] for a in newest["answers"]] == ["sft-a"]
    answer = page["prompts"][1]["answers"][1]
    assert (answer["model"], answer["sampling"], answer["seed"], answer["tokens"]) == ("sft-b", SAMPLING, 1, 5)
    rest = candidates.browse_candidates(trainer, offset=PAGE, limit=PAGE, session=session)
    assert len(rest["prompts"]) == 3 and not {p["prompt_id"] for p in rest["prompts"]} & {
        p["prompt_id"] for p in page["prompts"]}

    found = candidates.browse_candidates(trainer, search="sky", session=session)  # any case, prompt or answer
    assert [p["text"] for p in found["prompts"]] == ["Why is the SKY blue?"]
    assert candidates.browse_candidates(trainer, search="RIVERS", session=session)["total"] == 12
    assert candidates.browse_candidates(trainer, search="100%", session=session)["total"] == 13
    assert candidates.browse_candidates(trainer, search="1_0", session=session)["total"] == 0  # _ is no wildcard
    by_job = candidates.browse_candidates(trainer, job_id=reviewed["second"].id, session=session)
    assert by_job["total"] == 1
    only_b = candidates.browse_candidates(trainer, model_id=reviewed["models"][1].id, session=session)
    assert only_b["total"] == 12 and all(a["model"] == "sft-b" for p in only_b["prompts"] for a in p["answers"])

    sources = candidates.candidate_sources(trainer, session=session)
    assert [(j["id"], j["answers"]) for j in sources["jobs"]] == [(reviewed["second"].id, 1),
                                                                   (reviewed["first"].id, 24)]
    assert [(m["name"], m["answers"]) for m in sources["models"]] == [("sft-a", 13), ("sft-b", 12)]
    with pytest.raises(PermissionDenied):
        candidates.browse_candidates(users["labeler"], session=session)  # candidates name their models


def test_the_candidates_sub_tab_shows_cards_and_marks_what_was_searched(api_settings, users, reviewed):
    with gr.Blocks():
        browser = build(api_settings)
    job, model, offset, note, previous, following, cards = browser.refresh_fn(0, 0, "sky", FakeRequest("trainer1"))
    assert [value for _, value in job.choices][0] == 0 and "review me" in job.choices[1][0]
    assert note.endswith("prompts 1–1 of 1</div>") and previous.interactive is False and following.interactive is False
    assert "Why is the <mark>SKY</mark> blue?" in cards and "sft-a" in cards and "temperature 0.8 · top-k 50" in cards
    *_, following, cards = browser.refresh_fn(0, 0, "", FakeRequest("trainer1"))
    assert following.interactive is True and cards.count('class="wb-candidate"') == PAGE


def test_shaping_helpers():
    assert highlighted("a <b>Rivers</b> river", "river") == ("a &lt;b&gt;<mark>River</mark>s&lt;/b&gt; "
                                                             "<mark>river</mark>")
    assert highlighted("x < y", None) == "x &lt; y"
    assert sampling_text({"temperature": 0, "max_new_tokens": 8}, seed=3) == "greedy · up to 8 tokens · seed 3"
    assert sampling_text({}) == "settings not recorded"
    assert prompt_text({"messages": [{"role": "user", "content": "hi"}]}) == "hi"
    assert prompt_text({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}) \
        == "system: be brief\nuser: hi"
    assert page_note({"total": 57, "offset": 10, "prompts": [{}] * 10}) == "prompts 11–20 of 57"
    assert "No candidate answers match" in candidates_html({"total": 0, "offset": 0, "prompts": []})


def test_disagreements_show_the_prompt_and_both_answers(session, users, reviewed):
    second = create_user(session, "labeler2", "labeler2-password", Role.labeler)
    one_pair = add_candidates(session, users["admin"], reviewed["models"], ["Which river is longest?"])
    project = labeling.create_project(session, users["admin"], name="p", source_job_ids=[one_pair.id], overlap=2)
    session.commit()
    for who, preferred in ((users["labeler"], "sft-a"), (second, "sft-b")):  # each prefers another model's answer
        pair = labeling.next_pair(session, who, project.id)
        choice = Choice.left if pair["left"]["text"].startswith(preferred) else Choice.right
        labeling.submit_label(session, who, project.id, pair["pair_id"], choice, pair["left"]["answer_id"])
    (disagreement,) = agreement_report(project.id, users["admin"], session=session)["disagreements"]
    pair = session.get(LabelingPair, disagreement["pair_id"])
    assert disagreement["prompt"] == "Which river is longest?"
    assert (disagreement["answer_a"], disagreement["answer_b"]) == (
        session.get(Completion, pair.completion_a_id).text, session.get(Completion, pair.completion_b_id).text)
    assert sorted(disagreement["labels"].values()) == ["a", "b"]
    shown = disagreement_frame(agreement_report(project.id, users["admin"], session=session))
    assert list(shown.columns) == ["pair", "prompt", "answer a", "answer b", "labels"]
    assert shown.iloc[0]["answer a"] == disagreement["answer_a"] and "labeler2: " in shown.iloc[0]["labels"]
