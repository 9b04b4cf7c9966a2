"""``python -m sentinel_forwarder``: the ``sentinel-forwarder`` command, where the script is not on PATH."""

from __future__ import annotations

import sys


def _run() -> None:
    try:
        from .cli import main
    except ImportError as exc:  # click or rich missing: the cli extra is not installed
        sys.exit(
            f"sentinel-forwarder: the command line needs the 'cli' extra ({exc}); "
            "install it with: python -m pip install 'sentinel-forwarder[cli]'"
        )
    main(prog_name="sentinel-forwarder")


if __name__ == "__main__":
    _run()
