"""Render the Helm chart from Python (Helm's Go SDK through helm-python-sdk; no helm binary, no
cluster) so that the chart's tests and the Dagster-instance integration test look at exactly the
manifests `helm install` would create."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import helm_python
import yaml

from analytics_platform.settings import REPO_ROOT

CHART_DIR = REPO_ROOT / "helm" / "analytics-platform"
PRODUCTION_VALUES = CHART_DIR / "values-production.yaml"
RELEASE = "plant"
NAMESPACE = "analytics"
# object names are "<release>-analytics-platform-<component>"
PREFIX = f"{RELEASE}-analytics-platform"
# the Kubernetes version manifests are validated and the chart is linted against
KUBERNETES_VERSION = "1.37.0"


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge like `helm -f a.yaml -f b.yaml --set ...`: mappings merge key by key, anything
    else (lists included) is replaced, and None deletes the key (Helm's way to drop a default)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(values_files: Iterable[Path] = (), overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The user-supplied values of one install (the chart's own values.yaml is applied by Helm)."""
    values: dict[str, Any] = {}
    for path in values_files:
        values = merge_values(values, yaml.safe_load(Path(path).read_text()) or {})
    return merge_values(values, overrides or {})


def render_templates(values_files: Iterable[Path] = (), overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Template path → rendered text, for an install of release `plant` in namespace `analytics`.
    Raises helm_python.HelmValuesError (schema) or HelmRenderError (a template's `fail`)."""
    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.render(load_values(values_files, overrides), name=RELEASE, namespace=NAMESPACE, is_install=True)


def render(values_files: Iterable[Path] = (), overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every Kubernetes object the install would create (hooks included), parsed; NOTES.txt and
    empty documents left out."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_templates(values_files, overrides).items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def find(docs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of `kind` (and `name`, when given)."""
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The single object of `kind` named `name`; fails the test when there is not exactly one."""
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def dagster_instance_yaml(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The instance ConfigMap's dagster.yaml, parsed."""
    return yaml.safe_load(
        one(docs, "ConfigMap", f"{RELEASE}-analytics-platform-dagster-instance")["data"]["dagster.yaml"]
    )


def write_unreachable_kubeconfig(path: Path) -> Path:
    """A minimal valid kubeconfig whose API server is a closed port: the launcher can be built
    (it loads its client config at construction) but any real call would fail fast."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "none", "user": {"token": "not-a-credential"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none", "namespace": NAMESPACE}}],
                "current-context": "none",
            }
        )
    )
    return path
