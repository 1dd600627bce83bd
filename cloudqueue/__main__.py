"""``python -m cloudqueue``: the ``cloudqueue`` command."""

import sys

from cloudqueue.cli import main

sys.exit(main())
