"""The Label tab and its Projects & agreement sub-tab, handler by handler (no browser; tests/e2e/test_ui_label_e2e.py
drives the real page): a manager creates a project, labelers label through the handlers, a repeated click
stores one label, undo hands the pair back, the end says so, and the panel shows the services' agreement and
exports. On SQLite and PostgreSQL, against the real services."""

from __future__ import annotations

import html
import json
import time

import gradio as gr
import pytest
from sqlalchemy import select

from db.models import Comparison, JobStatus, LabelingPair, MAX_TIME_SPENT_S, Role
from db.users import create_user
from llm.preference_labels import Choice
from tests.conftest import ADMIN, LABELER, TRAINER
from tests.support.records import make_generate_job, shown_id
from web.services import PermissionDenied
from web.services.labeling import labeler_choices
from web.services.labeling_results import agreement_report, export_trl_jsonl
from web.ui.label_tab import (build, conversation, progress_html, project_choices, read_shown, seconds_on,
                              shown_token)
from web.ui.labeling_admin import CHOSEN, EVERYONE, agreement_html, disagreement_frame, kappa_frame

SHOWN, GUIDELINES, PROGRESS, PROMPT, LEFT, RIGHT, STATUS, NOTE = range(8)
BUTTONS = slice(8, 8 + len(Choice))
UNDO = 8 + len(Choice)


class FakeRequest:
    def __init__(self, username):
        self.username = username


def as_user(name):
    return FakeRequest(name)


@pytest.fixture
def tab(api_settings):
    with gr.Blocks():
        made = build(api_settings)
    return made


@pytest.fixture
def second_labeler(users, session):
    user = create_user(session, "labeler2", "labeler2-password", Role.labeler)
    session.commit()
    return user


def create(tab, who, job_ids, overlap=2, **overrides):
    fields = {"name": "helpful?", "job_ids": job_ids, "pairing": "all", "pairs_per_prompt": 3, "overlap": overlap,
              "who_labels": EVERYONE, "labeler_ids": [], "co_owner_ids": [],
              "guidelines": "Prefer the **correct** answer."}
    fields.update(overrides)
    return tab.admin.create(*fields.values(), as_user(who))


def buttons_enabled(screen) -> list[bool]:
    return [button.interactive for button in screen[BUTTONS]]


def label_everything(tab, who, project_id, choose) -> int:
    """Label every pair `who` is given, choosing with `choose(screen)`; returns how many were labeled."""
    screen = tab.open_project(project_id, as_user(who))
    count = 0
    while read_shown(screen[SHOWN]):
        screen = tab.submit(choose(screen), screen[SHOWN], "", as_user(who))
        count += 1
    assert "Nothing left for you" in screen[STATUS] and not any(buttons_enabled(screen))
    return count


# ----------------------------------------------------------------------------- pure pieces

def test_shaping_helpers():
    assert progress_html(None) == ""
    bar = progress_html({"done": 3, "left": 1, "today": 2, "pairs": 4, "complete_pairs": 0})
    assert 'aria-valuenow="75"' in bar and "3 done · 1 left · 2 today" in bar
    assert 'aria-valuenow="100"' in progress_html({"done": 0, "left": 0, "today": 0, "pairs": 0, "complete_pairs": 0})
    pair = {"project_id": 1, "pair_id": 7, "prompt": {"text": "hi", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]},
        "left": {"answer_id": "9f2c", "text": "a"}, "right": {"answer_id": "01ab", "text": "b"}}
    shown = read_shown(shown_token(pair))
    assert (shown["pair_id"], shown["left_answer_id"]) == (7, "9f2c")
    assert read_shown(shown_token(pair))["key"] != shown["key"]  # a key per showing
    for bad in (None, "", "{", "[]", json.dumps({"pair_id": 7})):
        assert read_shown(bad) is None
    assert seconds_on({"shown_at": 100.0}, now=112.5) == 12.5
    assert seconds_on({"shown_at": 100.0}, now=50.0) == 0.0
    assert seconds_on({"shown_at": 0.0}, now=1e9) == MAX_TIME_SPENT_S  # a tab left open overnight: a day
    assert [m["role"] for m in conversation(pair)] == ["system", "user"]
    assert project_choices([{"id": 4, "name": "p", "pairs": 9, "complete_pairs": 2}]) == [
        ("p (2/9 pairs complete)", 4)]


# ----------------------------------------------------------------------------- the Label sub-tab

def test_labeling_through_the_tab(tab, users, session):
    job = make_generate_job(session, prompts=2, answers=2)  # 2 pairs
    message, picker, *_ = create(tab, TRAINER[0], [job.id], overlap=1)
    assert "Created helpful?: 2 pairs" in message
    project_id = picker.value

    labeler = as_user(LABELER[0])
    assert tab.refresh(None, labeler).value == project_id  # the only project is picked
    screen = tab.open_project(project_id, labeler)
    assert "Prefer the **correct** answer." in screen[GUIDELINES]
    assert all(buttons_enabled(screen)) and screen[UNDO].interactive is False
    assert screen[PROMPT][-1]["role"] == "user" and screen[LEFT] != screen[RIGHT]
    shown = read_shown(screen[SHOWN])

    time.sleep(0.05)
    after = tab.submit("left", screen[SHOWN], "  clear winner ", labeler)
    assert "Stored: A is better" in after[STATUS] and after[NOTE] == ""
    assert 'data-done="1"' in after[PROGRESS] and after[UNDO].interactive is True
    # The same click arriving again (double click, or "2" pressed before the answer came): one label.
    again = tab.submit("right", screen[SHOWN], "", labeler)
    assert "Already stored" in again[STATUS]
    stored = session.scalars(select(Comparison)).all()
    assert len(stored) == 1
    label = stored[0]
    pair = session.get(LabelingPair, shown["pair_id"])
    # "A is better" names the answer shown on the left, stored un-swapped.
    first_answer = shown_id(session, pair, pair.completion_a_id)
    assert label.label.value == ("a" if shown["left_answer_id"] == first_answer else "b")
    assert label.note == "clear winner" and label.idempotency_key == shown["key"]
    assert 0.05 <= label.time_spent_s < 60

    undone = tab.undo(project_id, labeler)
    assert "here is that pair again" in undone[STATUS] and read_shown(undone[SHOWN])["pair_id"] == shown["pair_id"]
    session.expire_all()
    assert session.scalars(select(Comparison)).all() == []
    assert "Nothing undone" in tab.undo(project_id, labeler)[STATUS]

    assert label_everything(tab, LABELER[0], project_id, lambda screen: "tie") == 2
    final = tab.open_project(project_id, labeler)
    assert "every pair has all the labels it needs" in final[STATUS] and 'data-left="0"' in final[PROGRESS]


def test_refusals_are_messages(tab, users, session, second_labeler):
    job = make_generate_job(session, prompts=1, answers=2)
    message, picker, *_ = create(tab, ADMIN[0], [job.id], who_labels=CHOSEN,
                                 labeler_ids=[second_labeler.id])  # the labeler is not one of them
    # Trainers and admins label every project: naming one among the labelers is refused, saying the rule.
    refused = create(tab, ADMIN[0], [job.id], who_labels=CHOSEN, labeler_ids=[users["trainer"].id])[0]
    assert "Chosen labelers: user &#x27;trainer1&#x27; is a trainer" in refused
    project_id = picker.value
    labeler = as_user(LABELER[0])
    assert tab.refresh(None, labeler).choices == []
    assert "not one of the labelers" in tab.open_project(project_id, labeler)[STATUS]
    assert "choose a project first" in tab.submit("left", "", "", labeler)[STATUS]
    assert "Choose a project to label" in tab.open_project(None, labeler)[STATUS]
    # A hand-made token for a pair of this project from someone who may not label it: nothing stored.
    screen = tab.open_project(project_id, as_user(TRAINER[0]))
    assert "Not stored" in tab.submit("left", screen[SHOWN], "", labeler)[STATUS]
    assert session.scalars(select(Comparison)).all() == []


# ----------------------------------------------------------------------------- Projects & agreement

def test_the_manage_sub_tab_is_for_managers_only(tab, users):
    assert tab.on_load(as_user(LABELER[0])).visible is False
    assert tab.on_load(as_user(TRAINER[0])).visible is True
    assert tab.admin.refresh(None, as_user(LABELER[0]))[0].choices == []


def test_create_refusals_name_the_field_and_store_nothing(tab, users, session):
    job = make_generate_job(session, prompts=1, answers=2)
    assert "Not created — Finished generate jobs: choose at least one" in create(tab, TRAINER[0], [])[0]
    assert "Chosen labelers: choose the labelers" in create(tab, TRAINER[0], [job.id], who_labels=CHOSEN,
                                                            labeler_ids=[])[0]
    assert "Overlap: overlap must be a whole number from 1" in create(tab, TRAINER[0], [job.id], overlap=0)[0]
    assert "Overlap: overlap must be a whole number" in create(tab, TRAINER[0], [job.id], overlap=1.5)[0]
    assert "Pairs per prompt:" in create(tab, TRAINER[0], [job.id], pairing="random", pairs_per_prompt=None)[0]
    assert "Name:" in create(tab, TRAINER[0], [job.id], name="  ")[0]
    assert "Not created" in create(tab, LABELER[0], [job.id])[0]
    assert session.scalars(select(LabelingPair)).all() == []


def test_lists_for_the_form(tab, users, session, second_labeler):
    job = make_generate_job(session, prompts=1, answers=2)
    make_generate_job(session, prompts=1, answers=2, status=JobStatus.running)
    picker, jobs, labelers, co_owners, owners = tab.admin.refresh(None, as_user(TRAINER[0]))
    assert [value for _, value in jobs.choices] == [job.id]  # finished generate jobs only
    names = [label.split(" ")[0] for label, _ in labelers.choices]
    assert set(names) == {LABELER[0], "labeler2"}  # the labelers: trainers and admins label every project
    second_labeler.disabled = True
    session.commit()
    assert "labeler2" not in [u["name"] for u in labeler_choices(TRAINER[0])]
    with pytest.raises(PermissionDenied):
        labeler_choices(LABELER[0])
    # Co-owners are chosen among the people who may manage labeling: trainers and admins, never labelers.
    assert co_owners.choices == owners.choices
    assert {label.split(" ")[0] for label, _ in co_owners.choices} == {ADMIN[0], TRAINER[0]}


def test_a_project_names_its_co_owners_when_made_and_later(tab, users, session):
    job = make_generate_job(session, prompts=1, answers=2)
    other = create_user(session, "trainer2", "trainer2-password", Role.trainer)
    session.commit()
    refused = create(tab, TRAINER[0], [job.id], co_owner_ids=[users["labeler"].id])
    assert "Not created — Co-owners:" in refused[0] and "labeler" in refused[0]
    message, picker, *_, owners = create(tab, TRAINER[0], [job.id], co_owner_ids=[other.id])
    project_id = picker.value
    assert "Created" in message and owners.choices  # the lists are fresh after a create
    assert tab.admin.show(project_id, as_user(TRAINER[0]))[2] == [other.id]
    # The co-owner may now manage it: here, take themselves off again (an owner's decision).
    message, owners = tab.admin.save_co_owners(project_id, [], as_user("trainer2"))
    assert "now has no co-owners" in message and owners == []
    message, _ = tab.admin.save_co_owners(project_id, [other.id], as_user("trainer2"))
    assert "Not saved" in message  # no longer an owner
    message, owners = tab.admin.save_co_owners(project_id, [other.id], as_user(ADMIN[0]))
    assert "1 co-owner:" in message and owners == [other.id]
    assert "Choose a project first" in tab.admin.save_co_owners(None, [], as_user(ADMIN[0]))[0]


def test_agreement_guidelines_and_exports(tab, users, session, second_labeler):
    job = make_generate_job(session, prompts=3, answers=3)  # 9 pairs: enough shared pairs for kappa
    _, picker, *_ = create(tab, ADMIN[0], [job.id], overlap=2)
    project_id = picker.value
    admin = as_user(ADMIN[0])

    # labeler1 always prefers the pair's first answer; labeler2 agrees except on the first prompt's pairs.
    def prefers_first(screen):
        shown = read_shown(screen[SHOWN])
        pair = session.get(LabelingPair, shown["pair_id"])
        return "left" if shown["left_answer_id"] == shown_id(session, pair, pair.completion_a_id) else "right"

    def mostly_first(screen):
        shown = read_shown(screen[SHOWN])
        pair = session.get(LabelingPair, shown["pair_id"])
        return "both_bad" if pair.prompt_id == min_prompt else prefers_first(screen)

    min_prompt = min(p.prompt_id for p in session.scalars(select(LabelingPair)))
    assert label_everything(tab, LABELER[0], project_id, prefers_first) == 9
    assert label_everything(tab, "labeler2", project_id, mostly_first) == 9

    guidelines, preview, owners, numbers, kappas, majority, disagreements = tab.admin.show(project_id, admin)
    report = agreement_report(project_id, ADMIN[0])
    assert guidelines == preview == "Prefer the **correct** answer."
    assert numbers == agreement_html(report) and f'data-alpha="{report["alpha"]}"' in numbers
    assert html.escape(report["alpha_reading"]) in numbers
    assert kappas.equals(kappa_frame(report)) and len(kappas) == 1 and kappas.iloc[0]["pairs both labeled"] == 9
    assert len(majority) == 2
    assert disagreements.equals(disagreement_frame(report)) and len(disagreements) == 3  # the first prompt's pairs
    assert "labeler2: both_bad" in disagreements.iloc[0]["labels"]

    message, shown_preview = tab.admin.save_guidelines(project_id, "Be *strict*.", admin)
    assert "saved" in message and shown_preview == "Be *strict*."
    assert tab.open_project(project_id, as_user(LABELER[0]))[GUIDELINES] == "Be *strict*."

    download, message = tab.admin.export(project_id, "trl", admin)
    text = open(download.value["path"] if isinstance(download.value, dict) else download.value).read()
    assert text == export_trl_jsonl(project_id, ADMIN[0]) and len(text.splitlines()) == 6
    assert "6 consensus pairs" in message and download.value and download.visible
    download, message = tab.admin.export(project_id, "csv", admin)
    assert "18 labels" in message
    assert "Choose a project first" in tab.admin.export(None, "csv", admin)[1]
    assert "Not saved" in tab.admin.save_guidelines(project_id, "x", as_user(LABELER[0]))[0]
