"""Models: listing them with their lineage and size, finding their files, importing a Hugging Face
GPT-2 (admins, from the configured import directory only), downloading one as a zip, and renaming or
deleting one (its owner or an admin; deleting is refused while anything depends on it).

Labelers see only the chat models (`CHAT_MODEL_KINDS`), to chat with, and with blind labelers on (the default)
not by name (`as_seen_by`); the viewer is passed as `viewer=` (None: an internal caller, which sees everything).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import logging

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import CHAT_MODEL_KINDS, Completion, Job, Model, ModelKind, User
from db.settings import Settings, safe_join
from web.services.access import Action, can, require, require_owner, resolve_user, sees_model_names
from web.services.common import (Conflict, InvalidInput, NotFound, enum_value, parse_enum, reading,
                                 stored_all_or_nothing)
from worker.jobs.references import models_named

log = logging.getLogger(__name__)

# Models trained on the chat template (the others complete documents): the ones labelers may see.


def model_to_dict(model: Model) -> dict:
    return {
        "id": model.id,
        "name": model.name,
        "kind": enum_value(model.kind),
        "tokenizer": model.tokenizer,
        "parent_model_id": model.parent_model_id,
        "job_id": model.job_id,
        "config": model.config or {},
        "owner_id": model.owner_id,
        "created_at": model.created_at,
    }


def blind_model_name(model_id: int) -> str:
    """A model's name as a blind labeler reads it (access.sees_model_names)."""
    return f"model #{model_id}"


def as_seen_by(viewer: User | dict | None, models: list[dict]) -> list[dict]:
    """`models` (model_to_dict's) as `viewer` is told them: whole, or for a blind labeler each name replaced by
    `blind_model_name` and where the model came from (job, parent, owner) left out."""
    if sees_model_names(viewer):
        return models
    return [{**model, "name": blind_model_name(model["id"]), "parent_model_id": None, "job_id": None,
             "owner_id": None} for model in models]


def visible_kinds(viewer: User | dict | None) -> tuple[ModelKind, ...] | None:
    """The model kinds a viewer may see: all (None) for the training team, the chat models otherwise."""
    return None if can(viewer, Action.read_training) else CHAT_MODEL_KINDS


def list_models(kind: str | None = None, session: Session | None = None,
                viewer: User | dict | None = None) -> list[dict]:
    """Models newest first; a labeler gets the chat models only."""
    with reading(session) as s:
        query = select(Model).order_by(Model.id.desc())
        if kind:
            query = query.where(Model.kind == parse_enum(ModelKind, kind, "kind"))
        if (kinds := visible_kinds(viewer)) is not None:
            query = query.where(Model.kind.in_(kinds))
        return as_seen_by(viewer, [model_to_dict(m) for m in s.scalars(query)])


def model_dir(settings: Settings, model_id: int, session: Session | None = None) -> tuple[Path, dict]:
    """The directory holding a model's files (inside the data dir) and the model as a dict."""
    with reading(session) as s:
        model = s.get(Model, model_id)
        if model is None:
            raise NotFound(f"model {model_id} does not exist")
        return safe_join(settings.data_dir, model.path), model_to_dict(model)


def get_model(model_id: int, session: Session | None = None, viewer: User | dict | None = None) -> dict:
    with reading(session) as s:
        model = s.get(Model, model_id)
        kinds = visible_kinds(viewer)
        if model is None or (kinds is not None and model.kind not in kinds):
            raise NotFound(f"model {model_id} does not exist")  # a hidden model is not even confirmed
        return as_seen_by(viewer, [model_to_dict(model)])[0]


def model_size_bytes(directory: Path) -> int:
    """Bytes of a model's own files (an adapter directory is small: its base is not counted)."""
    return sum(path.stat().st_size for path in directory.glob("*.safetensors") if path.is_file())


def list_models_with_sizes(settings: Settings, session: Session | None = None) -> list[dict]:
    """Every model with its parent's name, its architecture and its size on disk, for the Models tab."""
    from llm.checkpoint import read_config

    with reading(session) as s:
        rows = list(s.scalars(select(Model).order_by(Model.id.desc())))
        models = [{**model_to_dict(row), "path": row.path} for row in rows]
    names = {m["id"]: m["name"] for m in models}
    for model in models:
        directory = safe_join(settings.data_dir, model.pop("path"))
        model["parent_name"] = names.get(model["parent_model_id"])
        model["size_bytes"] = model_size_bytes(directory) if directory.is_dir() else 0
        try:
            model["architecture"] = read_config(directory).get("architecture", "gpt")
        except (FileNotFoundError, ValueError):
            model["architecture"] = "missing"
    return models


# ----------------------------------------------------------------------------- import and download

def _is_real(path: Path, directory: bool = False) -> bool:
    """A directory or regular file that is not a symbolic link (links are never followed out of the import
    directory, and are not offered)."""
    return not path.is_symlink() and (path.is_dir() if directory else path.is_file())


def importable_models(settings: Settings) -> list[str]:
    """Sub-directories of the import directory that hold a Hugging Face model (config.json + weights), none of
    them a symbolic link."""
    root = settings.models_import_dir
    if not root.is_dir():
        return []
    return sorted(path.name for path in root.iterdir()
                  if _is_real(path, directory=True) and _is_real(path / "config.json")
                  and _is_real(path / "model.safetensors"))


def import_model(session: Session, settings: Settings, directory_name: str, name: str | None,
                 user: User | int | str | None) -> Model:
    """Import a Hugging Face GPT-2 directory from the import directory as a base model (admins only).

    Only a name listed by `importable_models` is accepted, so no request can point at another path on
    the server. All or nothing (`stored_all_or_nothing`): the weights are converted into a staging
    directory that becomes models/<id> only once the row exists.
    """
    from llm.checkpoint import read_config
    from llm.hf_gpt2 import import_hf_gpt2
    from llm.model_files import ModelFileError
    from safetensors import SafetensorError

    owner = resolve_user(session, user)
    require(owner, Action.manage_models)
    available = importable_models(settings)
    if directory_name not in available:
        raise InvalidInput(f"{directory_name!r} is not a model in the import directory; available: "
                           f"{', '.join(available) or 'none'} (put Hugging Face GPT-2 directories in "
                           f"{settings.models_import_dir})", field="directory")
    with stored_all_or_nothing(session, safe_join(settings.data_dir, "models"), "import") as (staging, place):
        try:
            import_hf_gpt2(safe_join(settings.models_import_dir, directory_name), staging)
        except ModelFileError as error:
            raise InvalidInput(f"{directory_name}/{error.file}: {error.problem}", field="directory") from None
        except (ValueError, SafetensorError) as error:  # NotGPT2Error and any header safetensors refuses
            raise InvalidInput(f"{directory_name}: {error}", field="directory") from None
        config = read_config(staging)
        model = Model(name=(name or "").strip()[:200] or directory_name, kind=ModelKind.base,
                      tokenizer=config["tokenizer"], config=config["model"], path="",
                      owner_id=owner.id if owner else None)
        session.add(model)
        session.flush()
        place(model.id)
        model.path = f"models/{model.id}"
    return model


def model_zip(settings: Settings, model_id: int, session: Session | None = None,
              viewer: User | dict | None = None) -> tuple[Path, str]:
    """A zip of the model in Hugging Face format, written to a temporary file: (path, download name).

    A full model becomes a transformers GPT-2 directory (config.json + model.safetensors, via
    llm.hf_gpt2.export_hf_gpt2); an adapter is peft's own format (adapter_config.json +
    adapter_model.safetensors) plus our config.json naming its base. The caller deletes the file.
    """
    from llm.checkpoint import read_config
    from llm.hf_gpt2 import export_hf_gpt2

    require(viewer, Action.read_training)
    directory, model = model_dir(settings, model_id, session=session)
    if not directory.is_dir():
        raise NotFound(f"the files of model {model_id} are missing from the data directory")
    temp_root = safe_join(settings.data_dir, "tmp")
    temp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="download-", dir=temp_root))
    try:
        if read_config(directory).get("architecture") == "lora_adapter":
            files = {name: directory / name for name in ("adapter_config.json", "adapter_model.safetensors",
                                                          "config.json")}
        else:
            export_hf_gpt2(directory, work / "hf")
            files = {path.name: path for path in (work / "hf").iterdir() if path.is_file()}
        handle, archive = tempfile.mkstemp(prefix="model-", suffix=".zip", dir=temp_root)
        os.close(handle)
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for name, path in sorted(files.items()):
                if path.is_file():
                    out.write(path, arcname=name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in model["name"])[:80] or "model"
    return Path(archive), f"{safe_name}-{model_id}.zip"


# ----------------------------------------------------------------------------- rename and delete

def _model_to_change(session: Session, model_id: int, user) -> tuple[User | None, Model]:
    """(acting user, model) when the user may change this model: their own, or anyone's for an admin."""
    acting = resolve_user(session, user)
    require(acting, Action.change_own_model)
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound(f"model {model_id} does not exist")
    require_owner(acting, model.owner_id, Action.change_own_model, Action.change_any_model, f"model {model_id}")
    return acting, model


def rename_model(session: Session, model_id: int, name: str | None, user: User | int | str | None = None) -> dict:
    """Rename a model (its owner or an admin); the name cannot be blank (a model has no other label)."""
    from web.services.jobs import clean_name

    new_name = clean_name(name, "model")
    if new_name is None:
        raise InvalidInput("the model name cannot be empty", field="name")
    _, model = _model_to_change(session, model_id, user)
    model.name = new_name
    session.commit()
    return model_to_dict(model)


def _adapters_based_on(settings: Settings, session: Session, model: Model) -> list[Model]:
    """LoRA adapters whose config names this model's directory as their base (whatever their parent row)."""
    from llm.checkpoint import base_model_dir_of, read_config

    target = safe_join(settings.data_dir, model.path).resolve()
    found = []
    for other in session.scalars(select(Model).where(Model.id != model.id).order_by(Model.id)):
        directory = safe_join(settings.data_dir, other.path)
        try:
            if read_config(directory).get("architecture") == "lora_adapter" and \
                    base_model_dir_of(directory).resolve() == target:
                found.append(other)
        except (FileNotFoundError, ValueError, OSError):
            continue  # files missing or unreadable: nothing on disk depends on us through it
    return found


def model_dependents(settings: Settings, session: Session, model_id: int) -> list[str]:
    """What needs the model, for the confirmation and the refusal: child models, adapters on it, jobs
    that use it as input, generated answers (labeling and arena data)."""
    model = session.get(Model, model_id)
    if model is None:
        raise NotFound(f"model {model_id} does not exist")
    children = list(session.scalars(select(Model).where(Model.parent_model_id == model_id).order_by(Model.id)))
    found = [f"model #{child.id} {child.name!r} (fine-tuned from it)" for child in children]
    found += [f"model #{adapter.id} {adapter.name!r} (a LoRA adapter on it)"
              for adapter in _adapters_based_on(settings, session, model)
              if adapter.id not in {child.id for child in children}]
    # A job names models in its params beyond its input (a second generate model, the models an evaluate job
    # compares): a queued one would fail, a finished one would lose what it was run on.
    found += [f"job #{job_id} ({enum_value(kind)}, {enum_value(status)}) uses it as input"
              for job_id, kind, status, input_model_id, params in session.execute(
                  select(Job.id, Job.kind, Job.status, Job.input_model_id, Job.params).order_by(Job.id))
              if input_model_id == model_id or model_id in models_named(params)]
    answers = session.scalar(select(func.count()).select_from(Completion).where(Completion.model_id == model_id))
    if answers:
        found.append(f"{answers} generated answer{'s' if answers != 1 else ''} (labeling and arena data)")
    return found


def delete_model(session: Session, settings: Settings, model_id: int, user: User | int | str | None = None) -> None:
    """Delete a model (its owner or an admin): the row, then its files. Refused (Conflict) while anything
    depends on it (`model_dependents`). The job that produced it stays, without an output model."""
    acting, model = _model_to_change(session, model_id, user)
    dependents = model_dependents(settings, session, model_id)
    if dependents:
        raise Conflict(f"model {model_id} cannot be deleted: {'; '.join(dependents)} depend on it; delete "
                       f"{'those' if len(dependents) > 1 else 'that'} first")
    directory = safe_join(settings.data_dir, model.path) if model.path else None
    session.execute(update(Job).where(Job.output_model_id == model_id).values(output_model_id=None))
    session.delete(model)
    session.commit()
    log.info("model %s deleted by %s", model_id, acting.name if acting else "the system")
    if directory is not None and directory != Path(settings.data_dir).resolve() and directory.is_dir():
        shutil.rmtree(directory, ignore_errors=True)
