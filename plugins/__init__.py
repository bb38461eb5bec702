"""Plugins of the identity provider (see ``idp.plugins`` for the interface)."""
