"""A throwaway PostgreSQL server on loopback, in a temporary folder: the multi-worker search test's
fixture (``local_postgres`` in conftest.py), and a way to try a shared study on one machine.

    with LocalPostgres() as pg:        # initdb + pg_ctl start on 127.0.0.1:<free port>
        url = pg.url                   # postgresql+psycopg2://postgres@127.0.0.1:<port>/postgres
    # stopped and deleted here

``python tests/local_postgres.py`` (from a clone) starts one, prints its URL and keeps it up until Ctrl-C.

Binaries: ``initdb`` and ``pg_ctl`` from PATH (a system PostgreSQL), else the ones bundled in the
``pgserver`` pip package (a dev dependency); neither is a clear error. PostgreSQL refuses to run
as root, so under root the server runs as the ``postgres`` (or ``pgserver``) system user and its
folder is created in the system temp dir (which that user can reach) and handed to it.
Authentication is ``trust`` and the server listens on 127.0.0.1 only: for tests, never for data
that matters.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

SYSTEM_USERS = ("postgres", "pgserver")


class PostgresUnavailable(RuntimeError):
    pass


def find_binaries() -> Path:
    """The folder holding initdb and pg_ctl: PATH first, then the pgserver package."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    try:
        import pgserver  # noqa: F401  (dev dependency: PostgreSQL binaries from PyPI)

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (bundled / "initdb").exists() and (bundled / "pg_ctl").exists():
            return bundled
    except ImportError:
        pass
    raise PostgresUnavailable(
        "no PostgreSQL binaries: neither initdb/pg_ctl on PATH nor the pgserver package "
        "(install PostgreSQL, e.g. apt-get install postgresql, or `pip install pgserver==0.1.4`)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in SYSTEM_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable(
        f"running as root and none of the system users {SYSTEM_USERS} exists; "
        "PostgreSQL will not run as root (create one: useradd --system postgres)"
    )


class LocalPostgres:
    """Start on ``start()`` / ``__enter__``, stop and delete the folder on ``stop()`` / ``__exit__``."""

    def __init__(self, port: int | None = None, db: str = "postgres"):
        self.port, self.db = port, db
        self.dir: Path | None = None
        self.proc_user = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.db}"

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kw = {}
        if self.proc_user is not None:
            kw = dict(user=self.proc_user.pw_uid, group=self.proc_user.pw_gid, cwd=str(self.dir))
        res = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
        if check and res.returncode != 0:
            log = self.dir / "server.log" if self.dir else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise PostgresUnavailable(f"{Path(args[0]).name} failed ({res.returncode}): {res.stderr.strip()}\n{tail}")
        return res

    def start(self) -> "LocalPostgres":
        bindir = find_binaries()
        self.proc_user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="eri-postgres-"))
        if self.proc_user is not None:
            os.chown(self.dir, self.proc_user.pw_uid, self.proc_user.pw_gid)
        data, sock = self.dir / "data", self.dir
        self.port = self.port or _free_port()
        self._cmd(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        opts = f"-h 127.0.0.1 -p {self.port} -k {sock} -c fsync=off -c max_connections=50"
        self._cmd(bindir / "pg_ctl", "-D", data, "-l", self.dir / "server.log", "-o", opts, "-w", "-t", "60", "start")
        self._bindir = bindir
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            self._cmd(self._bindir / "pg_ctl", "-D", self.dir / "data", "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> int:
    import time

    try:
        pg = LocalPostgres().start()
    except PostgresUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"PostgreSQL on {pg.url} (folder {pg.dir}); Ctrl-C stops it and deletes the folder", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
