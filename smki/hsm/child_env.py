"""The environment of every process smki starts: an allow-list, never the whole of smki's own.

An operator's environment holds secrets that smki reads by name (`env:NAME` PIN sources, the
SO PIN, custodian passphrases, a web service's API key). A child given that environment holds
them for its whole life, readable in /proc/PID/environ and in any core dump. So each child
smki starts (spawned batch and signing workers, multiprocessing's resource tracker,
softhsm2-util) gets only what an interpreter, the C library and a PKCS#11 module need, by name.
A secret a worker does need (the user PIN) reaches it through the pool's initialiser, a pipe.

A vendor's PKCS#11 module may need variables of its own: name them, comma-separated, in
$SMKI_CHILD_ENV.
"""

from __future__ import annotations

import multiprocessing.context
import multiprocessing.pool
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from multiprocessing import resource_tracker

from smki.hsm.config import MODULE_ENV
from smki.hsm.store_lock import SOFTHSM_CONF_ENV

EXTRA_NAMES_ENV = "SMKI_CHILD_ENV"
ALLOWED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "TZ", "LANG", "LANGUAGE", "LD_LIBRARY_PATH", "PYTHONHOME", "PYTHONPATH",
    SOFTHSM_CONF_ENV, MODULE_ENV, EXTRA_NAMES_ENV,
})
ALLOWED_PREFIXES = ("LC_",)  # the locale categories


def child_environment(environment: Mapping[str, str] | None = None, also: Iterable[str] = ()) -> dict[str, str]:
    """The variables of `environment` (default: this process's) that a child may have (and those named in `also`)."""
    environment = os.environ if environment is None else environment
    extra = {name.strip() for name in environment.get(EXTRA_NAMES_ENV, "").split(",") if name.strip()} | set(also)
    return {name: value for name, value in environment.items()
            if name in ALLOWED_NAMES or name in extra or name.startswith(ALLOWED_PREFIXES)}


@contextmanager
def children_get_allowed_environment(also: Iterable[str] = ()) -> Iterator[None]:
    """For the block, this process's environment is `child_environment(also=also)`, then it is restored.

    multiprocessing starts its children (workers, the resource tracker) with the process's own
    environment and takes no other; `os.environ` changes reach the C environment they inherit."""
    saved = dict(os.environ)
    for name in set(saved) - set(child_environment(saved, also)):
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


class _SpawnProcess(multiprocessing.context.SpawnProcess):
    """A spawned process started with the allowed environment: also a worker a pool starts later, in place of one that died."""

    @staticmethod
    def _Popen(process_obj):
        with children_get_allowed_environment():
            return multiprocessing.context.SpawnProcess._Popen(process_obj)


class _SpawnContext(multiprocessing.context.SpawnContext):
    Process = _SpawnProcess


def spawn_pool(processes: int, initializer: Callable, initargs: tuple) -> multiprocessing.pool.Pool:
    """A pool of spawned workers, which, like the resource tracker it may start, get only the allowed environment."""
    with children_get_allowed_environment():
        resource_tracker.ensure_running()  # once per process: started now, it never sees the secrets
        return multiprocessing.pool.Pool(processes, initializer=_start_ignoring_interrupts, initargs=(initializer, *initargs),
                                         context=_SpawnContext())


def _start_ignoring_interrupts(initializer: Callable, *initargs) -> None:
    """A worker's start: Ctrl-C at a terminal reaches the whole process group, but only the parent
    answers it (it stops the pool, rolls back and exits 130); a worker interrupted on its own would
    only be replaced by the pool, and its task never answered."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    initializer(*initargs)


# How often a wait on a worker's answer looks at the pool's processes.
_HEALTH_CHECK_SECONDS = 0.5


def result_of(pool: multiprocessing.pool.Pool, pending: multiprocessing.pool.AsyncResult, workers: int):
    """The answer of one task, refused (exit 4) as soon as the pool has had to replace a worker.

    multiprocessing replaces a worker that dies, silently and forever, so a worker that cannot
    start (above all a spawned child re-running a script whose top level calls the batch again)
    would leave the task unanswered for ever. Every pid the pool has held is remembered: more
    pids than workers means one died, and nothing it was given can be trusted to come back.
    """
    seen: set[int] = pool.__dict__.setdefault("_smki_seen_pids", set())
    while not pending.ready():
        pending.wait(_HEALTH_CHECK_SECONDS)
        seen.update(process.pid for process in list(getattr(pool, "_pool", ())) if process.pid is not None)
        if len(seen) > workers:
            from smki.errors import HsmError

            raise HsmError("a worker process died and was replaced, so the batch stops (nothing it was given is recorded): "
                           "a Python script that calls issue_batch must do so under `if __name__ == \"__main__\":`, "
                           "because the spawned workers import the script")
    return pending.get()
