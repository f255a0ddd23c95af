"""`edge-agent run --config agent.yaml` and `edge-agent check --config agent.yaml`."""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys

from edge_agents.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Edge connectors to Kafka with store-and-forward")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the agent"), ("check", "validate a config file and exit")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--config", "-c", required=True, help="the agent's YAML file")
    rejects = commands.add_parser("rejects", help="print the newest rejected payloads kept in the queue file")
    rejects.add_argument("--config", "-c", required=True)
    rejects.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        from edge_agents.canonical import Canonicalizer

        try:
            Canonicalizer(config.kafka, config.contract)
        except ValueError as exc:  # the metrics catalogue
            print(f"{args.config}: invalid configuration\ncontract: {exc}", file=sys.stderr)
            return 2
        kinds = ", ".join(f"{s.name} ({s.type})" for s in config.sources)
        print(f"{args.config}: OK — agent {config.agent_id}, sources: {kinds}; Kafka {config.kafka.brokers}")
        return 0
    if args.command == "rejects":
        from edge_agents.store import DiskQueue

        queue = DiskQueue(config.queue.path)
        for at, source, domain, reason, detail, payload in queue.rejects(args.limit):
            print(f"{at:.3f} {source} {domain or '-'} {reason}: {detail} {payload[:200]!r}")
        return 0
    from edge_agents import logs, telemetry
    from edge_agents.agent import Agent

    logs.setup(config.log_format)
    try:
        telemetry.setup(config.agent_id)  # only when OTEL_* variables configure an exporter
    except ValueError as exc:
        print(f"edge-agent: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        agent = Agent(config)
    except (OSError, ValueError, sqlite3.Error) as exc:
        print(f"edge-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(agent.run())
    except OSError as exc:
        print(f"edge-agent: cannot start: {exc}", file=sys.stderr)
        return 1
    return 1 if agent.engine.crashed else 0


if __name__ == "__main__":
    sys.exit(main())
