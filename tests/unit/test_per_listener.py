"""``appliance.hooks.plugin.per_listener`` with the real config loader: what a plugin that
owns an area gets for each listener, and how often its compile step runs."""

from __future__ import annotations

from attrs import field, frozen

from appliance.config import load_config
from appliance.hooks.plugin import per_listener
from appliance.mail.context import SessionContext


@frozen(kw_only=True)
class NotesArea:
    greeting: str = "hello"
    tags: list[str] = field(factory=list)


def session(listener: str) -> SessionContext:
    return SessionContext(session_id="S1", listener=listener, local_ip="127.0.0.1",
                          local_port=25, remote_ip="192.0.2.7", remote_port=40000)


def test_each_distinct_area_is_compiled_once_and_picked_by_listener(tmp_path):
    (tmp_path / "10.toml").write_text(f"""
[queue]
directory = "{tmp_path / 'spool'}"
[notes]
tags = ["a"]
[listeners.mta]
port = 2525
[listeners.relay]
port = 2526
[listeners.submission]
port = 2587
[listeners.submission.notes]
greeting = "welcome"
""")
    config = load_config(tmp_path, plugin_areas={"notes": NotesArea})
    compiled: list[NotesArea] = []

    def compile(area: NotesArea) -> str:
        compiled.append(area)
        return f"{area.greeting} {','.join(area.tags)}"

    notes = per_listener(config, "notes", NotesArea, compile)
    assert len(compiled) == 2  # the global [notes] and submission's own, once each
    assert notes.of(session("mta")) == "hello a"
    assert notes.listeners["relay"] is notes.listeners["mta"] is notes.fallback
    assert notes.of(session("submission")) == "welcome a"  # merged over the global one
    assert notes.of(session("unknown")) == "hello a"  # the global area's


def test_an_area_absent_from_the_configuration_compiles_its_defaults(tmp_path):
    (tmp_path / "10.toml").write_text(f'[queue]\ndirectory = "{tmp_path / "spool"}"\n'
                                      "[listeners.mta]\nport = 2525\n")
    config = load_config(tmp_path)  # no plugin owns [notes] in this configuration
    notes = per_listener(config, "notes", NotesArea, lambda area: area.greeting)
    assert notes.fallback == "hello" and notes.of(session("mta")) == "hello"
