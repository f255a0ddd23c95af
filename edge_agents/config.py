"""The agent's configuration file (`agent.yaml`): one typed model, checked before anything starts.

Mapping is configuration, not code: which MQTT topics, OPC-UA nodes and Modbus registers become
which canonical readings is written here. `${VAR}` and `${VAR:-default}` in any string are replaced
from the environment so that secrets (SASL and MQTT passwords) stay out of the file.
`edge-agent check --config agent.yaml` runs exactly this loader and prints every error with its
path in the file (`sources[1].registers[0].type: ...`).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from analytics_platform.contracts.errors import ConfigError as DomainConfigError
from analytics_platform.contracts.registry import registry
from analytics_platform.contracts.sensor import SensorContract

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_CAPTURE = re.compile(r"\{([a-z_]+)\}")
IDENTITY_FIELDS = ("tenant_id", "factory_id", "machine_id")


def _env_list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


class ConfigError(ValueError):
    """The configuration cannot work; the message lists every problem with its place in the file."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Identity(_Model):
    """Who the readings belong to; a source's values are the defaults of its mappings."""

    tenant_id: str | None = None
    factory_id: str | None = None
    machine_id: str | None = None

    def merged(self, other: Identity | None) -> Identity:
        if other is None:
            return self
        return Identity(**{f: getattr(other, f) or getattr(self, f) for f in IDENTITY_FIELDS})


class KafkaTLS(_Model):
    ca_location: str | None = None
    certificate_location: str | None = None
    key_location: str | None = None
    key_password: str | None = None


class KafkaConfig(_Model):
    """The connection to the platform's Kafka. `extra` passes any librdkafka property through."""

    brokers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    tls: KafkaTLS = KafkaTLS()
    linger_ms: int = Field(1, ge=0, le=1000)  # 5 ms cost 5 ms of p50 latency (bench/edge.py)
    # librdkafka's message.timeout.ms; 0 = retry until delivered (every message is in the disk
    # queue anyway, so there is nothing to gain from failing it; a failure makes the agent resend)
    delivery_timeout_ms: int = Field(0, ge=0)
    max_in_flight: int = Field(20000, ge=1, description="messages handed to the producer, not yet acknowledged")
    # A producer can get stuck for good while the broker is up (a replaced broker that does not know
    # its producer id, topics gone): messages in flight, the broker connected, no acknowledgement for
    # this long → the agent purges, rebuilds the producer and resends from the oldest unacknowledged.
    stall_timeout_s: float = Field(30.0, gt=0, description="no acknowledgement this long → rebuild the producer")
    # the first wait between two rebuilds with no acknowledgement in between; it doubles on each
    # further one up to the maximum (an ack resets it), so a broker that stays broken is not hammered
    rebuild_backoff_s: float = Field(1.0, gt=0)
    rebuild_backoff_max_s: float = Field(60.0, gt=0)
    # librdkafka's statistics.interval.ms: the engine learns from them whether a broker is connected
    # (no stall is declared while none is) and sees the producer epoch bumped over and over (the
    # unknown-producer-id loop, which librdkafka reports nowhere else). 0 turns both off.
    stats_interval_ms: int = Field(1000, ge=0, le=60000)
    extra: dict[str, str | int | float | bool] = {}

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError("security_protocol SASL_* needs sasl_mechanism")
        if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs sasl_username and sasl_password")
        if self.rebuild_backoff_max_s < self.rebuild_backoff_s:
            raise ValueError(
                f"rebuild_backoff_max_s ({self.rebuild_backoff_max_s}) must not be below "
                f"rebuild_backoff_s ({self.rebuild_backoff_s})"
            )
        return self

    def producer_config(self) -> dict[str, Any]:
        """librdkafka properties: idempotent, ordered, bounded retries (the disk queue retries longer)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.brokers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": self.linger_ms,
            "compression.type": "lz4",
            "message.timeout.ms": self.delivery_timeout_ms,
            "reconnect.backoff.max.ms": 1000,  # back within a second of the broker's return
            "queue.buffering.max.messages": max(self.max_in_flight * 2, 100000),
            "security.protocol": self.security_protocol,
            "log_level": 0,  # connection failures reach the agent's log through error_cb, rate-limited
            "statistics.interval.ms": self.stats_interval_ms,  # broker state and producer epoch (engine)
        }
        if self.sasl_mechanism:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            config["sasl.username"] = self.sasl_username
        if self.sasl_password:
            config["sasl.password"] = self.sasl_password
        for name, value in self.tls.model_dump(exclude_none=True).items():
            config[f"ssl.{name.replace('_', '.')}"] = value
        config.update(self.extra)
        return config


class QueueConfig(_Model):
    """The durable store-and-forward queue (SQLite in WAL mode)."""

    path: Path = Path("edge-agent-queue.db")
    max_bytes: int = Field(500 * 1024 * 1024, ge=1, description="payload bytes before the full policy applies")
    when_full: Literal["drop_oldest", "stop_accepting"] = "drop_oldest"
    # NORMAL survives a killed agent; FULL also survives power loss, at one fsync per commit
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    keep_rejects: int = Field(10000, ge=0, description="newest rejected payloads kept for inspection")


class BackpressureConfig(_Model):
    high: int = Field(1000, ge=1, description="queue depth at which sources slow down")
    low: int = Field(500, ge=0, description="queue depth below which they speed up again")
    delay_s: float = Field(5.0, ge=0, description="how long a threshold must hold before switching")

    @model_validator(mode="after")
    def _ordered(self) -> BackpressureConfig:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class ContractConfigModel(_Model):
    """The contract checks run before sending: the same code the platform runs on ingest.

    Except, by default, the metric catalogue: which metrics a tenant's readings may carry is tenant
    data on the platform (editable at any time, with a per-tenant policy for unknown metrics), which
    an agent cannot see. `forward` sends readings of any metric and lets the platform judge them
    (rejects there are kept and re-admittable); `reject` also checks them here, against
    `metrics_catalog`, and keeps failures in the agent's own rejects table."""

    unknown_metrics: Literal["forward", "reject"] = "forward"
    metrics_catalog: Path | None = None  # for `reject`; default: the contracts' packaged metrics.yaml
    max_future_s: int = Field(600, ge=0)
    partitions_start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    # domains registered from outside the platform's package: importable modules defining `CONTRACT`,
    # as the platform's DOMAIN_MODULES (the default, read from the environment)
    domain_modules: list[str] = Field(default_factory=lambda: _env_list("DOMAIN_MODULES"))

    @field_validator("domain_modules", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        return [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value

    def domains(self) -> list[str]:
        """Every domain the agent can send: the registry's, with `domain_modules`."""
        try:
            return list(registry(self.domain_modules).contracts)
        except DomainConfigError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _catalogue_means_reject(cls, data: Any) -> Any:
        """A `metrics_catalog` given without `unknown_metrics` asks for the local check."""
        if isinstance(data, dict) and data.get("metrics_catalog") and "unknown_metrics" not in data:
            return {**data, "unknown_metrics": "reject"}
        return data


class MetricsConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535, description="Prometheus endpoint; 0 turns it off")


class MQTTTLS(_Model):
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class MQTTMapping(_Model):
    """MQTT topic pattern → canonical payloads.

    `topic` is an MQTT filter in which `{field}` captures one level (`plant/{factory_id}/{machine_id}/
    {metric}`); `+` and a final `#` match without capturing. `format`:
      canonical: the payload is a canonical JSON object; captures and `fields` fill what it lacks.
      value:     the payload is a bare number: one sensor reading of `metric`.
      json:      the payload is a JSON object; `values` maps metric → dotted path of its value,
                 `time_path` (optional) the dotted path of an ISO-8601 time or epoch seconds.
    """

    topic: str
    domain: str = SensorContract.domain  # any registered domain (checked by AgentConfig)
    format: Literal["canonical", "value", "json"] = "canonical"
    values: dict[str, str] = {}
    time_path: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    fields: dict[str, str] = {}

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str) -> str:
        levels = topic.split("/")
        for i, level in enumerate(levels):
            if level == "#" and i != len(levels) - 1:
                raise ValueError("'#' is only allowed as the last level")
            if ("{" in level or "}" in level) and not re.fullmatch(r"\{[a-z_]+\}", level):
                raise ValueError(f"level {level!r}: a capture must be a whole level, like {{machine_id}}")
            if ("+" in level or "#" in level) and level not in ("+", "#"):
                raise ValueError(f"level {level!r}: wildcards must be a whole level")
        return topic

    @model_validator(mode="after")
    def _complete(self) -> MQTTMapping:
        captures = set(_CAPTURE.findall(self.topic))
        if self.format == "json" and not self.values:
            raise ValueError("format json needs `values` (metric: dotted.path)")
        if self.format in ("value", "json") and self.domain != SensorContract.domain:
            raise ValueError(f"format {self.format} builds sensor readings; use domain sensor or format canonical")
        if self.format == "value":
            known = captures | set(self.fields)
            missing = [f for f in ("metric", "sensor_id") if f not in known]
            if missing:
                raise ValueError(f"format value needs {missing} from a topic capture or `fields`")
        return self


class _SourceBase(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    identity: Identity = Identity()


class MQTTSource(_SourceBase):
    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None  # default: edge-agent-<name>; fixed so the broker keeps the session
    username: str | None = None
    password: str | None = None
    tls: MQTTTLS | None = None
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(30, ge=5)
    # under backpressure: `pause` disconnects, keeping the persistent session so the broker holds
    # QoS 1 messages; `shed` stays connected and drops (counts) what arrives while slow
    when_slow: Literal["pause", "shed"] = "pause"
    mappings: list[MQTTMapping] = Field(min_length=1)


class SparkplugMetric(_Model):
    """What one Sparkplug metric name becomes: a canonical sensor reading. `unit` overrides the unit
    the birth certificate's properties give; `sensor_id` defaults to the Sparkplug device id (the edge
    node id for node metrics)."""

    metric: str
    sensor_id: str | None = None
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0


class SparkplugNode(_Model):
    """One Sparkplug edge node (`spBv1.0/<group_id>/.../<edge_node_id>`) and whose machines it speaks for.

    `identity` is the node's own (node metrics, its NBIRTH/NDEATH health); each of `devices` merges
    its identity over the node's. A device that is not listed inherits the node's identity."""

    group_id: str = Field(pattern=r"^[^/+#]+$")
    edge_node_id: str = Field(pattern=r"^[^/+#]+$")
    identity: Identity = Identity()
    devices: dict[str, Identity] = {}


class SparkplugSource(_SourceBase):
    """Sparkplug B over MQTT: births declare metrics, data messages carry them by alias.

    `nodes` say which tenant, factory and machine each edge node and device is (configuration, never
    the topic: Sparkplug's group and node ids are the plant's names, not the platform's identifiers);
    `metrics` map Sparkplug metric names to canonical ones. Edge nodes not listed are ignored (counted),
    unless `group_identity` names a default for a whole group."""

    type: Literal["sparkplug"]
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = None  # default: <agent_id>-<name>, fixed so the broker keeps the session
    username: str | None = None
    password: str | None = None
    tls: MQTTTLS | None = None
    keepalive_s: int = Field(30, ge=5)
    when_slow: Literal["pause", "shed"] = "pause"
    # the agent as the plant's Sparkplug primary host application: it publishes its retained STATE
    # (online on connect, offline as its will and when pausing) so that edge nodes that wait for their
    # primary host send births, and keep data as historical (their store-and-forward) while it is away
    primary_host_id: str | None = Field(None, pattern=r"^[^/+#]+$")
    # other host applications whose STATE becomes device.health online/offline of the given identity
    hosts: dict[str, Identity] = {}
    nodes: list[SparkplugNode] = []
    group_identity: dict[str, Identity] = {}
    metrics: dict[str, SparkplugMetric] = Field(min_length=1)
    # metrics a birth declares that `metrics` does not map: `ignore` (counted) or `reject` (each value
    # kept in the rejects table); Sparkplug's own control metrics (bdSeq, Node Control/*, ...) are
    # always ignored
    unmapped_metrics: Literal["ignore", "reject"] = "ignore"
    unit_property: str = "engUnit"  # the birth's metric property that holds the engineering unit
    # at most one rebirth request (NCMD Node Control/Rebirth) per edge node this often
    rebirth_interval_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _unique_nodes(self) -> SparkplugSource:
        keys = [(n.group_id, n.edge_node_id) for n in self.nodes]
        doubled = sorted({f"{g}/{e}" for g, e in keys if keys.count((g, e)) > 1})
        if doubled:
            raise ValueError(f"edge nodes listed twice: {doubled}")
        if not self.nodes and not self.group_identity:
            raise ValueError("list the edge nodes (`nodes`) or give a group's identity (`group_identity`)")
        # the machine defaults to the Sparkplug device (or node) id; tenant and factory cannot default
        places = [(f"{n.group_id}/{n.edge_node_id}", self.identity.merged(n.identity)) for n in self.nodes]
        places += [(f"group {g}", self.identity.merged(i)) for g, i in self.group_identity.items()]
        places += [(f"host {h}", self.identity.merged(i)) for h, i in self.hosts.items()]
        for where, identity in places:
            missing = [f for f in ("tenant_id", "factory_id") if getattr(identity, f) is None]
            if missing:
                raise ValueError(f"{where}: no {' or '.join(missing)} (give it in its identity or the source's)")
        return self


class OPCUANode(_Model):
    node_id: str
    metric: str
    sensor_id: str
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    identity: Identity | None = None

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, node_id: str) -> str:
        from asyncua import ua  # only when an OPC-UA source is configured

        try:
            ua.NodeId.from_string(node_id)
        except (ValueError, ua.UaError) as exc:
            raise ValueError(f"not an OPC-UA node id ({exc}); e.g. ns=2;i=7 or ns=2;s=Press.Temperature") from None
        return node_id


class OPCUASource(_SourceBase):
    type: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://")
    sampling_ms: int = Field(250, ge=10)
    slow_sampling_ms: int = Field(2000, ge=10)
    username: str | None = None
    password: str | None = None
    security: str | None = None  # asyncua security string, e.g. "Basic256Sha256,SignAndEncrypt,cert.pem,key.pem"
    nodes: list[OPCUANode] = Field(min_length=1)


class ModbusRegister(_Model):
    address: int = Field(ge=0, le=65535)
    kind: Literal["holding", "input"] = "holding"
    type: Literal["uint16", "int16", "uint32", "int32", "float32"] = "uint16"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    metric: str
    sensor_id: str
    unit: str | None = None
    identity: Identity | None = None


class ModbusSource(_SourceBase):
    type: Literal["modbus"]
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=247)
    poll_ms: int = Field(1000, ge=10)
    slow_factor: float = Field(8.0, ge=1)
    timeout_s: float = Field(3.0, gt=0)
    registers: list[ModbusRegister] = Field(min_length=1)


class HTTPSource(_SourceBase):
    type: Literal["http"]
    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    token: str | None = None  # when set, requests need `Authorization: Bearer <token>`

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, token: str | None) -> str | None:
        return token or None  # `${EDGE_HTTP_TOKEN:-}` left unset means no token, not an empty one

    max_batch: int = Field(10000, ge=1)


class SimulatorSource(_SourceBase):
    type: Literal["simulator"]
    rate: float = Field(50.0, gt=0, description="messages per second (divided by slow_factor when slow)")
    slow_factor: float = Field(8.0, ge=1)
    tenants: int = Field(1, ge=1)
    factories: int = Field(2, ge=1)
    machines: int = Field(3, ge=1)
    seed: int = 7


SourceConfig = Annotated[
    MQTTSource | SparkplugSource | OPCUASource | ModbusSource | HTTPSource | SimulatorSource,
    Field(discriminator="type"),
]


class AgentConfig(_Model):
    agent_id: str = Field("edge-01", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kafka: KafkaConfig = KafkaConfig()
    queue: QueueConfig = QueueConfig()
    backpressure: BackpressureConfig = BackpressureConfig()
    contract: ContractConfigModel = Field(default_factory=ContractConfigModel)
    metrics: MetricsConfig = MetricsConfig()
    log_format: Literal["json", "text"] = "json"
    shutdown_timeout_s: float = Field(10.0, ge=0)
    sources: list[SourceConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        names = [s.name for s in self.sources]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"source names must be unique; repeated: {doubled}")
        return self

    @model_validator(mode="after")
    def _known_domains(self) -> AgentConfig:
        known = self.contract.domains()
        for source in self.sources:
            for mapping in getattr(source, "mappings", []):
                if isinstance(mapping, MQTTMapping) and mapping.domain not in known:
                    raise ValueError(f"source {source.name!r}: unknown domain {mapping.domain!r}; known: {known}")
        return self


def expand_env(value: Any, where: str = "") -> Any:
    """Replace ${VAR} / ${VAR:-default} in every string; an unset variable without default is an error."""
    if isinstance(value, str):

        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where or 'config'}: environment variable {name} is not set")

        return _ENV_REF.sub(one, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _place(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def parse_config(data: Any) -> AgentConfig:
    """Validate an already-loaded document; ConfigError lists every problem with its place."""
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping (agent_id, kafka, queue, sources, ...)")
    data = expand_env(data)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            # drop the discriminator tag pydantic inserts into union paths (sources.0.mqtt.host)
            loc = tuple(
                p for p in error["loc"] if p not in ("mqtt", "sparkplug", "opcua", "modbus", "http", "simulator")
            )
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "value_error" and not loc:
                loc = ("sources",) if "source names" in message else loc
            lines.append(f"{_place(loc)}: {message}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate `agent.yaml`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data)
