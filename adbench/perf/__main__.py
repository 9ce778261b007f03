"""``python -m adbench.perf [section ...]`` (``make perf``)."""

from adbench.perf import main

raise SystemExit(main())
