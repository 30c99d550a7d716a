"""Data worker processes die with the process that started them, ``kill -9`` included.

grain's worker processes are ``daemon`` processes, which only helps on a normal exit: a parent
killed by SIGKILL cannot stop them, and each crash used to leave its workers behind. Each
worker runs :func:`exit_with_parent` at start (grain's ``worker_init_fn``): a daemon thread
that ends the worker once its parent is gone (it has been re-parented). Polling ``getppid``
is used rather than ``prctl(PR_SET_PDEATHSIG)``, which fires when the *thread* that started
the worker exits, and grain may start workers from short-lived threads.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.25


def exit_with_parent(parent: int, worker_index: int = 0, worker_count: int = 0) -> None:
    """Ends this process within ``POLL_SECONDS`` once process ``parent`` is no longer its parent.

    ``parent`` is the pid of the process that starts the workers (``functools.partial(
    exit_with_parent, os.getpid())`` there): a worker still starting when its parent was
    killed sees another parent already, and exits at once.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os._exit(1)  # the parent is gone: nobody reads what this worker would produce

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="jaxcnn-exit-with-parent", daemon=True).start()
