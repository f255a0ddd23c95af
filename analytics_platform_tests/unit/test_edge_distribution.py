"""The edge agent installs on a plant gateway without the platform: its distribution
(edge_agents/pyproject.toml) and the contracts' (analytics_platform/contracts/pyproject.toml)
must declare every module their code imports, and importing the agent must pull in nothing of the
platform but its contracts. A stray import of the platform (its settings, Dagster, the database
drivers) would work in the platform's virtualenv and fail only on a gateway, so these checks run
in both: in `make test` and in `make test-edge`, whose virtualenv has only the two distributions.

Stdlib and pytest only, like every test `make test-edge` runs.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import analytics_platform.contracts
import edge_agents

REPO = Path(__file__).resolve().parents[2]
# what the platform needs and a gateway must not install (nor import, where the platform is installed)
PLATFORM_ONLY = (
    "dagster",
    "great_expectations",
    "sklearn",
    "statsmodels",
    "scipy",
    "fastapi",
    "psycopg",
    "psycopg2",
    "psycopg_pool",
    "sqlalchemy",
    "pydantic_settings",
    "apprise",
)


def _package_dir(package: object) -> Path:
    """Where the imported package's files are: site-packages in `make test-edge`, the sources otherwise."""
    return Path(next(iter(package.__path__)))  # type: ignore[attr-defined]


def _imports(directory: Path) -> set[str]:
    """Every module imported anywhere in the package's files, at the top or inside a function."""
    found: set[str] = set()
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(pyproject: Path) -> set[str]:
    """The distribution names of [project.dependencies], without their version specifiers."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {_canonical(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", d).group()) for d in dependencies}  # type: ignore[union-attr]


def _third_party(modules: set[str]) -> set[str]:
    """The distributions that provide the non-stdlib, non-first-party modules."""
    providers = metadata.packages_distributions()
    first_party = set(sys.stdlib_module_names) | {"analytics_platform", "edge_agents"}
    imported = {m for m in modules if m.partition(".")[0] not in first_party}
    tops = {m.partition(".")[0] for m in imported}
    missing = sorted(t for t in tops if t not in providers)
    assert missing == [], f"imported but installed by no distribution: {missing}"
    return {_canonical(_provider(m, providers[m.partition(".")[0]])) for m in imported}


def _provider(module: str, distributions: list[str]) -> str:
    """The distribution of `module`; for a namespace package several distributions share (`opentelemetry`:
    the API, the SDK, the exporters), the one whose files hold the module's own path."""
    if len(distributions) == 1:
        return distributions[0]
    path = module.replace(".", "/")
    holders = [
        d for d in distributions if any(str(f).startswith((f"{path}/", f"{path}.py")) for f in metadata.files(d) or ())
    ]
    assert len(holders) == 1, f"{module}: provided by {holders or distributions}"
    return holders[0]


def test_the_contracts_import_nothing_of_the_platform_and_declare_what_they_import() -> None:
    modules = _imports(_package_dir(analytics_platform.contracts))
    platform = sorted(m for m in modules if m.startswith("analytics_platform") and not _is_contracts(m))
    assert platform == [], "the contracts distribution ships analytics_platform.contracts alone"
    assert _third_party(modules) == _declared(REPO / "analytics_platform" / "contracts" / "pyproject.toml")


def test_the_edge_agent_imports_only_the_contracts_of_the_platform_and_declares_what_it_imports() -> None:
    modules = _imports(_package_dir(edge_agents))
    platform = sorted(m for m in modules if m.startswith("analytics_platform") and not _is_contracts(m))
    assert platform == [], "edge_agents may import analytics_platform.contracts only (plant-contracts)"
    assert any(_is_contracts(m) for m in modules)
    assert _third_party(modules) | {"plant-contracts"} == _declared(REPO / "edge_agents" / "pyproject.toml")


def _is_contracts(module: str) -> bool:
    return module == "analytics_platform.contracts" or module.startswith("analytics_platform.contracts.")


# Imports every module of the agent, the sources and the simulator included, in a fresh interpreter
# (this process has the test runner's own modules loaded) and reports what got loaded.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import edge_agents
for info in pkgutil.walk_packages(edge_agents.__path__, "edge_agents."):
    importlib.import_module(info.name)
from edge_agents.canonical import Canonicalizer
from edge_agents.config import ContractConfigModel, KafkaConfig
Canonicalizer(KafkaConfig(), ContractConfigModel(unknown_metrics="reject"))  # reads the packaged catalogue
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_edge_agent_loads_nothing_of_the_platform_but_its_contracts(tmp_path: Path) -> None:
    """Run from an empty directory, so the installed distributions are what is imported wherever
    they are installed (in `make test-edge`: site-packages of a virtualenv without the platform)."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    modules = {m for m in loaded if m.startswith("edge_agents.")}
    assert {"edge_agents.simulator", "edge_agents.sources.opcua", "edge_agents.sources.http"} <= modules
    assert sorted(m for m in loaded if m.partition(".")[0] in PLATFORM_ONLY) == []
    platform = sorted(m for m in loaded if m.startswith("analytics_platform.") and not _is_contracts(m))
    assert platform == [], "importing the edge agent loaded parts of the platform"
