"""Data quality: every rule that says whether stored data can be trusted, in one package.

- `checks`: the asset checks by name and which assets carry them (needed when definitions are built).
- `config`: their thresholds (config/checks.yaml) and blocking flags.
- `raw_profile`: the pure per-batch / per-partition profile of raw rows (the drain counts it live).
- `raw`: the Great Expectations suites of raw partitions (range, unit, completeness).
- `result_contracts`: what each result table promises its readers (columns, natural key, ranges).
- `written`: reads back what a partition wrote, so checks judge what readers will see.
- `validation`: Great Expectations over Polars frames, turned into check outcomes.

The Dagster wiring (which asset returns which check results) is `analytics_platform.defs.checks`.
Product quality of sweeps and lab results against spec limits is not data quality; it is a
result (`transforms/spec_quality.py`).
"""
