"""The container image's dependency set: constraints.txt against pyproject.toml, the Dockerfile's
promises, and a fresh install of the project the way the Dockerfile does it (the dashboard's uPlot
files fetched into the sources, then a wheel, not editable, every version pinned by constraints.txt)
in a new virtualenv.

The fresh install needs PyPI and reuses pip's cache (about 45 s warm, bytecode not compiled); the uPlot step needs the
npm registry only when the repository has no current copy (it is copied along, as the Docker build
context carries it). No database or broker: loading the Dagster definitions and creating the API
app must not connect to anything.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSTRAINTS = REPO / "constraints.txt"
DOCKERFILE = REPO / "Dockerfile"
# what the Dockerfile's builder stage copies before `pip install -c constraints.txt .`
BUILD_SOURCES = ("pyproject.toml", "constraints.txt", "README.md", "analytics_platform", "edge_agents")
CONSOLE_SCRIPTS = ("dagster", "dagster-webserver", "dagster-daemon", "uvicorn", "analytics-platform", "edge-agent")
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
# the Dockerfile's step that fetches the dashboard's uPlot files (not in git) into the sources
VENDOR_STEP = "python -m analytics_platform.ui.vendor"
INSTALL_TIMEOUT_S = 1200  # a cold pip cache downloads a few hundred MB


def read_pins(path: Path = CONSTRAINTS) -> dict[str, list[Requirement]]:
    """Every requirement line of a pip requirements/constraints file, by canonical name."""
    pins: dict[str, list[Requirement]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins.setdefault(canonicalize_name(req.name), []).append(req)
    return pins


def pinned_versions() -> dict[str, str]:
    versions = {}
    for name, reqs in read_pins().items():
        (spec,) = reqs[0].specifier
        versions[name] = spec.version
    return versions


# ---- constraints.txt against pyproject.toml (no network) ----


def test_every_pin_is_exact_and_unique() -> None:
    for name, reqs in read_pins().items():
        assert len(reqs) == 1, f"{name} is pinned {len(reqs)} times in constraints.txt"
        specs = list(reqs[0].specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{reqs[0]}: not an exact == pin"
        assert not reqs[0].extras and reqs[0].url is None, f"{reqs[0]}: a constraint has no extras or URL"


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    versions = pinned_versions()
    for text in PYPROJECT["project"]["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in versions, f"{req.name} (pyproject) is not pinned: run `make constraints`"
        assert req.specifier.contains(versions[name], prereleases=True), (
            f"{name}=={versions[name]} in constraints.txt is outside pyproject's {req}: run `make constraints`"
        )


def test_no_dev_only_package_is_pinned() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev_only = {canonicalize_name(Requirement(text).name) for group in extras.values() for text in group} - {PROJECT}
    assert dev_only, "no optional dependencies found in pyproject.toml"
    assert dev_only.isdisjoint(read_pins()), (
        f"dev-only packages pinned in constraints.txt: {sorted(dev_only & set(read_pins()))}"
    )
    assert PROJECT not in read_pins(), "the project itself must not be pinned"


PYPI_SIMPLE = "https://pypi.org/simple/"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


def _pinned_wheel_links(name: str, version: str) -> str:
    """PyPI's project page of `name` (its simple JSON API, as pip reads it), cut down to the wheels of
    the pinned release, as a PEP 503 page: each link keeps its URL, hash, Requires-Python, yank and
    core-metadata attributes."""
    request = urllib.request.Request(PYPI_SIMPLE + name + "/", headers={"Accept": SIMPLE_JSON})
    with urllib.request.urlopen(request, timeout=120) as response:
        files = json.loads(response.read())["files"]
    links = []
    for file in files:
        try:
            _, wheel_version, _, _ = parse_wheel_filename(file["filename"])
        except InvalidWheelFilename:
            continue  # an sdist (or another kind of file): --only-binary never takes it
        if wheel_version != Version(version):
            continue
        attributes = [f'href="{html.escape(file["url"])}#sha256={file["hashes"]["sha256"]}"']
        if file.get("requires-python"):
            attributes.append(f'data-requires-python="{html.escape(file["requires-python"])}"')
        if file.get("yanked"):
            reason = file["yanked"] if isinstance(file["yanked"], str) else ""
            attributes.append(f'data-yanked="{html.escape(reason)}"')
        metadata = file.get("core-metadata") or file.get("dist-info-metadata")
        if isinstance(metadata, dict) and "sha256" in metadata:
            attributes.append(f'data-core-metadata="sha256={metadata["sha256"]}"')
        elif metadata:
            attributes.append('data-core-metadata="true"')
        links.append(f"<a {' '.join(attributes)}>{html.escape(file['filename'])}</a><br/>")
    return "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n"


@pytest.fixture(scope="module")
def pinned_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local copy of PyPI's simple index holding, for each pin, only the pinned release's wheels
    (fetched once for both architectures; needs PyPI). pip still reads every link and decides which
    wheel the image can install, as against PyPI itself; it no longer parses each project's whole
    history for the two checks (the 141 pins' pages list ~145,000 files), ~3 s of CPU of each check."""
    root = tmp_path_factory.mktemp("pinned-index")
    pins = pinned_versions()
    with ThreadPoolExecutor(8) as pool:
        pages = dict(zip(pins, pool.map(lambda pin: _pinned_wheel_links(*pin), pins.items()), strict=True))
    for name, page in pages.items():
        (root / name).mkdir()
        (root / name / "index.html").write_text(page)
    return root


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_pin_has_a_wheel_for_the_image(arch: str, pinned_index: Path, tmp_path: Path) -> None:
    """`docker buildx --platform linux/amd64,linux/arm64` compiles nothing: every pin has a CPython
    3.11 wheel for the architecture that glibc 2.36 (Debian bookworm) can load (needs PyPI: the
    pinned releases' files, `pinned_index`)."""
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(17, 37)] + [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        platforms += [f"manylinux2010_{arch}", f"manylinux1_{arch}"]
    requirements = tmp_path / "pins.txt"
    requirements.write_text("".join(f"{name}=={version}\n" for name, version in pinned_versions().items()))
    args = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps"]
    args += ["--index-url", pinned_index.as_uri()]
    args += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    args += [arg for platform in platforms for arg in ("--platform", platform)]
    args += ["--target", tmp_path / "target", "--report", tmp_path / "report.json", "-r", requirements]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    run(args, env=env, cwd=tmp_path, timeout=300)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["install"]) == len(pinned_versions())


# ---- the Dockerfile, as text ----


def test_dockerfile_keeps_its_promises() -> None:
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if not line.lstrip().startswith("#")]
    froms = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert len(froms) >= 2, "the Dockerfile must be multi-stage (a builder and a runtime stage)"
    final = lines[froms[-1] :]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the runtime stage must not run as root"
    assert any(re.search(r"\buseradd\b[^&;]*--uid 10001\b[^&;]*\sapp\b", line) for line in final), "user app, uid 10001"
    assert users[-1] in ("10001", "10001:10001", "app", "app:app"), f"USER {users[-1]}: not app (uid 10001)"
    installs = [line for line in lines if re.search(r"\bpip install\b", line)]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
    assert not any(re.search(r"\s(-e|--editable)\b", line) for line in installs), "no editable install"
    assert any(re.match(r"COPY\s+sql/?\s+/app/sql/?$", line) for line in final), "sql/ must be copied to /app/sql"
    assert any(re.match(r"ENV\b.*\bMIGRATIONS_DIR=/app/sql\b", line) for line in final), "MIGRATIONS_DIR=/app/sql"
    for source in BUILD_SOURCES:
        assert re.search(rf"^COPY\b.*\s{re.escape(source)}/?\s", text, re.M), f"the builder must copy {source}"
    builder = lines[froms[0] : froms[-1]]
    vendor = [i for i, line in enumerate(builder) if re.match(rf"RUN\s+{re.escape(VENDOR_STEP)}(\s|$)", line)]
    wheel = [i for i, line in enumerate(builder) if re.search(r"\bpip install\b.*\s\.(\s|$)", line)]
    assert vendor and wheel and vendor[0] < wheel[0], (
        f"the builder must run `{VENDOR_STEP}` before building the wheel, so the wheel carries the dashboard's uPlot"
    )


# ---- a fresh install in a new virtualenv (needs PyPI) ----


@dataclass(frozen=True)
class FreshVenv:
    root: Path
    src: Path  # the copied build sources, after the uPlot step
    env: dict[str, str]
    cwd: Path  # neither the repository nor the copied sources: imports must come from site-packages
    install_s: float

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        return run(args, env={**self.env, **(env or {})}, cwd=self.cwd, timeout=timeout)


def run(args: tuple[str, ...] | list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> str:
    try:
        done = subprocess.run(
            [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(map(str, args))}: no answer in {timeout} s\n{exc.stderr or ''}")
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {done.returncode}\n"
            f"--- stdout (tail) ---\n{done.stdout[-4000:]}\n--- stderr (tail) ---\n{done.stderr[-6000:]}"
        )
    return done.stdout


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> FreshVenv:
    """A new virtualenv with `pip install -c constraints.txt .` run on a copy of the build sources."""
    base = tmp_path_factory.mktemp("image")
    src = base / "src"
    for name in BUILD_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    root = base / "venv"
    env.update(
        PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    cwd = base / "work"
    cwd.mkdir()
    start = time.monotonic()
    run([sys.executable, "-m", "venv", root], env=env, cwd=cwd, timeout=120)
    python = root / "bin" / "python"
    # as the Dockerfile: the venv's python, the project not installed yet (the module is stdlib-only)
    run([python, *VENDOR_STEP.split()[1:]], env=env, cwd=src, timeout=120)
    # --no-compile, unlike the image's pip: byte-compiling every module of every package was 35 of the
    # install's 77 s here, and the checks below compile what they import (13 s); nothing asserts on bytecode
    install = [python, "-m", "pip", "install", "--no-compile", "-c", "constraints.txt", "."]
    run(install, env=env, cwd=src, timeout=INSTALL_TIMEOUT_S)
    # The checks run six interpreters in the venv (pip check and freeze, the two console scripts, the
    # imports): each compiled from source every module it imported, the shared ones (pip, polars, pandas,
    # psycopg, the platform) again each time. They may keep the bytecode in the venv's site-packages, as
    # the image's compiled install has it: the same command sequence took 8.9-9.4 s of CPU against
    # 12.3-13.5 s (three alternated runs). The vendor step and the build above still write none.
    checks_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return FreshVenv(root, src, checks_env, cwd, time.monotonic() - start)


# One interpreter for every in-venv check, so Dagster (several seconds to import) loads once.
CHECKS = r"""
import json, os, sys
from importlib import resources
from pathlib import Path

import analytics_platform, edge_agents
import dagster as dg
import analytics_platform.definitions as definitions
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from analytics_platform import migrations
from analytics_platform.api.app import create_app
from analytics_platform.results import plant, spec_limits
from analytics_platform.settings import get_settings
from analytics_platform.ui import vendor

dg.Definitions.validate_loadable(definitions.defs)
create_app()
settings = get_settings()
config = resources.files("analytics_platform") / "config"
contracts = resources.files("analytics_platform.contracts")
static = Path(vendor.__file__).parent / "static"
print(json.dumps({
    # analytics_platform is a namespace package (no __init__.py): every portion must be installed
    "paths": [p for m in (analytics_platform, edge_agents) for p in m.__path__],
    "prefix": sys.prefix,
    "defs": type(definitions.defs).__name__,
    "assets": len(list(definitions.defs.resolve_asset_graph().get_all_asset_keys())),
    "k8s": [K8sRunLauncher.__name__, type(k8s_job_executor).__name__],
    "config_files": sorted(p.name for p in config.iterdir()),
    "contracts_data": sorted(p.name for p in contracts.iterdir() if p.name.endswith(".yaml")),
    "metrics_catalog": str(settings.metrics_catalog),
    "runtime_files": {str(p): p.is_file() for p in (settings.metrics_catalog, settings.checks_config,
                      settings.alerts_config, plant.DEFAULT_FILE, spec_limits.DEFAULT_FILE)},
    "migrations": [m.version for m in migrations.discover()],
    "ui_static": sorted(str(p.relative_to(static)) for p in static.rglob("*") if p.is_file()),
    "ui_missing": vendor.missing_assets(),
}))
"""


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_fresh_install_matches_constraints(fresh_venv: FreshVenv, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[image] fresh venv: pip install -c constraints.txt . took {fresh_venv.install_s:.0f} s")
    fresh_venv.run("python", "-m", "pip", "check")
    installed = {}
    for line in fresh_venv.run("python", "-m", "pip", "freeze").splitlines():
        name, sep, version = line.partition("==")
        if sep:
            installed[canonicalize_name(name)] = version
        else:  # the project itself: "analytics-platform @ file:///..."
            assert canonicalize_name(line.split(" @ ", 1)[0]) == PROJECT, f"unexpected freeze line: {line}"
    pins = pinned_versions()
    assert {n: v for n, v in installed.items() if pins.get(n) != v} == {}, "installed versions that are not the pins"
    assert sorted(set(pins) - set(installed)) == [], "pins that pip did not install (stale: run `make constraints`)"
    site_packages = fresh_venv.run("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    direct_url = next(Path(site_packages.strip()).glob("analytics_platform-*.dist-info")) / "direct_url.json"
    assert not json.loads(direct_url.read_text()).get("dir_info", {}).get("editable"), "an editable install"


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)
def test_fresh_install_runs(fresh_venv: FreshVenv, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    for script in CONSOLE_SCRIPTS:
        assert os.access(fresh_venv.bin / script, os.X_OK), f"console script {script} is missing"
    assert "migrate" in fresh_venv.run("analytics-platform", "--help")
    assert "run" in fresh_venv.run("edge-agent", "--help")
    env = {
        "MIGRATIONS_DIR": str(REPO / "sql"),
        # nothing listens there: loading the definitions or creating the app must not connect
        "DATABASE_URL": "postgresql://nobody:nothing@127.0.0.1:9/nowhere",
        "API_DATABASE_URL": "postgresql://nobody:nothing@127.0.0.1:9/nowhere",
        "KAFKA_BROKERS": "127.0.0.1:9",
        "DAGSTER_HOME": str(fresh_venv.cwd),
    }
    found = json.loads(fresh_venv.run("python", "-c", CHECKS, env=env).strip().splitlines()[-1])
    prefix = Path(found["prefix"])
    assert prefix == fresh_venv.root, found["prefix"]
    assert found["paths"] and all(Path(p).is_relative_to(prefix / "lib") for p in found["paths"]), found["paths"]
    assert found["defs"] == "Definitions" and found["assets"] > 0, found
    # the default metrics catalogue is the contracts' package data (the edge distribution ships it too)
    assert found["contracts_data"] == ["metrics.yaml"], found["contracts_data"]
    assert Path(found["metrics_catalog"]).is_relative_to(prefix / "lib"), found["metrics_catalog"]
    repo_config = sorted(p.name for p in (REPO / "analytics_platform" / "config").iterdir() if p.is_file())
    assert found["config_files"] == repo_config, "config files missing from the wheel (package-data)"
    assert all(found["runtime_files"].values()), found["runtime_files"]
    assert sorted(found["migrations"]) == sorted(p.stem for p in (REPO / "sql").glob("*.sql")), found["migrations"]
    assert found["ui_missing"] == [], "the dashboard's uPlot files are missing from the wheel (vendor step)"
    static = fresh_venv.src / "analytics_platform" / "ui" / "static"
    expected = sorted(
        str(p.relative_to(static))
        for p in static.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(static).parts)
    )
    assert found["ui_static"] == expected, "dashboard files missing from the wheel (package-data in pyproject.toml)"
    with capsys.disabled():
        print(f"[image] checks in the fresh venv took {time.monotonic() - start:.0f} s")
