"""The environment of a bench's child process: which checkout's pipeline it imports."""

from __future__ import annotations

import os
from pathlib import Path


def python_path(checkout: Path) -> str:
    """PYTHONPATH for a child that must import ``checkout``'s pipeline (the editable install would
    otherwise give every checkout's bench this repository's code), keeping the entries it already
    had after it (a GPU host's carried wheels in /tmp/site)."""
    return os.pathsep.join([str(checkout), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
