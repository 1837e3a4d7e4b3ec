"""config.toml.example documents every key with its default: checked against the dataclasses."""

import dataclasses
import re
import tomllib
from pathlib import Path

from agent import config as configuration

EXAMPLE = Path(__file__).resolve().parent.parent / "config.toml.example"


def test_example_lists_every_key_with_its_default():
    text = EXAMPLE.read_text()
    doc = tomllib.loads(text)
    for name, cls in configuration.SECTIONS.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        commented = set(re.findall(r"^# (\w+) = ", text, re.M))
        assert set(doc[name]) | (commented & set(fields)) >= set(fields), name
        defaults = cls()
        for key, value in doc[name].items():
            default = getattr(defaults, key)
            if isinstance(default, tuple):
                default = list(default)
            if isinstance(default, Path):
                default = "" if str(default) == "." else str(default)
            assert value == default, f"[{name}] {key}: example says {value!r}, code says {default!r}"


def test_example_loads():
    configuration.from_mapping(tomllib.loads(EXAMPLE.read_text()), env={}, need_credentials=False)
