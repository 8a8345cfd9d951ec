"""Running Python code in a fresh interpreter that imports this checkout (whatever is installed), to see
what a cold start imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, *args: str, stderr: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """Run `code` with `args` as sys.argv[1:], from the checkout's root, and return its finished process
    (stdout captured; stderr too unless `stderr` is another file descriptor, e.g. a terminal's)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=120,
    )
