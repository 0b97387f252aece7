"""``python -m robcurve ...`` (what torchrun users reach for): the same as the ``robcurve`` command."""

import sys

from robcurve.cli import main

if __name__ == "__main__":
    sys.exit(main())
