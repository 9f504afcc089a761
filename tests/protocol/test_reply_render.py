"""A reply is rendered one line per text line, whatever the text holds."""

from __future__ import annotations

from appliance.protocol import Reply


def test_cr_lf_nul_in_reply_text_become_spaces():
    reply = Reply(554, "5.7.1", "no\rthanks\x00\nMAIL FROM:<x>")
    assert reply.render() == b"554 5.7.1 no thanks  MAIL FROM:<x>\r\n"


def test_multi_line_replies_keep_their_lines():
    assert Reply(250, None, ["a\nb", "c"]).render() == b"250-a b\r\n250 c\r\n"
