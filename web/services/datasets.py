"""Datasets: validated uploads (all or nothing, an identical file answered with the dataset that holds it; a file
that looks like another kind than the one chosen is told which, `llm.dataset_kind`), listing, reading one,
renaming and deleting (owner or admin; refused while a queued or running job uses it)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Dataset, DatasetKind, Job, JobStatus, Prompt, User
from db.settings import Settings, safe_join
from llm.dataset_kind import kind_hint
from llm.stats import length_histogram
from web.services.access import Action, require, require_owner, resolve_user
from llm.printable import printable
from web.services.common import (Conflict, InvalidInput, NotFound, UploadTooLarge, enum_value, parse_enum, reading,
                                 refuse_unprintable, stored_all_or_nothing)

log = logging.getLogger(__name__)

ALLOWED_EXTENSIONS = ("txt", "jsonl", "csv", "parquet")
PREVIEW_CHARS = 500       # each preview document is cut to this many characters in Dataset.stats
STATS_TOKENIZER = "gpt2"  # token counts of chat / preference / prompt datasets
NAME_MAX_CHARS = 200      # Dataset.name
FILENAME_MAX_CHARS = 255  # Dataset.original_filename
HASH_CHUNK_BYTES = 1024 * 1024
ACTIVE_JOB = (JobStatus.queued, JobStatus.running)  # a job in one of these states needs its dataset's file


@dataclass
class StoredUpload:
    """What an upload gave: the dataset, and whether it was already stored (the same file, same kind)."""

    dataset: Dataset
    already_stored: bool = False
    note: str = ""  # a stored text file that looks like another kind says so ("this looks like a chat dataset: ...")


def dataset_to_dict(dataset: Dataset) -> dict:
    return {
        "id": dataset.id,
        "name": dataset.name,
        "kind": enum_value(dataset.kind),
        "format": dataset.format,
        "original_filename": dataset.original_filename,
        "size_bytes": dataset.size_bytes,
        "stats": dataset.stats or {},
        "owner_id": dataset.owner_id,
        "created_at": dataset.created_at,
    }


def display_filename(original_filename: str) -> str:
    """The user's file name as stored and shown: its last path component (browsers on Windows send
    "C:\\...\\file.txt"), without control or bidirectional-override characters, at most 255 characters
    (a longer name is shortened in the middle of its stem, keeping its extension)."""
    base = printable(PurePosixPath((original_filename or "").replace("\\", "/")).name).strip()
    if len(base) <= FILENAME_MAX_CHARS:
        return base
    stem, dot, extension = base.rpartition(".")
    if not dot or len(extension) > 16:
        return base[:FILENAME_MAX_CHARS]
    return stem[:FILENAME_MAX_CHARS - len(extension) - 1] + "." + extension


def upload_extension(original_filename: str) -> str:
    """The extension of the user's file name, lower-case, if it is one we read; else InvalidInput.

    Only the last path component counts, and only its extension is used afterwards: the name itself
    never becomes a path.
    """
    base = display_filename(original_filename)
    extension = base.rsplit(".", 1)[-1].lower() if "." in base else ""
    if extension not in ALLOWED_EXTENSIONS:
        raise InvalidInput(f"file {base or original_filename!r}: unsupported extension "
                           f"{('.' + extension) if extension else '(none)'}; use one of "
                           f"{', '.join('.' + e for e in ALLOWED_EXTENSIONS)}", field="file")
    return extension


def raw_upload_extension(original_filename: str) -> str:
    """The whole suffix a raw web-data upload is stored under ("warc.gz", "html", ...; llm.clean_inputs reads the
    format from it), else InvalidInput naming the ones it takes."""
    from llm.clean_inputs import RAW_EXTENSIONS, raw_extension

    extension = raw_extension(display_filename(original_filename))
    if extension is None:
        raise InvalidInput(f"file {display_filename(original_filename)!r}: raw web data is one of "
                           f"{', '.join('.' + e for e in RAW_EXTENSIONS)}", field="file")
    return extension


def _raw_stats(path: Path, original_filename: str) -> dict:
    """Validate raw web data by reading its first documents (llm.clean_inputs.inspect_raw)."""
    from llm.clean_inputs import NoDocuments, inspect_raw

    try:
        return inspect_raw(path)
    except NoDocuments as error:
        raise InvalidInput(f"{original_filename}: {error}", field="file") from error


def dataset_name(typed: str | None, filename: str) -> str:
    """The dataset's name: the one typed (refused when over 200 characters, or holding a control or bidirectional
    control character), else the file's stem (cleaned: display_filename) shortened to 200 characters."""
    if typed is not None and not isinstance(typed, str):
        raise InvalidInput(f"the dataset name must be text, got {typed!r}", field="name")
    refuse_unprintable(typed or "", "name")
    name = (typed or "").strip()
    if len(name) > NAME_MAX_CHARS:
        raise InvalidInput(f"the dataset name is {len(name)} characters; the limit is {NAME_MAX_CHARS}", field="name")
    return name or (filename.rsplit(".", 1)[0].strip() or filename)[:NAME_MAX_CHARS]


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def find_same_file(session: Session, content_sha256: str, kind: DatasetKind) -> Dataset | None:
    """The oldest dataset of `kind` whose stored file has this SHA-256, if any."""
    return session.scalar(select(Dataset).where(Dataset.content_sha256 == content_sha256, Dataset.kind == kind)
                          .order_by(Dataset.id).limit(1))


def check_upload_size(size_bytes: int, settings: Settings) -> None:
    if size_bytes > settings.max_upload_bytes:
        raise UploadTooLarge(f"file is {size_bytes / 1024 / 1024:.1f} MB; the limit is {settings.max_upload_mb} MB "
                             f"(WORKBENCH_MAX_UPLOAD_MB)", field="file")


def _conversation_stats(path: Path, kind: DatasetKind, original_filename: str) -> dict:
    """Validate a chat / preference / prompts file (`llm.chat_data`) and summarise it (`llm.stats`);
    a bad line becomes InvalidInput naming the file, the line and the field. Tokens are GPT-2's: a
    yardstick for sizes, whatever tokenizer a later job uses."""
    from llm.chat_data import DataFormatError
    from llm.stats import inspect_dataset
    from llm.tokenizer import get_tokenizer

    try:
        return inspect_dataset(kind.value, path, get_tokenizer(STATS_TOKENIZER), display_name=original_filename)
    except DataFormatError as error:
        raise InvalidInput(str(error), field="file") from error


def _corpus_stats(path: Path, original_filename: str) -> dict:
    """Validate a text corpus with `llm.corpus.inspect_corpus`; its error becomes InvalidInput."""
    from llm.corpus import CorpusError, inspect_corpus  # heavy-ish import, only needed on upload

    try:
        report = inspect_corpus(path, preview=5)
    except CorpusError as error:
        raise InvalidInput(_corpus_error_message(error, path, original_filename), field="file") from error
    lengths = list(report.get("document_lengths") or [])
    stats = {key: value for key, value in report.items() if key not in ("document_lengths", "preview")}
    stats["preview"] = [text[:PREVIEW_CHARS] for text in report.get("preview", [])]
    stats["length_histogram"] = length_histogram(lengths)
    return stats


def _corpus_error_message(error: Exception, stored_path: Path, original_filename: str) -> str:
    """The corpus error with the user's file name in place of our storage path (ours means nothing to them)."""
    line, problem = getattr(error, "line", None), getattr(error, "problem", None)
    if problem is not None:
        where = f", line {line}" if line is not None else ""
        return f"{original_filename}{where}: {problem}"
    return str(error).replace(str(stored_path), original_filename).replace(stored_path.name, original_filename)


def store_dataset_upload(session: Session, settings: Settings, source_path: str | os.PathLike,
                         original_filename: str, name: str | None, kind: str | DatasetKind,
                         owner_id: int | str | User | None, content_sha256: str | None = None) -> StoredUpload:
    """Validate an uploaded file and store it as a Dataset row + data_dir/datasets/<id>/original.<ext>.

    The same file (SHA-256; `content_sha256` when the caller hashed it while receiving it) already stored
    as a dataset of the same kind is not stored again: the answer is that dataset, `already_stored`.

    All or nothing: the file is copied into a staging directory, validated there (with its real
    extension, which is how the corpus reader picks a format), the row is flushed to get its id, the
    staging directory is renamed to datasets/<id>, and only then is the session committed. Any error
    on the way removes the directory and rolls back the row. Two identical uploads at the same instant
    both pass the check; the unique index lets one row in, and the other upload answers with it.
    """
    owner = resolve_user(session, owner_id)
    require(owner, Action.write)
    kind = parse_enum(DatasetKind, kind, "kind")
    display_name = display_filename(original_filename)
    extension = raw_upload_extension(display_name) if kind == DatasetKind.raw else upload_extension(display_name)
    name = dataset_name(name, display_name)
    size = os.path.getsize(source_path)
    check_upload_size(size, settings)
    if size == 0:
        raise InvalidInput(f"{display_name}: the file is empty", field="file")
    content_sha256 = content_sha256 or file_sha256(source_path)
    existing = find_same_file(session, content_sha256, kind)
    if existing is not None:
        log.info("upload of %s is dataset %s again: not stored twice", display_name, existing.id)
        return StoredUpload(existing, already_stored=True)
    try:
        return _store_new_dataset(session, settings, source_path, display_name, extension, name, kind, size,
                                  owner, content_sha256)
    except IntegrityError:
        # The same file was stored by an upload that committed after our check: the unique index on
        # (content_sha256, kind) refused our row, and our files were removed with it. Answer like the check.
        existing = find_same_file(session, content_sha256, kind)
        if existing is None:
            raise
        log.info("upload of %s is dataset %s, stored at the same time: not stored twice", display_name, existing.id)
        return StoredUpload(existing, already_stored=True)


def _store_new_dataset(session: Session, settings: Settings, source_path: str | os.PathLike, display_name: str,
                       extension: str, name: str, kind: DatasetKind, size: int, owner: User | None,
                       content_sha256: str) -> StoredUpload:
    """Copy, validate and store the file as a new dataset, all or nothing (see `store_dataset_upload`)."""
    with stored_all_or_nothing(session, safe_join(settings.data_dir, "datasets"), "upload") as (staging, place):
        staging.mkdir()
        stored = safe_join(staging, f"original.{extension}")
        shutil.copyfile(source_path, stored)
        try:
            if kind == DatasetKind.text:
                stats = _corpus_stats(stored, display_name)
            elif kind == DatasetKind.raw:
                stats = {**_raw_stats(stored, display_name), "bytes": size}
            else:
                stats = {**_conversation_stats(stored, kind, display_name), "bytes": size}
        except InvalidInput as error:
            # Refused as the kind chosen: say which kind the file looks like, when it looks like another.
            hint = kind_hint(stored, kind.value)
            if not hint:
                raise
            raise InvalidInput(f"{error.message} — {hint}", field=error.field) from error
        # Valid text is stored as asked, but a .txt of chat lines would pretrain on JSON: say what it looks like.
        note = kind_hint(stored, kind.value) if kind == DatasetKind.text else ""
        dataset = Dataset(name=name, kind=kind, format=extension, path="", original_filename=display_name,
                          size_bytes=size, stats=stats, owner_id=owner.id if owner else None,
                          content_sha256=content_sha256)
        session.add(dataset)
        session.flush()  # assigns the id the directory is named after
        place(dataset.id)
        dataset.path = f"datasets/{dataset.id}/original.{extension}"  # relative to the data dir, POSIX form
    log.info("dataset %s stored: %s (%s, %d bytes)", dataset.id, name, kind.value, size)
    return StoredUpload(dataset, note=note)


def list_datasets(kind: str | None = None, session: Session | None = None) -> list[dict]:
    """All datasets, newest first; optionally only one kind."""
    with reading(session) as s:
        query = select(Dataset).order_by(Dataset.id.desc())
        if kind:
            query = query.where(Dataset.kind == parse_enum(DatasetKind, kind, "kind"))
        return [dataset_to_dict(d) for d in s.scalars(query)]


def get_dataset(dataset_id: int, session: Session | None = None) -> dict:
    with reading(session) as s:
        dataset = s.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} does not exist")
        return dataset_to_dict(dataset)


# ----------------------------------------------------------------------------- rename and delete

def _dataset_to_change(session: Session, dataset_id: int, user) -> tuple[User | None, Dataset]:
    """(acting user, dataset) when the user may change this dataset: their own, or anyone's for an admin."""
    acting = resolve_user(session, user)
    require(acting, Action.change_own_dataset)
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    require_owner(acting, dataset.owner_id, Action.change_own_dataset, Action.change_any_dataset,
                  f"dataset {dataset_id}")
    return acting, dataset


def rename_dataset(session: Session, dataset_id: int, name: str | None, user: User | int | str | None = None) -> dict:
    """Rename a dataset (its owner or an admin); the name cannot be blank."""
    new_name = dataset_name(name, "")
    if not new_name:
        raise InvalidInput("the dataset name cannot be empty", field="name")
    _, dataset = _dataset_to_change(session, dataset_id, user)
    dataset.name = new_name
    session.commit()
    return dataset_to_dict(dataset)


@dataclass
class DatasetDependents:
    """What uses a dataset: `blocking` stops a delete (queued or running jobs), `kept` is told and kept
    (finished jobs keep their record without the dataset; prompts keep their text)."""

    blocking: list[str]
    kept: list[str]


def dataset_dependents(session: Session, dataset_id: int) -> DatasetDependents:
    if session.get(Dataset, dataset_id) is None:
        raise NotFound(f"dataset {dataset_id} does not exist")
    jobs = session.execute(select(Job.id, Job.kind, Job.status).where(Job.dataset_id == dataset_id)
                           .order_by(Job.id)).all()
    blocking = [f"job #{job_id} ({enum_value(kind)}, {enum_value(status)})" for job_id, kind, status in jobs
                if status in ACTIVE_JOB]
    kept = [f"job #{job_id} ({enum_value(kind)}, {enum_value(status)}) keeps its record and models, without the "
            f"dataset{'; it can no longer be resumed' if status != JobStatus.succeeded else ''}"
            for job_id, kind, status in jobs if status not in ACTIVE_JOB]
    prompts = len(session.scalars(select(Prompt.id).where(Prompt.dataset_id == dataset_id)).all())
    if prompts:
        kept.append(f"{prompts} prompt{'s' if prompts != 1 else ''} of labeling and arena data keep their text")
    return DatasetDependents(blocking, kept)


def delete_dataset(session: Session, settings: Settings, dataset_id: int, user: User | int | str | None = None) -> None:
    """Delete a dataset (its owner or an admin): the row, then its directory (the file and its prepared data).

    Refused (Conflict, naming them) while queued or running jobs use it: cancel them or let them finish.
    Finished jobs keep their record (and the models they made) with the dataset link cleared and an event
    saying who deleted it; a failed or cancelled one is no longer resumable (its data is gone). The files go
    after the commit, so a failure leaves at worst an orphan directory, never a row without its file.
    """
    from worker.jobs.lifecycle import record_event

    acting, dataset = _dataset_to_change(session, dataset_id, user)
    dependents = dataset_dependents(session, dataset_id)
    if dependents.blocking:
        raise Conflict(f"dataset {dataset_id} cannot be deleted: used by {', '.join(dependents.blocking)}; cancel "
                       f"{'those jobs' if len(dependents.blocking) > 1 else 'that job'} or wait until "
                       f"{'they finish' if len(dependents.blocking) > 1 else 'it finishes'}")
    detail = f"dataset #{dataset_id} {dataset.name!r} deleted"
    for (job_id,) in session.execute(select(Job.id).where(Job.dataset_id == dataset_id)):
        record_event(session, job_id, "dataset_deleted", acting.id if acting else None, detail)
    session.execute(update(Job).where(Job.dataset_id == dataset_id, Job.status != JobStatus.succeeded)
                    .values(resumable=False))
    session.execute(update(Job).where(Job.dataset_id == dataset_id).values(dataset_id=None))
    session.execute(update(Prompt).where(Prompt.dataset_id == dataset_id).values(dataset_id=None))
    session.delete(dataset)
    try:
        session.commit()
    except IntegrityError:  # a job was submitted on it between the check and the commit
        session.rollback()
        raise Conflict(f"dataset {dataset_id} was just chosen for a new job; try again once it has finished") from None
    log.info("dataset %s deleted by %s", dataset_id, acting.name if acting else "the system")
    shutil.rmtree(safe_join(settings.data_dir, "datasets", str(dataset_id)), ignore_errors=True)
