"""The milter codec against byte sequences written out by hand from the protocol
description (Sendmail's libmilter docs and the milter-protocol notes): a 4-byte
big-endian length counting the command byte and the data, the command byte,
then the data (NUL-terminated strings, big-endian integers)."""

from __future__ import annotations

import socket

import pytest

from appliance.clients.milter import codec, parse_socket
from appliance.clients.milter.codec import Decision, Modification, Response

# --- MTA to milter -----------------------------------------------------------------------

def test_option_negotiation_offer():
    assert codec.encode_optneg(6, 0x1FF, 0x1FF7FF) == (
        b"\x00\x00\x00\x0d" b"O" b"\x00\x00\x00\x06" b"\x00\x00\x01\xff" b"\x00\x1f\xf7\xff")
    # what we offer by default: every NO*/NR_* step and SKIP, not RCPT_REJ/LEADSPC
    assert codec.encode_optneg()[-4:] == b"\x00\x0f\xf7\xff"


def test_macros_before_a_command():
    assert codec.encode_macros(b"C", {"j": "mx.example", "{daemon_name}": "mta"}) == (
        b"\x00\x00\x00\x21" b"D" b"C" b"j\x00mx.example\x00{daemon_name}\x00mta\x00")


def test_connect_ipv4_ipv6_unix_unknown():
    assert codec.encode_connect("client.example", "192.0.2.1", 25000) == (
        b"\x00\x00\x00\x1d" b"C" b"client.example\x00" b"4" b"\x61\xa8" b"192.0.2.1\x00")
    assert codec.encode_connect("[2001:db8::1]", "2001:db8::1", 587) == (
        b"\x00\x00\x00\x1e" b"C" b"[2001:db8::1]\x00" b"6" b"\x02\x4b" b"2001:db8::1\x00")
    assert codec.encode_connect("localhost", "/run/s.sock", 0) == (
        b"\x00\x00\x00\x1a" b"C" b"localhost\x00" b"L" b"\x00\x00" b"/run/s.sock\x00")
    assert codec.encode_connect("x", None) == b"\x00\x00\x00\x04" b"C" b"x\x00" b"U"


def test_helo_mail_rcpt_with_esmtp_args():
    assert codec.encode_helo("client.example") == b"\x00\x00\x00\x10Hclient.example\x00"
    assert codec.encode_mail("a@example.org", ["SIZE=100", "BODY=8BITMIME"]) == (
        b"\x00\x00\x00\x28" b"M" b"<a@example.org>\x00SIZE=100\x00BODY=8BITMIME\x00")
    assert codec.encode_mail("") == b"\x00\x00\x00\x04" b"M" b"<>\x00"
    assert codec.encode_rcpt("b@example.net", ["NOTIFY=NEVER"]) == (
        b"\x00\x00\x00\x1e" b"R" b"<b@example.net>\x00NOTIFY=NEVER\x00")


def test_header_body_and_the_simple_commands():
    assert codec.encode_header("Subject", "hi\n there") == (
        b"\x00\x00\x00\x13" b"L" b"Subject\x00hi\n there\x00")
    assert codec.encode_body(b"line\r\n") == b"\x00\x00\x00\x07" b"B" b"line\r\n"
    with pytest.raises(ValueError):
        codec.encode_body(b"x" * 65536)
    for command in (b"T", b"N", b"E", b"A", b"Q", b"K"):
        assert codec.encode_simple(command) == b"\x00\x00\x00\x01" + command


def test_nul_inside_a_string_cannot_split_it():
    assert codec.encode_helo("a\0b") == b"\x00\x00\x00\x04Hab\x00"


# --- milter to MTA -----------------------------------------------------------------------

def test_decoder_reassembles_frames_split_anywhere():
    stream = (b"\x00\x00\x00\x01c" b"\x00\x00\x00\x10y550 5.7.1 no!!\x00"
              b"\x00\x00\x00\x01p")
    dec = codec.FrameDecoder()
    out = []
    for i in range(len(stream)):  # one byte at a time
        dec.feed(stream[i:i + 1])
        while (r := dec.next()) is not None:
            out.append(r)
    assert out == [Response(b"c"), Response(b"y", b"550 5.7.1 no!!\x00"), Response(b"p")]


@pytest.mark.parametrize("length", [b"\x00\x00\x00\x00", b"\x7f\x00\x00\x00"])
def test_decoder_refuses_absurd_lengths(length):
    dec = codec.FrameDecoder()
    dec.feed(length + b"c")
    with pytest.raises(codec.ProtocolError):
        dec.next()


def test_negotiate_version_6_with_no_reply_steps_and_macro_lists():
    reply = Response(b"O", b"\x00\x00\x00\x06" b"\x00\x00\x00\x03"  # ADDHDRS|CHGBODY
                     b"\x00\x01\x10\xc1"  # NOCONNECT|NOEOH|NR_HDR|NR_CONN|NR_DATA
                     b"\x00\x00\x00\x00" b"{client_addr} j\x00"  # SMFIM_CONNECT
                     b"\x00\x00\x00\x05" b"i\x00")  # SMFIM_EOM
    neg = codec.negotiate(reply)
    assert neg.version == 6 and neg.actions == 0x03
    assert not neg.sends(codec.P_NOCONNECT) and not neg.sends(codec.P_NOEOH)
    assert neg.sends(codec.P_NOHELO) and neg.sends(codec.P_NODATA)
    assert not neg.answers(codec.P_NR_HDR) and not neg.answers(codec.P_NR_CONN)
    assert not neg.answers(codec.P_NR_DATA) and neg.answers(codec.P_NR_RCPT)
    assert neg.macros == {"connect": ["{client_addr}", "j"], "eom": ["i"]}
    assert neg.may(codec.F_ADDHDRS) and not neg.may(codec.F_CHGFROM)


def test_negotiate_version_2_gets_no_data_step_and_no_new_actions():
    reply = Response(b"O", b"\x00\x00\x00\x02" b"\x00\x00\x01\xff" b"\x00\x00\x00\x40")
    neg = codec.negotiate(reply, offered_actions=0x1FF)
    assert neg.version == 2
    assert not neg.sends(codec.P_NODATA)  # DATA is a version 6 step
    assert not neg.sends(codec.P_NOEOH) and neg.sends(codec.P_NOBODY)
    assert neg.actions == 0x3F and not neg.skip_ok  # no CHGFROM/ADDRCPT_PAR/SKIP


@pytest.mark.parametrize("data, why", [
    (b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00", "version 1"),
    (b"\x00\x00\x00\x07\x00\x00\x00\x00\x00\x00\x00\x00", "version 7"),
    (b"\x00\x00\x00\x06\x00\x00\x02\x00\x00\x00\x00\x00", "unknown action"),
    (b"\x00\x00\x00\x06\x00\x00\x00\x00\x00\x00\x08\x00", "RCPT_REJ not offered"),
    (b"\x00\x00\x00\x06\x00\x00\x00", "short"),
])
def test_negotiate_refuses(data, why):
    with pytest.raises(codec.ProtocolError):
        codec.negotiate(Response(b"O", data))


@pytest.mark.parametrize("command, action", [
    (b"a", "accept"), (b"c", "continue"), (b"d", "discard"), (b"r", "reject"),
    (b"t", "tempfail"), (b"s", "skip"), (b"4", "tempfail"), (b"f", "tempfail")])
def test_simple_decisions(command, action):
    assert codec.interpret(Response(command)) == Decision(action)


def test_progress_means_keep_waiting():
    assert codec.interpret(Response(b"p")) is None


def test_replycode_custom_text_single_and_multi_line():
    assert codec.interpret(Response(b"y", b"550 5.7.1 Go away\x00")) == Decision(
        "reject", 550, "5.7.1", "Go away")
    assert codec.interpret(Response(b"y", b"421 try later\x00")) == Decision(
        "tempfail", 421, None, "try later")
    multi = b"554-5.7.1 first line\r\n554 5.7.1 second line\x00"
    assert codec.interpret(Response(b"y", multi)) == Decision(
        "reject", 554, "5.7.1", "first line second line")
    for bad in (b"250 ok\x00", b"hello\x00", b"\x00"):
        with pytest.raises(codec.ProtocolError):
            codec.interpret(Response(b"y", bad))


def test_modifications():
    m = codec.interpret
    assert m(Response(b"h", b"X-Spam\x00yes\x00")) == Modification(
        "add_header", name="X-Spam", value="yes")
    assert m(Response(b"i", b"\x00\x00\x00\x00DKIM-Signature\x00v=1\x00")) == Modification(
        "insert_header", name="DKIM-Signature", value="v=1", index=0)
    assert m(Response(b"m", b"\x00\x00\x00\x02Subject\x00\x00")) == Modification(
        "change_header", name="Subject", value="", index=2)  # empty: delete
    assert m(Response(b"e", b"<new@example.org>\x00BODY=8BITMIME\x00")) == Modification(
        "change_sender", value="new@example.org", args="BODY=8BITMIME")
    assert m(Response(b"e", b"<new@example.org>\x00")).args is None
    assert m(Response(b"+", b"<x@example.net>\x00")) == Modification(
        "add_recipient", value="x@example.net")
    added = m(Response(b"2", b"<y@example.net>\x00NOTIFY=NEVER\x00"))
    assert added == Modification("add_recipient", value="y@example.net", args="NOTIFY=NEVER")
    assert codec.required_action(added) == codec.F_ADDRCPT_PAR
    assert codec.required_action(m(Response(b"+", b"<x@example.net>\x00"))) == codec.F_ADDRCPT
    assert m(Response(b"-", b"<x@example.net>\x00")) == Modification(
        "delete_recipient", value="x@example.net")
    assert m(Response(b"b", b"new body\r\n")) == Modification("replace_body", data=b"new body\r\n")
    assert m(Response(b"q", b"looks bad\x00")) == Modification("quarantine", value="looks bad")


@pytest.mark.parametrize("resp", [
    Response(b"Z"), Response(b"h", b"only-name\x00"), Response(b"h", b"no-nul"),
    Response(b"i", b"\x00\x00")])
def test_garbage_is_a_protocol_error(resp):
    with pytest.raises(codec.ProtocolError):
        codec.interpret(resp)


# --- socket specs --------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("inet:127.0.0.1:8891", (socket.AF_INET, ("127.0.0.1", 8891))),
    ("inet:8891@localhost", (socket.AF_INET, ("localhost", 8891))),
    ("inet6:[::1]:8891", (socket.AF_INET6, ("::1", 8891))),
    ("inet:[2001:db8::1]:25", (socket.AF_INET6, ("2001:db8::1", 25))),
    ("unix:/run/opendkim/opendkim.sock", (socket.AF_UNIX, "/run/opendkim/opendkim.sock")),
    ("local:/run/m.sock", (socket.AF_UNIX, "/run/m.sock")),
])
def test_socket_specs(spec, expected):
    assert parse_socket(spec) == expected


@pytest.mark.parametrize("spec", ["inet:host", "inet::25", "inet:h:0", "inet:h:70000",
                                  "unix:relative", "tcp:h:25", ""])
def test_bad_socket_specs(spec):
    with pytest.raises(ValueError):
        parse_socket(spec)
