"""`python -m engine`: the same as the `pacs-engine` command."""

from __future__ import annotations

from engine.cli.main import main

raise SystemExit(main())
