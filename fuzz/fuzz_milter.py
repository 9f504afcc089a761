"""The milter codec (appliance/clients/milter/codec.py) under arbitrary bytes from a
milter: frames split anywhere, the first taken as the option negotiation reply,
the rest interpreted. Only ProtocolError may come out; a reply text that reaches
the SMTP client is one line; a frame is never buffered beyond its maximum size."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import check_reply_text, main  # noqa: E402

from appliance.clients.milter.codec import (  # noqa: E402
    MAX_FRAME,
    Decision,
    FrameDecoder,
    Modification,
    ProtocolError,
    interpret,
    negotiate,
    required_action,
)


def one_input(data: bytes) -> None:
    if not data:
        return
    step = data[0] % 16 + 1
    decoder = FrameDecoder()
    first = True
    try:
        for pos in range(1, len(data), step):
            decoder.feed(data[pos:pos + step])
            while (resp := decoder.next()) is not None:
                if first:
                    first = False
                    negotiate(resp)
                    continue
                meaning = interpret(resp)
                if isinstance(meaning, Decision):
                    assert meaning.code is None or 400 <= meaning.code <= 599, meaning
                    check_reply_text(meaning.code or 550, meaning.enhanced, meaning.text)
                elif isinstance(meaning, Modification):
                    assert required_action(meaning)
            assert len(decoder._buf) <= MAX_FRAME + 4
    except ProtocolError:
        pass


if __name__ == "__main__":
    main(one_input)
