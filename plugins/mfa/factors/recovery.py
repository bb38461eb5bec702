"""Recovery codes: ten single-use codes, shown once, stored as digests, regenerable."""

from __future__ import annotations

import secrets

from sqlalchemy import delete, update

from idp.plugin_api import db, digest, utcnow
from plugins.mfa.factors.base import Factor
from plugins.mfa.models import RecoveryCode

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
COUNT = 10


def _normalise(code: str) -> str:
    return "".join(ch for ch in (code or "").upper() if ch.isalnum())


class RecoveryFactor(Factor):
    kind = "recovery"
    label = "Recovery code"
    amr = ("rcode",)
    group = "recovery"
    aal2 = True
    answer_label = "Recovery code"
    choice_label = "Use a recovery code"
    one_time_code = False

    def describe(self, destination):
        return "one of your recovery codes"

    def instructions(self, destination):
        return ("Enter one of the recovery codes you saved when you set up MFA. Each code "
                "works once.")

    def passed_notice(self, user_id):
        return "recovery_code_used", {"remaining": self.remaining(user_id)}

    def usable(self, user_id, enrolled):
        return self.remaining(user_id) > 0

    def check(self, user_id, pending_id, row, answer, purpose):
        return self.verify(user_id, answer), None

    @staticmethod
    def generate(user_id: int) -> list[str]:
        """Replace every recovery code of the user with ten new ones (80 bits each)."""
        db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        codes = []
        for _ in range(COUNT):
            raw = "".join(secrets.choice(ALPHABET) for _ in range(16))
            codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
            db.session.add(RecoveryCode(user_id=user_id, code_digest=digest(raw)))
        return codes

    @staticmethod
    def remaining(user_id: int) -> int:
        return db.session.scalar(
            db.select(db.func.count()).select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
        )

    def verify(self, user_id: int, code: str) -> bool:
        raw = _normalise(code)
        if len(raw) != 16:
            return False
        used = db.session.execute(
            update(RecoveryCode)
            .where(RecoveryCode.user_id == user_id, RecoveryCode.code_digest == digest(raw),
                   RecoveryCode.used_at.is_(None))
            .values(used_at=utcnow())
        )
        return used.rowcount == 1
