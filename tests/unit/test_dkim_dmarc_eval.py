"""DKIM verification (appliance/dkim.py) and DMARC evaluation
(plugins/dmarc/policy.py) with keys made here, messages signed by dkimpy's real
signer and records served by the real DNS server (tests/dns_fixture.py), asked
through the appliance's resolver. tests/integration/test_dkim_dmarc.py runs the
plugins in the server."""

from __future__ import annotations

import pytest
from appliance_plugins.dmarc.policy import (
    aligned,
    evaluate,
    from_domain,
    organizational_domain,
    parse_record,
)

from appliance.dkim import verify
from appliance.dns import Resolver
from tests.dkim_keys import Ed25519Key, Key

MSG = (b"From: Alice <alice@sig.dkim.test>\r\nTo: b@example.net\r\nSubject: hi\r\n"
       b"Message-ID: <1@sig.dkim.test>\r\n\r\nHello.\r\n")


@pytest.fixture(scope="module")
def keys(dns_server):
    k1024, k2048, other, ed = Key(1024), Key(2048), Key(1024), Ed25519Key()
    dns_server.add_records([
        ed.record("ed", "sig.dkim"),
        k1024.record("sel", "sig.dkim"),
        k2048.record("big", "sig.dkim"),
        'bad._domainkey.sig.dkim TXT "v=DKIM1; k=rsa; p=AAAAnotakey"',
        '_dmarc.reject.dmarcu TXT "v=DMARC1; p=reject; rua=mailto:d@reject.dmarcu.test"',
        '_dmarc.dmarcu TXT "v=DMARC1; p=none; sp=quarantine"',
        '_dmarc.strict.dmarcu TXT "v=DMARC1; p=reject; adkim=s; aspf=s"',
        '_dmarc.pct.dmarcu TXT "v=DMARC1; p=reject; pct=50"',
        '_dmarc.twice.dmarcu TXT "v=DMARC1; p=reject"',
        '_dmarc.twice.dmarcu TXT "v=DMARC1; p=none"',
        '_dmarc.spf1.dmarcu TXT "v=spf1 -all"',
    ])
    return {"1024": k1024, "2048": k2048, "other": other, "ed25519": ed}


@pytest.fixture(scope="module")
def lookup(dns_server):
    return Resolver([dns_server.nameserver], timeout=1.0, retries=0).budget(5)


def results(sigs):
    return [(s.result, s.domain, s.selector) for s in sigs]


def test_pass_1024_and_2048_bit_keys(keys, lookup):
    signed = keys["1024"].sign(MSG, "sig.dkim.test")
    signed = keys["2048"].sign(signed, "sig.dkim.test", "big", (b"relaxed", b"relaxed"))
    sigs = verify(signed, lookup)
    assert results(sigs) == [("pass", "sig.dkim.test", "big"), ("pass", "sig.dkim.test", "sel")]
    assert sigs[0].identity == "@sig.dkim.test" and len(sigs[0].b) == 12
    ar = sigs[0].auth_result()
    assert ar.render().startswith("dkim=pass header.d=sig.dkim.test header.i=@sig.dkim.test "
                                  "header.s=big header.b=")


def test_ed25519_pass_and_fail(keys, lookup):
    signed = keys["ed25519"].sign(MSG, "sig.dkim.test")
    assert results(verify(signed, lookup)) == [("pass", "sig.dkim.test", "ed")]
    changed = verify(signed.replace(b"Hello.", b"Hellp."), lookup)
    assert results(changed) == [("fail", "sig.dkim.test", "ed")]


def test_body_changed_after_signing_fails(keys, lookup):
    signed = keys["1024"].sign(MSG, "sig.dkim.test")
    sigs = verify(signed.replace(b"Hello.", b"Hellp."), lookup)
    assert results(sigs) == [("fail", "sig.dkim.test", "sel")]
    assert sigs[0].reason == "body hash mismatch"
    # a signed header changed: the signature itself does not verify
    sigs = verify(signed.replace(b"Subject: hi", b"Subject: ho"), lookup)
    assert results(sigs) == [("fail", "sig.dkim.test", "sel")]
    # signed by another key than the one published
    sigs = verify(keys["other"].sign(MSG, "sig.dkim.test"), lookup)
    assert results(sigs) == [("fail", "sig.dkim.test", "sel")]


def test_no_signature_no_key_bad_key_small_key(keys, lookup):
    assert results(verify(MSG, lookup)) == [("none", "", "")]
    sigs = verify(keys["1024"].sign(MSG, "sig.dkim.test", "gone"), lookup)
    assert results(sigs) == [("permerror", "sig.dkim.test", "gone")]
    assert sigs[0].reason == "no key for signature at gone._domainkey.sig.dkim.test"
    sigs = verify(keys["1024"].sign(MSG, "sig.dkim.test", "bad"), lookup)
    assert sigs[0].result == "permerror" and sigs[0].reason.startswith("unusable key")
    # min_key_bits: the 1024-bit key is refused at 1025, accepted at 1024
    signed = keys["1024"].sign(MSG, "sig.dkim.test")
    assert verify(signed, lookup, min_key_bits=1025)[0].result == "permerror"
    assert verify(signed, lookup, min_key_bits=1024)[0].result == "pass"


def test_max_signatures_and_temperror(keys, dns_server, lookup):
    signed = MSG
    for _ in range(3):
        signed = keys["1024"].sign(signed, "sig.dkim.test")
    assert len(verify(signed, lookup, max_signatures=2)) == 2
    assert len(verify(signed, lookup, max_signatures=3)) == 3
    stalled = keys["1024"].sign(MSG, "stall.example")
    quick = Resolver([dns_server.nameserver], timeout=0.3, retries=0).budget(1)
    sigs = verify(stalled, quick)
    assert sigs[0].result == "temperror" and sigs[0].domain == "stall.example"


def test_parse_record():
    r = parse_record("v=DMARC1; p=Reject; sp=none; pct=20; adkim=s", "x.test")
    assert (r.p, r.sp, r.pct, r.adkim, r.aspf) == ("reject", "none", 20, "s", "r")
    assert parse_record("v=DMARC1; p=quarantine", "x.test").sp == "quarantine"
    assert parse_record("p=reject; v=DMARC1", "x.test") is None      # v= must come first
    assert parse_record("v=DMARC1; p=bogus", "x.test") is None
    assert parse_record("v=DMARC1; p=bogus; rua=mailto:a@x.test", "x.test").p == "none"
    assert parse_record("v=spf1 -all", "x.test") is None
    assert parse_record("v=DMARC1; p=reject; pct=300", "x.test").pct == 100


def test_organizational_domain_and_alignment():
    assert organizational_domain("Mail.Example.CO.UK") == "example.co.uk"
    assert organizational_domain("a.b.dmarcu.test") == "dmarcu.test"
    assert organizational_domain("x.github.io") == "x.github.io"   # private PSL section
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    assert aligned("EXAMPLE.com", "example.com.", "s")
    assert not aligned("a.github.io", "b.github.io", "r")
    assert not aligned("", "example.com", "r")


def test_from_domain():
    assert from_domain([" Alice <alice@Example.ORG>"]) == ("example.org", "")
    assert from_domain([" a@x.test, b@x.test"]) == ("x.test", "")
    assert from_domain([" a@x.test", " b@y.test"])[1]
    assert from_domain([])[1] == "no From: field"
    assert from_domain([" undisclosed"])[1]


def test_dmarc_pass_by_dkim_or_spf_alignment(keys, lookup):
    frm = [" alice@reject.dmarcu.test"]
    out = evaluate(frm, ("none", ""), [("pass", "dmarcu.test")], lookup)
    assert (out.result, out.policy, out.reason) == ("pass", "reject", "DKIM aligned")
    out = evaluate(frm, ("pass", "bounce.reject.dmarcu.test"), [("fail", "reject.dmarcu.test")],
                   lookup)
    assert (out.result, out.reason) == ("pass", "SPF aligned")
    # a DKIM pass of another organization does not count
    out = evaluate(frm, ("softfail", "reject.dmarcu.test"), [("pass", "sig.dkim.test")], lookup)
    assert (out.result, out.policy, out.disposition) == ("fail", "reject", "reject")


def test_strict_alignment(lookup):
    frm = [" alice@strict.dmarcu.test"]
    assert evaluate(frm, ("none", ""), [("pass", "dmarcu.test")], lookup).result == "fail"
    assert evaluate(frm, ("pass", "mail.strict.dmarcu.test"), [], lookup).result == "fail"
    assert evaluate(frm, ("pass", "strict.dmarcu.test"), [], lookup).result == "pass"


def test_subdomain_policy_from_the_organizational_domain(lookup):
    out = evaluate([" a@deep.sub.dmarcu.test"], ("none", ""), [], lookup)
    assert (out.result, out.policy, out.disposition) == ("fail", "quarantine", "quarantine")
    out = evaluate([" a@dmarcu.test"], ("none", ""), [], lookup)
    assert (out.result, out.policy) == ("fail", "none")


def test_pct_sampling_boundary(lookup):
    frm = [" a@pct.dmarcu.test"]
    assert evaluate(frm, ("none", ""), [], lookup, sample=49.99).disposition == "reject"
    assert evaluate(frm, ("none", ""), [], lookup, sample=50).disposition == "quarantine"


def test_none_temperror_permerror(dns_server, lookup):
    assert evaluate([" a@twice.dmarcu.test"], ("none", ""), [], lookup).result == "none"
    # a TXT record at _dmarc that is not DMARC is no record: the organization's applies
    out = evaluate([" a@spf1.dmarcu.test"], ("none", ""), [], lookup)
    assert (out.result, out.policy) == ("fail", "quarantine")
    assert evaluate([" a@nothing.test"], ("none", ""), [], lookup).result == "none"
    quick = Resolver([dns_server.nameserver], timeout=0.3, retries=0).budget(1)
    out = evaluate([" a@x.stall.example"], ("none", ""), [], quick)
    assert out.result == "temperror" and out.domain == "x.stall.example"
    out = evaluate([" a@x.test", " b@y.test"], ("pass", "x.test"), [], lookup)
    assert out.result == "permerror"
