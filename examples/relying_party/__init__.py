"""A demo OpenID Connect relying party (Authlib's Flask client); see :mod:`.app`."""

from examples.relying_party.app import EndedSessions, create_app

__all__ = ["EndedSessions", "create_app"]
