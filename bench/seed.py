"""Bulk accounts for the benchmark: ``python -m bench.seed COUNT TEMPLATE_USER SEED``.

Runs with the IdP's environment (``IDP_*``), in the application's context. The template user
was created by ``idp users create``; every account added here gets a copy of its password
hash, so each row holds a real argon2id hash made by ``idp.passwords`` with the IdP's
parameters (one hash computed once, instead of one per row, which would take hours for
100 000 accounts). Verifying it costs exactly what verifying any other user's hash costs.

Every ``bench-*`` account (the template user too) is enrolled in MFA with an authentication
app whose secret the benchmark derives from ``SEED`` and the user name (``totp_secret``),
stored encrypted as the plugin stores it. Prints one JSON line: counts and the parameters
read back from the hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import uuid
from datetime import datetime

USERNAME_FORMAT = "bench-{:06d}"
CREATED_AT = datetime(2025, 6, 1)  # after the cutoff: MFA is mandatory for these accounts
BATCH = 5000


def totp_secret(seed: str, username: str) -> str:
    """The authenticator-app secret of a benchmark account (base32, 160 bits)."""
    raw = hashlib.sha256(f"{seed}:{username}".encode()).digest()[:20]
    return base64.b32encode(raw).decode()


def seed_users(count: int, template: str, seed: str) -> dict:
    import argon2
    from sqlalchemy import insert, select

    from idp import create_app
    from idp.crypto import encrypt
    from idp.extensions import db
    from idp.models import User
    from idp.timeutil import utcnow
    from plugins.mfa.models import MfaAccount, MfaFactor

    app = create_app()
    with app.app_context():
        source = db.session.scalar(select(User).filter_by(username=template))
        if source is None:
            raise SystemExit(f"no user {template!r}: create it with `idp users create` first")
        parameters = argon2.extract_parameters(source.password_hash)
        config = app.config
        if (parameters.type is not argon2.Type.ID
                or parameters.time_cost != config["IDP_ARGON2_TIME_COST"]
                or parameters.memory_cost != config["IDP_ARGON2_MEMORY_KIB"]
                or parameters.parallelism != config["IDP_ARGON2_PARALLELISM"]):
            raise SystemExit(f"the template hash is not argon2id with the IdP's "
                             f"parameters: {parameters}")
        existing = set(db.session.scalars(select(User.username)))
        names = [USERNAME_FORMAT.format(i) for i in range(count)]
        new = [name for name in names if name not in existing]
        for start in range(0, len(new), BATCH):
            db.session.execute(insert(User), [
                {"username": name, "email": f"{name}@bench.example", "email_verified": True,
                 "password_hash": source.password_hash, "created_at": CREATED_AT,
                 "disabled": False, "sub": str(uuid.uuid4())}
                for name in new[start:start + BATCH]
            ])
        db.session.commit()
        ids = dict(db.session.execute(
            select(User.username, User.id).where(User.username.like("bench-%"))).all())
        enrolled = set(db.session.scalars(select(MfaFactor.user_id)))
        now = utcnow()
        todo = [name for name in names if ids[name] not in enrolled]
        for start in range(0, len(todo), BATCH):
            chunk = todo[start:start + BATCH]
            db.session.execute(insert(MfaAccount), [
                {"user_id": ids[name], "mfa_email": f"{name}@bench.example",
                 "mfa_email_verified_at": now, "enrolled_at": now, "failures": 0,
                 "created_at": now}
                for name in chunk
            ])
            db.session.execute(insert(MfaFactor), [
                {"user_id": ids[name], "kind": "totp", "last_step": 0, "created_at": now,
                 "secret_encrypted": encrypt(totp_secret(seed, name))}
                for name in chunk
            ])
        db.session.commit()
        total = db.session.scalar(select(db.func.count()).select_from(User))
        return {"users": total, "added": len(new), "enrolled": len(todo),
                "argon2": {"type": parameters.type.name, "time_cost": parameters.time_cost,
                           "memory_cost_kib": parameters.memory_cost,
                           "parallelism": parameters.parallelism}}


def main() -> None:
    count, template, seed = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    print(json.dumps(seed_users(count, template, seed)), flush=True)


if __name__ == "__main__":
    main()
