"""Loading the Dagster definitions imports no heavy library that only one asset or one path needs:
every run process, code server and the drain service loads them, and a final 60 s bucket waits for a
run process to start (issue 22). Measured on the 2-core machine: scikit-learn ~2.6 s, statsmodels
~1.7 s, dagster_k8s with the kubernetes client ~1.4 s, great_expectations ~2 s, apprise ~0.45 s
(the definitions load in ~1 s without them, 8.5 s with)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("sklearn", "statsmodels", "dagster_k8s", "kubernetes", "great_expectations", "apprise")


def test_the_definitions_load_without_the_heavy_libraries() -> None:
    code = (
        "import json, sys, warnings; warnings.simplefilter('ignore'); import analytics_platform.definitions; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
