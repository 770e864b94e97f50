"""Uploads refused early and read safely (issue 8, items 1, 4, 7, 10, 11, dedupe).

Over a real uvicorn server (the test client reads a streamed body whole before the app sees it): a
chunked upload without credentials, or from a labeler, is answered before its body is read, and one over
the limit is stopped while it streams, leaving no file anywhere. Over the API: decompression bombs, deep
JSON, giant numbers, binary / UTF-16 / Latin-1 files are 422s that say what is wrong and where, with
nothing stored; stored names lose control and bidi characters and long names are shortened; the same
file uploaded twice answers with the first dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Dataset
from db.settings import Settings
from tests.conftest import LABELER, TRAINER

BOUNDARY = "hardening-boundary"
CHUNK = b"lorem ipsum dolor sit amet\n\n" * 2341  # about 64 KB of valid corpus text


def upload(client: TestClient, content: bytes | str, filename: str = "corpus.txt", *, name: str = "",
           kind: str = "text", auth: tuple[str, str] = TRAINER) -> httpx.Response:
    data = content.encode() if isinstance(content, str) else content
    return client.post("/api/datasets", auth=auth, files={"file": (filename, data, "application/octet-stream")},
                       data={"name": name, "kind": kind})


def stored_files(settings: Settings) -> list[Path]:
    roots = [settings.data_dir / "datasets", settings.data_dir / "tmp"]
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def dataset_count(session: Session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Dataset))


def error_message(response: httpx.Response) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else detail[0]["msg"]


# ----------------------------------------------------------------------------- a real server, a streamed body

class Counted:
    """A chunked multipart body that counts how much of itself was handed to the connection."""

    def __init__(self, total_bytes: int):
        self.total_bytes, self.sent = total_bytes, 0

    def __iter__(self):
        yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\ntext\r\n--{BOUNDARY}\r\n"
               f"Content-Disposition: form-data; name=\"file\"; filename=\"big.txt\"\r\n"
               f"Content-Type: text/plain\r\n\r\n").encode()
        while self.sent < self.total_bytes:
            self.sent += len(CHUNK)
            yield CHUNK
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.fixture
def serve(tmp_path: Path):
    """serve(settings) -> base URL of the app on a real uvicorn server in a thread (stopped after the test)."""
    import uvicorn

    from web.app import create_app

    servers = []

    def start(settings: Settings) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=15)


def stream_upload(base_url: str, body: Counted, auth: tuple[str, str] | None) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(f"{base_url}/api/datasets", content=iter(body), auth=auth, timeout=60,
                          headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    return response, time.monotonic() - started


@pytest.fixture
def own_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The process's temporary directory (where multipart parsers spool), made empty and ours."""
    directory = tmp_path / "system-tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("auth, status", [(None, 401), (LABELER, 403)])
def test_a_streamed_upload_is_refused_before_its_body_is_read(serve, api_settings, users, session, auth, status):
    body = Counted(256 * 1024 * 1024)  # no Content-Length: chunked
    response, seconds = stream_upload(serve(api_settings), body, auth)
    assert response.status_code == status, response.text
    # What was read is what the socket buffers took before the answer: a few MB, not the 256 MB sent.
    assert body.sent < 32 * 1024 * 1024, f"{body.sent / 1024 / 1024:.0f} MB of the body were consumed"
    assert seconds < 20
    assert dataset_count(session) == 0 and stored_files(api_settings) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_streamed_upload_over_the_limit_stops_while_it_streams_and_leaves_no_file(
        serve, api_settings, users, session, own_temp_dir):
    settings = dataclasses.replace(api_settings, max_upload_mb=2)
    body = Counted(256 * 1024 * 1024)
    response, _ = stream_upload(serve(settings), body, TRAINER)
    assert response.status_code == 413, response.text
    assert "the limit is 2 MB" in response.json()["detail"]
    assert body.sent < 48 * 1024 * 1024, f"{body.sent / 1024 / 1024:.0f} MB of the body were consumed"
    assert dataset_count(session) == 0
    assert stored_files(settings) == []
    assert list(own_temp_dir.iterdir()) == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_streamed_upload_within_the_limit_is_stored(serve, api_settings, users, session):
    body = Counted(1024 * 1024)
    response, _ = stream_upload(serve(api_settings), body, TRAINER)
    assert response.status_code == 201, response.text
    assert response.json()["stats"]["documents"] == 1  # one paragraph, repeated: the duplicates are dropped


# ----------------------------------------------------------------------------- files that are not what they say

def parquet_bomb(path: Path, rows: int = 200_000, document: str = "spam " * 2000) -> Path:
    """A few hundred bytes of Parquet that decode to rows x len(document) (here 2 GB) of text."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([document]))
    pq.write_table(pa.table({"text": column}), path, compression="zstd")
    return path


def test_a_parquet_decompression_bomb_is_refused_without_decoding_it(client, api_settings, session, tmp_path):
    import resource

    bomb = parquet_bomb(tmp_path / "bomb.parquet")
    assert bomb.stat().st_size < 20_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = upload(client, bomb.read_bytes(), "bomb.parquet")
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert response.status_code == 422
    assert "bomb.parquet" in error_message(response) and "decompression bomb" in error_message(response)
    assert grew_mb < 500, f"the web process grew by {grew_mb:.0f} MB"
    assert dataset_count(session) == 0 and stored_files(api_settings) == []


def test_a_document_longer_than_the_limit_is_refused_naming_where(client, api_settings, session, monkeypatch):
    import llm.corpus
    import llm.text_files

    monkeypatch.setattr(llm.corpus, "MAX_DOCUMENT_CHARS", 1000)
    monkeypatch.setattr(llm.text_files, "MAX_DOCUMENT_CHARS", 1000)
    response = upload(client, "short one\n\nshort two\n\n" + "x" * 5000, "long.txt")
    assert response.status_code == 422
    assert "long.txt, line 5" in error_message(response) and "limit is 1,000" in error_message(response)
    response = upload(client, json.dumps({"text": "y" * 5000}) + "\n", "long.jsonl")
    assert response.status_code == 422 and "long.jsonl, line 1" in error_message(response)
    assert dataset_count(session) == 0 and stored_files(api_settings) == []


@pytest.mark.parametrize("kind", ["text", "chat"])
def test_deeply_nested_json_is_a_422_naming_the_line(client, session, kind):
    good = {"text": "fine"} if kind == "text" else {"prompt": "hi", "completion": "hello"}
    response = upload(client, json.dumps(good) + "\n" + "[" * 100_000 + "\n", "deep.jsonl", kind=kind)
    assert response.status_code == 422
    assert "deep.jsonl" in error_message(response) and "line 2" in error_message(response)
    assert "nested more than" in error_message(response)
    assert dataset_count(session) == 0


@pytest.mark.parametrize("kind", ["text", "preference"])
def test_a_5001_digit_number_is_a_422_naming_the_line_and_field(client, session, kind):
    line = '{"text": "a", "score": ' + "7" * 5001 + "}" if kind == "text" else \
        '{"prompt": "q", "chosen": "a", "rejected": "b", "margin": ' + "7" * 5001 + "}"
    response = upload(client, line + "\n", "numbers.jsonl", kind=kind)
    assert response.status_code == 422
    message = error_message(response)
    field = "score" if kind == "text" else "margin"
    assert "numbers.jsonl, line 1" in message and f"field '{field}'" in message and "5,001 digits" in message
    assert dataset_count(session) == 0


@pytest.mark.parametrize("content, filename, kind, expected", [
    (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(200), "setup.txt", "text",
     "binary file (a Windows program"),
    (b"some text\x00\x00\x00 with NUL bytes\n\nmore", "nul.txt", "text", "binary file"),
    ("first document\n\nsecond document\n".encode("utf-16"), "utf16.txt", "text", "UTF-16; save it as UTF-8"),
    ("first document\n\nsecond document\n".encode("utf-16-le"), "utf16le.txt", "prompts",
     "UTF-16; save it as UTF-8"),
    ("ok line\n\ncaf\u00e9 cr\u00e8me\n".encode("latin-1"), "latin1.txt", "text", "line 3"),
    ('{"text": "ok"}\n{"text": "caf\u00e9"}\n'.encode("latin-1"), "latin1.jsonl", "text", "line 2"),
])
def test_files_that_are_not_utf8_text_say_what_they_are(client, api_settings, session, content, filename, kind,
                                                        expected):
    response = upload(client, content, filename, kind=kind)
    assert response.status_code == 422, response.text
    message = error_message(response)
    assert filename in message and expected in message
    if filename.startswith("latin1"):
        assert "save it as UTF-8" in message and "0xE9" in message
    assert dataset_count(session) == 0 and stored_files(api_settings) == []


# ----------------------------------------------------------------------------- names and duplicates

def test_control_and_bidi_characters_are_stripped_from_file_names_and_refused_in_typed_names(client, session):
    response = upload(client, "hello\n\nworld", "invoice\u202egpj.txt", name="my dataset")
    assert response.status_code == 201, response.text
    assert response.json()["original_filename"] == "invoicegpj.txt"  # the browser's file name, cleaned
    assert response.json()["name"] == "my dataset"
    refused = upload(client, "hello\n\nagain", "b.txt", name="my\u2066 data\u0007set")  # a name typed: refused
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "name"]
    assert "U+2066 LEFT-TO-RIGHT ISOLATE" in refused.text


def test_nul_in_a_file_name_from_the_ui_is_stripped(api_settings, users, session, tmp_path):
    from web import services

    source = tmp_path / "upload.txt"
    source.write_text("one\n\ntwo")
    stored = services.store_dataset_upload(session, api_settings, source, "re\x00port\u202a.txt", None, "text",
                                           users["trainer"].id)
    assert (stored.dataset.original_filename, stored.dataset.name) == ("report.txt", "report")


def test_a_300_character_file_name_is_shortened_keeping_its_extension(client, session):
    filename = "n" * 296 + ".txt"
    response = upload(client, "hello\n\nworld", filename)
    assert response.status_code == 201, response.text
    stored = response.json()
    assert len(stored["original_filename"]) == 255 and stored["original_filename"].endswith(".txt")
    assert stored["name"] == "n" * 200
    assert upload(client, "other", "x.txt", name="t" * 201).status_code == 422  # a typed name is not cut


def test_the_same_file_twice_answers_with_the_first_dataset(client, api_settings, session):
    content = b"the same corpus\n\nuploaded twice"
    first = upload(client, content, "a.txt", name="first")
    second = upload(client, content, "renamed.txt", name="second")
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"] and second.json()["already_stored"] is True
    assert first.json()["already_stored"] is False and second.json()["name"] == "first"
    assert dataset_count(session) == 1 and len([p for p in stored_files(api_settings)]) == 1
    row = session.get(Dataset, first.json()["id"])
    assert row.content_sha256 == hashlib.sha256(content).hexdigest()
    # Another kind is another dataset; other bytes are another dataset.
    assert upload(client, content, "a.txt", kind="prompts").status_code == 201
    assert upload(client, content + b"!", "a.txt").status_code == 201
    assert dataset_count(session) == 3


@pytest.mark.subprocess
def test_two_identical_uploads_at_the_same_instant_store_one_dataset(serve, api_settings, users, session,
                                                                    monkeypatch):
    """Both uploads pass the dedupe check before either stores its row (held at a barrier right after the
    check, over a real server): the unique index lets one in, the other answers like a dedupe hit."""
    import itertools

    from web.services import datasets as dataset_service

    checked_by_both = threading.Barrier(2, timeout=30)
    real_check, calls = dataset_service.find_same_file, itertools.count()

    def check_then_wait_for_the_other(*args):
        found = real_check(*args)
        if next(calls) < 2:  # each upload's first check; the loser's second look goes straight on
            checked_by_both.wait()
        return found

    monkeypatch.setattr(dataset_service, "find_same_file", check_then_wait_for_the_other)
    base_url = serve(api_settings)
    content = CHUNK * 4
    answers: list[httpx.Response] = []

    def send(filename: str) -> None:
        answers.append(httpx.post(f"{base_url}/api/datasets", auth=TRAINER, timeout=60, data={"kind": "text"},
                                  files={"file": (filename, content, "text/plain")}))

    threads = [threading.Thread(target=send, args=(name,)) for name in ("one.txt", "two.txt")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert sorted(answer.status_code for answer in answers) == [200, 201], [a.text for a in answers]
    stored, repeated = sorted(answers, key=lambda answer: answer.status_code, reverse=True)
    assert repeated.json()["already_stored"] is True and stored.json()["already_stored"] is False
    assert repeated.json()["id"] == stored.json()["id"]
    assert dataset_count(session) == 1
    # The loser left nothing: one file, in the winner's directory, and no staging directory or temp file.
    dataset_dir = api_settings.data_dir / "datasets"
    assert [p.name for p in dataset_dir.iterdir()] == [str(stored.json()["id"])]
    assert stored_files(api_settings) == [dataset_dir / str(stored.json()["id"]) / "original.txt"]
