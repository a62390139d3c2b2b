"""When an artefact was made: now in UTC, or ``SOURCE_DATE_EPOCH`` when set.

One owner, so reproducible builds (``SOURCE_DATE_EPOCH=0 dvc repro``) give byte-identical
checkpoints and survey provenance alike. Operational logs (the inbox ledger) keep real time.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime


def creation_time() -> str:
    """ISO 8601 seconds in UTC, honouring SOURCE_DATE_EPOCH."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return moment.isoformat(timespec="seconds")
