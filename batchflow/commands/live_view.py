"""The live view of a run on a terminal (rich): the jobs, an overall line with cost and an ETA, local progress.

Only ``run`` on a terminal with console logs shows it; anywhere else (cron, CI, ``--log-format json``) nothing
changes and the logs stay JSON lines. The runner calls ``cycle`` once a cycle, ``logs.Progress`` calls
``progress`` while local work (preparation, keeping, merging) goes on; both only redraw.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from batchflow import logs
from batchflow.spec.spec import Spec
from batchflow.state import cost
from batchflow.state import state as st
from batchflow.state.state import Job, State

_ROWS = 20  # jobs shown at most: the live ones first, then the latest finished


class LiveView:
    """What a run shows on a terminal, redrawn by the run itself (no thread of its own)."""

    def __init__(self, spec: Spec, live: Live, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.live = live
        self.clock = clock
        self._jobs: Table | None = None
        self._overall = Text("")
        self._local = Text("")

    def cycle(self, state: State, next_poll: float) -> None:
        """The jobs as the state has them now; ``next_poll``: seconds until the run asks the service again."""
        now = self.clock()
        self._jobs = jobs_table(state, now, now + next_poll)
        self._overall = Text(overall_line(self.spec, state, now))
        self._local = Text("")
        self._redraw()

    def progress(self, event: str, fields: dict[str, Any]) -> None:
        """Local work's progress (``logs.Progress``): one line under the table."""
        self._local = Text(f"{event}: " + ", ".join(f"{k} {_count(v)}" for k, v in fields.items()), style="dim")
        self._redraw()

    def _redraw(self) -> None:
        parts: list[Any] = [p for p in (self._jobs, self._overall, self._local) if p is not None and str(p) != ""]
        self.live.update(Group(*parts), refresh=True)


def jobs_table(state: State, now: float, poll_at: float) -> Table:
    """Shard, job name, state, done/failed/total, age and next poll of the jobs worth seeing."""
    table = Table("shard", "job", "state", "done/failed/total", "age", "next poll", box=None, pad_edge=False)
    for shard, job in _worth_seeing(state):
        remote = job.status in st.REMOTE
        table.add_row(str(shard), job.name or job.display_name, (job.ended or job.status).upper(),
                      _counts(job), _duration(now - job.created_at) if job.created_at else "",
                      _duration(max(0.0, poll_at - now)) if remote else "")
    return table


def _worth_seeing(state: State) -> list[tuple[int, Job]]:
    current = [(s.index, s.current) for s in state.shards if s.current is not None]
    live = [(i, j) for i, j in current if j.status in st.LIVE]
    rest = [(i, j) for i, j in current if j.status not in st.LIVE and j.name is not None]
    rest.sort(key=lambda item: item[1].finished_at or 0.0, reverse=True)
    return (live + rest)[:_ROWS]


def _counts(job: Job) -> str:
    if job.status == st.COLLECTED:
        return f"{job.ok + job.failed:,}/{job.failed:,}/{job.count:,}"
    done = "?" if job.done_count is None else f"{job.done_count:,}"
    return f"{done}/?/{job.count:,}"


def overall_line(spec: Spec, state: State, now: float) -> str:
    """Jobs by status, units done, cost so far and an ETA from the jobs finished so far."""
    by_status = Counter(j.status for _, j in state.jobs())
    done = sum(s.done for s in state.shards)
    spent = cost.spend(spec, state)
    usd = spent.usd(spent.actual)
    money = "cost n/a" if usd is None else f"cost so far ${usd:,.4f}"
    counts = ", ".join(f"{n} {k}" for k, n in sorted(by_status.items()))
    return f"{done}/{len(state.shards)} units done; jobs: {counts}; {money}; {eta(spec, state, now)}"


def eta(spec: Spec, state: State, now: float) -> str:
    """The mean time of the jobs finished so far, over the units left, ``jobs.max_concurrent`` at a time."""
    took = [j.finished_at - j.created_at for _, j in state.jobs()
            if j.finished_at is not None and j.created_at is not None]
    left = [s.current for s in state.shards if not s.done and s.current is not None]
    if not left:
        return "ETA now"
    if not took:
        return "ETA: after the first job finishes"
    mean = sum(took) / len(took)
    running = [now - j.created_at for j in left if j.created_at is not None and j.status in st.REMOTE]
    waiting = len(left) - len(running)
    seconds = max((max(0.0, mean - age) for age in running), default=0.0) + \
        mean * math.ceil(waiting / max(1, spec.jobs.max_concurrent))
    return f"ETA ~{_duration(seconds)}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 60:.1f}m" if seconds >= 60 else f"{seconds:.0f}s"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


@contextmanager
def shown(spec: Spec, wanted: bool) -> Iterator[LiveView | None]:
    """A live view for the run when ``wanted`` and stderr is a terminal, else None (and nothing changes).

    Logs keep flowing above the view: rich moves what is written to stderr while it is shown above it."""
    if not wanted or not sys.stderr.isatty():
        yield None
        return
    console = Console(file=sys.stderr)
    with Live(console=console, auto_refresh=False, redirect_stderr=True, transient=False) as live:
        view = LiveView(spec, live)
        with logs.progress_to(view.progress):
            yield view
