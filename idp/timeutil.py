"""Time helpers: the database stores naive UTC datetimes; tokens carry epoch seconds."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def epoch(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp())


def from_epoch(seconds: int | float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
