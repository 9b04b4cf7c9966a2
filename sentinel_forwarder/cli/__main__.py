"""``python -m sentinel_forwarder.cli``: the same command as ``python -m sentinel_forwarder``."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    main()
