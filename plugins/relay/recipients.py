"""Local domains and local recipients as admins write them in files.

The recipients file (``[relay] recipients_file``) has one entry a line, ``#``
starts a comment, blank lines are skipped; it reads like aliases(5)::

    alice@example.org                          # a mailbox, delivered to INBOX
    bob@example.org       folder=Projects      # a mailbox and its folder
    sales@example.org:    alice@example.org, bob@example.org   # an alias
    @example.net:         postmaster@example.org               # catch-all of a domain

An alias expands to the mailboxes (or further aliases) of this file it names;
a catch-all takes the recipients of its domain that no entry and no other
``lookup_recipient`` plugin knows. Addresses match case-insensitively. Every
mistake (bad address, duplicate, alias member not in the file, an alias loop) is
an error naming the file and line, found when the configuration is checked.

The local domains file (``local_domains_file``) has one domain a line.
Pure parsing, no gevent, no plugin API: the plugin in ``relay.py`` uses it.
"""

from __future__ import annotations

import re

from attrs import define, field

from appliance import RecipientInfo

_DOMAIN = re.compile(r"(?=.{1,253}\Z)([^\s.@:,<>\[\]#]{1,63}\.)*[^\s.@:,<>\[\]#]{1,63}\Z")
_LOCAL = re.compile(r'[^\s@:,<>"\[\]#]{1,64}\Z')
_FOLDER = re.compile(r"[^\s\x00-\x1f\x7f]{1,255}\Z")

ADDRESS_EXPECTED = "an address local@domain"
DOMAIN_EXPECTED = "a domain name (example.org)"


class RecipientsFileError(ValueError):
    """A file that cannot be used; the message names the file and line."""


def is_domain(text: str) -> bool:
    return bool(_DOMAIN.match(text))


def is_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    return bool(at and _LOCAL.match(local) and _DOMAIN.match(domain))


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


@define
class RecipientTable:
    """The entries of one recipients file, keyed by lowercased address."""

    entries: dict[str, RecipientInfo] = field(factory=dict)
    catch_all: dict[str, str] = field(factory=dict)  # domain -> target address

    def lookup(self, address: str) -> RecipientInfo | None:
        return self.entries.get(address.lower())


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except UnicodeDecodeError as exc:
        raise RecipientsFileError(f"{path}: not valid UTF-8 ({exc.reason})") from None
    except OSError as exc:
        raise RecipientsFileError(f"{path}: cannot be read ({exc.strerror})") from None


def _texts(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of the lines that are not blank or comments."""
    out = []
    for number, line in enumerate(lines, 1):
        text = line.partition("#")[0].strip()
        if text:
            out.append((number, text))
    return out


def read_domains(path: str) -> list[str]:
    """Domains of a local domains file, lowercased."""
    domains = []
    for number, text in _texts(_read_lines(path)):
        if not is_domain(text):
            raise RecipientsFileError(
                f'{path}:{number}: expected {DOMAIN_EXPECTED} (got "{text}")')
        domains.append(text.lower())
    return domains


def read_recipients(path: str) -> RecipientTable:
    """The recipients file at ``path``; :raises RecipientsFileError: naming the line."""
    return parse_recipients(_read_lines(path), path)


def parse_recipients(lines: list[str], source: str) -> RecipientTable:
    table = RecipientTable()
    where: dict[str, int] = {}  # key -> line, for duplicates and alias checks

    def fail(number: int, what: str, text: str) -> RecipientsFileError:
        return RecipientsFileError(f'{source}:{number}: expected {what} (got "{text}")')

    def claim(key: str, number: int, text: str) -> None:
        if key in where:
            raise fail(number, f"each address once (already on line {where[key]})", text)
        where[key] = number

    for number, text in _texts(lines):
        if ":" in text:
            name, _, rest = text.partition(":")
            name = name.strip()
            members = tuple(m for m in re.split(r"[\s,]+", rest.strip()) if m)
            if not members:
                raise fail(number, "one or more member addresses after the colon", text)
            for member in members:
                if not is_address(member):
                    raise fail(number, f"{ADDRESS_EXPECTED} as alias member", member)
            if name.startswith("@"):
                if not is_domain(name[1:]) or len(members) != 1:
                    raise fail(number, "a catch-all '@domain: one address'", text)
                claim(name.lower(), number, text)
                table.catch_all[name[1:].lower()] = members[0]
                continue
            if not is_address(name):
                raise fail(number, f"{ADDRESS_EXPECTED} or @domain before the colon", name)
            claim(name.lower(), number, text)
            table.entries[name.lower()] = RecipientInfo(name, members=members)
            continue
        address, *options = text.split()
        if not is_address(address):
            raise fail(number, ADDRESS_EXPECTED, address)
        folder = "INBOX"
        for option in options:
            key, eq, value = option.partition("=")
            if key != "folder" or not eq or not _FOLDER.match(value):
                raise fail(number, "folder=NAME after the address", option)
            folder = value
        claim(address.lower(), number, text)
        table.entries[address.lower()] = RecipientInfo(address, folder)
    _check_targets(table, where, source)
    return table


def _check_targets(table: RecipientTable, where: dict[str, int], source: str) -> None:
    """Alias members and catch-all targets must be entries of this file; no loops."""
    targets = [(k, info.members) for k, info in table.entries.items() if info.is_alias]
    targets += [("@" + d, (t,)) for d, t in table.catch_all.items()]
    for key, members in targets:
        for member in members:
            if member.lower() not in table.entries:
                raise RecipientsFileError(
                    f"{source}:{where[key]}: expected members that are mailboxes or aliases"
                    f' of this file (got "{member}")')
    for key, info in table.entries.items():
        if info.is_alias:
            _no_loop(table, key, [], where, source)


def _no_loop(table: RecipientTable, key: str, path: list[str], where: dict[str, int],
             source: str) -> None:
    if key in path:
        raise RecipientsFileError(
            f"{source}:{where[key]}: expected aliases without a loop"
            f' (got "{" -> ".join([*path[path.index(key):], key])}")')
    for member in table.entries[key].members:
        if table.entries[member.lower()].is_alias:
            _no_loop(table, member.lower(), [*path, key], where, source)
