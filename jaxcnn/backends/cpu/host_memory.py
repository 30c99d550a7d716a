"""Host memory: let the process keep the memory it frees, so a step's buffers are reused.

Why. XLA:CPU allocates a compiled step's temporaries as one block per call. glibc's malloc
serves blocks above its mmap threshold (which never rises above 32 MiB) with fresh pages from
``mmap`` and unmaps them on ``free``, so every step page-faults the block in again and the
kernel zeroes it. With ``mmap`` off and the heap never trimmed, the freed block is reused by
the next step. Blocks larger than one of glibc's per-thread heaps (64 MiB) are still mapped
afresh; limiting glibc to one arena would catch them too but adds lock contention, so it is
not done. ``docs/cpu_backend.md`` has the measurements.

What. :func:`keep_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 and ``M_TRIM_THRESHOLD``
to its maximum (``mallopt``) for the whole process; the price is that the process's
resident memory stays at its peak instead of shrinking. Importing jaxcnn never calls it. The
``jaxcnn`` command (``train``, ``eval``) and ``python -m experiments.benchmarks`` (for every
framework in that process) call it at start and say so; ``JAXCNN_HOST_MEMORY=default``
leaves malloc as it is. On other C libraries it does nothing and says why.
"""

from __future__ import annotations

import ctypes
import platform

from jaxcnn.settings import resolve

ENV_VAR = "JAXCNN_HOST_MEMORY"
CHOICES = ("keep", "default")
# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # the largest value mallopt takes (an int)

_state = "default (not set by jaxcnn)"


def keep_freed_memory(choice: str | None = None) -> str:
    """Applies ``choice`` (``None``: ``$JAXCNN_HOST_MEMORY``, default ``"keep"``) to this
    process's malloc and returns what is in force, as :func:`state` does afterwards.

    ``"keep"``: glibc keeps freed memory (no ``mmap`` for large blocks, no trimming).
    ``"default"``: nothing changes. Raises ``ValueError`` for any other choice.
    """
    global _state
    choice, source = resolve(choice, argument="choice", env_var=ENV_VAR, default="keep", choices=CHOICES,
                             op="keep_freed_memory")
    if choice == "default":
        _state = f"default ({ENV_VAR}=default)" if source != "choice" else "default (asked)"
        return _state
    libc_name, _ = platform.libc_ver()
    if platform.system() != "Linux" or libc_name != "glibc":
        _state = f"default (malloc is not glibc's: {platform.system()} {libc_name or 'unknown libc'})"
        return _state
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER)):
        _state = "default (glibc refused mallopt)"
        return _state
    _state = f"keep (glibc malloc: M_MMAP_MAX=0, M_TRIM_THRESHOLD={_TRIM_NEVER}; {ENV_VAR}=default to opt out)"
    return _state


def state() -> str:
    """What :func:`keep_freed_memory` last put in force in this process (``"default (...)"``
    when it was never called)."""
    return _state
