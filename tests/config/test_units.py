"""Size and Duration: every accepted spelling, every rejected one, and how they print."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.config import ConfigError, Duration, Size, load_config
from appliance.config.units import format_duration, format_size

from .plugin_fixtures import PLUGINS

KIB, MIB, GIB = 1024, 1024**2, 1024**3
SIZE_MESSAGE = (
    'expected a number of bytes or a size with a unit such as "10 MiB", "512 KiB" or "10 MB"'
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("100 B", 100),
        ("100B", 100),
        ("512 KiB", 512 * KIB),
        ("10 MiB", 10 * MIB),
        ("1 GiB", GIB),
        ("1 TiB", 1024 * GIB),
        ("10240 KB", 10_240_000),
        ("10240 kB", 10_240_000),
        ("10 MB", 10_000_000),
        ("2 GB", 2_000_000_000),
        ("1 TB", 10**12),
        ("10 mib", 10 * MIB),
        ("10MIB", 10 * MIB),
        ("1.5 KiB", 1536),
        ("  7 kib  ", 7 * KIB),
        (0, 0),
        (4096, 4096),
    ],
)
def test_size_accepts(text: str | int, expected: int) -> None:
    size = Size(text)
    assert size == expected
    assert isinstance(size, int)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10", "expected a number of bytes or a size with a unit"),
        ("10 XB", "expected a number of bytes or a size with a unit"),
        ("10 M", "expected a number of bytes or a size with a unit"),
        ("10 K", "expected a number of bytes or a size with a unit"),
        ("MiB", "expected a number of bytes or a size with a unit"),
        ("", "expected a number of bytes or a size with a unit"),
        ("ten MiB", "expected a number of bytes or a size with a unit"),
        ("10 MiB 5", "expected a number of bytes or a size with a unit"),
        ("1,5 MiB", "expected a number of bytes or a size with a unit"),
        ("1.5 B", "expected a size that is a whole number of bytes"),
        ("-1 MiB", "expected a size that is not negative"),
        (-1, "expected a size that is not negative"),
        (True, "expected a number of bytes or a size with a unit"),
        (1.5, "expected a number of bytes or a size with a unit"),
    ],
)
def test_size_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Size(value)  # type: ignore[arg-type]


def test_size_prints_digits_and_reprs_with_unit() -> None:
    size = Size("10 MiB")
    # str() stays the number: the server writes it into "250-SIZE 10485760".
    assert str(size) == "10485760"
    assert f"SIZE {size}" == "SIZE 10485760"
    assert repr(size) == "Size('10 MiB')"
    assert repr(Size(1000)) == "Size('1 kB')"
    assert repr(Size(1001)) == "Size('1001 B')"


@given(st.integers(min_value=0, max_value=2**50))
def test_size_format_parses_back(n: int) -> None:
    assert Size(format_size(n)) == n


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("120s", 120),
        ("15m", 900),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1d2h3m4s5ms", 93784.005),
        ("2m 30s", 150),
        ("1.5s", 1.5),
        ("1.5h", 5400),
        ("0s", 0),
        ("1H", 3600),
        (" 30s ", 30),
    ],
)
def test_duration_accepts(text: str, seconds: float) -> None:
    duration = Duration(text)
    assert duration == pytest.approx(seconds)
    assert isinstance(duration, float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("30", 'expected a duration with a unit such as "120s"'),
        ("30 x", 'expected a duration with a unit such as "120s"'),
        ("30 sec", 'expected a duration with a unit such as "120s"'),
        ("1 hour", 'expected a duration with a unit such as "120s"'),
        ("1m1h", 'expected a duration with a unit such as "120s"'),
        ("1h1h", 'expected a duration with a unit such as "120s"'),
        ("1mss", 'expected a duration with a unit such as "120s"'),
        ("", 'expected a duration with a unit such as "120s"'),
        ("ms", 'expected a duration with a unit such as "120s"'),
        ("-5s", "expected a duration that is not negative"),
        (-1, "expected a duration that is not negative"),
        (True, 'expected a duration with a unit such as "120s"'),
    ],
)
def test_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Duration(value)  # type: ignore[arg-type]


def test_duration_prints_seconds_and_reprs_with_unit() -> None:
    assert str(Duration("1h30m")) == "5400.0"
    assert repr(Duration("1h30m")) == "Duration('1h30m')"
    assert repr(Duration("500ms")) == "Duration('500ms')"
    assert repr(Duration(0.0001)) == "Duration('0.0001s')"


@given(st.integers(min_value=0, max_value=10**10))
def test_duration_format_parses_back(millis: int) -> None:
    duration = Duration(millis / 1000)
    assert Duration(format_duration(duration)) == pytest.approx(duration)


# --- the same rules through a config file -------------------------------------------


@pytest.mark.parametrize("spelling", ['"20 MiB"', '"20MiB"', "20971520", '"20 mib"'])
def test_size_key_in_config(conf, spelling: str) -> None:
    conf.write("10-limits.toml", f"[limits]\nmax_message_size = {spelling}\n")
    assert load_config(conf.path).limits.max_message_size == 20 * MIB


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ('"20"', SIZE_MESSAGE),
        ('"20 XB"', SIZE_MESSAGE),
        ("20.5", SIZE_MESSAGE),
        ("true", SIZE_MESSAGE),
        ('"-2 MiB"', "expected a size that is not negative"),
        ("-2", "expected a size that is not negative"),
        ('"512 B"', 'expected a size of at least "1 KiB"'),
    ],
)
def test_bad_size_in_config(conf, spelling: str, expected: str) -> None:
    conf.write("10-limits.toml", f"[limits]\nmax_message_size = {spelling}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [
        f"{conf.file('10-limits.toml')}: limits.max_message_size: {expected} (got {spelling})"
    ]


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("120", 'expected a duration with a unit such as "120s", "15m" or "1h30m"'),
        ("1.5", 'expected a duration with a unit such as "120s", "15m" or "1h30m"'),
        ('"120"', 'expected a duration with a unit such as "120s", "15m" or "1h30m"'),
        ('"2 minutes"', 'expected a duration with a unit such as "120s", "15m" or "1h30m"'),
        ('"-2m"', "expected a duration that is not negative"),
        ('"0s"', "expected a duration longer than 0s"),
    ],
)
def test_bad_duration_in_config(conf, spelling: str, expected: str) -> None:
    conf.write("10-limits.toml", f"[limits]\ncommand_timeout = {spelling}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path)
    assert caught.value.errors == [
        f"{conf.file('10-limits.toml')}: limits.command_timeout: {expected} (got {spelling})"
    ]


def test_plugin_fields_use_the_same_units(conf) -> None:
    conf.write(
        "50-plugins.toml",
        """
        [plugins.greylist]
        max_size = "2 MiB"
        delay = "1h30m"
        """,
    )
    greylist = load_config(conf.path, PLUGINS).plugins["greylist"]
    assert greylist.max_size == 2 * MIB and isinstance(greylist.max_size, Size)
    assert greylist.delay == 5400 and isinstance(greylist.delay, Duration)


def test_plugin_unit_errors_name_the_plugin_key(conf) -> None:
    conf.write(
        "50-plugins.toml",
        """
        [plugins.greylist]
        max_size = "2 MeB"
        delay = 90
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(conf.path, PLUGINS)
    file = conf.file("50-plugins.toml")
    assert caught.value.errors == [
        f"{file}: plugins.greylist.max_size: expected a number of bytes or a size with a unit"
        f' such as "10 MiB", "512 KiB" or "10 MB" (got "2 MeB")',
        f'{file}: plugins.greylist.delay: expected a duration with a unit such as "120s",'
        f' "15m" or "1h30m" (got 90)',
    ]
