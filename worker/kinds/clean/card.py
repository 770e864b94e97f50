"""What the `clean` kind shows in the Jobs tab: documents in, left after every step and out, as metrics at step
0..N (one step a pipeline step, in the report's funnel order)."""

from __future__ import annotations

METRIC_CARDS = (("documents_in", "documents in"), ("documents_out", "documents out"),
                ("removed_share", "removed (share)"), ("mb_per_s", "MB/s"))
