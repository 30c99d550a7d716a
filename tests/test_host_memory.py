"""jaxcnn.backends.cpu.host_memory (alias jaxcnn.host_memory): freed memory is reused after
keep_freed_memory(), and only then.

Measured by behaviour, in a fresh process each: a 48 MiB block is allocated, written, freed
and allocated and written again; the page faults of the second round count the pages the
system had to hand over afresh (about 12,300 when glibc unmapped the block, none when kept).
"""

import platform
import subprocess
import sys

import pytest

from jaxcnn.backends.cpu import host_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

_PROBE = """
import ctypes, resource, sys
mode = sys.argv[1]
if mode == "import":  # importing the library (models, training, the command) changes nothing
    import jaxcnn, jaxcnn.functional, jaxcnn.models, jaxcnn.train, jaxcnn.cli, jaxcnn.host_memory
elif mode != "untouched":
    from jaxcnn.backends.cpu.host_memory import keep_freed_memory
    print(keep_freed_memory(mode))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 48 << 20
def cycle():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(ctypes.c_void_p(block))
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict | None = None) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True,
                         timeout=120, env=env).stdout.split("\n")
    lines = [line for line in out if line]
    return int(lines[-1]), lines[0] if len(lines) > 1 else ""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_kept_memory_is_reused_and_import_changes_nothing():
    block_pages = (48 << 20) // 4096
    untouched, _ = _faults("untouched")
    imported, _ = _faults("import")
    kept, said = _faults("keep")
    default, said_default = _faults("default")
    assert untouched > block_pages // 2 and imported > block_pages // 2 and default > block_pages // 2
    assert kept < block_pages // 20, kept
    assert said.startswith("keep") and "M_MMAP_MAX=0" in said
    assert said_default.startswith("default")


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_environment_variable_opts_out():
    import os

    env = dict(os.environ, JAXCNN_HOST_MEMORY="default")
    code = "from jaxcnn.host_memory import keep_freed_memory, state; keep_freed_memory(); print(state())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120,
                         env=env).stdout
    assert out.strip() == "default (JAXCNN_HOST_MEMORY=default)"


def test_bad_choice_names_the_variable(monkeypatch):
    with pytest.raises(ValueError, match="choice='never'"):
        host_memory.keep_freed_memory("never")
    monkeypatch.setenv("JAXCNN_HOST_MEMORY", "sometimes")
    with pytest.raises(ValueError, match=r"\$JAXCNN_HOST_MEMORY='sometimes'"):
        host_memory.keep_freed_memory()
