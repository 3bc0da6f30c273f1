"""`edge` and `python -m edge`: the command line, with Ctrl-C said as such from the first moment.

Importing the command line takes up to a second on a Pi (numpy, OpenCV, the detectors); a
Ctrl-C then would be Python's KeyboardInterrupt traceback instead of edge.cli's one line."""

import sys


def main():
    try:
        from edge.cli import main as run
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)  # the shell's status for Ctrl-C, as edge.cli gives once loaded
    run()


if __name__ == "__main__":
    main()
