"""A span per asset partition run, linked to the drain batches that wrote the partition's inputs.

The drain reports each batch span's context with the raw hours it wrote (`DrainReport.traces`), and
the drain sensors put it on the hour's raw materialisation (metadata `traceparents`). An asset
computed from those hours reads that metadata back from the instance when its partition runs: the
run's span links to the batches, and through their links to the readings' traces, so a trace
backend leads from an edge agent's reading to the run that aggregated it. Off (no OTEL_* exporter),
the wrapper only labels the log lines with the run and partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg
from opentelemetry.trace import Status, StatusCode

from analytics_platform import observability

log = logging.getLogger(__name__)

# the raw materialisation's metadata key holding the batch spans' `traceparent` values
TRACEPARENTS = "traceparents"
# a backfill run spans many partitions: link the newest ones' batches, not thousands
MAX_PARTITIONS_LINKED = 48


def partition_label(context: dg.AssetExecutionContext) -> str | None:
    """The partition a run computes: its key, `first...last` for a range run, None unpartitioned."""
    if context.has_partition_key:
        return context.partition_key
    if not context.has_partition_key_range:
        return None
    keys = context.partition_key_range
    return keys.start if keys.start == keys.end else f"{keys.start}...{keys.end}"


@contextmanager
def partition_span(context: dg.AssetExecutionContext, inputs: Sequence[dg.AssetKey] | None = None) -> Iterator[None]:
    """Run the block as the asset partition's span (when tracing is on), linked to the drain batches
    recorded on the materialisations of the same partitions of `inputs` (default: the asset's
    upstream assets; only the raw ones carry batches); log lines inside carry the run id and the
    partition."""
    partition = partition_label(context)
    with observability.log_context(run=context.run.run_id, partition=partition):
        if not observability.tracing_on():
            yield
            return
        asset = context.asset_key.to_user_string()
        attributes = {"dagster.run_id": context.run.run_id, "dagster.asset_key": asset}
        if partition is not None:
            attributes["dagster.partition"] = partition
        if inputs is None:
            inputs = sorted(context.assets_def.dependency_keys - {context.asset_key}, key=lambda k: k.path)
        links = observability.links(input_traces(context, inputs))
        with observability.tracer(__name__).start_as_current_span(
            f"asset {asset}",
            links=links,
            attributes=attributes,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            # the line that leads from the run's log to its trace (it carries trace_id, run, partition)
            log.info("%s %s: traced, linked to %d drain batch(es)", asset, partition or "", len(links))
            yield
            span.set_status(Status(StatusCode.OK))


def input_traces(context: dg.AssetExecutionContext, inputs: Sequence[dg.AssetKey]) -> list[str]:
    """The batch `traceparent`s on the newest materialisation of each input partition of the run."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return []
    keys = context.partition_keys[-MAX_PARTITIONS_LINKED:]
    found: list[str] = []
    for key in inputs:
        seen: set[str] = set()
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=keys), limit=len(keys) * 4
        ).records
        for record in records:  # newest first: each partition's latest materialisation counts
            materialization = record.asset_materialization
            if materialization is None or materialization.partition in seen:
                continue
            seen.add(materialization.partition)  # type: ignore[arg-type]
            value = materialization.metadata.get(TRACEPARENTS)
            data = getattr(value, "value", value)
            if isinstance(data, list):
                found.extend(str(t) for t in data)
    return found
