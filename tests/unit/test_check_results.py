"""The check results map (appliance.CheckResult, appliance.Checks): what it takes,
what readers get back, and the envelope's shape of it (appliance.spool.envelope)."""

from __future__ import annotations

import json

import pytest
from attrs.exceptions import FrozenAttributeError, FrozenInstanceError

from appliance import CheckResult, Checks
from appliance.mail.context import SessionContext, Transaction
from appliance.spool import FORMAT_VERSION, envelope


def session() -> SessionContext:
    return SessionContext(session_id="S1", listener="mta", local_ip="127.0.0.1",
                          local_port=25, remote_ip="192.0.2.1", remote_port=4000)


def test_record_then_read_by_name_and_field():
    checks = Checks()
    entry = checks.record("dnsbl", "127.0.0.2", "listed, see https://bl.example",
                          zone="bl.example", score=2)
    assert checks["dnsbl"] is entry
    assert (entry.result, entry.explanation, entry.allow_listed) == (
        "127.0.0.2", "listed, see https://bl.example", False)
    assert checks.value("dnsbl") == "127.0.0.2"
    assert checks.value("dnsbl", "zone") == "bl.example"
    assert checks.value("dnsbl", "explanation") == "listed, see https://bl.example"
    assert checks.value("dnsbl", "nothing-like-it", "-") == "-"
    assert checks.value("spf") is None and checks.value("spf", "domain", "") == ""
    assert list(checks) == ["dnsbl"] and len(checks) == 1 and "spf" not in checks


def test_a_check_replaces_its_own_entry():
    checks = Checks()
    checks.record("spf", "TempError")
    checks["spf"] = CheckResult("Pass", details={"domain": "example.org"})
    assert checks.value("spf") == "Pass" and len(checks) == 1
    del checks["spf"]
    assert checks.get("spf") is None


def test_only_check_results_under_a_name():
    checks = Checks()
    with pytest.raises(TypeError, match=r"checks\['spf'\] must be a CheckResult \(got str\)"):
        checks["spf"] = "Pass"
    with pytest.raises(TypeError, match="non-empty string"):
        checks[""] = CheckResult("Pass")
    with pytest.raises(ValueError, match=r"common field names \['result'\]"):
        CheckResult("Pass", details={"result": "Fail"})
    with pytest.raises(ValueError, match="common field names"):
        checks.record("spf", "Pass", allow_listed=False, result="Fail")
    assert len(checks) == 0


def test_results_are_frozen():
    entry = CheckResult("Pass")
    with pytest.raises(FrozenInstanceError):
        entry.result = "Fail"


def test_allow_listed_when_any_check_says_so():
    checks = Checks()
    checks.record("geoip", "found", country="DE", banned=False)
    assert checks.allow_listed is False
    checks.record("dnsbl", "", allow_listed=True, zone="wl.example")
    assert checks.allow_listed is True


def test_flat_json_objects_and_equality():
    checks = Checks({"geoip": CheckResult("found", details={"country": None,
                                                            "banned": False})})
    assert checks.as_dict() == {"geoip": {"result": "found", "explanation": "",
                                          "allow_listed": False, "country": None,
                                          "banned": False}}
    assert checks == Checks({"geoip": CheckResult("found", details={"country": None,
                                                                    "banned": False})})


def test_contexts_start_empty_and_keep_their_map():
    s, tx = session(), Transaction(queue_id="Q1", mail_from="a@example.org")
    assert len(s.checks) == 0 and len(tx.checks) == 0
    with pytest.raises(FrozenAttributeError):
        s.checks = Checks()
    with pytest.raises(FrozenAttributeError):
        tx.checks = Checks()


def test_envelope_has_both_maps_whole_and_the_auth_results():
    s, tx = session(), Transaction(queue_id="Q1", mail_from="a@example.org")
    s.checks.record("reverse-dns", "pass", name="mail.example.org")
    tx.checks.record("spf", "Pass", domain="example.org")
    env = json.loads(json.dumps(envelope(s, tx)))   # what the spool writes
    assert env["version"] == FORMAT_VERSION == 2
    assert env["checks"] == {
        "reverse-dns": {"result": "pass", "explanation": "", "allow_listed": False,
                        "name": "mail.example.org"},
        "spf": {"result": "Pass", "explanation": "", "allow_listed": False,
                "domain": "example.org"},
        "results": []}
    assert "reverse_name" not in env["client"]
