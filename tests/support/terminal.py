"""A program driven as a person would: in a pseudo-terminal, reading what it shows and typing answers."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Terminal:
    def __init__(self, argv: list[str], *, env: dict[str, str], columns: int = 120, rows: int = 40) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.master = master
        self.screen = ""  # everything shown so far, without escape sequences
        self._consumed = 0  # where the last match ended: the next expect looks after it

    def expect(self, pattern: str, within: float = 30.0) -> re.Match[str]:
        """Wait until the screen shows ``pattern`` (a regex, searched in what appeared after the last match)."""
        deadline = time.monotonic() + within
        start = self._consumed
        while True:
            found = re.search(pattern, self.screen[start:])
            if found:
                self._consumed = start + found.end()
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the screen never showed {pattern!r}; it shows:\n{self.screen[start:]}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the program exited and closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the program ended before showing {pattern!r}:\n{self.screen[start:]}")
                self.screen += ANSI.sub("", chunk.decode(errors="replace"))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self, within: float = 30.0) -> int:
        try:
            return self.process.wait(within)
        finally:
            os.close(self.master)
