"""The policy codec (appliance/clients/policy/codec.py) under arbitrary bytes from a
policy server, read in pieces. Only PolicyProtocolError may come out; the reader
never holds more than MAX_REPLY bytes without an error; an action's code is a
4xx/5xx whose enhanced code has the same class, and its text is one line (it
becomes the SMTP client's reply)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import check_reply_text, main  # noqa: E402

from appliance.clients.policy.codec import (  # noqa: E402
    MAX_REPLY,
    PolicyProtocolError,
    ReplyReader,
    parse_action,
    parse_header,
)


def one_input(data: bytes) -> None:
    if not data:
        return
    step = data[0] % 32 + 1
    reader = ReplyReader()
    try:
        for pos in range(1, len(data), step):
            attributes = reader.feed(data[pos:pos + step])
            if attributes is None:
                assert len(reader._buf) <= MAX_REPLY + step
                continue
            action = parse_action(attributes["action"])
            check_reply_text(action.code or 550, action.enhanced, action.text)
            if action.code is not None:
                assert 400 <= action.code <= 599, action
                assert action.enhanced is None or action.enhanced[0] == str(action.code)[0]
            if action.kind == "PREPEND":
                parse_header(action.text)
            return
    except PolicyProtocolError:
        pass


if __name__ == "__main__":
    main(one_input)
