"""``python -m benchmarks [--quick] [--pg-url URL] [--only NAMES]``."""

import sys

from .orchestrate import run

if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
