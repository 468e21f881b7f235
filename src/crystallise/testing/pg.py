"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temp dir, pg_ctl start, stop, delete.

    server = PostgresServer.start()           # ~1-2 s
    url = server.create_database()            # postgresql://postgres@127.0.0.1:PORT/t_1
    server.stop()

It listens on 127.0.0.1 on a free port, keeps its socket in the temp dir (so it
never collides with a system server) and trusts local connections. By default it
runs with fsync off, which is for tests only; `PostgresServer.start(durable=True)`
keeps PostgreSQL's durable defaults (fsync, synchronous commit, full page writes on),
which a benchmark of write throughput must measure. initdb refuses to run as root,
so as root the server runs as the `postgres` system user, which then owns the temp dir.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PostgresServer", "postgres_unavailable"]

SUPERUSER = "postgres"
_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # tests: nothing needs to survive a crash
_DURABLE = ("-c fsync=on -c synchronous_commit=on -c full_page_writes=on "  # benchmarks: what production pays
            "-c max_connections=100")


def postgres_unavailable() -> str | None:
    """Why a test PostgreSQL cannot be started here, or None if it can."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        return "initdb/pg_ctl not on PATH: install PostgreSQL server binaries (e.g. apt install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg not installed: pip install 'crystallise[postgres]'"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` system user to run initdb as"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    directory: str
    port: int
    _as_postgres: bool
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> str:
        return os.path.join(self.directory, "data")

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", "postgres", "--", *argv] if self._as_postgres else list(argv)
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            log = Path(self.directory, "server.log")
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}{result.stdout}\n{tail}")
        return result

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresServer:
        """initdb + pg_ctl start; raises RuntimeError with the server log if either fails.

        `durable=False` (tests) turns fsync, synchronous commit and full page writes off;
        `durable=True` (benchmarks) keeps them on.
        """
        as_postgres = os.geteuid() == 0
        directory = tempfile.mkdtemp(prefix="crystallise-pg-")
        if as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        server = cls(directory=directory, port=0, _as_postgres=as_postgres)
        try:
            server._run("initdb", "-D", server.data, "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--no-locale")
            for attempt in range(3):
                server.port = _free_port()
                options = (f"-p {server.port} -k {directory} -c listen_addresses=127.0.0.1 "
                           f"{_DURABLE if durable else _FAST}")
                try:
                    server._run(
                        "pg_ctl", "-D", server.data, "-o", options, "-l",
                        os.path.join(directory, "server.log"), "-w", "-t", "30", "start",
                    )  # fmt: skip
                    break
                except RuntimeError:
                    if attempt == 2:  # the port was probably taken between probing and binding
                        raise
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return server

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"t_{next(self._counter)}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def stop(self) -> None:
        """Stop immediately and delete everything the server wrote (a second call does nothing)."""
        if not os.path.isdir(self.directory):
            return
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
