"""Authentication context classes (``acr``) and methods references (``amr``).

The ladder is a list of levels with a rank; each level knows whether a session meets it
for a client. The core registers the password level; plugins register higher ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

ACR_PASSWORD = "urn:idp:acr:pwd"  # noqa: S105 - a claim value, not a secret


@dataclass(frozen=True)
class AcrLevel:
    """One ``acr`` value. ``ladder`` levels are reported when a client asks for none;
    aliases (``ladder=False``) are reported only when asked for."""

    value: str
    rank: int
    is_met: Callable[[object, object], bool]
    ladder: bool = True


def _password_met(session, client) -> bool:
    return session is not None and any(e.get("method") == "pwd" for e in session.events or [])


PASSWORD_LEVEL = AcrLevel(ACR_PASSWORD, rank=10, is_met=_password_met)


class AcrLadder:
    def __init__(self, levels: list[AcrLevel]):
        self.levels = sorted(levels, key=lambda lv: lv.rank)
        self.by_value = {lv.value: lv for lv in self.levels}

    def values(self) -> list[str]:
        return [lv.value for lv in self.levels]

    def is_met(self, value: str, session, client) -> bool:
        level = self.by_value.get(value)
        return level is not None and level.is_met(session, client)

    def resolve(self, session, client, requested: list[str]) -> str | None:
        """The ``acr`` to report: the highest requested value that is met, else the
        highest ladder value that is met."""
        met_requested = [
            self.by_value[v] for v in requested if v in self.by_value and self.is_met(v, session,
                                                                                   client)
        ]
        if met_requested:
            return max(met_requested, key=lambda lv: lv.rank).value
        met = [lv for lv in self.levels if lv.ladder and lv.is_met(session, client)]
        return met[-1].value if met else None


def amr_for(session) -> list[str]:
    """Every method checked in the session, plus ``mfa`` when two distinct factors were."""
    values: list[str] = []
    factors: set[str] = set()
    for event in session.events or []:
        for value in event.get("amr", []):
            if value not in values:
                values.append(value)
        if event.get("factor"):
            factors.add(event["factor"])
    if len(factors) >= 2 and "mfa" not in values:
        values.append("mfa")
    return values
