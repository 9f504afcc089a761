"""The dmarc plugin's choices (on_reject, on_quarantine, on_temperror,
skip_authenticated, per-listener areas) on real contexts and messages, with the
policies served by the real DNS server (tests/dns_fixture.py) through the
appliance's resolver. tests/integration/test_dkim_dmarc.py covers the server."""

from __future__ import annotations

import pytest
from appliance_plugins.dkim import DkimArea, DkimPlugin
from appliance_plugins.dmarc import DmarcArea, DmarcPlugin

from appliance.config import AppConfig, ConfigError, Listener, load_config
from appliance.dns import Resolver
from appliance.hooks.verdict import Action
from appliance.mail.context import SessionContext, Transaction, core_set
from appliance.mail.headers import Headers
from appliance.mail.message import Body, Message
from tests.unit.plugin_host import ask


@pytest.fixture(scope="module")
def dns(dns_server):
    dns_server.add_records([
        '_dmarc.reject.dmarcp TXT "v=DMARC1; p=reject"',
        '_dmarc.quarantine.dmarcp TXT "v=DMARC1; p=quarantine"',
    ])
    return Resolver([dns_server.nameserver], timeout=0.3, retries=0)


def plugin(dns, area: DmarcArea, mode: str = "enforce", **listener_areas) -> DmarcPlugin:
    listeners = {"mta": Listener(port=25, areas={"dmarc": area})}
    for name, own in listener_areas.items():
        listeners[name] = Listener(port=26, areas={"dmarc": own})
    p = DmarcPlugin(DmarcPlugin.Config(mode=mode))
    p.on_configure(AppConfig(listeners=listeners, areas={"dmarc": area, "dkim": DkimArea()}),
                   dns)
    return p


def run(p, sender_domain: str, listener: str = "mta", auth_user: str = "", tmp_path=None):
    session = SessionContext(session_id="S1", listener=listener, local_ip="127.0.0.1",
                             local_port=25, remote_ip="192.0.2.1", remote_port=4000)
    core_set(session, "auth_user", auth_user)
    tx = Transaction(queue_id="Q1", mail_from=f"a@{sender_domain}")
    headers, _ = Headers.parse(f"From: a@{sender_domain}\r\nSubject: x\r\n\r\n".encode())
    body = Body(str(tmp_path))
    body.write(b"Hello.\r\n")
    message = Message(headers, body)
    # through a plugin host, as the server asks it: the host applies monitor mode
    return ask(p, "dmarc", "message", session, tx, message=message), session, tx, message


def test_reject_and_its_alternatives(dns, tmp_path):
    v, _, tx, _ = run(plugin(dns, DmarcArea()), "reject.dmarcp.test", tmp_path=tmp_path)
    assert (v.action, v.reply_parts()) == (
        Action.REJECT, (550, "5.7.1", "Rejected by the DMARC policy of reject.dmarcp.test"))
    assert [(r.method, r.result) for r in tx.auth_results] == [("dkim", "none"),
                                                               ("dmarc", "fail")]
    v, _, tx, _ = run(plugin(dns, DmarcArea(on_reject="quarantine")), "reject.dmarcp.test",
                      tmp_path=tmp_path)
    assert v is None and tx.quarantine_reason == "DMARC policy reject of reject.dmarcp.test"
    v, _, tx, m = run(plugin(dns, DmarcArea(on_reject="continue")), "reject.dmarcp.test",
                      tmp_path=tmp_path)
    assert v is None and tx.quarantine_reason is None and not m.headers.exists("X-Spam-Flag")
    v, *_ = run(plugin(dns, DmarcArea(on_reject="tmpreject")), "reject.dmarcp.test",
                tmp_path=tmp_path)
    assert (v.action, v.reply_parts()[:2]) == (Action.TMPREJECT, (451, "4.7.1"))


def test_quarantine_header_and_listener_override(dns, tmp_path):
    p = plugin(dns, DmarcArea(), edge=DmarcArea(on_quarantine="header",
                                                quarantine_header="X-DMARC: quarantine"))
    v, _, tx, m = run(p, "quarantine.dmarcp.test", tmp_path=tmp_path)
    assert v is None and tx.quarantine_reason.startswith("DMARC policy quarantine")
    v, _, tx, m = run(p, "quarantine.dmarcp.test", listener="edge", tmp_path=tmp_path)
    assert v is None and tx.quarantine_reason is None
    assert m.headers.get_all("X-DMARC") == ["quarantine"]


def test_temperror_continue_or_tmpreject(dns, tmp_path):
    v, _, tx, _ = run(plugin(dns, DmarcArea()), "x.stall.example", tmp_path=tmp_path)
    assert v is None and tx.auth_results[-1].result == "temperror"
    v, *_ = run(plugin(dns, DmarcArea(on_temperror="tmpreject")), "x.stall.example",
                tmp_path=tmp_path)
    assert (v.action, v.reply_parts()) == (
        Action.TMPREJECT, (451, "4.7.1", "DMARC policy temporarily unavailable, try again later"))


def test_authenticated_users_are_skipped_unless_configured(dns, tmp_path):
    v, _, tx, _ = run(plugin(dns, DmarcArea()), "reject.dmarcp.test", auth_user="alice",
                      tmp_path=tmp_path)
    assert v is None and tx.auth_results == []
    v, *_ = run(plugin(dns, DmarcArea(skip_authenticated=False)), "reject.dmarcp.test",
                auth_user="alice", tmp_path=tmp_path)
    assert v.action is Action.REJECT


def test_monitor_records_what_it_would_do(dns, tmp_path):
    v, s, tx, _ = run(plugin(dns, DmarcArea(), mode="monitor"), "reject.dmarcp.test",
                      tmp_path=tmp_path)
    assert v is None
    assert [str(t) for t in tx.trace] == [
        "message dmarc reject 550 5.7.1 'Rejected by the DMARC policy of reject.dmarcp.test' "
        "(monitor)"]


def test_dkim_results_computed_once_for_both_plugins(dns, tmp_path):
    dkim = DkimPlugin(DkimPlugin.Config(enabled=True))
    dkim.on_configure(AppConfig(listeners={"mta": Listener(port=25)}), dns)
    _, s, tx, m = run(plugin(dns, DmarcArea(on_reject="continue")), "reject.dmarcp.test",
                      tmp_path=tmp_path)
    dkim.on_message(session=s, transaction=tx, message=m)  # same transaction: not again
    assert [r.method for r in tx.auth_results] == ["dkim", "dmarc"]


def test_quarantine_header_must_be_a_field(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "60-dmarc.toml").write_text('[dmarc]\nquarantine_header = "no colon"\n'
                                        'on_reject = "drop"\n')
    with pytest.raises(ConfigError) as err:
        load_config(conf, plugin_areas={"dmarc": DmarcArea})
    text = str(err.value)
    assert ('60-dmarc.toml: dmarc.quarantine_header: expected a header field such as '
            '"X-Spam-Flag: YES" (got "no colon")') in text
    assert "60-dmarc.toml: dmarc.on_reject: expected one of" in text
