"""``[[rules]]`` and ``[[listeners.NAME.rules]]`` through the real loader with the
installed plugins: every kind of mistake is refused naming the file, the key path,
the rule and the variable (or method, list file, regular expression); the shipped
examples load; every variable and method is documented in docs/rules.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from appliance_plugins.rules.actions import METHODS
from appliance_plugins.rules.variables import TABLE

from appliance.config import ConfigError, load_config
from appliance.hooks.host import discover, loader_inputs

REPO = Path(__file__).resolve().parents[2]
INPUTS = loader_inputs(discover())
LISTENER = "[listeners.mta]\nport = 2525\n"


def _errors(conf, text: str) -> list[str]:
    conf.write("10-rules.toml", LISTENER + text)
    with pytest.raises(ConfigError) as info:
        load_config(conf.path, **INPUTS)
    return info.value.errors


def _rule(event: str, condition: str = "", actions: str = "", name: str = "r1") -> str:
    lines = ["[[rules]]", f'name = "{name}"', f'event = "{event}"']
    if condition:
        lines.append(f"condition = '{condition}'")
    if actions:
        lines.append(f"actions = [{actions}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("event,condition,actions,path,expected", [
    ("connect", "mail_from == \"a@b\"", "", "rules[0].condition",
     "rule 'r1': variable 'mail_from' does not exist at event 'connect' (it exists at: "
     "mail_from, rcpt_to, headers_received, message)"),
    ("mail_from", "no_such_thing", "", "rules[0].condition", "unknown variable 'no_such_thing'"),
    ("mail_from", "helo_name matches \"[\"", "", "rules[0].condition",
     "rule 'r1': bad regular expression '['"),
    ("mail_from", "mail_from in file(\"/nonexistent/list.txt\")", "", "rules[0].condition",
     "list file '/nonexistent/list.txt' cannot be read"),
    ("mail_from", "mail_from in file(\"relative.txt\")", "", "rules[0].condition",
     "file(): expected an absolute path"),
    ("mail_from", "helo_name ==", "", "rules[0].condition", "syntax error at column"),
    ("mail_from", "upper(helo_name, 1)", "", "rules[0].condition", "upper() takes 1 argument"),
    ("mail_from", "nope(helo_name)", "", "rules[0].condition", "unknown function nope()"),
    ("rcpt_to", "has_header(\"X\")", "", "rules[0].condition",
     "has_header() reads the message header, which exists only at events"),
    ("mail_from", "", '{ set = "remote_ip", value = "1.2.3.4" }', "rules[0].actions",
     "rule 'r1': [0]: variable 'remote_ip' is read-only"),
    ("headers_received", "", '{ set = "max_recipients", value = 3 }', "rules[0].actions",
     "variable 'max_recipients' can be set only at events connect, ehlo, auth, mail_from, "
     "rcpt_to (the rule's event is 'headers_received')"),
    ("rcpt_to", "", '{ set = "max_recipients", value = "3" }', "rules[0].actions",
     "variable 'max_recipients' takes an integer"),
    ("rcpt_to", "", '{ set = "overquota_action", value = "bounce" }', "rules[0].actions",
     "variable 'overquota_action' takes one of reject, accept"),
    ("rcpt_to", "", '{ method = "add_header", name = "X", value = "1" }', "rules[0].actions",
     "method 'add_header' exists only at events headers_received, message"),
    ("rcpt_to", "", '{ method = "frobnicate" }', "rules[0].actions", "unknown method"),
    ("rcpt_to", "", '{ action = "reject", code = 451 }', "rules[0].actions",
     "code: expected a 5xx reply code for action 'reject' (got 451)"),
    ("rcpt_to", "", '{ action = "tmpreject", enhanced_code = "5.7.1" }', "rules[0].actions",
     "enhanced_code: expected an RFC 3463 code of the same class as 451"),
    ("rcpt_to", "", '{ action = "reject", text = "#nothing#" }', "rules[0].actions",
     "text: #nothing#: unknown variable 'nothing'"),
    ("rcpt_to", "", '{ action = "reject", set = "rcpt_folder", value = "x" }',
     "rules[0].actions", "each action has exactly one of action"),
    ("connect", "", '{ method = "check_dnsbl" }', "rules[0].actions",
     "method 'check_dnsbl' needs zones"),
])
def test_each_kind_of_mistake(conf, event, condition, actions, path, expected):
    errors = _errors(conf, _rule(event, condition, actions))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{conf.file('10-rules.toml')}: {path}: invalid value ("), errors
    assert expected in errors[0]


def test_shape_mistakes(conf):
    errors = _errors(conf, """
        [[rules]]
        event = "rcpt"
        colour = "red"
        """)
    file = conf.file("10-rules.toml")
    assert f"{file}: rules[0].name: missing required key (expected a rule name (not empty))" \
        in errors
    assert any(e.startswith(f"{file}: rules[0].event: expected one of \"connect\"")
               for e in errors)
    assert any(e.startswith(f"{file}: rules[0].colour: unknown key 'colour'") for e in errors)


def test_a_listener_rule_is_reported_with_its_own_file_and_path(conf):
    conf.write("10-rules.toml", LISTENER + _rule("connect", name="global"))
    conf.write("20-mta.toml", '[[listeners.mta.rules]]\nname = "mine"\nevent = "ehlo"\n'
               "condition = 'rcpt == \"x\"'\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf.path, **INPUTS)
    assert info.value.errors == [
        f"{conf.file('20-mta.toml')}: listeners.mta.rules[0].condition: invalid value (rule "
        "'mine': variable 'rcpt' does not exist at event 'ehlo' (it exists at: rcpt_to))"]


def test_listener_rules_come_after_the_global_ones(conf):
    conf.write("10-rules.toml", LISTENER + "[listeners.other]\nport = 2526\n"
               + _rule("connect", name="global"))
    conf.write("20-mta.toml", '[[listeners.mta.rules]]\nname = "mine"\nevent = "connect"\n')
    config = load_config(conf.path, **INPUTS)
    assert [r.name for r in config.listeners["mta"].areas["rules"]] == ["global", "mine"]
    assert [r.name for r in config.listeners["other"].areas["rules"]] == ["global"]
    assert [r.name for r in config.areas["rules"]] == ["global"]


def test_the_shipped_examples_load_and_are_disabled(conf):
    conf.write("10-listeners.toml", LISTENER)
    conf.write("49-rules.toml", (REPO / "conf.d" / "49-rules.toml").read_text())
    config = load_config(conf.path, **INPUTS)
    names = [r.name for r in config.areas["rules"]]
    assert names == ["disableAUTH_on_non_SSL", "enableAUTH_on_SSL",
                     "allow_only_tls_for_mydomain", "relay_only_over_tls12"]
    assert not any(r.enabled for r in config.areas["rules"])


def test_every_variable_and_method_is_documented():
    docs = (REPO / "docs" / "rules.md").read_text()
    for var in TABLE:
        assert re.search(rf"^\| `{var.name}` \|", docs, re.M), var.name
        if var.seed:
            assert f"{var.seed}" in docs, var.seed
    for method in METHODS:
        assert f"`{method}`" in docs, method
