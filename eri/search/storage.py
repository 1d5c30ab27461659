"""Where a study lives and how its workers take turns: the Optuna storage (SQLite by default, any
SQLAlchemy URL such as a shared PostgreSQL) and a lock around "count the trials, then start one"
(a file lock beside a SQLite file, an advisory lock on PostgreSQL), so workers together run exactly
``n_trials``. Passwords in URLs are masked in every message; a raw ``@`` in a password is sent to the
driver percent-encoded (the host follows the last ``@``), and an unknown scheme is one line listing
the supported ones."""

from __future__ import annotations

import fcntl
import zlib
from pathlib import Path

from eri.errors import ConfigError
from eri.io import mask_secrets


SCHEMES = ("sqlite:///FILE, postgresql[+psycopg2]://..., or another SQLAlchemy dialect[+driver]://... "
           "whose driver is installed")


def _split(url: str) -> tuple[str, str, str, str] | None:
    """``(scheme, user, password, rest from the last '@' before any '?')``, or None without a password."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@", 0, rest.find("?") if "?" in rest else len(rest))
    if not sep or at < 0 or ":" not in rest[:at]:
        return None
    user, _, password = rest[:at].partition(":")
    return scheme, user, password, rest[at:]


def storage_url(url: str) -> str:
    """``url`` as the driver gets it: a raw ``@`` in the password percent-encoded (SQLAlchemy would take
    the text after the password's first ``@`` for the host, and print it), and the scheme checked."""
    import sqlalchemy as sa

    parts = _split(url)
    if parts and "@" in parts[2]:
        scheme, user, password, rest = parts
        url = f"{scheme}://{user}:{password.replace('@', '%40')}{rest}"
    try:
        sa.engine.make_url(url).get_dialect()
    except Exception as e:  # noqa: BLE001 - NoSuchModuleError, ArgumentError: not a database URL eri can use
        raise ConfigError(mask_secrets(
            f"study storage {url}: not a database URL eri can use ({type(e).__name__}: {e}); supported: {SCHEMES}"
        )) from None
    return url


def make_storage(url: str, heartbeat_s: int, max_retry: int):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = storage_url(url)
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
    """One line naming the storage, its password masked wherever the URL or the driver's message shows it."""
    text = mask_secrets(f"cannot open the study storage {url}: {type(e).__name__}: {e}")
    parts = _split(url)
    if parts and len(parts[2]) >= 3:  # a driver may quote the password outside the URL
        for shown in {parts[2], parts[2].replace("@", "%40")}:
            text = text.replace(shown, "***")
    return ConfigError(text)


class StudyLock:
    """Serialises "count the trials, then start one" across workers of one study."""

    def __init__(self, url: str, study_name: str):
        self.key = zlib.crc32(study_name.encode())
        self.kind, self._held = None, None
        url = storage_url(url)
        if url.startswith("sqlite:///"):
            self.kind, self.path = "file", Path(url[len("sqlite:///") :] + ".lock")
        elif url.startswith("postgresql"):
            import sqlalchemy as sa
            from sqlalchemy.pool import NullPool

            try:
                self.kind, self.engine = "pg", sa.create_engine(url, poolclass=NullPool)
            except Exception as e:  # noqa: BLE001 - a driver that is not installed: say which, masked
                raise storage_error(url, e) from None

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
