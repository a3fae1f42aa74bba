"""``python -m services.cli`` is the ``tickertape`` command."""

from __future__ import annotations

import sys

from services.cli.main import main

sys.exit(main())
