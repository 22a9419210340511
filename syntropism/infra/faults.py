"""Named crash points for crash-recovery tests.

With ``SYNTROPISM_CRASH_AT=<name>`` in its environment, a process SIGKILLs itself when it reaches that point:
a real crash at an exact place (say, after publishing and before recording the ack), not a simulated one.
Read once at import (the tests set it in a child process's environment); unset, a crash point costs a comparison.
"""

from __future__ import annotations

import logging
import os
import signal

CRASH_AT_ENV = "SYNTROPISM_CRASH_AT"
log = logging.getLogger(__name__)
_CRASH_AT = os.environ.get(CRASH_AT_ENV)


def crash_point(name: str) -> None:
    if name == _CRASH_AT:
        log.critical("crash point %s reached: SIGKILL self (%s is set)", name, CRASH_AT_ENV)
        os.kill(os.getpid(), signal.SIGKILL)
