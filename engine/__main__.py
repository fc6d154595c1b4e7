"""`python -m engine`: the same as the `pacs-engine` command."""

from __future__ import annotations

from engine.cli.main import main

if __name__ == "__main__":  # worker processes started with "spawn" import this module too
    raise SystemExit(main())
