"""The CLI's `demo` command (llm/demo.py), added to llm/cli.py's parser:

    workbench demo --out DIR [--scale 0.1]

Runs the whole loop on generated data (tokenizer, pretrain, SFT, candidates, labels by a rule, reward model, DPO,
arena) at the defaults, prints a line per stage with its time and ends on a table; the report is DIR/report.md
and DIR/report.json.
"""

from __future__ import annotations


def _cmd_demo(args) -> None:
    from llm.demo import DemoConfig, run_demo
    from llm.demo_report import table

    if args.scale != 1:
        print(f"--scale {args.scale}: a smaller demo to check the plumbing; at this scale the models are not "
              "expected to learn (the figures mean nothing)")
    report = run_demo(args.out, DemoConfig.at_scale(args.scale))
    print()
    print(table(report))


def register_demo_command(add) -> None:
    """Add `demo` with llm/cli.py's `add(name, help, func)`."""
    p = add("demo", "The whole loop on generated data, well within 15 minutes on a CPU (about 1.5 minutes of CPU "
                    "time): tokenizer, pretraining, SFT, candidates, simulated labels (a rule), reward model, DPO "
                    "and an arena, at the defaults; ends on a report showing each stage's model doing better than "
                    "the one before.", _cmd_demo)
    p.add_argument("--out", required=True, help="directory for the models, data and report (must be new)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="shrink data and steps (0 < scale <= 1) to check the plumbing quickly; only 1 learns")
