"""The MFA plugin's pages, on one blueprint (``bp``): enrollment, email verification, the
challenge, Modify MFA Options, and the account's devices and FAQ."""

from plugins.mfa.pages import account, challenge, email, enrollment, modify  # noqa: F401 - routes
from plugins.mfa.pages.common import bp

__all__ = ["bp"]
