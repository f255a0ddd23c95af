"""The docs match the code: the README's folder table names every package, links lead to files that
exist, and nothing cites a document outside the repository (a newcomer cannot open it)."""

from __future__ import annotations

import re
from pathlib import Path

from analytics_platform.settings import REPO_ROOT

# what a reader of a clone cannot open: the founding team's notes lived beside the repository
OUTSIDE = re.compile(r"\b(DESIGN|BRIEF)\.md\b|\.\./shared\b")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sql", ".toml", ".js", ".html", ".css", ".txt", ".tpl"}
SKIP_DIRS = {".git", ".venv", ".venv-edge", ".run", "build", "node_modules", "__pycache__", "vendor"}
# this module names the patterns it forbids
SELF = Path(__file__).resolve()


def text_files(root: Path) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in path.relative_to(root).parts):
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name in {"Makefile", "Dockerfile", "run"}):
            found.append(path)
    return found


def test_the_readme_folder_table_names_every_package() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))
    packages = sorted(
        p.name
        for p in (REPO_ROOT / "analytics_platform").iterdir()
        if p.is_dir() and any(p.glob("*.py")) and p.name not in SKIP_DIRS
    )
    assert packages, "no packages found: the test looks in the wrong place"
    missing = [name for name in packages if f"`analytics_platform/{name}/`" not in table]
    assert missing == [], f"README.md's folder table does not name analytics_platform/{missing}"
    tops = ["edge_agents/", "sql/", "helm/", "bench/", "docs/", "analytics_platform_tests/"]
    assert [t for t in tops if f"`{t}" not in table] == []


def test_nothing_cites_a_document_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for path in text_files(REPO_ROOT)
        if path.resolve() != SELF
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_relative_links_in_the_docs_lead_to_files_that_exist() -> None:
    link = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")
    broken = []
    for doc in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]:
        for target, _ in link.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(REPO_ROOT)} -> {target}")
    assert broken == []


def test_the_guards_find_what_they_guard_against(tmp_path: Path) -> None:
    """The patterns really match a citation and a broken link (a guard that cannot fail is no guard)."""
    assert OUTSIDE.search("see DESIGN.md, 'Ingest'") and OUTSIDE.search("../shared/BRIEF.md")
    assert not OUTSIDE.search("docs/architecture.md")
    (tmp_path / "a.md").write_text("x")
    assert [p.name for p in text_files(tmp_path)] == ["a.md"]
