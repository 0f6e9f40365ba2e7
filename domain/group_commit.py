"""Group commit: concurrent writes that arrive together are stored in one transaction.

On PostgreSQL every insert transaction takes the events table's EXCLUSIVE lock and
sends a NOTIFY (so commit order is notification order): writers are serialised,
and one transaction per command caps a process at a few hundred commands a second.
Here the writes waiting for that turn are stored together, one lock, one commit.

Leader and followers, no timer: a writer that finds nobody writing writes at once
(a lone client's latency is unchanged). Writers that arrive while a write is in
flight queue up; when it finishes, the first of them leads the next group with
everyone queued behind it. A leader writes one group only, then hands over, so no
writer waits for others' groups after its own was stored.

Each member gets exactly what a write of its own would have given it: its own
recordings, or the error its own write would have raised. A group that fails on
an `IntegrityError` (someone's optimistic-concurrency conflict) is written again
one member at a time, so only the member that conflicts fails and its neighbours
are stored. A member writing a stream an earlier member of the same group writes
would certainly conflict: it is refused at once (as an `IntegrityError`), after the
group's commit, so its retry reads the winner. Any other error (a lost connection)
goes to every member, each of which then checks for its own events the way a lone
write does. Nothing is delivered before the group's write returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, OperationalError, Recording

DEFAULT_MAX_GROUP_EVENTS = 5000
DEFAULT_MAX_WAIT_SECONDS = 0.0

# Stores a list of items (aggregates, events) in one transaction; their recordings, in order.
WriteFunction = Callable[[Sequence[Any]], Sequence[Recording]]
# What a member gets back: its recordings, or the error a write of its own would raise.
MemberOutcome = Sequence[Recording] | BaseException


@dataclass(frozen=True)
class Member:
    """One write: its items, the streams it writes, and how many events it holds."""

    items: Sequence[Any]
    streams: frozenset[UUID]
    size: int


@dataclass(eq=False)
class _Submission:
    """The members one caller hands in together, and what becomes of each of them."""

    members: Sequence[Member]
    outcomes: list[MemberOutcome] = field(default_factory=list)
    # Set when the outcomes are in, or when this caller is to lead the next group.
    wake: threading.Event = field(default_factory=threading.Event)
    leads: bool = False

    @property
    def size(self) -> int:
        return sum(member.size for member in self.members)


class GroupCommitter:
    """Stores concurrent writes in shared transactions (thread-safe)."""

    def __init__(
        self,
        write: WriteFunction,
        *,
        max_group_events: int = DEFAULT_MAX_GROUP_EVENTS,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
    ) -> None:
        """`write` stores a list of items in one transaction and returns their recordings.

        `max_group_events` bounds a group (one caller's members are never split);
        `max_wait_seconds` is how long a leader that saw company last time lingers
        for more writers before writing (0: never; a lone writer never lingers).
        """
        self._write = write
        self.max_group_events = max_group_events
        self.max_wait_seconds = max_wait_seconds
        self._lock = threading.Lock()
        self._queue: list[_Submission] = []
        self._writing = False
        self._last_group_size = 0
        # For tests and metrics: how many transactions, and how many members they held.
        self.groups_written = 0
        self.members_written = 0

    @property
    def waiting(self) -> int:
        """How many callers are queued behind the write in flight."""
        with self._lock:
            return len(self._queue)

    def commit(self, member: Member) -> Sequence[Recording]:
        """Stores one write; its recordings, or the error its own write raised."""
        outcome = self.commit_all([member])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def commit_all(self, members: Sequence[Member]) -> list[MemberOutcome]:
        """Stores several independent writes, in one transaction where possible.

        Returns each member's outcome, in order; never raises for a member's failure.
        """
        submission = _Submission(members)
        with self._lock:
            self._queue.append(submission)
            leads = not self._writing
            self._writing = True
        if not leads:
            submission.wake.wait()
            if not submission.leads:
                return submission.outcomes
        self._lead()
        return submission.outcomes

    # ------------------------------------------------------------------ the leader

    def _lead(self) -> None:
        if self.max_wait_seconds > 0 and self._last_group_size > 1:
            self._linger()
        with self._lock:
            group = self._take_group()
            self._last_group_size = len(group)
        try:
            self._write_group(group)
        finally:  # even an interrupt must not strand the followers
            with self._lock:
                if self._queue:
                    self._queue[0].leads = True
                    self._queue[0].wake.set()
                else:
                    self._writing = False
            for submission in group:
                submission.wake.set()

    def _linger(self) -> None:
        """Waits a moment for company, unless the group is already full."""
        deadline = time.monotonic() + self.max_wait_seconds
        while time.monotonic() < deadline:
            with self._lock:
                if sum(s.size for s in self._queue) >= self.max_group_events:
                    return
            time.sleep(self.max_wait_seconds / 4)

    def _take_group(self) -> list[_Submission]:
        group = [self._queue.pop(0)]
        size = group[0].size
        while self._queue and size + self._queue[0].size <= self.max_group_events:
            size += self._queue[0].size
            group.append(self._queue.pop(0))
        return group

    def _write_group(self, group: list[_Submission]) -> None:
        members: list[tuple[_Submission, int, Member]] = []
        streams: set[UUID] = set()
        for submission in group:
            # Until a member's outcome is known, it is "unknown": a write interrupted
            # half way leaves its members to look for their own events, as after a
            # dropped connection.
            submission.outcomes = [
                OperationalError("the write was interrupted; its outcome is unknown")
                for _ in submission.members
            ]
            for index, member in enumerate(submission.members):
                if member.streams & streams:
                    # Two writes to one stream in one group: the later one cannot win.
                    submission.outcomes[index] = IntegrityError(
                        "another write to the same stream was stored in the same group"
                    )
                    continue
                streams |= member.streams
                members.append((submission, index, member))
        if not members:
            return
        try:
            recordings = self._store([item for _, _, m in members for item in m.items])
        except IntegrityError as error:
            if len(members) == 1:
                submission, index, _member = members[0]
                submission.outcomes[index] = error
                return
            # Someone conflicts: each member is written alone, so only that one fails.
            for submission, index, member in members:
                try:
                    submission.outcomes[index] = self._store(member.items)
                    self.members_written += 1
                except Exception as own_error:
                    submission.outcomes[index] = own_error
            return
        except Exception as error:
            for submission, index, _member in members:
                submission.outcomes[index] = error
            return
        self.members_written += len(members)
        start = 0
        for submission, index, member in members:
            submission.outcomes[index] = recordings[start : start + member.size]
            start += member.size

    def _store(self, items: Sequence[Any]) -> Sequence[Recording]:
        recordings = self._write(items)
        self.groups_written += 1
        return recordings
