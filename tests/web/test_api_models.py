"""The models API: import a Hugging Face GPT-2 (admins, from the import directory only), read a model,
download it as a zip of Hugging Face-format files; and the job kinds' declared parameters."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Model
from tests.conftest import ADMIN, LABELER, TRAINER

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


def _safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    import json

    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def write_malicious_folders(root, outside) -> dict[str, str]:
    """Import folders that must each be refused with a 4xx naming the file and the problem: {folder: words}."""
    import json
    import os
    import pickle
    import shutil

    good = root / "gpt2-mini"
    config = json.loads((good / "config.json").read_text())

    def folder(name: str, weights: bytes | None = None, config_text: str | None = None):
        (root / name).mkdir()
        (root / name / "config.json").write_text(config_text if config_text is not None else json.dumps(config))
        if weights is not None:
            (root / name / "model.safetensors").write_bytes(weights)
        return root / name

    folder("huge-header-length", (1 << 62).to_bytes(8, "little") + b"{}")
    folder("ninety-mb-header", (90 << 20).to_bytes(8, "little") + b" " * 1000)
    folder("offsets-past-the-end", _safetensors_bytes(
        {"wte.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 40]}}, b"\0" * 16))
    folder("pickle-named-safetensors", pickle.dumps({"wte.weight": [1.0, 2.0]}))
    folder("not-gpt2", (good / "model.safetensors").read_bytes(),
           json.dumps({**config, "model_type": "llama"}))
    folder("config-not-json", (good / "model.safetensors").read_bytes(), "{not json")
    linked_config = folder("config-linked-outside", (good / "model.safetensors").read_bytes())
    (outside / "secret.json").write_text(json.dumps(config))
    (linked_config / "config.json").unlink()
    os.symlink(outside / "secret.json", linked_config / "config.json")
    linked_weights = folder("weights-linked-outside")
    shutil.copy(good / "model.safetensors", outside / "weights.safetensors")
    os.symlink(outside / "weights.safetensors", linked_weights / "model.safetensors")
    shutil.copytree(good, outside / "elsewhere")
    os.symlink(outside / "elsewhere", root / "folder-link")
    return {"huge-header-length": "header", "ninety-mb-header": "header", "offsets-past-the-end": "data_offsets",
            "pickle-named-safetensors": "pickle", "not-gpt2": "model_type", "config-not-json": "not valid JSON",
            "config-linked-outside": "symbolic link", "weights-linked-outside": "symbolic link",
            "folder-link": "not a model in the import directory"}


def test_malicious_import_folders_get_a_4xx_naming_the_file_and_nothing_is_stored(client, import_dir, session,
                                                                                   api_settings, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    cases = write_malicious_folders(import_dir, outside)
    listed = client.get("/api/models/importable", auth=ADMIN).json()
    assert "folder-link" not in listed and "weights-linked-outside" not in listed and "config-linked-outside" not in listed
    # The listed ones are refused on import with the problem; the links are not even offered.
    for name, words in cases.items():
        if name in listed:
            answer = client.post("/api/models/import", auth=ADMIN, json={"directory": name})
            assert answer.status_code == 422, (name, answer.text)
            message = answer.json()["detail"][0]["msg"]
            assert name in message and words in message, (name, message)
        else:
            answer = client.post("/api/models/import", auth=ADMIN, json={"directory": name})
            assert answer.status_code == 422 and "not a model in the import directory" in answer.text, name
    assert model_count(session) == 0
    models_dir = api_settings.data_dir / "models"
    assert not models_dir.exists() or not any(models_dir.iterdir())


def test_the_model_file_checks_name_the_file_and_never_follow_links(tmp_path):
    import os

    from llm.model_files import ModelFileError, check_safetensors, read_config_json

    target = tmp_path / "real.json"
    target.write_text("{}")
    os.symlink(target, tmp_path / "config.json")
    with pytest.raises(ModelFileError, match="config.json: is a symbolic link"):
        read_config_json(tmp_path / "config.json")
    (tmp_path / "big.json").write_text(" " * (2 << 20))
    with pytest.raises(ModelFileError, match="larger than"):
        read_config_json(tmp_path / "big.json")
    (tmp_path / "gap.safetensors").write_bytes(_safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8))
    with pytest.raises(ModelFileError, match="gap"):
        check_safetensors(tmp_path / "gap.safetensors")
    (tmp_path / "ok.safetensors").write_bytes(_safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"format": "pt"}}, b"\0" * 8))
    check_safetensors(tmp_path / "ok.safetensors")
