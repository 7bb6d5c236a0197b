"""Where an Optuna study lives, and how its URL is shown without secrets.

- default: an SQLite file in the run folder (one worker; Optuna's FAQ warns against SQLite
  with parallel writers);
- ``journal:PATH`` (or a path ending in ``.log``): a journal file for several processes on
  one machine or a shared file system;
- ``postgresql://user:pass@host/db`` (or any SQLAlchemy URL): several machines, each worker
  running the same command with the same ``--study``; ``postgresql://user@host/db`` with the
  password in ``$SEGDECAY_STORAGE_PASSWORD`` keeps it out of the process list.

RDB storages get Optuna's heartbeat, so a trial left RUNNING by a killed worker is marked
failed after the grace period and its parameters re-enqueued (RetryFailedTrialCallback).
"""

from __future__ import annotations

import inspect
import os
import random
import re
import time
import warnings
from pathlib import Path

import optuna

from segdecay.errors import UserError

HEARTBEAT_SECONDS = 10
# heartbeat and retry are marked experimental by Optuna; they are what we rely on, on purpose
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# As SQLAlchemy's own URL pattern reads it: the user runs to the first ':' or '/', the
# password to the first '@' ('/' included: postgresql://alice:se/cret@host/db).
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*)"
                          r"(?::(?P<password>[^@\s]*))?@")
PASSWORD_ENV = "SEGDECAY_STORAGE_PASSWORD"  # a URL on the command line is visible in ps
_PASSWORD_PARAM = re.compile(r"(?i)((?:password|passwd|pwd)=)[^&\s]+")


def redact(text: str) -> str:
    """Replace passwords in URLs (``user:secret@`` and ``password=`` query) with ``***``."""
    text = _CREDENTIALS.sub(
        lambda m: f"{m['scheme']}{m['user']}:***@" if m["password"] is not None
        else m.group(0), text)
    return _PASSWORD_PARAM.sub(r"\1***", text)


def with_password(url: str) -> str:
    """``url`` with the password from ``$SEGDECAY_STORAGE_PASSWORD`` when it names a user
    but no password (the URL given on the command line then holds no secret)."""
    secret = os.environ.get(PASSWORD_ENV)
    if not secret or "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.username is None or parsed.password is not None:
        return url
    return parsed.set(password=secret).render_as_string(hide_password=False)


def resolve_storage_url(spec: str | None, run_dir: Path, workers: int) -> str:
    """The storage URL a spec stands for (default: SQLite or, with workers, a journal)."""
    if spec is None:
        if workers > 1:
            return f"journal:{run_dir / 'study.journal'}"
        return f"sqlite:///{(run_dir / 'study.db').resolve()}"
    if spec.startswith("journal:") or spec.endswith(".log") or spec.endswith(".journal"):
        return spec if spec.startswith("journal:") else f"journal:{spec}"
    if "://" not in spec:
        raise UserError(f"--storage '{redact(spec)}': expected sqlite:///FILE, journal:FILE or "
                        "postgresql://USER:PASSWORD@HOST/DB")
    if spec.startswith("sqlite://") and workers > 1:
        raise UserError("--storage sqlite with --workers > 1: SQLite does not take parallel "
                        "writers well; use journal:FILE or postgresql://...")
    return spec


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int | None = None):
    """An Optuna storage object for a resolved URL (with heartbeat where Optuna has it)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    url = with_password(url)
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    if "heartbeat_stale_trial_callback" in params:  # Optuna >= 4.9
        callback_kw = "heartbeat_stale_trial_callback"
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    else:
        callback_kw = "failed_trial_callback"
        retry = optuna.storages.RetryFailedTrialCallback(max_retry=3)
    import sqlalchemy.exc

    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat, grace_period=grace or 2 * heartbeat,
                **{callback_kw: retry},
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            # two workers creating Optuna's tables at once (PostgreSQL's pg_type race, or
            # "relation already exists"): the other one won; wait and open its tables
            if isinstance(exc, sqlalchemy.exc.ProgrammingError) and \
                    "already exists" not in str(exc):
                raise UserError(f"--storage {redact(url)}: cannot open study storage "
                                f"({redact(str(exc)).splitlines()[0]})") from None
            time.sleep(0.5 * (attempt + 1) + random.random())
        except Exception as exc:  # driver errors: say what failed, never the password
            raise UserError(f"--storage {redact(url)}: cannot open study storage "
                            f"({redact(str(exc)).splitlines()[0]})") from None
    raise UserError(f"--storage {redact(url)}: could not create the study tables")
