"""Tests for llm/prepare.py: token files, stats.json, the train/val split, atomic output."""

import json

import numpy as np
import pytest

from llm import prepare as prepare_module
from llm.corpus import CorpusError, iter_documents
from llm.prepare import prepare, tqdm_progress
from llm.tokenizer import END_OF_TEXT, get_tokenizer


@pytest.fixture(scope="module")
def gpt2():
    return get_tokenizer("gpt2")


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts), encoding="utf-8")
    return path


def read_split(out_dir, split, dtype=np.uint16):
    return np.fromfile(out_dir / f"{split}.bin", dtype=dtype)


def split_documents(ids: np.ndarray, eot_id: int) -> list[np.ndarray]:
    """Cut a token file at its <|endoftext|> markers; each file must start with one."""
    assert len(ids) == 0 or ids[0] == eot_id
    starts = np.flatnonzero(ids == eot_id)
    return [ids[start + 1:end] for start, end in zip(starts, [*starts[1:], len(ids)])]


TEXTS = [f"Document number {i}: the quick brown fox jumps over {i % 7} lazy dogs." for i in range(60)]


def test_prepare_writes_token_files_and_stats(tmp_path, gpt2):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", TEXTS + [TEXTS[3], "  ", TEXTS[10] + "\n"])
    out_dir = tmp_path / "prepared"
    stats = prepare(corpus, "gpt2", out_dir, val_fraction=0.2, seed=1)

    assert json.loads((out_dir / "stats.json").read_text()) == stats
    assert sorted(p.name for p in out_dir.iterdir()) == ["stats.json", "train.bin", "val.bin"]
    train, val = read_split(out_dir, "train"), read_split(out_dir, "val")
    assert stats["tokenizer"] == "gpt2" and stats["dtype"] == "uint16" and stats["format"] == "jsonl"
    assert stats["source"] == "corpus.jsonl" and stats["vocab_size"] == gpt2.vocab_size
    assert (stats["documents"], stats["duplicates_removed"], stats["empty_removed"]) == (60, 2, 1)
    assert stats["tokens"] == len(train) + len(val)
    assert stats["train"]["tokens"] == len(train) and stats["val"]["tokens"] == len(val)
    assert stats["train"]["documents"] + stats["val"]["documents"] == 60
    assert stats["val"]["documents"] >= 1
    assert stats["bytes"] == sum(len(text.encode()) for text in TEXTS)
    assert stats["train"]["bytes"] + stats["val"]["bytes"] == stats["bytes"]
    assert stats["bytes_per_token"] == pytest.approx(stats["bytes"] / stats["tokens"], abs=1e-4)

    # Each split is whole documents, each encoded exactly like tokenizer.encode, eot before each.
    train_documents = [gpt2.decode(ids) for ids in split_documents(train, gpt2.eot_id)]
    val_documents = [gpt2.decode(ids) for ids in split_documents(val, gpt2.eot_id)]
    assert sorted(train_documents + val_documents) == sorted(TEXTS)
    assert not set(train_documents) & set(val_documents)
    assert gpt2.decode(train) == "".join(END_OF_TEXT + text for text in train_documents)
    for ids in split_documents(train, gpt2.eot_id):
        assert ids.tolist() == gpt2.encode(gpt2.decode(ids))
    assert len(train_documents) == stats["train"]["documents"]


def test_literal_special_token_text_is_encoded_as_ordinary_text(tmp_path, gpt2):
    text = "before <|endoftext|> after <|im_start|>user"
    out_dir = tmp_path / "out"
    prepare(write_jsonl(tmp_path / "c.jsonl", [text]), "gpt2", out_dir)
    train = read_split(out_dir, "train")
    assert train.tolist() == [gpt2.eot_id, *gpt2.encode(text)]
    assert (train == gpt2.eot_id).sum() == 1


def test_cl100k_switches_to_uint32(tmp_path):
    cl100k = get_tokenizer("cl100k")
    texts = ["Ünïcödé and emoji 🎉 need big ids", "second document"]
    out_dir = tmp_path / "out"
    stats = prepare(write_jsonl(tmp_path / "c.jsonl", texts), "cl100k", out_dir, val_fraction=0.5)
    assert stats["dtype"] == "uint32"
    assert (out_dir / "train.bin").stat().st_size == 4 * stats["train"]["tokens"]
    all_ids = np.concatenate([read_split(out_dir, "train", np.uint32), read_split(out_dir, "val", np.uint32)])
    assert cl100k.eot_id > 65535 and (all_ids == cl100k.eot_id).sum() == 2
    decoded = sorted(cl100k.decode(ids) for ids in split_documents(read_split(out_dir, "train", np.uint32),
                                                                    cl100k.eot_id)
                     + split_documents(read_split(out_dir, "val", np.uint32), cl100k.eot_id))
    assert decoded == sorted(texts)


def test_split_is_by_document_and_deterministic(tmp_path, gpt2):
    corpus = write_jsonl(tmp_path / "c.jsonl", TEXTS)
    first = prepare(corpus, "gpt2", tmp_path / "a", val_fraction=0.3, seed=7)
    second = prepare(corpus, "gpt2", tmp_path / "b", val_fraction=0.3, seed=7)
    other_seed = prepare(corpus, "gpt2", tmp_path / "c", val_fraction=0.3, seed=8)
    for split in ("train", "val"):
        assert np.array_equal(read_split(tmp_path / "a", split), read_split(tmp_path / "b", split))
    assert first["val"] == second["val"]
    assert not np.array_equal(read_split(tmp_path / "a", "val"), read_split(tmp_path / "c", "val"))
    # Roughly the requested fraction (60 documents, fraction 0.3).
    assert 8 <= first["val"]["documents"] <= 28 and 8 <= other_seed["val"]["documents"] <= 28


def test_adding_documents_does_not_move_existing_ones(tmp_path, gpt2):
    small = prepare(write_jsonl(tmp_path / "s.jsonl", TEXTS[:30]), "gpt2", tmp_path / "s", val_fraction=0.3)
    prepare(write_jsonl(tmp_path / "l.jsonl", TEXTS), "gpt2", tmp_path / "l", val_fraction=0.3)
    assert small["val"]["documents"] >= 1
    small_val = {gpt2.decode(ids) for ids in split_documents(read_split(tmp_path / "s", "val"), gpt2.eot_id)}
    large_val = {gpt2.decode(ids) for ids in split_documents(read_split(tmp_path / "l", "val"), gpt2.eot_id)}
    assert small_val <= large_val


@pytest.mark.parametrize("texts, val_fraction, train_docs, val_docs", [
    (["only one"], 0.99, 1, 0),          # a single document always trains
    (["one", "two"], 0.001, 1, 1),        # val gets one as soon as there are two
    (["one", "two", "three"], 0.0, 3, 0),  # unless no val was asked for
])
def test_splits_are_never_left_empty_when_they_can_be_filled(tmp_path, texts, val_fraction, train_docs, val_docs):
    stats = prepare(write_jsonl(tmp_path / "c.jsonl", texts), "gpt2", tmp_path / "out", val_fraction=val_fraction)
    assert (stats["train"]["documents"], stats["val"]["documents"]) == (train_docs, val_docs)
    assert (tmp_path / "out" / "val.bin").stat().st_size == 2 * stats["val"]["tokens"]


def test_many_chunks_with_small_chunk_size(tmp_path, gpt2, monkeypatch):
    monkeypatch.setattr(prepare_module, "DOCUMENTS_PER_CHUNK", 7)
    monkeypatch.setattr(prepare_module, "DOCUMENTS_PER_TASK", 3)
    calls = []
    stats = prepare(write_jsonl(tmp_path / "c.jsonl", TEXTS), "gpt2", tmp_path / "out", val_fraction=0.2,
                    num_threads=2, on_progress=lambda done, total: calls.append((done, total)))
    reference = prepare(write_jsonl(tmp_path / "c.jsonl", TEXTS), "gpt2", tmp_path / "ref", val_fraction=0.2)
    assert stats["train"] == reference["train"] and stats["val"] == reference["val"]
    assert calls[-1] == (60, 60)
    assert [done for done, _ in calls[:-1]] == list(range(7, 60, 7))
    assert all(total is None for _, total in calls[:-1])


def test_should_stop_discards_the_partial_output_and_keeps_the_previous_one(tmp_path, gpt2, monkeypatch):
    monkeypatch.setattr(prepare_module, "DOCUMENTS_PER_CHUNK", 7)
    corpus = write_jsonl(tmp_path / "c.jsonl", TEXTS)
    out_dir = tmp_path / "out"
    before = prepare(write_jsonl(tmp_path / "old.jsonl", TEXTS[:5]), "gpt2", out_dir)
    asked = []

    def stop_on_third_question():
        asked.append(True)
        return len(asked) == 3

    result = prepare(corpus, "gpt2", out_dir, should_stop=stop_on_third_question)
    assert result == {"stopped": True, "documents": 21}  # three chunks of 7 were written, then it stopped
    assert json.loads((out_dir / "stats.json").read_text()) == before  # the earlier output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "old.jsonl", "out"]
    # never asked to stop: a normal run, asked once per chunk boundary
    asked.clear()
    stats = prepare(corpus, "gpt2", out_dir, should_stop=lambda: asked.append(True) and False)
    assert stats["documents"] == 60 and "stopped" not in stats and len(asked) == 8


def test_scrub_pii_removes_emails_from_the_token_files(tmp_path, gpt2):
    texts = ["contact jane.doe@example.com or +1 555-123-4567 please"]
    stats = prepare(write_jsonl(tmp_path / "c.jsonl", texts), "gpt2", tmp_path / "out", scrub_pii=True)
    assert gpt2.decode(read_split(tmp_path / "out", "train")) == END_OF_TEXT + "contact <email> or <phone> please"
    assert stats["scrub_pii"] is True


def test_malformed_corpus_leaves_nothing_behind(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "fine"}\n' * 3000 + "{broken\n")  # fails after several chunks
    out_dir = tmp_path / "out"
    with pytest.raises(CorpusError, match=r"c\.jsonl, line 3001: invalid JSON"):
        prepare(corpus, "gpt2", out_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_failed_prepare_keeps_the_previous_output_and_success_replaces_it(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", TEXTS[:5])
    out_dir = tmp_path / "out"
    prepare(good, "gpt2", out_dir)
    before = (out_dir / "stats.json").read_text()
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(CorpusError, match="no documents left after cleaning"):
        prepare(empty, "gpt2", out_dir)
    assert (out_dir / "stats.json").read_text() == before
    assert not (tmp_path / "out.tmp").exists()

    stats = prepare(write_jsonl(tmp_path / "more.jsonl", TEXTS[:9]), "gpt2", out_dir)
    assert json.loads((out_dir / "stats.json").read_text())["documents"] == stats["documents"] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "good.jsonl", "more.jsonl", "out"]


def test_invalid_val_fraction_is_rejected_before_writing(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        prepare(write_jsonl(tmp_path / "c.jsonl", ["x"]), "gpt2", tmp_path / "out", val_fraction=1.0)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_txt_csv_and_parquet_give_the_same_token_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = TEXTS[:20]
    (tmp_path / "c.txt").write_text("\n\n".join(texts))
    (tmp_path / "c.csv").write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    pq.write_table(pa.table({"text": texts}), tmp_path / "c.parquet")
    outputs = {}
    for name in ("c.txt", "c.csv", "c.parquet"):
        stats = prepare(tmp_path / name, "gpt2", tmp_path / f"out-{name}")
        assert list(iter_documents(tmp_path / name)) == texts
        outputs[name] = (read_split(tmp_path / f"out-{name}", "train").tolist(), stats["tokens"])
    assert outputs["c.txt"] == outputs["c.csv"] == outputs["c.parquet"]


def test_tqdm_progress_tracks_done_and_total(capsys):
    progress = tqdm_progress("prepare")
    progress(5, None)
    progress(12, None)
    assert progress.bar.n == 12
    progress(20, 20)
    assert (progress.bar.n, progress.bar.total) == (20, 20)
    progress.close()
