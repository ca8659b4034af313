"""How a benchmark stops: the first SIGINT, SIGTERM or SIGHUP ends it with what it has measured.

    stop = Stop()                          # installs the handlers
    try:
        for ...:
            result = train(config)         # or any measurement
            stop.check(result)             # train() takes the signals itself and returns; this raises for it
            rows.append(...)
    except Stopped:
        pass
    stop.done()                            # measuring is over: a signal now lets the report finish
    if stop.partial: print(stop.banner(...))  # the rows measured so far, marked partial
    ...
    return stop.status                     # 0, or 128 + the signal's number (130, 143, 129), as a shell reports it

While measuring, the first signal raises `Stopped` wherever the benchmark is; after `done()` it is only recorded
(the report takes moments, and the exit status still says a signal came). Further signals do not cut the report
short (`timeout` and a terminal's Ctrl-C each signal a process more than once), as in `cnnzoo train`: only a second
Ctrl-C pressed a second or more after the first ends the benchmark at once, without its report.

`cnnzoo.train.train` installs its own handlers for the length of a run (they save and return, they do not raise)
and returns a RunResult whose `stopped` names the signal; `Stop.check` turns that into `Stopped`.
"""

from __future__ import annotations

import os
import signal
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A stop signal arrived: the benchmark reports what it has measured and exits with `Stop.status`."""


class Stop:
    """The benchmark's stop signals: `signal` names the first that arrived (None: none yet), `partial` says it
    arrived while measuring."""

    def __init__(self):
        self.signal: str | None = None
        self.measuring = True
        self.partial = False
        self._first = 0.0  # time.monotonic() of the first signal
        self._pid = os.getpid()
        for s in SIGNALS:
            signal.signal(s, self._handler)

    def done(self) -> None:
        """Measuring is over: a first signal from now on is recorded, and the report goes on."""
        self.measuring = False

    def _handler(self, signum, frame):
        if os.getpid() != self._pid:
            # A forked child that inherited the handler (a DataLoader worker, which a group's Ctrl-C or `timeout`
            # also signals) leaves the stop to its parent, which shuts it down; a second signal ends it.
            signal.signal(signum, signal.SIG_DFL)
            return
        name = signal.Signals(signum).name
        if self.signal is None:
            self._stop(name)
        elif name == self.signal == "SIGINT" and time.monotonic() - self._first >= 1.0:
            raise SystemExit(self.status)  # a deliberate second Ctrl-C: out now, report or not

    def _stop(self, name: str):
        if self.signal is not None:
            return
        self.signal, self._first = name, time.monotonic()
        if self.measuring:
            self.partial = True
            raise Stopped(name)

    def check(self, result) -> None:
        """Raise Stopped if `result` (a cnnzoo.train RunResult) ended early because of a signal."""
        if result.stopped in ("SIGINT", "SIGTERM", "SIGHUP", "signal"):
            # "signal": another process of a torch.distributed run was signalled; a benchmark sees SIGTERM
            self._stop(result.stopped if result.stopped != "signal" else "SIGTERM")

    @property
    def status(self) -> int:
        """The exit status: 0 when no signal came, else 128 + its number."""
        return 0 if self.signal is None else 128 + signal.Signals[self.signal].value

    def banner(self, done: str) -> str:
        """The line that marks a report as partial: which signal, and what was finished before it."""
        return f"PARTIAL: stopped by {self.signal}; {done}"
