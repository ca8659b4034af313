"""`python -m cnnzoo` and the `cnnzoo` command.

The CLI's imports (torch above all) take seconds; a Ctrl-C among them must end in one line too. The interrupt is
remembered by a handler installed before any of them, because an import can turn the KeyboardInterrupt into
another error (Python wraps exceptions raised in a class body's __set_name__ in a RuntimeError).
"""

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
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
