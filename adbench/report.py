"""``python -m adbench.report``: the entry point of :mod:`adbench.reporting.report`."""

from adbench.reporting.report import main

if __name__ == "__main__":
    raise SystemExit(main())
