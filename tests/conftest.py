"""Suite-wide settings. In CI (CI=true) a missing optional service fails its tests instead of skipping."""

from __future__ import annotations

import os

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
