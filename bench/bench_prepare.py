"""Data preparation speed: our `llm.prepare` end to end against raw tiktoken on the same documents.

The corpus is synthetic English-like text (a fixed word list, a seeded RNG, no downloads) written
as a .jsonl file: about 2 MB with --quick, 20 MB otherwise. Timed side by side, interleaved,
median of the repeats, 2 threads everywhere:
  prepare   `prepare(corpus.jsonl, "gpt2", out)`: read + parse JSON + clean (NFC, strip) + dedup
            (BLAKE2b) + train/val split + tokenise + write train.bin/val.bin/stats.json;
  tiktoken  `encode_ordinary_batch(documents, num_threads=2)` on the documents already in memory
            (the peer: what every tokenisation script calls);
  tiktoken (numpy)  `encode_to_numpy` per document in 2 threads, in memory: the raw encoder
            `prepare` uses, so prepare / this is the cost of everything prepare adds.
Throughput counts the same content tokens for all three (prepare's <|endoftext|> separators are
not counted). CPU seconds of the process (all threads) are reported too: on a shared, loaded
machine they are far steadier than wall time. The rounds fill what is left of the time budget (`--budget-s`, 60 s
with --quick); their number is reported (`prepare_rounds`). Peak memory: the RSS high-water mark (VmHWM) of a fresh child process that loads
the tokenizer and runs one prepare, plus the tracemalloc peak of what prepare itself allocates (see measure_prepare_memory).

Run: `python -m bench.bench_prepare [--quick] [--budget-s S]`.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import sys
import tempfile
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import (current_rss_bytes, interleaved_runs, median, print_table, ratio, run_json_subprocess,
                          time_budget)
from llm.prepare import prepare
from llm.tokenizer import get_tokenizer

THREADS = 2  # the machines are shared: pin the thread count so runs compare
TOKENIZER = "gpt2"
QUICK_BYTES, FULL_BYTES = 2_000_000, 20_000_000

WORDS = """the of and to a in is was that for it with as his on be at by had not are but from or have an
they which one you were her all she there would their we him been has when who will more no if out so
said what up its about into than them can only other new some could time these two may then do first
any my now such like our over man me even most made after also did many before must through back years
where much your way well down should because each just those people how too little state good very
make world still own see men work long get here between both life being under never day same another
know while last might us great old year off come since against go came right used take three states
himself few house use during without again place american around however home small found thought went
say part once general high upon school every does got united left number course war until always away
something fact though water less public put think almost hand enough far took head yet government system
better set told nothing night end why called didn't eyes find going look asked later knew point next
city business give group toward young let room president side social given present order national
river mountain garden window letter market teacher village science music history language question
answer morning evening winter summer kitchen doctor island forest engine station bridge paper story
café naïve résumé façade coöperate déjà Zürich São München Ångström""".split()
NAMES = "Alice Bob Carol David Emma Frank Grace Henry Isabel James Karen Louis Maria Noah Olivia".split()
PUNCTUATION = [". "] * 8 + ["? ", "! "]


def make_document(rng: random.Random) -> str:
    """A few paragraphs of sentences built from WORDS, with names, numbers and punctuation."""
    paragraphs = []
    for _ in range(rng.randint(1, 6)):
        sentences = []
        for _ in range(rng.randint(2, 8)):
            words = rng.choices(WORDS, k=rng.randint(5, 25))
            if rng.random() < 0.3:
                words[rng.randrange(len(words))] = rng.choice(NAMES)
            if rng.random() < 0.2:
                words[rng.randrange(len(words))] = str(rng.randint(1, 2030))
            if len(words) > 8 and rng.random() < 0.4:
                words[rng.randrange(3, len(words) - 2)] += ","
            sentence = " ".join(words)
            sentences.append(sentence[0].upper() + sentence[1:] + rng.choice(PUNCTUATION).strip())
        paragraphs.append(" ".join(sentences))
    return "\n".join(paragraphs)


def make_corpus(path: Path, target_bytes: int, seed: int = 0) -> list[str]:
    """Write documents to a .jsonl file until it holds about `target_bytes`; return the documents."""
    rng = random.Random(seed)
    documents, size = [], 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target_bytes:
            document = make_document(rng)
            line = json.dumps({"text": document}, ensure_ascii=False) + "\n"
            f.write(line)
            documents.append(document)
            size += len(line.encode("utf-8"))
    return documents


def _max_rss_mb() -> float:
    """This process's RSS high-water mark in MiB.

    Linux's VmHWM, not getrusage: ru_maxrss survives fork + exec, so a child started by a big
    parent reports the parent's peak (a 300 MB bench process made every child read 300 MB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def measure_prepare_memory(corpus_path: str, out_dir: str) -> dict:
    """Run in a fresh process (see run_json_subprocess): prepare's memory, two ways.

    The RSS high-water mark is the whole process's (it may be set by loading the tokenizer
    rather than by prepare); tracemalloc's peak counts only what prepare itself allocates through
    Python (numpy arrays included), measured on a second run since tracing adds its own memory.
    """
    get_tokenizer(TOKENIZER).encode("warm up the tokenizer")
    rss_before = current_rss_bytes() / (1 << 20)
    prepare(corpus_path, TOKENIZER, out_dir, num_threads=THREADS)
    peak_rss = _max_rss_mb()
    tracemalloc.start()
    prepare(corpus_path, TOKENIZER, out_dir, num_threads=THREADS)
    traced_peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
    tracemalloc.stop()
    return {"rss_before_mb": rss_before, "peak_rss_mb": peak_rss, "traced_peak_mb": traced_peak}


def run(quick: bool = False, budget_s: float | None = None) -> dict:
    budget = time_budget(quick, budget_s)
    repeats = 3 if quick else 5
    tokenizer = get_tokenizer(TOKENIZER)
    encoding = tokenizer.encoding
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        tmp_dir = Path(tmp)
        corpus_path = tmp_dir / "corpus.jsonl"
        documents = make_corpus(corpus_path, QUICK_BYTES if quick else FULL_BYTES)
        content_tokens = sum(len(ids) for ids in encoding.encode_ordinary_batch(documents, num_threads=THREADS))
        out_dir = tmp_dir / "prepared"
        pool = ThreadPoolExecutor(THREADS)
        halves = [documents[:len(documents) // 2], documents[len(documents) // 2:]]

        def run_prepare():
            stats = prepare(corpus_path, TOKENIZER, out_dir, num_threads=THREADS)
            assert stats["tokens"] - stats["documents"] == content_tokens, "prepare tokenised differently"

        def encode_half_to_numpy(texts):
            return [encoding.encode_to_numpy(text, disallowed_special=()) for text in texts]

        runs = interleaved_runs({
            "prepare": run_prepare,
            "tiktoken": lambda: encoding.encode_ordinary_batch(documents, num_threads=THREADS),
            "tiktoken_numpy": lambda: list(pool.map(encode_half_to_numpy, halves)),
        }, repeats=repeats, warmup=1, budget=budget)
        pool.shutdown()
        memory = run_json_subprocess("bench.bench_prepare", "measure_prepare_memory",
                                     {"corpus_path": str(corpus_path), "out_dir": str(tmp_dir / "memory")})
        stats = json.loads((out_dir / "stats.json").read_text())
        corpus_mb = corpus_path.stat().st_size / 1e6
        shutil.rmtree(out_dir, ignore_errors=True)

    times = {name: run["wall"] for name, run in runs.items()}
    seconds = {name: median(values) for name, values in times.items()}
    # CPU seconds of the whole process (all threads): far steadier than wall time on a shared machine,
    # though blind to how well the work overlaps.
    cpu_seconds = {name: median(run["cpu"]) for name, run in runs.items()}
    result = {
        "corpus_mb": round(corpus_mb, 2),
        "documents": stats["documents"],
        "content_tokens": content_tokens,
        "threads": THREADS,
        "repeats": repeats,
        "prepare_rounds": len(runs["prepare"]["wall"]),
        "prepare_budget_s": budget.seconds,
        "prepare_s": seconds["prepare"],
        "tiktoken_s": seconds["tiktoken"],
        "tiktoken_numpy_s": seconds["tiktoken_numpy"],
        "prepare_tokens_per_s": content_tokens / seconds["prepare"],
        "tiktoken_tokens_per_s": content_tokens / seconds["tiktoken"],
        "tiktoken_numpy_tokens_per_s": content_tokens / seconds["tiktoken_numpy"],
        "prepare_vs_tiktoken": ratio(seconds["tiktoken"], seconds["prepare"]),
        "prepare_vs_tiktoken_numpy": ratio(seconds["tiktoken_numpy"], seconds["prepare"]),
        "prepare_cpu_s": cpu_seconds["prepare"],
        "tiktoken_cpu_s": cpu_seconds["tiktoken"],
        "prepare_vs_tiktoken_cpu": ratio(cpu_seconds["tiktoken"], cpu_seconds["prepare"]),
        "prepare_peak_rss_mb": round(memory["peak_rss_mb"], 1),
        "rss_before_prepare_mb": round(memory["rss_before_mb"], 1),
        "prepare_tracemalloc_peak_mb": round(memory["traced_peak_mb"], 1),
        "peak_rss_method": "VmHWM of a fresh child process (imports + tokenizer + one prepare);"
                           " tracemalloc peak of a second prepare in that process",
        "times_s": {name: [round(t, 4) for t in values] for name, values in times.items()},
    }
    print_table([
        ("prepare (end to end)", result["prepare_s"], result["prepare_tokens_per_s"], 1.0),
        ("tiktoken encode_ordinary_batch", result["tiktoken_s"], result["tiktoken_tokens_per_s"],
         result["prepare_vs_tiktoken"]),
        ("tiktoken encode_to_numpy", result["tiktoken_numpy_s"], result["tiktoken_numpy_tokens_per_s"],
         result["prepare_vs_tiktoken_numpy"]),
    ], headers=("prepare bench", "median s", "tokens/s", "prepare speed / this"))
    print(f"medians of {result['prepare_rounds']} rounds")
    print(f"CPU seconds (all threads): prepare {result['prepare_cpu_s']:.3f}, tiktoken {result['tiktoken_cpu_s']:.3f}"
          f" -> prepare_vs_tiktoken_cpu {result['prepare_vs_tiktoken_cpu']:.3f}")
    print(f"corpus {result['corpus_mb']} MB, {result['documents']:,} documents, {content_tokens:,} tokens;"
          f" prepare peak RSS {result['prepare_peak_rss_mb']} MB"
          f" (RSS {result['rss_before_prepare_mb']} MB before it; tracemalloc peak of prepare"
          f" {result['prepare_tracemalloc_peak_mb']} MB)")
    return result


def main(argv: list[str] | None = None) -> dict:
    from bench.common import command_line

    return command_line(run, __doc__.splitlines()[0], "2 MB corpus, 3 repeats", argv, budget=True)


if __name__ == "__main__":
    main()
