"""`python -m modelgate ...`: the same command as the `modelgate` script."""

import sys

from modelgate.cli import main

sys.exit(main())
