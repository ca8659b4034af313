"""`python -m cnnzoo` and the `cnnzoo` command.

The CLI's imports (torch above all) take seconds; a Ctrl-C among them must end in one line too. The interrupt is
remembered by a handler installed before any of them, because an import can turn the KeyboardInterrupt into
another error (Python wraps exceptions raised in a class body's __set_name__ in a RuntimeError).
"""

import os
import signal
import sys


def main() -> int:
    seen = []

    def remember(signum, frame):
        seen.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, remember)
    try:
        from cnnzoo.cli import main as cli_main
    except BaseException:
        if seen:
            print("cnnzoo: interrupted", file=sys.stderr)
            return 130
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if seen:  # an import swallowed the KeyboardInterrupt (a bare `except:`), but the user asked to stop
        print("cnnzoo: interrupted", file=sys.stderr)
        return 130
    code = cli_main()
    if code >= 128:
        # Stopped by a signal (saved, or interrupted at start-up) and already said so: leave now, ignoring the
        # signals that keep coming (`timeout` and terminals send more than one), which would otherwise print
        # tracebacks from the interpreter's clean-up. Also, a Ctrl-C that landed in code torch's import ran
        # through PyRun_String (pybind11's py::exec) is remembered by CPython as unhandled and, at a normal exit,
        # re-raised as a kill by SIGINT (status -2, not 130).
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
