"""``python -m qpu_gateway`` is the ``qpu-gateway`` command."""

from __future__ import annotations

import sys

from qpu_gateway.cli import main

sys.exit(main())
