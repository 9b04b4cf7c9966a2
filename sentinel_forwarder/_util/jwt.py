"""Read the claims of a JWT-shaped bearer token without verifying it (``check`` and the emulator use it)."""

from __future__ import annotations

__all__ = ["b64url_json", "token_claims"]

import base64
import binascii
import json
from typing import Any


def b64url_json(segment: str) -> Any:
    """Decode one base64url segment (padding optional) of a JWT as JSON."""
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def token_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT-shaped token (signature not checked), or ``None`` for an opaque token.

    :param token: A bearer token.
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    try:
        header = b64url_json(parts[0])
        claims = b64url_json(parts[1])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or "alg" not in header or not isinstance(claims, dict):
        return None
    return claims
