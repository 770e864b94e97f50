"""The `workbench` console script: the llm subcommands plus `serve` and `worker`.

    workbench serve [--host 127.0.0.1] [--port 7860] [--data-dir DIR] [--no-worker]
    workbench worker [--queues default] [--concurrency N] [--pool prefork|solo|threads]
    workbench prepare|pretrain|eval|generate|... (from llm.cli.register_commands)

Imports of the web stack (FastAPI, Gradio, Celery) happen inside the handlers, so `--help` and the
llm commands start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from llm.cli import register_commands, run_command


def _cmd_serve(args: argparse.Namespace) -> None:
    from web.serve import serve

    serve(host=args.host, port=args.port, data_dir=args.data_dir, no_worker=args.no_worker)


def _cmd_worker(args: argparse.Namespace) -> None:
    if args.data_dir:
        os.environ["WORKBENCH_DATA_DIR"] = os.path.abspath(args.data_dir)
    from db.settings import get_settings
    from worker.main import run_worker

    # Options left out keep run_worker's defaults (solo pool, one slot: what a GPU worker needs).
    options = {"concurrency": args.concurrency, "pool": args.pool}
    queues = args.queues.split(",") if args.queues else list(get_settings().worker_queues)
    run_worker(queues=queues, loglevel=args.loglevel, **{k: v for k, v in options.items() if v is not None})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="LLM Workbench: data, tokenizer, pretraining, fine-tuning, preferences and chat "
                    "for small language models. `workbench serve` starts the web app.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    text = ("Start the web app (UI at /, REST API at /api, docs at /docs) with an embedded Redis broker "
            "and one local worker; Ctrl-C stops everything it started.")
    serve = subparsers.add_parser("serve", help="start the web app, broker and a local worker", description=text)
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; "
                                                          "0.0.0.0 for every interface)")
    serve.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    serve.add_argument("--data-dir", help="data directory (default $WORKBENCH_DATA_DIR or ./workbench-data)")
    serve.add_argument("--no-worker", action="store_true",
                       help="start no local worker (workers run elsewhere, e.g. on GPU machines)")
    serve.set_defaults(func=_cmd_serve)

    text = ("Run a job worker that takes jobs from the broker (WORKBENCH_BROKER_URL) and writes results to "
            "the database (WORKBENCH_DATABASE_URL). Start one per GPU with --pool solo.")
    worker = subparsers.add_parser("worker", help="run a job worker", description=text)
    worker.add_argument("--queues", help="comma-separated queues to consume (default $WORKBENCH_WORKER_QUEUES "
                                         "or 'default')")
    worker.add_argument("--concurrency", type=int, help="jobs at once (default 1)")
    worker.add_argument("--pool", choices=["prefork", "solo", "threads"],
                        help="Celery pool (default solo: one job in the worker process, what a GPU needs; "
                             "prefork with --concurrency N for CPU-only jobs)")
    worker.add_argument("--loglevel", default="info", help="debug | info | warning | error")
    worker.add_argument("--data-dir", help="data directory (default $WORKBENCH_DATA_DIR)")
    worker.set_defaults(func=_cmd_worker)

    register_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen command; returns the exit status."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
