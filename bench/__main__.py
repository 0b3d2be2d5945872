"""`python -m bench` (`make bench`): run every measurement and write docs/BENCHMARKS.md."""

import sys

from bench.run import main

if __name__ == "__main__":
    sys.exit(main())
