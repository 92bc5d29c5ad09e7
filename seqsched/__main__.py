"""`python -m seqsched`: the same as the `seqsched` command."""

import sys

from seqsched.cli import main

if __name__ == "__main__":
    sys.exit(main())
