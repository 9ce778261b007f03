"""From run records to tables and figures: the leaderboard tables (accuracy, efficiency, draws,
deltas against the published numbers), paired comparisons and rank tests, the report and its
figures. Entry points: ``python -m adbench.leaderboard`` and ``python -m adbench.report``."""
