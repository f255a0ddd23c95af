"""Contract parse benchmark: one drain micro-batch (`--messages` sensor readings, each with a small
`payload`, as the simulator sends them) through `SensorContract.parse`, the drain's CPU per batch, with
the check that a payload's numbers fit PostgreSQL's numeric (contracts/base.py `_beyond_numeric`) and,
as the same-run baseline, with that check answering "none" without looking. Median of `--repeats` parses
after two warm-ups, in `--rounds` alternating rounds (the VM's speed moves between minutes). Nothing is
asserted; it prints figures for docs/benchmarks.md.

Usage: python bench/contract_parse.py [--messages 20000] [--repeats 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import analytics_platform.contracts.base as base  # noqa: E402
from analytics_platform.contracts.registry import bind_domains, contract_config  # noqa: E402
from analytics_platform.settings import PlatformSettings  # noqa: E402


def batch(n: int) -> tuple[pl.DataFrame, list[bytes]]:
    values = [
        json.dumps(
            {
                "time": f"2025-08-20T03:{(i // 60) % 60:02d}:{i % 60:02d}Z",
                "tenant_id": "t1",
                "factory_id": "f1",
                "machine_id": f"mc-{i % 100:02d}",
                "sensor_id": "s-001",
                "metric": "temp",
                "value": 20.0 + i % 7,
                "event_id": f"e-{i}",
                "payload": {"source": "edge-01", "raw": 2050 + i, "quality": "good", "scale": 1.5e-3},
            }
        ).encode()
        for i in range(n)
    ]
    frame = pl.DataFrame(
        {
            "topic": ["sensors.device.readings"] * n,
            "kafka_partition": [0] * n,
            "kafka_offset": list(range(n)),
            "kafka_key": [b"t1-f1-mc-01"] * n,
            "kafka_ts": [datetime(2025, 8, 20, 4, tzinfo=UTC)] * n,
            "value": values,
        },
        schema=base.MESSAGE_SCHEMA,
    )
    return frame, values


def unchecked(column: pl.Series) -> pl.Series:
    return pl.repeat(False, len(column), dtype=pl.Boolean, eager=True).alias(column.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = PlatformSettings(database_url="postgresql://bench@127.0.0.1:1/none")
    contract = next(b for b in bind_domains(settings) if b.domain == "sensor").contract
    config = contract_config(settings)
    frame, values = batch(args.messages)
    checked = base._beyond_numeric

    def median_ms() -> float:
        times = []
        for _ in range(args.repeats + 2):
            started = time.perf_counter()
            contract.parse(frame, config, values)
            times.append(time.perf_counter() - started)
        return statistics.median(times[2:]) * 1000

    for round_ in range(1, args.rounds + 1):
        base._beyond_numeric = unchecked
        baseline = median_ms()
        base._beyond_numeric = checked
        measured = median_ms()
        print(
            f"round {round_}: parse of {args.messages} messages: baseline (no numeric check) {baseline:.1f} ms, "
            f"with the check {measured:.1f} ms ({(measured - baseline) / baseline * 100:+.1f} %)"
        )


if __name__ == "__main__":
    main()
