"""The README documents every environment variable the settings read, and every rate limit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from server.config import Settings
from server.ratelimit import DEFAULT_RULES

README = Path(__file__).resolve().parents[2] / "README.md"


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers every name it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def _documented_variables() -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", README.read_text(), re.MULTILINE))


def test_readme_table_lists_every_variable_the_settings_read() -> None:
    env = RecordingEnv()
    Settings.from_env(env)
    assert env.asked, "Settings.from_env read nothing"
    missing = env.asked - _documented_variables()
    assert not missing, f"add to the README's configuration table: {sorted(missing)}"


def test_readme_lists_every_built_in_rate_limit() -> None:
    text = README.read_text()
    for rule in DEFAULT_RULES:
        assert f"`{rule.namespace}` {rule.limit}/{rule.window_secs}" in text, rule
