"""What a process tree uses right now, read from /proc: the measure of last resort, for hosts without cgroups."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class TreeUsage:
    cpu_seconds: float  # of the live processes, and of the children they reaped
    rss_bytes: int  # resident memory of the live processes


def tree_usage(root: int) -> TreeUsage | None:
    """The usage of ``root`` and all its descendants; None when ``root`` is gone."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    pages: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:
            continue  # it exited while we looked
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
        pages[pid] = int(fields[21])  # rss
    if root not in ticks:
        return None
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, frontier = {root}, [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return TreeUsage(sum(ticks[p] for p in tree) / CLOCK_TICKS, sum(pages[p] for p in tree) * PAGE_SIZE)
