"""The package map of docs/architecture.md ("The map"), enforced: which package may import which.

The arrows only point down: contracts import nothing of the platform (the edge agent installs them
alone), transforms only contracts (pure functions), and nothing below the Dagster layer imports
`defs`, the API or the CLI. A new import across packages must be added here and to the doc, which
makes the change visible in review instead of slowly tangling the layers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from analytics_platform.settings import REPO_ROOT

# package (or top-level module) -> the platform packages it may import
ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    "settings": {"contracts"},
    "observability": set(),
    "transforms": {"contracts"},
    "data_quality": {"contracts", "transforms", "results"},
    "ingest": {"contracts", "data_quality", "observability", "settings"},
    "results": {"contracts", "ingest", "settings", "transforms"},
    "resources": {"settings"},
    "alerts": {"settings", "transforms"},
    "migrations": {"contracts", "ingest", "settings"},
    "ui": set(),
    "api": {"contracts", "defs", "ingest", "observability", "settings", "transforms", "ui"},
    "defs": {
        "alerts",
        "contracts",
        "data_quality",
        "ingest",
        "observability",
        "resources",
        "results",
        "settings",
        "transforms",
    },
    "definitions": {"defs", "observability", "settings"},
    "drain_definitions": {"defs", "observability", "settings"},
    "cli": {"alerts", "api", "contracts", "defs", "ingest", "migrations", "observability", "results", "settings"},
    "devstack": {"alerts", "api", "contracts", "ingest", "migrations", "observability", "results", "settings"},
    "edge_agents": {"contracts"},
}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            if node.module == "analytics_platform":  # `from analytics_platform import observability`
                found.update(f"analytics_platform.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def crossings(root: Path) -> dict[str, set[str]]:
    """Package -> the platform packages its modules import (edge_agents counts as one package)."""
    graph: dict[str, set[str]] = {}
    files = [*(root / "analytics_platform").rglob("*.py"), *(root / "edge_agents").rglob("*.py")]
    for path in files:
        parts = path.relative_to(root).parts
        if "build" in parts:
            continue
        me = "edge_agents" if parts[0] == "edge_agents" else parts[1].removesuffix(".py")
        for module in imported_modules(path):
            names = module.split(".")
            if names[0] == "analytics_platform" and len(names) > 1 and names[1] != me:
                graph.setdefault(me, set()).add(names[1])
    return graph


def test_every_package_imports_only_what_the_map_allows() -> None:
    graph = crossings(REPO_ROOT)
    unknown = sorted(set(graph) - set(ALLOWED))
    assert unknown == [], f"packages the map does not know: {unknown} (add them to ALLOWED and the doc)"
    upward = {p: sorted(deps - ALLOWED[p]) for p, deps in graph.items() if deps - ALLOWED[p]}
    assert upward == {}


def test_the_map_is_written_in_the_architecture_doc() -> None:
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text()
    section = doc[doc.index("## The map") :].split("\n## ", 1)[0]
    missing = [p for p in ALLOWED if not re.search(rf"\b{p}\b", section)]
    assert missing == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "analytics_platform" / "transforms").mkdir(parents=True)
    (tmp_path / "edge_agents").mkdir()
    (tmp_path / "analytics_platform" / "transforms" / "x.py").write_text("from analytics_platform.defs import y\n")
    assert crossings(tmp_path) == {"transforms": {"defs"}}
