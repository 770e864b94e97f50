"""The `train_tokenizer` kind's handler: train the BPE on the dataset's documents and save it by its name."""

from __future__ import annotations

from db.settings import safe_join
from worker.jobs.context import JobContext, Outcome, dataset_path


def run(ctx: JobContext) -> Outcome:
    from llm.corpus import iter_documents
    from llm.tokenizer import train_tokenizer

    params = ctx.params
    out_dir = safe_join(ctx.data_dir, "tokenizers", params["name"])
    if (out_dir / "tokenizer.json").is_file():
        raise ValueError(f"a tokenizer named {params['name']!r} already exists")
    ctx.log(f"training a BPE tokenizer with {params['vocab_size']:,} tokens on dataset {ctx.dataset.id}")
    tokenizer = train_tokenizer(iter_documents(dataset_path(ctx)), params["vocab_size"], out_dir, params["name"],
                                on_progress=ctx.on_progress, should_stop=ctx.should_stop)
    if tokenizer is None:
        return Outcome(stopped=True, summary="stopped while reading the corpus; nothing was written")
    return Outcome(summary=f"tokenizer {tokenizer.name!r}: {tokenizer.vocab_size:,} tokens "
                           f"(including special tokens)")
