"""`python -m rlguard`: the same as the `rlguard` command."""

from rlguard.cli import main

raise SystemExit(main())
