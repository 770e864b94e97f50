"""The dependency rules of DESIGN.md, checked on the source: who may import whom.

  - llm/ is the core: it never imports web, worker, db or bench (not even inside a function);
  - web/services and web/api never import web/ui (the UI is a client of the services, like the API);
  - worker/ and llm/ have no import cycle, counting imports inside functions and a package's imports of its
    own submodules (a registry that imports a kind which imports the registry back is a cycle too);
  - the job layer (worker/jobs, worker/kinds) never imports the runtime (worker/runtime), not even inside a
    function, and importing it loads no Celery and no torch;
  - every job kind's declaration is complete (a handler, a form, defaults its own checks accept);
  - tests mirror the packages (tests/llm, tests/jobs, tests/worker, tests/web, tests/e2e, ...) and no test file
    imports another: what tests share lives in tests/support or a conftest.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    """Every module named by an import statement anywhere in the file (top level or in a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_no_test_file_imports_another():
    test_modules = {path.stem for path in (REPO / "tests").rglob("test_*.py")}
    offenders = {}
    for path in (REPO / "tests").rglob("*.py"):
        imported = {name.split(".")[-1] for name in imports_of(path)} | {
            part for name in imports_of(path) for part in name.split(".")}
        shared = sorted(imported & test_modules)
        if shared:
            offenders[str(path.relative_to(REPO))] = shared
    assert not offenders, f"test files import test files (move what they share to tests/support): {offenders}"
    # bench/ may reuse the tests' helpers, never a test module either
    for path in (REPO / "bench").rglob("*.py"):
        assert not {part for name in imports_of(path) for part in name.split(".")} & test_modules, path


def test_tests_mirror_the_packages():
    loose = sorted(path.name for path in (REPO / "tests").glob("test_*.py")
                   if path.name not in ("test_architecture.py", "test_compose.py"))
    assert not loose, f"put these in the folder of the package they test (tests/llm, tests/web, ...): {loose}"
    for package in ("llm", "jobs", "worker", "web", "e2e"):
        assert any((REPO / "tests" / package).glob("test_*.py")), package
    # The folders are not packages (pytest imports a test file by its name): two files of one name collide.
    names = sorted(path.name for path in (REPO / "tests").rglob("test_*.py"))
    assert len(names) == len(set(names)), [name for name in set(names) if names.count(name) > 1]


def test_llm_imports_nothing_of_the_platform():
    offenders = {}
    for path in (REPO / "llm").rglob("*.py"):
        bad = sorted(name for name in imports_of(path) if name.split(".")[0] in ("web", "worker", "db", "bench"))
        if bad:
            offenders[module_name(path)] = bad
    assert offenders == {}


def test_services_and_api_import_nothing_of_the_ui():
    offenders = {}
    for package in ("web/services", "web/api"):
        for path in (REPO / package).rglob("*.py"):
            bad = sorted(name for name in imports_of(path) if name == "web.ui" or name.startswith("web.ui."))
            if bad:
                offenders[module_name(path)] = bad
    assert offenders == {}


def import_cycles(package: str) -> list[list[str]]:
    """The import cycles among `package`'s modules, each as the modules around it (first one repeated)."""
    modules = {module_name(path): path for path in (REPO / package).rglob("*.py")}
    graph = {name: {other for other in imports_of(path) if other in modules and other != name}
             for name, path in modules.items()}

    visiting, done, cycles = set(), set(), []

    def visit(node: str, stack: list[str]) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(stack[stack.index(node):])  # the stack ends with `node` again
            return
        visiting.add(node)
        for neighbour in sorted(graph[node]):
            visit(neighbour, stack + [neighbour])
        visiting.discard(node)
        done.add(node)

    for name in sorted(graph):
        visit(name, [name])
    return cycles


def test_worker_has_no_import_cycle():
    assert import_cycles("worker") == []


def test_llm_has_no_import_cycle():
    assert import_cycles("llm") == []


def test_the_job_layer_never_imports_the_runtime():
    offenders = {}
    for package in ("worker/jobs", "worker/kinds"):
        for path in (REPO / package).rglob("*.py"):
            bad = sorted(name for name in imports_of(path) if name.startswith("worker.runtime"))
            if bad:
                offenders[module_name(path)] = bad
    assert offenders == {}


@pytest.mark.subprocess
def test_importing_the_job_layer_loads_no_celery_and_no_torch():
    import subprocess
    import sys

    probe = ("import sys, worker.jobs.lifecycle, worker.jobs.fit, worker.jobs.preference_pairs, worker.kinds; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'celery', 'kombu', 'torch'}) + "
             "sorted(m for m in sys.modules if m.startswith('worker.runtime')))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_a_planted_cycle_is_found(tmp_path, monkeypatch):
    # The detector itself must see a cycle through a function-level import.
    (tmp_path / "a.py").write_text("def f():\n    from worker.b import g\n")
    assert "worker.b" in imports_of(tmp_path / "a.py")


def test_every_declared_kind_is_complete():
    from llm.params import Setting
    from worker.kinds import KINDS

    assert KINDS, "no job kind declared"
    for kind, spec in KINDS.items():
        assert callable(spec.handler), kind
        assert all(isinstance(setting, Setting) for setting in spec.params.values()), kind
        assert set(spec.form_fields) <= set(spec.params), (kind, set(spec.form_fields) - set(spec.params))
        for name, setting in spec.params.items():
            if setting.default is not None:  # a declared default must pass its own check
                assert setting.check(name, setting.default) == setting.default, (kind, name)
        if "dataset_id" in spec.params:
            assert spec.dataset_kinds, f"{kind} takes a dataset but declares no dataset kind"
        if "model_id" in spec.params:
            assert spec.model_kinds, f"{kind} takes a model but declares no model kind"
