"""The models API: import a Hugging Face GPT-2 (admins, from the import directory only), read a model,
download it as a zip of Hugging Face-format files; and the job kinds' declared parameters."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conftest import ADMIN, LABELER, TRAINER
from db.models import Model

transformers = pytest.importorskip("transformers")


def write_hf_gpt2(directory, seed: int = 0) -> None:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=50257)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)


@pytest.fixture
def import_dir(api_settings):
    root = api_settings.models_import_dir
    write_hf_gpt2(root / "gpt2-mini")
    (root / "not-a-model").mkdir(parents=True)
    return root


def model_count(session: Session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Model))


def test_only_admins_import_and_only_from_the_import_directory(client, import_dir, session, api_settings):
    assert client.get("/api/models/importable", auth=TRAINER).status_code == 403
    assert client.post("/api/models/import", auth=LABELER, json={"directory": "gpt2-mini"}).status_code == 403
    listed = client.get("/api/models/importable", auth=ADMIN)
    assert listed.status_code == 200 and listed.json() == ["gpt2-mini"]  # not-a-model has no weights

    for name in ("../gpt2-mini", "/etc", "not-a-model", str(import_dir / "gpt2-mini")):
        refused = client.post("/api/models/import", auth=ADMIN, json={"directory": name})
        assert refused.status_code == 422, name
        assert "not a model in the import directory" in refused.json()["detail"][0]["msg"]
    assert model_count(session) == 0
    assert not (api_settings.data_dir / "models").exists() or not any((api_settings.data_dir / "models").iterdir())

    imported = client.post("/api/models/import", auth=ADMIN, json={"directory": "gpt2-mini", "name": "mini"})
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert body["kind"] == "base" and body["name"] == "mini" and body["config"]["n_embd"] == 16
    assert model_count(session) == 1
    assert (api_settings.data_dir / "models" / str(body["id"]) / "model.safetensors").is_file()
    assert client.get(f"/api/models/{body['id']}", auth=TRAINER).json()["name"] == "mini"
    assert client.get(f"/api/models/{body['id']}", auth=LABELER).status_code == 404  # not a chat model


def test_download_is_a_transformers_gpt2_with_the_same_logits(client, import_dir, tmp_path):
    model_id = client.post("/api/models/import", auth=ADMIN, json={"directory": "gpt2-mini"}).json()["id"]
    assert client.get(f"/api/models/{model_id}/download", auth=LABELER).status_code == 403
    response = client.get(f"/api/models/{model_id}/download", auth=TRAINER)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert {"config.json", "model.safetensors"} <= set(archive.namelist())
    archive.extractall(tmp_path / "downloaded")
    ids = torch.tensor([[15496, 995, 11, 1312]])
    original = transformers.GPT2LMHeadModel.from_pretrained(import_dir / "gpt2-mini").eval()
    downloaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "downloaded").eval()
    with torch.no_grad():
        assert torch.allclose(original(ids).logits, downloaded(ids).logits, atol=1e-5)
    assert client.get("/api/models/999/download", auth=TRAINER).status_code == 404


def test_job_kinds_publish_their_declared_parameters(client):
    from llm.train_config import TrainConfig

    kinds = {entry["kind"]: entry for entry in client.get("/api/job-kinds", auth=TRAINER).json()}
    assert {"pretrain", "prepare", "train_tokenizer"} <= set(kinds)
    lr = kinds["pretrain"]["params"]["lr"]
    assert lr["default"] == TrainConfig().lr and lr["minimum"] == 0 and lr["exclusive_minimum"] is True
    assert kinds["pretrain"]["dataset_kinds"] == ["text"] and kinds["pretrain"]["produces"] == "base"
    assert kinds["pretrain"]["params"]["dataset_id"]["required"] is True
