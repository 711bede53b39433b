"""Every setting is in the settings catalogue, local.settings.sample.json and the README's table."""

from __future__ import annotations

import json
import re
from pathlib import Path

from shared.config import Settings
from shared.settings_catalogue import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def sample_values() -> dict[str, str]:
    document = json.loads((ROOT / "local.settings.sample.json").read_text())
    values: dict[str, str] = document["Values"]
    return values


def readme_settings() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)` \|", section, re.MULTILINE))


def test_sample_settings_are_exactly_the_known_settings() -> None:
    assert set(sample_values()) == {s.name for s in SETTINGS}


def test_readme_table_lists_exactly_the_known_settings() -> None:
    assert readme_settings() == {s.name for s in SETTINGS}


def test_sample_values_match_the_defaults_and_validate() -> None:
    values = sample_values()
    for spec in SETTINGS:
        if spec.default is not None:
            assert values[spec.name] == spec.default, spec.name
    Settings.from_environ(values)


def test_readme_gives_each_setting_its_default() -> None:
    text = (ROOT / "README.md").read_text()
    for spec in SETTINGS:
        if spec.default is not None:
            assert re.search(
                rf"^\| `{spec.name}` \| `{re.escape(spec.default)}` \|", text, re.MULTILINE
            ), spec.name
