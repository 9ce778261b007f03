"""``python -m adbench.leaderboard``: the entry point of :mod:`adbench.reporting.leaderboard`."""

from adbench.reporting.leaderboard import main

if __name__ == "__main__":
    raise SystemExit(main())
