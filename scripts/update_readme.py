"""Regenerate the command reference in README.md from the command registry (`make docs`)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.commands.catalog import all_commands  # noqa: E402
from bot.commands.reference import replace_reference  # noqa: E402

readme = ROOT / "README.md"
readme.write_text(replace_reference(readme.read_text(), all_commands()))
print("README.md command reference updated")
