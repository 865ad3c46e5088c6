from pathlib import Path

from bot.commands.catalog import all_commands
from bot.commands.reference import replace_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_command_reference_matches_the_registry():
    text = README.read_text()
    assert replace_reference(text, all_commands()) == text, "run `make docs` to update README.md"


def test_readme_quick_start_has_exactly_the_two_commands():
    text = README.read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in quick.splitlines() if line.startswith("make ")]
    assert commands == ["make demo", "make test"]
