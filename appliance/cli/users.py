"""``smtp-appliance users add|passwd|delete|list``: edit the users file.

Passwords come from a prompt (asked twice) or one line on stdin
(``--password-stdin``) and are never written anywhere: only their hashes and
the mechanism keys derived from them are.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import getpass
import os
import socket
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from attrs import frozen

from appliance.config import ConfigError
from appliance.sasl.keys import SCRAM_ITERATIONS
from appliance.users import (
    DEFAULT_USERS_FILE,
    PASSWORD_SCHEMES,
    UsersFile,
    UsersFileError,
    make_entry,
    password_scheme,
    write_users,
)

DEFAULT_MECHANISMS = "PLAIN,LOGIN,SCRAM-SHA-256"
ALL_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256")


def add_parser(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``users`` subcommand; returns its own subparsers (add, passwd, ...)."""
    u = sub.add_parser("users", help="manage the users file (hashed secrets for SMTP AUTH)")
    actions = u.add_subparsers(dest="users_action", required=True)
    for name, text in (("add", "add a user"), ("passwd", "set a user's password"),
                       ("delete", "remove a user"), ("list", "list users and their mechanisms")):
        p = actions.add_parser(name, help=text)
        if name != "list":
            p.add_argument("user", help="the user name as clients send it (often the address)")
        p.add_argument("--file", help="the users file (default: [auth] users_file, "
                                      f"else {DEFAULT_USERS_FILE})")
        if name in ("add", "passwd"):
            p.add_argument(
                "--mechanisms",
                help="comma-separated: " + ", ".join(ALL_MECHANISMS) + " (add: default "
                     f"{DEFAULT_MECHANISMS}; passwd: default the user's current ones)")
            p.add_argument("--scheme", choices=PASSWORD_SCHEMES,
                           help="hash for PLAIN/LOGIN (add: argon2id; passwd: the current one)")
            p.add_argument("--realm", help="DIGEST-MD5 realm (default: [auth] realm, else "
                                           "[server] hostname, else this machine's FQDN)")
            p.add_argument("--scram-iterations", type=int, default=SCRAM_ITERATIONS,
                           help=f"SCRAM-SHA-256 iteration count (default {SCRAM_ITERATIONS})")
            p.add_argument("--password-stdin", action="store_true",
                           help="read the password from the first line of standard input")
    return actions


@frozen
class _Configured:
    """What the configuration says about the users file, if it loads."""

    realm: str = ""
    users_file: str = ""
    problem: str = ""

    @classmethod
    def read(cls, load_config: Callable[[], object]) -> _Configured:
        try:
            config = load_config()
        except (ConfigError, OSError) as exc:
            return cls(problem=str(exc).splitlines()[0])
        auth = getattr(config, "auth", None)  # [auth] is being added alongside
        return cls(realm=getattr(auth, "realm", "") or config.server.hostname,
                   users_file=str(getattr(auth, "users_file", "") or ""))


def run(args: argparse.Namespace, load_config: Callable[[], object]) -> int:
    """``load_config()`` loads the configuration (asked only when needed)."""
    configured = functools.cache(lambda: _Configured.read(load_config))
    path = args.file
    if path is None:
        path = configured().users_file or DEFAULT_USERS_FILE
        if configured().problem:
            print(f"note: configuration not loaded ({configured().problem}); "
                  f"using {path}", file=sys.stderr)
    path = Path(path)
    try:
        if args.users_action == "list":
            return _list(path)
        with _locked(path):
            users = dict(UsersFile(path).load()) if path.exists() else {}
            return _change(args, path, users, lambda: configured().realm)
    except (UsersFileError, OSError) as exc:
        print(f"smtp-appliance users: {exc}", file=sys.stderr)
        return 1


def _list(path: Path) -> int:
    if not path.exists():
        print(f"no users file at {path}", file=sys.stderr)
        return 1
    f = UsersFile(path)
    users = f.load()
    for warning in f.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for name in sorted(users):
        e = users[name]
        extra = []
        if e.password:
            extra.append(f"password={password_scheme(e.password)}")
        if e.digest_md5:
            extra.append(f"realm={e.digest_md5.realm}")
        print(f"{name}  {','.join(e.mechanisms) or '(none)'}  {' '.join(extra)}".rstrip())
    print(f"-- {len(users)} user(s)")
    return 0


def _change(args, path: Path, users: dict, configured_realm: Callable[[], str]) -> int:
    name, action = args.user, args.users_action
    if action == "delete":
        if users.pop(name, None) is None:
            print(f"no user {name!r} in {path}", file=sys.stderr)
            return 1
        write_users(path, users)
        print(f"deleted {name} from {path}")
        return 0
    if action == "add" and name in users:
        print(f"user {name!r} already exists in {path}; use `users passwd`", file=sys.stderr)
        return 1
    if action == "passwd" and name not in users:
        print(f"no user {name!r} in {path}; use `users add`", file=sys.stderr)
        return 1
    if not name or name != name.strip() or any(ord(c) < 32 for c in name):
        print("a user name must be non-empty, without control characters or "
              "leading/trailing spaces", file=sys.stderr)
        return 1
    old = users.get(name)
    if args.mechanisms:
        mechanisms = [m.strip().upper() for m in args.mechanisms.split(",") if m.strip()]
    elif old is not None:
        mechanisms = old.mechanisms
    else:
        mechanisms = DEFAULT_MECHANISMS.split(",")
    unknown = [m for m in mechanisms if m not in ALL_MECHANISMS]
    if unknown or not mechanisms:
        print(f"unknown mechanism(s) {', '.join(unknown) or '(none given)'}; "
              f"choose from {', '.join(ALL_MECHANISMS)}", file=sys.stderr)
        return 1
    scheme = args.scheme or (password_scheme(old.password) if old and old.password else None) \
        or "argon2id"
    realm = args.realm
    if realm is None and old is not None and old.digest_md5 is not None:
        realm = old.digest_md5.realm
    if realm is None and "DIGEST-MD5" in mechanisms:
        realm = configured_realm() or socket.getfqdn()
    if args.scram_iterations < 4096:
        print("--scram-iterations must be at least 4096 (RFC 7677)", file=sys.stderr)
        return 1
    password = _read_password(args.password_stdin)
    if password is None:
        return 1
    try:
        entry = make_entry(name, password, mechanisms, realm or "", scheme,
                           args.scram_iterations)
    except ValueError as exc:  # SASLprep refused a character
        print(f"cannot use this password: {exc}", file=sys.stderr)
        return 1
    users[name] = entry
    write_users(path, users)
    verb = "added" if action == "add" else "changed password of"
    realm_note = f" (DIGEST-MD5 realm {realm})" if entry.digest_md5 else ""
    print(f"{verb} {name}: {', '.join(entry.mechanisms)}{realm_note} in {path}")
    return 0


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    else:
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password again: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return None
        if password != again:
            print("the passwords differ; nothing changed", file=sys.stderr)
            return None
    if not password:
        print("empty password refused; nothing changed", file=sys.stderr)
        return None
    return password


@contextmanager
def _locked(path: Path):
    """One writer at a time: an advisory lock on ``FILE.lock`` beside the file."""
    if not path.parent.is_dir():
        raise OSError(f"directory {path.parent} does not exist")
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
