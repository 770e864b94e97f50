"""The `demo` kind's declaration: the whole loop (tokenizer → pretrain → SFT → candidates → labels by a rule →
reward model → DPO → arena) on generated data at the defaults, in about two minutes of CPU time, ending on a report
that shows each stage's model doing better than the one before (`llm/demo.py`; the same as `workbench demo`). It
needs no dataset or model. It makes four models, not one (base, SFT, reward, DPO: the handler registers them with
their lineage), so it declares no single `produces`."""

from __future__ import annotations

from llm.params import Setting
from worker.jobs.spec import JobKindSpec, TrainFormNames
from worker.kinds.demo.handler import run

PARAMS = {
    "seed": Setting("int", default=0, minimum=0, maximum=2**32 - 1,
                    help="the generated data and every run's seed: the same seed, the same demo"),
}

SPEC = JobKindSpec(
    kind="demo", title="Demo: the whole loop",
    description="The whole loop on generated data at the defaults, labels and votes by a rule: each stage's model "
                "measured against the one before.",
    params=PARAMS, handler=run, metric_cards=(), form_fields=("seed",),
    form=TrainFormNames(prefix="demo", tab="Demo", tab_id="demo",
                        intro="New here? This runs the whole loop on generated data, at the defaults, in a few "
                              "minutes: a tokenizer, a tiny base model, SFT, candidate answers, labels by a **rule** "
                              "(not a person), a reward model, DPO and an arena. Its log in **Jobs** ends with a "
                              "table of what each stage's model does better than the one before; its four models then "
                              "appear in **Models**, **Chat** and the arena."),
)
