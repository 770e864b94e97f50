"""The `workbench` console script: the llm subcommands plus `serve` and `worker`.

    workbench serve [--host 127.0.0.1] [--port 7860] [--data-dir DIR] [--no-worker]
    workbench worker [--queues default] [--gpus 0,1,2,3 | --processes N] [--concurrency N] [--pool prefork|solo|threads]
    workbench bench [--quick] [--only train,generate,...]
    workbench sweep [--presets tiny,small] [--kinds sft_full,...]   (the fine-tuning defaults' sweep)
    workbench users list | add NAME --role R | set-role NAME R | disable NAME | enable NAME
                   | reset-password NAME          (--password-stdin to type a password, else one is generated)
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
    from worker.runtime.main import run_worker

    # Options left out keep run_worker's defaults (the GPUs it sees, else one CPU slot; one job per slot).
    options = {"concurrency": args.concurrency, "pool": args.pool, "gpus": args.gpus, "processes": args.processes}
    queues = args.queues.split(",") if args.queues else list(get_settings().worker_queues)
    run_worker(queues=queues, loglevel=args.loglevel, **{k: v for k, v in options.items() if v is not None})


def _cmd_bench(args: argparse.Namespace) -> None:
    # The benchmarks live beside the product, not inside llm/ (which never imports bench/).
    from bench.run import main as bench_main

    bench_main((["--quick"] if args.quick else []) + (["--only", args.only] if args.only else [])
               + (["--budget-s", str(args.budget_s)] if args.budget_s is not None else []))


def _cmd_sweep(args: argparse.Namespace) -> None:
    from bench.sweep_defaults import main as sweep_main

    sweep_main(args.options)


# ----------------------------------------------------------------------------- users

USER_TABLE_COLUMNS = ("id", "name", "role", "status", "created")


def users_table(users: list[dict]) -> str:
    """The accounts as a plain aligned text table (what `workbench users list` prints)."""
    rows = [USER_TABLE_COLUMNS] + [
        (str(u["id"]), u["name"], u["role"], "disabled" if u["disabled"] else "enabled",
         u["created_at"].strftime("%Y-%m-%d %H:%M") if u.get("created_at") else "")
        for u in users]
    widths = [max(len(row[i]) for row in rows) for i in range(len(USER_TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _password_from_stdin(args: argparse.Namespace) -> str | None:
    if not args.password_stdin:
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise ValueError("--password-stdin: stdin gave no password (one line is read)")
    return line


def _print_generated(name: str, password: str | None) -> None:
    if password:
        print(f"password for {name}: {password}")
        print("  (shown once; it is stored only as a hash)")


def _cmd_users(args: argparse.Namespace) -> None:
    # The CLI runs on the server with the database's own credentials: it acts as an internal
    # caller (no role check), but the rules (validation, the last enabled admin) still apply.
    if args.data_dir:
        os.environ["WORKBENCH_DATA_DIR"] = os.path.abspath(args.data_dir)
    from db.migrate import upgrade
    from db.session import session_scope
    from web import services

    upgrade()  # a fresh install can get its accounts before the first `workbench serve`; no-op when current
    try:
        with session_scope() as session:
            if args.users_command == "list":
                print(users_table(services.list_users(None, session=session)))
            elif args.users_command == "add":
                user, generated = services.add_user(session, None, args.name, args.role, _password_from_stdin(args))
                print(f"added {user.name} ({args.role})")
                _print_generated(user.name, generated)
            elif args.users_command == "set-role":
                user = services.change_user(session, None, args.name, role=args.role)
                print(f"{user.name} is now {args.role}")
            elif args.users_command in ("disable", "enable"):
                user = services.change_user(session, None, args.name, disabled=args.users_command == "disable")
                print(f"{user.name} is {args.users_command}d" + (" (cannot log in; their labels stay)"
                                                               if user.disabled else ""))
            elif args.users_command == "reset-password":
                user, generated = services.reset_password(session, None, args.name, _password_from_stdin(args))
                print(f"new password set for {user.name}")
                _print_generated(user.name, generated)
    except services.ServiceError as error:
        raise ValueError(error.message) from None  # run_command prints "error: ..." and exits 2


def _add_users_commands(subparsers: argparse._SubParsersAction) -> None:
    roles = ["admin", "trainer", "labeler"]
    text = ("Manage accounts on this server's database (WORKBENCH_DATABASE_URL): roles are admin (everything), "
            "trainer (data, jobs, models, chat) and labeler (label and chat only).")
    users = subparsers.add_parser("users", help="add, list, change or disable user accounts", description=text)
    users.add_argument("--data-dir", help="data directory (default $WORKBENCH_DATA_DIR)")
    users.set_defaults(func=_cmd_users)
    commands = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")

    commands.add_parser("list", help="list every account", description="List every account, oldest first.")
    stdin_help = "read the password from the first line of stdin (default: generate one and print it once)"
    add = commands.add_parser("add", help="add an account", description="Add an account.")
    add.add_argument("name", help="1 to 64 letters, digits, '_', '.' or '-'")
    add.add_argument("--role", required=True, choices=roles)
    add.add_argument("--password-stdin", action="store_true", help=stdin_help)
    set_role = commands.add_parser("set-role", help="change an account's role",
                                   description="Change an account's role (the last enabled admin stays an admin).")
    set_role.add_argument("name")
    set_role.add_argument("role", choices=roles)
    for action, short, text in (
            ("disable", "disable an account", "Disable an account: it cannot log in any more; its labels and "
                                              "jobs stay. The last enabled admin cannot be disabled."),
            ("enable", "enable a disabled account", "Enable a disabled account again.")):
        command = commands.add_parser(action, help=short, description=text)
        command.add_argument("name")
    reset = commands.add_parser("reset-password", help="set or generate a new password",
                                description="Set a new password (--password-stdin) or generate one, printed once.")
    reset.add_argument("name")
    reset.add_argument("--password-stdin", action="store_true", help=stdin_help)


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
            "the database (WORKBENCH_DATABASE_URL). It gives jobs its GPUs (--gpus, default every GPU it sees) or, "
            "without a GPU, --processes N CPU slots; a job asking for `devices: N` runs when N are free, and "
            "one-device jobs run side by side, one per device.")
    worker = subparsers.add_parser("worker", help="run a job worker", description=text)
    worker.add_argument("--queues", help="comma-separated queues to consume (default $WORKBENCH_WORKER_QUEUES "
                                         "or 'default')")
    from worker.jobs.devices import add_device_arguments  # no torch, no Celery: --help stays fast

    add_device_arguments(worker)
    worker.add_argument("--concurrency", type=int, help="jobs at once (default: one per device slot)")
    worker.add_argument("--pool", choices=["prefork", "solo", "threads"],
                        help="Celery pool (default: solo for one job at a time, in the worker process; prefork, "
                             "one process per job, for more)")
    worker.add_argument("--loglevel", default="info", help="debug | info | warning | error")
    worker.add_argument("--data-dir", help="data directory (default $WORKBENCH_DATA_DIR)")
    worker.set_defaults(func=_cmd_worker)

    text = "Run the benchmarks against their peers and print a table + one JSON line (see bench/README.md)."
    bench = subparsers.add_parser("bench", help="run the benchmarks against their peers", description=text)
    bench.add_argument("--quick", action="store_true", help="fewer, smaller repeats (minutes)")
    bench.add_argument("--only", help="comma-separated subset, e.g. train,generate,prepare,sft")
    bench.add_argument("--budget-s", type=float, metavar="SECONDS",
                       help="each benchmark's time budget; timed rounds are cut to fit (default: 60 with --quick)")
    bench.set_defaults(func=_cmd_bench)
    text = ("Sweep the fine-tuning learning rates on synthetic tasks (bench/sweep_defaults.py; tens of minutes): "
            "the table docs/defaults.md is fitted on. Options: see `python -m bench.sweep_defaults --help`.")
    sweep = subparsers.add_parser("sweep", help="sweep the fine-tuning defaults' learning rates", description=text)
    sweep.add_argument("options", nargs=argparse.REMAINDER, help="passed to bench.sweep_defaults")
    sweep.set_defaults(func=_cmd_sweep)

    _add_users_commands(subparsers)
    register_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]) and run the chosen command; returns the exit status."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
