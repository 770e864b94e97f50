"""What the `generate` kind shows in the Jobs tab while it runs: prompts answered and the generation speed."""

from __future__ import annotations

from worker.jobs.spec import Plot

METRIC_CARDS = (("prompts_done", "prompts done"), ("completions", "completions"), ("tokens_per_s", "tokens/s"))
PLOTS = (Plot("Generation speed", {"tokens_per_s": "tokens/s"}),)
