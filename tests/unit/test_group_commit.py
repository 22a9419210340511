"""Group commit: each caller gets its own result, concurrent callers share a batch, failures reach everyone."""

from __future__ import annotations

import threading

import pytest

from syntropism.infra.group_commit import GroupCommitter


def wait_for(condition, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    done = threading.Event()
    for _ in range(int(timeout / 0.001)):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition not reached in time")


def test_a_lone_caller_commits_in_its_own_thread() -> None:
    seen = []

    def run(items: list[int]) -> list[int]:
        seen.append((threading.get_ident(), list(items)))
        return [item * 2 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(run, max_batch=10)
    assert [committer.execute(i) for i in range(3)] == [0, 2, 4]
    assert seen == [(threading.get_ident(), [0]), (threading.get_ident(), [1]), (threading.get_ident(), [2])]


def test_callers_waiting_during_a_commit_share_the_next_batch() -> None:
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            started.set()
            release.wait(10)
        return [item + 100 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(run, max_batch=10, max_wait=0)
    results: dict[int, int] = {}

    def call(item: int) -> None:
        results[item] = committer.execute(item)

    first = threading.Thread(target=call, args=(0,))
    first.start()
    started.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in range(1, 8)]
    for thread in others:
        thread.start()
    wait_for(lambda: committer.queued == 7)
    release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert results == {i: i + 100 for i in range(8)}
    assert batches[0] == [0] and sorted(batches[1]) == list(range(1, 8)) and len(batches) == 2


def test_a_failed_batch_fails_every_caller_in_it_and_per_item_errors_stay_per_item() -> None:
    def run(items: list[int]) -> list[int | BaseException]:
        if -1 in items:
            raise RuntimeError("disk full")
        return [ValueError(f"bad {i}") if i % 2 else i for i in items]

    committer: GroupCommitter[int, int] = GroupCommitter(run, max_batch=10)
    assert committer.execute(2) == 2
    with pytest.raises(ValueError, match="bad 3"):
        committer.execute(3)
    with pytest.raises(RuntimeError, match="disk full"):
        committer.execute(-1)
    assert committer.execute(4) == 4  # the committer recovers
