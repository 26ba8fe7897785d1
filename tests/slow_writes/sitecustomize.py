"""Test-only: every fsync sleeps first, so a SIGKILL often lands in the middle of a file write.

On PYTHONPATH for the crash test only. expkit's atomic writes fsync the temp file before they
rename it, so a kill during the sleep leaves a half-written temp file beside an intact target.
"""

import os
import time

_fsync = os.fsync


def _slow_fsync(fd: int) -> None:
    time.sleep(float(os.environ.get("EXPKIT_TEST_FSYNC_DELAY", "0.05")))
    _fsync(fd)


os.fsync = _slow_fsync
