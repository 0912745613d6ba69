"""Freed memory kept while a batch runs, on a worker started as Dask's nanny starts it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)

FAULTS = """
import resource
import numpy as np
from dbatch.memory import FreedMemoryKept

def faults(n=40):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        block = np.ones(2**17)  # 1 MiB made and freed (numpy asks for huge pages from 4 MiB)
        del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = faults()
with FreedMemoryKept():
    with FreedMemoryKept():  # another thread's batch: the outer one still keeps
        pass
    kept = faults()
after = faults()
print(plain, kept, after)
"""


def _faults(env: dict[str, str]) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True
    )
    return [int(n) for n in out.stdout.split()]


def test_arrays_are_not_faulted_in_again_inside_and_are_after():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    plain, kept, after = _faults(env)
    assert plain > 40 * 200  # each 1 MiB array mapped afresh: 256 pages faulted in
    assert kept < plain / 10  # inside, the freed block is reused
    assert after > plain / 2  # outside again, the environment's thresholds hold


def test_nothing_changes_when_the_environment_fixed_no_threshold():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    plain, kept, after = _faults(env)
    assert max(plain, kept, after) < 40 * 64  # glibc's own adaptive threshold reuses it
