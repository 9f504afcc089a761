"""Authentication-Results and Received-SPF fields, checked with the authres parser."""

from __future__ import annotations

import authres

from appliance.mail.authresults import AuthResult, add_fields, authserv_id_of
from appliance.mail.headers import Headers


def _parse(value: str):
    return authres.AuthenticationResultsHeader.parse(
        "Authentication-Results: " + value.replace("\r\n", ""))


def test_one_field_with_every_result_parses():
    headers = Headers([("Subject", " hi")])
    results = [
        AuthResult("iprev", "pass", {"policy.iprev": "127.0.0.1"}, comment="localhost.rdns.test"),
        AuthResult("spf", "fail", {"smtp.mailfrom": "bob@fail.spf.test"},
                   reason="fail.spf.test does not authorize 127.0.0.1"),
        AuthResult("dkim", "pass", {"header.d": "example.org", "header.s": "sel"}),
    ]
    assert add_fields(headers, "mx.test.example", results,
                      {"client_ip": "127.0.0.1", "envelope_from": "bob@fail.spf.test",
                       "helo": "client.example"})
    names = [n for n, _ in headers]
    assert names[:2] == ["Authentication-Results", "Received-SPF"]
    parsed = _parse(headers.read("Authentication-Results"))
    assert parsed.authserv_id == "mx.test.example"
    by_method = {r.method: r for r in parsed.results}
    assert by_method["spf"].result == "fail"
    assert by_method["spf"].reason == "fail.spf.test does not authorize 127.0.0.1"
    assert by_method["spf"].smtp_mailfrom == "bob@fail.spf.test"
    assert by_method["iprev"].policy_iprev == "127.0.0.1"
    assert by_method["dkim"].header_d == "example.org"
    spf = headers.read("Received-SPF")
    assert spf.startswith("Fail (")
    assert "client-ip=127.0.0.1;" in spf and "identity=mailfrom" in spf
    assert "receiver=mx.test.example" in spf


def test_forged_fields_with_our_authserv_id_are_removed_others_kept():
    headers = Headers([("Authentication-Results", " MX.test.example; spf=pass"),
                       ("Authentication-Results", " other.example; dkim=pass"),
                       ("Subject", " hi")])
    assert not add_fields(headers, "mx.test.example", [])       # no check ran: nothing added
    assert headers.get_all("Authentication-Results") == ["other.example; dkim=pass"]


def test_authserv_id_with_version_and_comment():
    assert authserv_id_of(" (x) Mx.Example 1; none") == "mx.example"
