"""Every input kept in fuzz/corpus/ runs through its harness (without atheris): the
harnesses keep working, and what fuzzing once found stays fixed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
TARGETS = ("engine", "milter", "policy", "config")


def _harness(name: str):
    spec = importlib.util.spec_from_file_location(f"fuzz_{name}", FUZZ / f"fuzz_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", TARGETS)
def test_corpus_replays_clean(name):
    harness = _harness(name)
    files = sorted(p for p in (FUZZ / "corpus" / name).iterdir() if p.is_file())
    assert files, f"fuzz/corpus/{name} is empty"
    for path in files:
        harness.one_input(path.read_bytes())


def test_peer_reply_text_reaches_the_client_on_one_line():
    """Found by fuzzing (fuzz/corpus/milter/bare-cr-in-replycode,
    fuzz/corpus/policy/nul-in-action): a milter's or a policy server's reply text
    with a bare CR or a NUL in it went into the SMTP reply as it was."""
    from appliance.clients.milter.codec import parse_replycode
    from appliance.clients.policy.codec import ReplyReader, parse_action
    from appliance.protocol import Reply

    d = parse_replycode(b"550 5.7.1 first\rsecond\0")
    assert Reply(d.code, d.enhanced, d.text).render() == b"550 5.7.1 first second\r\n"
    a = parse_action(ReplyReader().feed(b"action=REJECT 5.7.1 no\x00\rMAIL FROM:<x>\n\n")["action"])
    assert Reply(554, None, a.text).render() == b"554 5.7.1 no  MAIL FROM:<x>\r\n"


def test_check_reply_catches_a_bad_reply():
    harness = _harness("engine")
    with pytest.raises(AssertionError):
        harness.check_reply(b"250 ok\rMAIL FROM:<x>\r\n")
    with pytest.raises(AssertionError):
        harness.check_reply(b"250-a\r\n251 b\r\n")
    with pytest.raises(AssertionError):
        harness.check_reply(b"250 " + b"x" * 600 + b"\r\n")
    harness.check_reply(b"250-a\r\n250 b\r\n")
