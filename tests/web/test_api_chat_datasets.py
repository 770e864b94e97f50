"""Uploading chat, preference and prompt datasets through the API: validated before anything is stored
(the error names the file, the line and the field), summarised (counts, tokens per role, a rendered
preview), and only then usable by an sft job."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from db.models import Dataset
from tests.conftest import TRAINER


def upload(client, lines, kind: str, filename: str = "chat.jsonl"):
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return client.post("/api/datasets", auth=TRAINER, files={"file": (filename, body, "application/octet-stream")},
                       data={"name": filename, "kind": kind})


def datasets_stored(session, api_settings) -> tuple[int, list]:
    session.expire_all()
    rows = session.scalar(select(func.count()).select_from(Dataset))
    directory = api_settings.data_dir / "datasets"
    files = [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []
    return rows, files


def test_a_chat_dataset_is_validated_summarised_and_previewed(client, session, api_settings):
    conversations = [{"messages": [{"role": "user", "content": f"Question {n}?"},
                                   {"role": "assistant", "content": f"Answer {n}."}]} for n in range(12)]
    response = upload(client, conversations, "chat")
    assert response.status_code == 201, response.text
    stats = response.json()["stats"]
    assert stats["conversations"] == 12 and set(stats["tokens_by_part"]) == {"user", "assistant"}
    assert stats["preview"][0].startswith("<|im_start|>user\nQuestion 0?<|im_end|>")


def test_a_bad_line_is_refused_with_its_number_and_nothing_is_stored(client, session, api_settings):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    bad = {"messages": [{"role": "user", "content": "Hi"}, {"role": "wizard", "content": "Poof"}]}
    response = upload(client, [good, good, bad], "chat", filename="mine.jsonl")
    assert response.status_code == 422
    message = response.json()["detail"][0]["msg"]
    assert message.startswith("mine.jsonl, line 3, field messages[1].role: unknown role 'wizard'"), message
    assert datasets_stored(session, api_settings) == (0, [])

    no_shared_prompt = {"chosen": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "x"}],
                        "rejected": [{"role": "user", "content": "B"}, {"role": "assistant", "content": "y"}]}
    response = upload(client, [no_shared_prompt], "preference", filename="pairs.jsonl")
    assert response.status_code == 422 and "line 1" in response.json()["detail"][0]["msg"]
    assert datasets_stored(session, api_settings) == (0, [])


def test_preference_and_prompt_datasets_are_stored_with_their_counts(client):
    pairs = [{"prompt": f"Say {n}", "chosen": f"{n}", "rejected": f"{n + 1}"} for n in range(5)]
    response = upload(client, pairs, "preference", filename="pairs.jsonl")
    assert response.status_code == 201 and response.json()["stats"]["pairs"] == 5
    assert set(response.json()["stats"]["tokens_by_part"]) == {"prompt", "chosen", "rejected"}
    body = b"What is a token?\nWhy is the sky blue?\n"
    response = client.post("/api/datasets", auth=TRAINER, files={"file": ("p.txt", body, "text/plain")},
                           data={"kind": "prompts"})
    assert response.status_code == 201 and response.json()["stats"]["prompts"] == 2


def test_an_sft_job_is_submitted_through_the_api_with_its_declared_defaults(client, session, api_settings):
    from db.models import Model, ModelKind
    from llm.sft_config import SFT_DEFAULTS

    chat = upload(client, [{"messages": [{"role": "user", "content": "Hi"},
                                         {"role": "assistant", "content": "Hello"}]}], "chat").json()
    corpus = client.post("/api/datasets", auth=TRAINER, files={"file": ("c.txt", b"a document\n", "text/plain")},
                         data={"kind": "text"}).json()
    base = Model(name="base", kind=ModelKind.base, tokenizer="gpt2", config={}, path="models/1")
    session.add(base)
    session.commit()

    response = client.post("/api/jobs", auth=TRAINER, json={"kind": "sft", "params": {
        "model_id": base.id, "dataset_id": chat["id"], "lora_r": 8, "max_steps": 20}})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["kind"] == "sft" and job["input_model_id"] == base.id and job["dataset_id"] == chat["id"]
    assert job["params"]["lora_r"] == 8
    # A model row without its shape: "auto" is an adapter, at the rate of the reference width; the row says why.
    assert job["params"]["method"] == "lora" and "size is not recorded" in job["params"]["method_reason"]
    assert job["params"]["lr"] == SFT_DEFAULTS.lora_lr.at_reference

    wrong = client.post("/api/jobs", auth=TRAINER, json={"kind": "sft", "params": {
        "model_id": base.id, "dataset_id": corpus["id"]}})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["body", "params", "dataset_id"]
    assert "needs a chat dataset" in wrong.json()["detail"][0]["msg"]


def test_a_file_of_another_kind_is_told_which_kind_it_looks_like(client, session, api_settings):
    """A chat file sent as kind text: refused (no "text" field) with the kind to choose; chat lines in a .txt are
    valid text, stored as asked, with the same hint in the answer's note."""
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    response = upload(client, [chat, chat], "text", filename="chats.jsonl")
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == ("chats.jsonl, line 1: no 'text' field (fields: messages) — this "
                                                   "looks like a chat dataset (conversations): upload it as kind chat")
    assert datasets_stored(session, api_settings) == (0, [])
    response = upload(client, [{"text": "a story"}], "chat", filename="stories.jsonl")
    assert response.status_code == 422 and response.json()["detail"][0]["msg"].endswith("upload it as kind text")
    response = upload(client, [chat], "text", filename="chats.txt")
    assert response.status_code == 201, response.text
    assert response.json()["note"] == ("this looks like a chat dataset (conversations): save it as .jsonl and upload "
                                       "it as kind chat")
    assert upload(client, [chat], "chat").json()["note"] == ""


def test_prompts_with_reference_answers_upload_as_prompts_in_either_prompt_form(client, session, api_settings):
    """GRPO's data (issue 21): a GSM8K-like file of OpenAI `messages` ending with the question, each with its
    `answer`, is a prompts dataset; sent as chat it is refused with that hint (it has no assistant turn)."""
    lines = [{"messages": [{"role": "system", "content": "Answer with a number."},
                           {"role": "user", "content": f"What is {n} plus {n}?"}], "answer": str(2 * n)}
             for n in range(6)]
    refused = upload(client, lines, "chat", filename="math.jsonl")
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["msg"].endswith("this looks like a prompts dataset (prompts, optionally with a "
                                                       "reference answer): upload it as kind prompts")
    assert datasets_stored(session, api_settings) == (0, [])
    stored = upload(client, lines, "prompts", filename="math.jsonl")
    assert stored.status_code == 201, stored.text
    assert stored.json()["note"] == ""
