"""`workbench clean` / `python -m llm clean`: raw web data (WARC, HTML, JSONL with `html` or `text`, plain text) →
a clean text corpus and its report (llm/clean.py). Its flags are `CleanConfig`'s declarations, the same the
`clean` job kind takes; running it again on the same --out resumes an interrupted run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from llm.clean_config import CleanConfig
from llm.params import add_arguments, settings_of, values_from_arguments


def _cmd_clean(args) -> None:
    from tqdm import tqdm

    from llm.clean import CleanStoppedRun, clean
    from llm.clean_report import report_markdown

    values = values_from_arguments(args, settings_of(CleanConfig))
    if args.blocked_domains_file:
        extra = Path(args.blocked_domains_file).read_text(encoding="utf-8")
        values["blocked_domains"] = ((values.get("blocked_domains") or "") + "\n" + extra).strip()
    config = CleanConfig(**values)
    bar = tqdm(total=1000, desc="clean", unit="‰", file=sys.stderr, leave=True)

    def progress(fraction: float, note: str) -> None:
        bar.n = int(fraction * 1000)
        bar.set_postfix_str(note, refresh=True)

    try:
        report = clean([Path(p) for p in args.data], Path(args.out), config, workers=args.workers,
                       on_progress=progress, say=lambda line: tqdm.write(line, file=sys.stderr))
    except CleanStoppedRun as stopped:
        print(f"{stopped}: run the same command again to resume", file=sys.stderr)
        raise SystemExit(3) from None
    finally:
        bar.close()
    print(report_markdown(report))
    print(f"\nclean corpus: {Path(args.out) / 'clean.jsonl'}  report: {Path(args.out) / 'report.json'}")


def register_clean_command(add) -> None:
    """Add `clean` with llm/cli.py's `add(name, help, func)`."""
    p = add("clean", "Clean raw web data the way FineWeb was made (datatrove): URL block list, HTML -> text, "
                     "language, Gopher/C4/FineWeb rules, MinHash near-duplicates, PII; writes clean.jsonl and "
                     "report.json. Run it again on the same --out to resume.", _cmd_clean)
    p.add_argument("--data", required=True, nargs="+",
                   help="files or folders: .warc[.gz], .html/.htm (a page each), .jsonl[.gz] (an 'html' or "
                        "'text' field, optional 'url'), .txt[.gz] (documents separated by a blank line)")
    p.add_argument("--out", required=True, help="output folder (clean.jsonl, report.json, work/)")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel tasks (default: this process's share of the cores, llm/threads.py)")
    p.add_argument("--blocked-domains-file", default=None, help="a file of domains to block, one a line")
    add_arguments(p, settings_of(CleanConfig))
