"""The supervisor of `pgtasks worker --processes N`: N worker processes, each a fresh interpreter.

The children are started as new programs, never forked: a forked copy of a process would inherit
psycopg connections and pools and threads that do not survive a fork. Each child is an ordinary
worker (its own pool, listener, heartbeat; it may stand for election); the supervisor talks to no
database. It:

- forwards SIGTERM and SIGINT to every child as SIGTERM (a child that gets its first signal
  drains within --grace; a second signal, forwarded again, forces it);
- replaces a child that crashed (exited non-zero, or was killed by a signal) after a delay that
  doubles from 1 s to 30 s, reset once a child has run for 30 s; gives up with EXIT_CRASH_LOOP
  after 5 crashes within 60 s, over all children;
- replaces at once, without counting a crash, a child that recycled itself (EXIT_RECYCLED) or
  that exited 0 while nothing asked it to stop (an operator's SIGTERM to that child alone);
- in burst mode, leaves a child that exited 0 (it drained) alone, and exits once all have.

The children run in a process group of their own, so a terminal's Ctrl-C reaches the supervisor
only and each child gets one signal, not two (two would force it). A child whose supervisor dies
stops by itself (worker/lifetime.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pgtasks.core.aio import wait_event
from pgtasks.core.logs import log_event
from pgtasks.worker.lifetime import EXIT_RECYCLED

logger = logging.getLogger("pgtasks.supervisor")

EXIT_OK = 0
EXIT_CHILD_FAILED = 1  # a child exited non-zero while the supervisor stopped
EXIT_START_FAILED = 2  # a first child exited 2: its configuration or database error (in its log) would recur
EXIT_CRASH_LOOP = 3  # children kept crashing: crash_limit crashes within crash_window seconds
# The status every pgtasks command exits with on a configuration or database error (cli/output.py).
CHILD_EXIT_USAGE = 2
# The children are sent SIGTERM whatever the supervisor received: a SIGINT reaching a child before
# its worker has installed its handlers would end it with a KeyboardInterrupt traceback.
FORWARDED = signal.SIGTERM


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """How many children, and when a crashed one is restarted or the supervisor gives up."""

    processes: int
    burst: bool = False
    first_restart_delay: float = 1.0
    max_restart_delay: float = 30.0
    healthy_after: float = 30.0  # a child that ran this long before crashing is restarted after first_restart_delay
    crash_limit: int = 5
    crash_window: float = 60.0

    def restart_delay(self, consecutive_crashes: int) -> float:
        """Seconds before restarting a child slot after its `consecutive_crashes`-th crash in a row (1, 2, ...)."""
        return min(self.max_restart_delay, self.first_restart_delay * 2.0 ** (consecutive_crashes - 1))


def describe_exit(returncode: int) -> dict[str, object]:
    """The exit of a child as log fields: exit_code=N, or signal=SIGKILL for a child killed by one."""
    if returncode < 0:
        try:
            return {"signal": signal.Signals(-returncode).name}
        except ValueError:
            return {"signal": -returncode}
    return {"exit_code": returncode}


class Supervisor:
    """Runs `processes` children, each started as `command(slot, supervisor)`: the argv of one
    worker process (slot 0..N-1; `supervisor` is this process's "host:pid", for the child to
    record). `budget` is one child's connection budget (WorkerConfig.connection_budget())."""

    def __init__(self, command: Callable[[int, str], list[str]], config: SupervisorConfig, *,
                 budget: Mapping[str, int], env: Mapping[str, str] | None = None) -> None:
        self.command = command
        self.config = config
        self.budget = dict(budget)
        self.env = dict(env) if env is not None else None
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.children: dict[int, asyncio.subprocess.Process] = {}  # slot -> its live child
        self.started = 0  # children started, replacements included
        self.crashes: collections.deque[float] = collections.deque()  # monotonic times, within the window
        self._stopping = False
        self._signals = 0
        self._stop: asyncio.Event | None = None
        self._exit_code: int | None = None  # set when the supervisor gives up
        self._last_exit: dict[int, int] = {}  # slot -> returncode of its last child

    def run(self) -> int:
        """Run until every child has exited; returns the supervisor's exit status."""
        return asyncio.run(self.arun())

    async def arun(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        n = self.config.processes
        log_event(logger, logging.INFO, "supervisor.started", supervisor=self.identity, processes=n,
                  burst=self.config.burst)
        # What N children hold together, next to the line each child logs for itself.
        log_event(logger, logging.INFO, "supervisor.connections", supervisor=self.identity, processes=n,
                  pool=self.budget["pool"], listener=self.budget["listener"],
                  per_process_max=self.budget["total"], server_connections_max=n * self.budget["total"])
        try:
            await asyncio.gather(*(self._run_slot(slot) for slot in range(n)))
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        code = self._result()
        log_event(logger, logging.INFO if code == EXIT_OK else logging.ERROR, "supervisor.stopped",
                  supervisor=self.identity, exit_code=code, children_started=self.started)
        return code

    def _result(self) -> int:
        if self._exit_code is not None:
            return self._exit_code
        clean = {0, EXIT_RECYCLED, -FORWARDED}  # -SIGTERM: ended by it before its handlers were installed
        return EXIT_OK if all(code in clean for code in self._last_exit.values()) else EXIT_CHILD_FAILED

    # -- signals -----------------------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log_event(logger, logging.INFO, "supervisor.stopping", signal=name, children=len(self.children),
                      action="every child drains within its --grace; a second signal forces them")
        else:
            log_event(logger, logging.WARNING, "supervisor.forcing", signal=name, children=len(self.children),
                      action="running jobs are put back")
        self._begin_stop()

    def _begin_stop(self) -> None:
        """Stop restarting children and send each live one SIGTERM (again, on a second call)."""
        self._stopping = True
        assert self._stop is not None
        self._stop.set()
        for child in list(self.children.values()):
            self._send(child)

    @staticmethod
    def _send(child: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):  # it exited; its slot reaps it
            child.send_signal(FORWARDED)

    def _give_up(self, code: int) -> None:
        if self._exit_code is None:
            self._exit_code = code
            self._begin_stop()

    # -- one slot ------------------------------------------------------------------------------------

    async def _run_slot(self, slot: int) -> None:
        """Keep one child running in this slot until the supervisor stops (or, in burst mode, the child drained)."""
        generation = 0
        consecutive_crashes = 0
        while not self._stopping:
            child = await asyncio.create_subprocess_exec(
                *self.command(slot, self.identity), env=self.env, stdin=asyncio.subprocess.DEVNULL,
                process_group=0)
            self.children[slot] = child
            self.started += 1
            if self._stopping:  # a signal came while it was being started: it was not there to get it
                self._send(child)
            started = time.monotonic()
            log_event(logger, logging.INFO, "supervisor.child_started", slot=slot, pid=child.pid,
                      generation=generation)
            returncode = await child.wait()
            ran = time.monotonic() - started
            del self.children[slot]
            self._last_exit[slot] = returncode
            exit_fields = {"slot": slot, "pid": child.pid, **describe_exit(returncode), "ran_s": round(ran, 1)}
            if self._stopping:
                level = logging.INFO if returncode in (0, EXIT_RECYCLED, -FORWARDED) else logging.ERROR
                log_event(logger, level, "supervisor.child_exited", **exit_fields)
                return
            if returncode == EXIT_RECYCLED:
                log_event(logger, logging.INFO, "supervisor.child_recycled", **exit_fields, action="replacing it now")
            elif returncode == 0 and self.config.burst:
                log_event(logger, logging.INFO, "supervisor.child_drained", **exit_fields)
                return
            elif returncode == 0:
                log_event(logger, logging.WARNING, "supervisor.child_exited", **exit_fields,
                          reason="stopped without the supervisor asking (a signal sent to the child itself)",
                          action="replacing it now")
            elif generation == 0 and returncode == CHILD_EXIT_USAGE:
                log_event(logger, logging.ERROR, "supervisor.child_failed_to_start", **exit_fields,
                          reason="a configuration or database error, in the child's log above; restarting "
                                 "would fail the same way", action="stopping every child")
                self._give_up(EXIT_START_FAILED)
                return
            else:
                consecutive_crashes = 1 if ran >= self.config.healthy_after else consecutive_crashes + 1
                if self._crash_loop():
                    log_event(logger, logging.ERROR, "supervisor.child_crashed", **exit_fields,
                              crashes=len(self.crashes), window_s=self.config.crash_window)
                    log_event(logger, logging.ERROR, "supervisor.crash_loop", crashes=len(self.crashes),
                              window_s=self.config.crash_window, exit_code=EXIT_CRASH_LOOP,
                              action="stopping every child")
                    self._give_up(EXIT_CRASH_LOOP)
                    return
                delay = self.config.restart_delay(consecutive_crashes)
                log_event(logger, logging.ERROR, "supervisor.child_crashed", **exit_fields,
                          crashes=len(self.crashes), window_s=self.config.crash_window, restart_in_s=delay)
                assert self._stop is not None
                if await wait_event(self._stop, delay):
                    return
            generation += 1

    def _crash_loop(self) -> bool:
        """Count a crash now; True once crash_limit of them fell within crash_window seconds."""
        now = time.monotonic()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - self.config.crash_window:
            self.crashes.popleft()
        return len(self.crashes) >= self.config.crash_limit
