"""Fixtures for the config tests: a scratch config directory to write TOML files into."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


class ConfDir:
    """A config directory under tmp_path (``<tmp>/conf.d``) with a ``var/`` beside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "conf.d"
        self.path.mkdir()

    def write(self, name: str, text: str) -> Path:
        file = self.path / name
        file.write_text(textwrap.dedent(text))
        return file

    def file(self, name: str) -> str:
        """The file name as load_config reports it (config dir joined with the name)."""
        return str(self.path / name)

    def make_certificate(self, relative: str = "var/tls") -> tuple[Path, Path]:
        """Dummy PEM files: the loader checks that they exist, not what they hold."""
        directory = self.root / relative
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "cert.pem", directory / "key.pem"
        cert.write_text("-----BEGIN CERTIFICATE-----\n")
        key.write_text("-----BEGIN PRIVATE KEY-----\n")
        return cert, key


@pytest.fixture
def conf(tmp_path: Path) -> ConfDir:
    return ConfDir(tmp_path)
