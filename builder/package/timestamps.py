"""The time every member of a wheel is stamped with (SOURCE_DATE_EPOCH): the wheel's
metadata, its zip members and its SBOM all use this one clock."""

from __future__ import annotations

import os
from typing import Mapping

from builder.errors import ConfigurationError

ZIP_EPOCH = 315532800
ZIP_LAST = 4354819199      # 2107-12-31 23:59:59 UTC: a zip member's DOS time ends there


def source_date_epoch(upstream: Mapping | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """The time every member of a wheel is stamped with (reproducible-builds.org's SOURCE_DATE_EPOCH):
    the caller's SOURCE_DATE_EPOCH if set, else the pinned application's date (the recipe's
    `date`, midnight UTC), else 1980-01-01. Two builds of the same pins get the same stamps."""
    raw = environ.get("SOURCE_DATE_EPOCH")
    if raw:
        if not (raw.isascii() and raw.isdigit()):
            raise ConfigurationError(f"SOURCE_DATE_EPOCH={raw[:40]!r}: expected seconds since 1970 (digits only)")
        if len(raw) > 12 or int(raw) > ZIP_LAST:
            raise ConfigurationError(f"SOURCE_DATE_EPOCH={raw[:40]!r} is after 2107-12-31, the last time a zip "
                                     "member can carry; give a time before it")
        return max(int(raw), ZIP_EPOCH)
    date = (upstream or {}).get("date")
    if date:
        import datetime

        day = datetime.date.fromisoformat(str(date))
        return max(int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp()),
                   ZIP_EPOCH)
    return ZIP_EPOCH
