"""Where a study lives and how its workers take turns: the Optuna storage (SQLite by default, any
SQLAlchemy URL such as a shared PostgreSQL) and a lock around "count the trials, then start one"
(a file lock beside a SQLite file, an advisory lock on PostgreSQL), so workers together run exactly
``n_trials``. Passwords in URLs are masked in every message."""

from __future__ import annotations

import fcntl
import zlib
from pathlib import Path

from eri.errors import ConfigError
from eri.io import mask_secrets


def make_storage(url: str, heartbeat_s: int, max_retry: int):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with quiet_experimental():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            grace_period=2 * heartbeat_s,
            heartbeat_stale_trial_callback=retry,
        )
    except Exception as e:  # a bad URL or an unreachable server: say which
        raise storage_error(url, e) from None
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_error(url: str, e: Exception) -> ConfigError:
    return ConfigError(mask_secrets(f"cannot open the study storage {url}: {type(e).__name__}: {e}"))


class StudyLock:
    """Serialises "count the trials, then start one" across workers of one study."""

    def __init__(self, url: str, study_name: str):
        self.key = zlib.crc32(study_name.encode())
        self.kind, self._held = None, None
        if url.startswith("sqlite:///"):
            self.kind, self.path = "file", Path(url[len("sqlite:///") :] + ".lock")
        elif url.startswith("postgresql"):
            import sqlalchemy as sa
            from sqlalchemy.pool import NullPool

            self.kind, self.engine = "pg", sa.create_engine(url, poolclass=NullPool)

    def acquire(self) -> None:
        if self._held is not None or self.kind is None:
            return
        if self.kind == "file":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a")
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._held = fh
        else:
            import sqlalchemy as sa

            conn = self.engine.connect()
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            conn.commit()
            self._held = conn

    def release(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self.kind == "file":
            fcntl.flock(held, fcntl.LOCK_UN)
            held.close()
        else:
            import sqlalchemy as sa

            held.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            held.commit()
            held.close()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def slots_used(trials) -> int:
    """Trials counting toward ``n_trials``: a failed trial that has a retry counts once, through its retry."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return sum(t.number not in retried for t in trials)


class quiet_experimental:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
