import sys

from seqsched.cli import main

sys.exit(main())
