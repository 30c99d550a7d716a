"""Settings that come from an argument or, when it is ``None``, from an environment variable.

One rule for every such setting (``JAXCNN_XLA_OPTIONS``, ``JAXCNN_HOST_MEMORY``): an empty or unset variable means the default, and a bad value is an
error that names where it came from (the argument or the variable) and what is allowed.
"""

from __future__ import annotations

import os


def resolve(value: str | None, *, argument: str, env_var: str, default: str, choices: tuple[str, ...],
            op: str) -> tuple[str, str]:
    """``(value, source)``: ``value`` (source ``argument``) or, when ``None``, ``$env_var``
    (source ``"$env_var"``; ``default`` when unset or empty). Raises ``ValueError`` naming
    ``op``, the source and ``choices`` when the value is not one of ``choices``."""
    source = argument
    if value is None:
        value, source = os.environ.get(env_var, "") or default, f"${env_var}"
    if value not in choices:
        raise ValueError(f"{op}: unknown {source}={value!r}; expected one of {choices}")
    return value, source
