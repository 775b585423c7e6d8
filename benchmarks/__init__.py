"""Side-by-side benchmarks: cqrskit vs the ``eventsourcing`` library vs hand-written SQL.

Run ``python -m benchmarks [--quick] [--pg-url URL] [--only NAMES]`` (or ``make bench``).
Each measurement runs in a fresh subprocess (:mod:`benchmarks.worker`) so that threads,
caches and peak memory of one system never leak into another's figures; repetitions
interleave the systems so machine noise hits all of them alike. See docs/benchmarks.md.
"""

SYSTEMS = ("cqrskit", "eventsourcing", "raw")
BACKENDS = ("sqlite", "postgresql")
