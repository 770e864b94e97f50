"""Cleaning speed: the whole `clean` pipeline (llm/clean.py on datatrove) on a generated mixed corpus, and its MinHash
near-duplicate step against `datasketch` on the same documents with the same parameters.

  pipeline   `clean(corpus.jsonl, out, workers=2)` at the defaults (FineWeb's): read → URL → trafilatura → language →
             Gopher → C4 → FineWeb → MinHash (3 stages + filter) → PII → clean.jsonl + report. The corpus is
             `llm.synthetic_web.mixed_corpus` (HTML articles with menus/banners/footers, French/German, spam, menus,
             near-duplicates, PII, blocked domains): 600 pages (~2 MB) with --quick, 3,000 (~11 MB) otherwise.
             Figures: documents/s and MB/s of input, wall time; the peak RSS of the process that runs the
             executor and of its largest child (datatrove's pool workers, the trafilatura sandbox), measured in a
             fresh process.
  minhash    the same texts (English prose, every tenth followed by a copy with 3 words changed; 2,000 texts with
             --quick, 10,000 otherwise) deduplicated by datatrove's MinHash stages (signatures, buckets, clusters;
             one worker) and by datasketch (MinHash with 112 permutations, MinHashLSH with 14 bands × 8 rows,
             insert then query every document, clusters by union-find), both on the same word 5-gram shingles
             (datatrove's normalisation and word tokenizer, timed on both sides). Figures: seconds each, the
             ratio datasketch / datatrove (> 1: datatrove faster), the pairs each finds against the planted ones.

The machine's load average is reported with the figures: on the shared 2-core machine wall times move with it.
Peak memory on a large input, over the whole process tree and per stage: bench/clean_memory.py.
Run: `python -m bench.bench_clean [--quick]` or `python -m bench.run --only clean`.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import print_table, ratio, run_json_subprocess

QUICK_PAGES, FULL_PAGES = 600, 3000
QUICK_TEXTS, FULL_TEXTS = 2000, 10000
NGRAMS, BUCKETS, ROWS = 5, 14, 8  # FineWeb's MinHash


def write_corpus(path: Path, pages: int, seed: int = 0) -> int:
    from llm.synthetic_web import mixed_corpus

    with open(path, "w", encoding="utf-8") as handle:
        for record in mixed_corpus(pages, seed):
            handle.write(json.dumps(record) + "\n")
    return path.stat().st_size


def run_pipeline(corpus: str, out: str, workers: int) -> dict:
    """One clean run (in a fresh process, for its peak memory); its timings and the report's counts."""
    from llm.clean import clean

    started = time.perf_counter()
    report = clean([Path(corpus)], Path(out), workers=workers, say=lambda line: None)
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:"))
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"seconds": seconds, "documents_in": report["input"]["documents"], "bytes_in": report["input"]["bytes"],
            "documents_out": report["output"]["documents"], "timings": report["timings"],
            "peak_rss_bytes": peak, "largest_child_rss_bytes": child_peak}


def near_duplicate_texts(count: int, seed: int = 1) -> tuple[list[str], int]:
    from llm.synthetic_web import english_text, near_duplicate

    rng = random.Random(seed)
    texts: list[str] = []
    planted = 0
    while len(texts) < count:
        text = english_text(rng, 16)
        texts.append(text)
        if len(texts) % 10 == 0 and len(texts) < count:
            texts.append(near_duplicate(text, rng, 3))
            planted += 1
    return texts, planted


def datatrove_minhash(texts: list[str], folder: Path) -> tuple[float, set[tuple[int, int]], int]:
    """(seconds, duplicate pairs (doc index pairs), documents to remove) of datatrove's three MinHash stages."""
    import numpy as np
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.utils.hashing import HashConfig

    data = folder / "data"
    data.mkdir(parents=True)
    with open(data / "texts.jsonl", "w") as handle:
        for index, text in enumerate(texts):
            handle.write(json.dumps({"text": text, "id": str(index)}) + "\n")
    config = MinhashConfig(hash_config=HashConfig(hash_fc="sha1", precision=64), num_buckets=BUCKETS,
                           hashes_per_bucket=ROWS, n_grams=NGRAMS)
    stages = [
        ([JsonlReader(str(data)), MinhashDedupSignature(output_folder=str(folder / "sigs"), config=config)], 1),
        ([MinhashDedupBuckets(input_folder=str(folder / "sigs"), output_folder=str(folder / "buckets"),
                              config=config)], BUCKETS),
        ([MinhashDedupCluster(input_folder=str(folder / "buckets"), output_folder=str(folder / "remove"),
                              config=config)], 1),
    ]
    started = time.perf_counter()
    for number, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                              logging_dir=str(folder / f"logs{number}")).run()
    seconds = time.perf_counter() - started
    pairs: set[tuple[int, int]] = set()
    for path in (folder / "buckets").glob("*.dups"):
        rows = np.fromfile(path, dtype="<u4").reshape(-1, 4)
        pairs |= {tuple(sorted((int(a), int(b)))) for _, a, _, b in rows if a != 0xFFFFFFFF}
    removed = sum(np.fromfile(path, dtype="<u4").size for path in (folder / "remove").glob("*.remove"))
    return seconds, pairs, removed


def datasketch_minhash(texts: list[str]) -> tuple[float, set[tuple[int, int]], int]:
    """The same with datasketch: MinHash(112 permutations) + MinHashLSH(14 bands × 8 rows), union-find clusters."""
    from datasketch import MinHash, MinHashLSH
    from datatrove.utils.text import TextNormConfig, ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    tokenizer = load_word_tokenizer("en")
    started = time.perf_counter()
    lsh = MinHashLSH(num_perm=BUCKETS * ROWS, params=(BUCKETS, ROWS))
    signatures = []
    for index, text in enumerate(texts):
        words = tokenizer.word_tokenize(simplify_text(text, TextNormConfig()))
        shingles = {" ".join(gram).encode() for gram in ngrams(words, NGRAMS)}
        signature = MinHash(num_perm=BUCKETS * ROWS, seed=1)
        signature.update_batch(list(shingles))
        lsh.insert(index, signature)
        signatures.append(signature)
    pairs = {tuple(sorted((index, other))) for index, signature in enumerate(signatures)
             for other in lsh.query(signature) if other != index}
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    removed = len(texts) - len({root(i) for i in range(len(texts))})
    return time.perf_counter() - started, pairs, removed


def run(quick: bool = False, budget_s: float | None = None) -> dict:
    del budget_s  # one run of each: the pipeline's size is fixed by --quick
    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="bench-clean-"))
    try:
        corpus = folder / "mixed.jsonl"
        size = write_corpus(corpus, QUICK_PAGES if quick else FULL_PAGES)
        pipeline = run_json_subprocess("bench.bench_clean", "run_pipeline",
                                       {"corpus": str(corpus), "out": str(folder / "out"), "workers": 2})
        texts, planted = near_duplicate_texts(QUICK_TEXTS if quick else FULL_TEXTS)
        # Load the word tokenizer once before timing either side (both use it).
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        load_word_tokenizer("en").word_tokenize("warm up")
        ours_s, ours_pairs, ours_removed = datatrove_minhash(texts, folder / "minhash")
        peer_s, peer_pairs, peer_removed = datasketch_minhash(texts)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {
        "clean_documents": pipeline["documents_in"], "clean_input_mb": size / 1e6,
        "clean_seconds": pipeline["seconds"], "clean_docs_per_s": pipeline["documents_in"] / pipeline["seconds"],
        "clean_mb_per_s": size / 1e6 / pipeline["seconds"], "clean_documents_out": pipeline["documents_out"],
        "clean_peak_rss_mb": pipeline["peak_rss_bytes"] / 2**20,
        "clean_largest_child_rss_mb": pipeline["largest_child_rss_bytes"] / 2**20,
        "clean_stage_seconds": pipeline["timings"],
        "minhash_texts": len(texts), "minhash_planted_pairs": planted,
        "minhash_datatrove_s": ours_s, "minhash_datasketch_s": peer_s,
        "minhash_datasketch_vs_datatrove": ratio(peer_s, ours_s),
        "minhash_datatrove_pairs": len(ours_pairs), "minhash_datasketch_pairs": len(peer_pairs),
        "minhash_datatrove_removed": ours_removed, "minhash_datasketch_removed": peer_removed,
        "minhash_pairs_in_both": len(ours_pairs & peer_pairs),
        "clean_load_average": f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}",
    }
    print_table([(key, value) for key, value in result.items() if key != "clean_stage_seconds"], ("figure", "value"))
    return result


def main(argv: list[str] | None = None) -> dict:
    from bench.common import command_line

    return command_line(run, __doc__.splitlines()[0], "600 pages and 2,000 texts", argv)


if __name__ == "__main__":
    main()
