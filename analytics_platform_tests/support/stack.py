"""The test stack's pieces the fixtures and the tests share: a migrated database per test or per module
(`new_database`, `DatabaseHandle`, copied from the session's `migrated_template`), settings with topics of
their own (`new_settings`), a domain's drain and topic as the sensor builds them, and a producer that waits
for the broker's acknowledgement; and where a session keeps its throwaway files (`scratch_root`, in memory where
there is room, and `SessionTempDir`, the session's TMPDIR).

The fixtures in conftest.py make these per test (`database`, `settings`) or per module (`module_*`); a
test that needs a second database, or the drain of another domain, calls them directly."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql

from analytics_platform.contracts.registry import bind_domains, contract_config
from analytics_platform.devstack.processes import StackError
from analytics_platform.devstack.stack import with_credentials
from analytics_platform.ingest.drain import Drain
from analytics_platform.migrations import apply_migrations
from analytics_platform.settings import PlatformSettings

# A container's /dev/shm is often 64 MB. The session's cluster peaked at ~70 MB (185 API tests) and its WAL may grow
# until a checkpoint recycles it; test_image_constraints' fresh virtualenv of the platform takes a GB or more (this
# project's .venv: 1.9 GB). With less free, both stay on disk.
SHM_MIN_FREE = 4 << 30
SHM_ROOT = Path("/dev/shm")


def scratch_root(on_disk: Path) -> Path:
    """Where the test session keeps files nobody needs after it: in memory (/dev/shm) where the machine has
    room, else `on_disk`. Each test's database is a copy of the template, some 400 files created and, at its
    end, deleted; on ext4 the kernel's search for a free inode that was not recently deleted
    (`recently_deleted`, seen with perf) took most of the 0.3-0.8 s a copy cost, on tmpfs a copy takes
    20-40 ms. SQLite's per-transaction journal files (the Dagster instances) and a pip install's thousands
    of files pay the same toll on disk. The session's cluster is `durable=False` and thrown away with it, so
    memory loses nothing a disk would have kept."""
    try:
        stat = os.statvfs(SHM_ROOT)
    except OSError:
        return on_disk
    if stat.f_bavail * stat.f_frsize >= SHM_MIN_FREE and os.access(SHM_ROOT, os.W_OK | os.X_OK):
        return SHM_ROOT / "analytics-platform-tests"
    return on_disk


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process. A zombie is not: a session killed with SIGKILL is reaped by
    whoever adopted it, and in a container that may be nobody, so its /proc entry can outlive it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def stop_orphan_postmaster(data_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the PostgreSQL server still running on `data_dir` after the session that started it died (a
    SIGKILLed pytest runs no teardown, and the postmaster, started in its own session, outlives it and keeps
    its shared memory and the cluster's files in /dev/shm). The pid in postmaster.pid is signalled only while
    that process's command line names this data directory, so a pid the system has since handed to another
    process is left alone. SIGQUIT is PostgreSQL's immediate shutdown: nothing in a thrown-away cluster needs
    a checkpoint. Returns whether a server was stopped; waits for it to be gone, up to `timeout_s`."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    if str(data_dir).encode() not in cmdline or not process_alive(pid):
        return False
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the orphaned PostgreSQL server {pid} on {data_dir} did not stop in {timeout_s} s")
        time.sleep(0.05)
    return True


def sweep_dead_sessions(root: Path, kind: str) -> list[Path]:
    """Remove `root`'s `<kind>-<pid>` directories whose owning process is gone (a session killed before its
    teardown), stopping the PostgreSQL server a `test-pg` one may still run first; a live session's
    directories are never touched. In /dev/shm they would otherwise hold memory until a reboot (a cluster
    is ~100 MB, a session's temporary files up to a GB). Returns what was removed."""
    removed = []
    for path in sorted(root.glob(f"{kind}-*")):
        pid = path.name.removeprefix(f"{kind}-")
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        stop_orphan_postmaster(path / "data")
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def sweep_dead_brokers(logs: Path) -> list[int]:
    """Kill the in-memory brokers of sessions that are gone, and return their pids. A session's broker writes
    to `logs/test-kafka-<session pid>.log` and runs in its own session, so a SIGKILLed pytest leaves it running
    with every topic in memory; the log its standard output still points at names the session that started it.
    A broker whose session still runs is never touched, and neither is any other process."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            log = Path(os.readlink(proc / "fd" / "1"))
        except OSError:
            continue
        owner = log.name.removeprefix("test-kafka-").removesuffix(".log")
        if log.parent != logs or not log.name.startswith("test-kafka-") or not owner.isdigit():
            continue
        if process_alive(int(owner)) or not process_alive(int(proc.name)):
            continue
        try:
            os.kill(int(proc.name), signal.SIGKILL)  # in memory: nothing to keep
        except ProcessLookupError:
            continue
        killed.append(int(proc.name))
    return killed


class SessionTempDir:
    """TMPDIR for this test session and every process it starts, under `scratch_root`, removed by `close`.

    The first pytest process of a run (xdist's controller, or the only one) makes `tmp-<pid>` and exports
    it before the workers start, so they and the subprocesses of every test inherit it; a process that
    finds it already exported keeps it and removes nothing. Directories of sessions whose process is gone
    (killed before their cleanup) are removed on the way, or /dev/shm would keep them until a reboot."""

    MARK = "ANALYTICS_TEST_TMPDIR"

    def __init__(self) -> None:
        self.owned: Path | None = None
        if os.environ.get(self.MARK):
            return
        root = scratch_root(Path(tempfile.gettempdir()))
        if root.parent != SHM_ROOT:
            return
        root.mkdir(parents=True, exist_ok=True)
        sweep_dead_sessions(root, "tmp")
        self.owned = root / f"tmp-{os.getpid()}"
        self.owned.mkdir(mode=0o777, exist_ok=True)
        self.owned.chmod(0o1777)  # PostgreSQL and the demo's services may run as another user
        os.environ["TMPDIR"] = os.environ[self.MARK] = str(self.owned)
        tempfile.tempdir = None  # gettempdir() caches its first answer

    def close(self) -> None:
        """Everything but multiprocessing's own `pymp-*` directories, which its exit handler removes
        after this runs (it printed a FileNotFoundError traceback at the end of every run that had
        started a forkserver); what is left, the empty directory, goes with the next session's sweep."""
        if self.owned is None:
            return
        for child in self.owned.iterdir():
            if child.name.startswith("pymp-") and child.is_dir():
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.owned.rmdir()


@dataclass(frozen=True)
class DatabaseHandle:
    name: str
    admin_url: str  # owner of the schema (runs migrations)
    pipeline_url: str  # analytics_rw login
    api_url: str  # analytics_ro login
    writer_url: str  # analytics_resolver login (the API's one write)

    def connect(self, url: str | None = None) -> psycopg.Connection:
        return psycopg.connect(url or self.admin_url, autocommit=True)

    def query(self, statement: str, params: tuple | dict | None = None) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(statement, params).fetchall()

    def scalar(self, statement: str, params: tuple | dict | None = None):
        return self.query(statement, params)[0][0]


def role_password(pg_admin_url: str) -> str:
    """The test logins' password: derived from the admin URL, so test sessions sharing one server
    (TEST_DATABASE_URL) agree on it instead of resetting each other's, and nobody without the
    admin URL can work it out."""
    return "test-" + hashlib.sha256(f"test-roles:{pg_admin_url}".encode()).hexdigest()[:24]


def unschedule_policies(conn: psycopg.Connection) -> None:
    """On TimescaleDB, stop the retention and compression jobs of this database from running by
    themselves. The tests' data sits at fixed dates (2025-08-20 ...), older than the raw tables'
    90-day retention, so the job scheduler would drop or compress their chunks at a moment of its
    choosing, mid-test (seen: a test's rows gone, "tuple concurrently deleted" under a GRANT).
    The policies stay defined (tests check them); a test that wants a chunk compressed compresses
    it itself. A no-op on plain PostgreSQL."""
    if not conn.execute("SELECT analytics.timescale_enabled()").fetchone()[0]:
        return
    conn.execute(
        "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs "
        "WHERE proc_name IN ('policy_retention', 'policy_compression')"
    )


@contextmanager
def migrated_template(pg_admin_url: str) -> Iterator[str]:
    """A database migrated from scratch once, then closed as a template that `new_database` copies:
    copying a migrated database (CREATE DATABASE ... TEMPLATE) costs a fraction of migrating one, and
    every copy has the same schema, grants and seeded catalogue because they live inside the database.
    What does not live inside it is cluster-wide and needs no copy: the roles (made by the first
    migration and `login_roles`). PostgreSQL copies a template only while nobody is connected to it,
    so it stops accepting connections and the last ones (TimescaleDB's job scheduler starts one per
    database with the extension) are ended. Dropped on exit."""
    name = f"test_template_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        apply_migrations(_with_database(pg_admin_url, name), timescale=os.environ.get("ANALYTICS_TIMESCALE", "auto"))
        with psycopg.connect(_with_database(pg_admin_url, name), autocommit=True) as conn:
            unschedule_policies(conn)
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        yield name
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def new_database(
    pg_admin_url: str, login_roles: dict[str, str], template: str | None = None
) -> Iterator[DatabaseHandle]:
    """A new, fully migrated database, dropped on exit: the one way the test fixtures (per test or
    per module) make a database, so all see the same schema and roles. With `template` (the
    session's `migrated_template`) it is a copy of that; without, it is migrated from scratch, which
    is what the tests of the migrations themselves need."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(create)
    try:
        admin = _with_database(pg_admin_url, name)
        if template is None:
            apply_migrations(admin, timescale=os.environ.get("ANALYTICS_TIMESCALE", "auto"))
        password = role_password(pg_admin_url)
        yield DatabaseHandle(
            name=name,
            admin_url=admin,
            pipeline_url=with_credentials(admin, login_roles["pipeline"], password),
            api_url=with_credentials(admin, login_roles["api"], password),
            writer_url=with_credentials(admin, login_roles["writer"], password),
        )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def older_database(pg_admin_url: str, files: Iterable[Path], scratch: Path) -> Iterator[str]:
    """A new database migrated with only `files` (what an older release's sql/ held), dropped on exit; its
    admin URL. The upgrade tests put rows an older schema held into it, apply the newer files
    (`apply_migrations(url)`) and check what they did to the rows."""
    old = scratch / "older-sql"
    old.mkdir()
    for path in files:
        shutil.copy(path, old / path.name)
    name = f"test_{uuid.uuid4().hex[:12]}_older"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        url = _with_database(pg_admin_url, name)
        apply_migrations(url, old, timescale=os.environ.get("ANALYTICS_TIMESCALE", "auto"))
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def dagster_instance_template(directory: Path) -> Path:
    """A Dagster instance's storage (its SQLite run, event and schedule databases) created once in
    `directory` for `dagster_instance` to copy: creating the schema costs ~0.35 s of CPU per
    instance, copying the files a tenth of that, and each copy is as new and as private."""
    with dg.instance_for_test(temp_dir=str(directory)):
        pass
    return directory


@contextmanager
def dagster_instance(template: Path) -> Iterator[dg.DagsterInstance]:
    """A throwaway Dagster instance (runs, events, cursors) in a copy of `template`, deleted on exit."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        home = Path(tmp) / "dagster"
        shutil.copytree(template, home)
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            yield instance


def _with_database(url: str, database: str) -> str:
    head, _, tail = url.rpartition("/")
    query = ""
    if "?" in tail:
        query = "?" + tail.split("?", 1)[1]
    return f"{head}/{database}{query}"


def new_settings(database: DatabaseHandle, kafka_brokers: str) -> PlatformSettings:
    """Settings pointing at `database` and at topics of their own (a unique prefix), the topics
    created: the one way the test fixtures (per test or per module) make settings."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    result = PlatformSettings(
        database_url=database.pipeline_url,
        api_database_url=database.api_url,
        api_write_database_url=database.writer_url,
        kafka_brokers=kafka_brokers,
        kafka_topic_prefix=prefix,
        drain_consumer="test-drain",
        # a drain's consume call waits this long for a batch that is not full, and a test's batches never
        # are; the pass still ends only once caught up with the watermarks (as test_ingest_model's 0.2 s)
        drain_poll_timeout_s=0.2,
        # a drain sensor tick evaluated by a test ends once caught up; following is tested on its own
        drain_follow=False,
    )
    create_new_topics(result.kafka_client_config(), [t for b in bind_domains(result) for t in b.topics], partitions=3)
    return result


def delete_settings_topics(settings: PlatformSettings) -> None:
    """Delete the topics `new_settings` made for these settings, once their test (or module) is done.
    Every drain pass lists the broker's topics (`Drain._owned_partitions`), as do the API's health check
    and `ensure_topics`, and the session's broker would otherwise hold every topic of every test before:
    thousands by the end of a run, each listing costing tens of milliseconds of CPU more than at the start.
    Only with the session's kept admin client (`kept_producer`): a test's own broker goes with the test."""
    admin = _kept_admins.get(settings.kafka_brokers)
    if admin is None:
        return
    topics = [t for b in bind_domains(settings) for t in b.topics]
    for topic, future in admin.delete_topics(topics, operation_timeout=30).items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            raise StackError(f"could not delete topic {topic}: {exc}") from None


def create_new_topics(config: dict, topics: list[str], partitions: int) -> None:
    """Create topics that cannot exist yet (their prefix is new), with the session's kept admin client
    when there is one (`kept_producer`). Not `ensure_topics`: it lists every topic of the broker first,
    and the session's broker gathers thousands (five per test): at 2,500 topics that list cost 190 ms of
    wall and 33 ms of the test's CPU per call (plus the broker's), against 24 ms and 0.6 ms to create
    the five with a kept client."""
    brokers = config["bootstrap.servers"]
    admin = _kept_admins.get(brokers) or AdminClient(config)
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics])
    for topic, future in futures.items():
        try:
            future.result(timeout=30)
        except KafkaException as exc:
            raise StackError(f"could not create topic {topic}: {exc}") from None


def domain_drain(settings: PlatformSettings, domain: str = "sensor", cls: type[Drain] = Drain, **kwargs) -> Drain:
    """The drain of one domain as the sensor builds it, for these settings' database, broker and
    topics (`cls`: a subclass standing for another kind of broker)."""
    binding = next(b for b in bind_domains(settings) if b.domain == domain)
    return cls(
        binding,
        contract_config(settings),
        database_url=settings.database_url.get_secret_value(),
        kafka_config=settings.kafka_client_config(),
        consumer_name=settings.drain_consumer,
        poll_timeout_s=settings.drain_poll_timeout_s,
        **kwargs,
    )


def domain_topic(settings: PlatformSettings, domain: str = "sensor") -> str:
    return next(b for b in bind_domains(settings) if b.domain == domain).topics[0]


PRODUCER_CONFIG = {"enable.idempotence": True, "linger.ms": 5}
_kept_producers: dict[str, Producer] = {}
_kept_admins: dict[str, AdminClient] = {}


@contextmanager
def kept_producer(brokers: str) -> Iterator[None]:
    """While inside, `produce` to `brokers` reuses one producer instead of making one per call: a new
    idempotent producer waits 0.5-1 s before its first message is sent (librdkafka asks for a producer
    id on a 500 ms timer), which a test run paid on every `produce`. Only for a broker that keeps its
    logs meanwhile, the session's: a replaced broker or a re-created topic would not know the kept
    producer's id and sequence numbers. `new_settings` creates its topics with an admin client kept
    the same way (a new one connects and fetches the broker's metadata first)."""
    _kept_producers[brokers] = Producer({"bootstrap.servers": brokers, **PRODUCER_CONFIG})
    _kept_admins[brokers] = AdminClient({"bootstrap.servers": brokers})
    try:
        yield
    finally:
        _kept_admins.pop(brokers)
        _kept_producers.pop(brokers).flush(10)


def produce(brokers: str, topic: str, messages: list[tuple[str | None, bytes]], partition: int | None = None) -> None:
    """Produce (key, value) pairs and wait until the broker acknowledged every one."""
    producer = _kept_producers.get(brokers) or Producer({"bootstrap.servers": brokers, **PRODUCER_CONFIG})
    failures: list[str] = []

    def _ack(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in messages:
        kwargs = {"partition": partition} if partition is not None else {}
        producer.produce(topic, key=key.encode() if key else None, value=value, on_delivery=_ack, **kwargs)
    remaining = producer.flush(30)
    assert remaining == 0 and not failures, f"produce failed: {remaining} unacknowledged, {failures}"
