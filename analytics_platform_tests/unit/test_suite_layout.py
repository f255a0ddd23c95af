"""The test suite stands on analytics_platform_tests.support: a helper two test modules need lives there,
not in one of them. A test module that imports another runs that module's fixtures and module-level
data in a place nobody looks for them, and re-exports grow into twins; bench/ importing a test module
would break whenever a test is moved. Read from the source (ast), nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

from analytics_platform.settings import REPO_ROOT

TESTS = "analytics_platform_tests"
SUPPORT = f"{TESTS}.support"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def owning_test_module(name: str) -> str | None:
    """The test module or conftest of the suite that `name` is or lies in (`a.test_x.helper` -> `a.test_x`)."""
    parts = name.split(".")
    if parts[0] != TESTS:
        return None
    for i, part in enumerate(parts[1:], start=2):
        if part.startswith("test_") or part == "conftest":
            return ".".join(parts[:i])
    return None


def is_support(name: str) -> bool:
    return name == SUPPORT or name.startswith(SUPPORT + ".")


def imported(path: Path, name: str) -> set[str]:
    """Every module `path` imports, anywhere in it: `from a import b` counts as a and a.b (b may be a
    module); relative imports are resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join([*base, *([node.module] if node.module else [])])
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def violations(root: Path) -> list[str]:
    """What breaks the layout under `root` (a checkout: analytics_platform_tests/ and bench/)."""
    found: set[str] = set()
    for path in (root / TESTS).rglob("*.py"):
        name = module_name(path, root)
        for target in {owning_test_module(t) for t in imported(path, name)} - {None, name}:
            if owning_test_module(name):
                found.add(f"{name} imports the test module {target}: move what it needs to {SUPPORT}")
            elif is_support(name):
                found.add(f"{name} imports the test module {target}: support never imports tests")
    for path in (root / "bench").rglob("*.py"):
        name = module_name(path, root)
        wrong = {
            owning_test_module(t) or t for t in imported(path, name) if t.startswith(TESTS + ".") and not is_support(t)
        }
        for target in wrong:
            if not any(target.startswith(other + ".") for other in wrong):  # `from a import b`: a, not a.b too
                found.add(f"{name} imports {target}: bench/ uses {SUPPORT} only")
    return sorted(found)


def test_no_test_module_imports_another_and_support_and_bench_import_no_test() -> None:
    assert violations(REPO_ROOT) == []


def test_the_guard_sees_each_kind_of_violation(tmp_path: Path) -> None:
    """A guard that finds nothing proves nothing unless it is known to find something."""
    files = {
        f"{TESTS}/__init__.py": "",
        f"{TESTS}/conftest.py": "from analytics_platform_tests.support.stack import produce\n",
        f"{TESTS}/support/__init__.py": "",
        f"{TESTS}/support/stack.py": "def produce() -> None: ...\n",
        f"{TESTS}/support/bad.py": "from analytics_platform_tests.integration import test_a\n",
        f"{TESTS}/integration/__init__.py": "",
        f"{TESTS}/integration/test_a.py": "from analytics_platform_tests.conftest import produce\n",
        f"{TESTS}/integration/test_b.py": "from .test_a import produce\nfrom ..support.stack import produce\n",
        f"{TESTS}/integration/test_c.py": "def test_x():\n    import analytics_platform_tests.integration.test_b\n",
        "bench/good.py": "from analytics_platform_tests.support.stack import produce\n",
        "bench/bad.py": "from analytics_platform_tests.integration.test_a import produce\n",
    }
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert violations(tmp_path) == [
        f"{TESTS}.integration.test_a imports the test module {TESTS}.conftest: move what it needs to {SUPPORT}",
        f"{TESTS}.integration.test_b imports the test module {TESTS}.integration.test_a: move what it needs to "
        f"{SUPPORT}",
        f"{TESTS}.integration.test_c imports the test module {TESTS}.integration.test_b: move what it needs to "
        f"{SUPPORT}",
        f"{TESTS}.support.bad imports the test module {TESTS}.integration.test_a: support never imports tests",
        f"bench.bad imports {TESTS}.integration.test_a: bench/ uses {SUPPORT} only",
    ]
