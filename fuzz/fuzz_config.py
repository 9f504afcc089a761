"""The config loader (appliance/config/) under arbitrary conf.d files, with the
installed plugins' schemas as the server loads them. Only ConfigError may come
out, and every line of it names the file (or the config directory)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import main  # noqa: E402

from appliance.config import ConfigError, load_config  # noqa: E402
from appliance.hooks.host import discover, loader_inputs  # noqa: E402

INPUTS = loader_inputs(discover())
CONFIG_DIR = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
FILES = (CONFIG_DIR / "00-base.toml", CONFIG_DIR / "50-local.toml")


def one_input(data: bytes) -> None:
    # Two files (split at the first NUL) so that merging is fuzzed too.
    first, _, second = data.partition(b"\x00")
    FILES[0].write_bytes(first)
    FILES[1].write_bytes(second)
    try:
        load_config(CONFIG_DIR, **INPUTS)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            assert line.startswith(str(CONFIG_DIR)) or line.startswith(" "), line


if __name__ == "__main__":
    main(one_input)
