"""Connectors: each turns one kind of input into canonical payloads and hands them to the engine.

`build(config, engine)` picks the class for a source's `type`; the protocol libraries are imported
only by the sources that are configured.
"""

from __future__ import annotations

import importlib

from edge_agents.config import SourceConfig
from edge_agents.engine import Engine
from edge_agents.sources.base import Source

_CLASSES = {
    "mqtt": "edge_agents.sources.mqtt:MQTTSource",
    "sparkplug": "edge_agents.sources.sparkplug:SparkplugSource",
    "opcua": "edge_agents.sources.opcua:OPCUASource",
    "modbus": "edge_agents.sources.modbus:ModbusSource",
    "http": "edge_agents.sources.http:HTTPSource",
    "simulator": "edge_agents.sources.simulator:SimulatorSource",
}


def build(config: SourceConfig, engine: Engine) -> Source:
    module, _, name = _CLASSES[config.type].partition(":")
    return getattr(importlib.import_module(module), name)(config, engine)
