"""The users file (hashed secrets only) and the ``smtp-appliance users`` command."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from appliance import users as users_module
from appliance.sasl import BackendUnavailable, CramMD5Key, ScramKeys, digest_md5_ha1
from appliance.users import (
    UsersFile,
    UsersFileError,
    hash_password,
    make_entry,
    parse_users,
    render_users,
    verify_password_hash,
    write_users,
)

REPO = Path(__file__).resolve().parents[2]

# Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", the SHA-512 test vectors.
SHA512_CRYPT_VECTORS = [
    ("Hello world!", "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68"
                     "u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("Hello world!", "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbM"
                     "CVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("This is just a test", "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoN"
                            "eKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs6"
     "6x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("we have a short salt string but not a short password",
     "$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeO"
     "xFmtlcGZelFl5CxtgfiAc0"),
    ("a short string", "$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcel"
                       "Cjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1"),
    ("the minimum number is still observed", "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW"
     "3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."),
]


@pytest.mark.parametrize(("password", "hashed"), SHA512_CRYPT_VECTORS)
def test_sha512_crypt_spec_vectors(password, hashed):
    assert verify_password_hash(hashed, password)
    assert not verify_password_hash(hashed, password + "!")
    assert verify_password_hash("{SHA512-CRYPT}" + hashed, password)  # Dovecot's prefix


def test_sha512_crypt_interoperates_with_openssl_and_glibc():
    made = subprocess.run(["openssl", "passwd", "-6", "-salt", "Zx9RwQ2b", "pässword"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert made.startswith("$6$Zx9RwQ2b$")
    assert verify_password_hash(made, "pässword") and not verify_password_hash(made, "password")
    ours = hash_password("pässword", "sha512-crypt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt")  # glibc's crypt(3); gone in Python 3.13
    assert crypt.crypt("pässword", ours) == ours


def test_argon2id_hashes():
    hashed = hash_password("pencil")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_password_hash(hashed, "pencil")
    assert verify_password_hash("{ARGON2ID}" + hashed, "pencil")
    assert not verify_password_hash(hashed, "pencil ")
    assert not verify_password_hash("$argon2id$garbage", "pencil")
    assert not verify_password_hash("plaintext", "plaintext")  # never a clear-text compare


def test_entry_keys_follow_the_mechanisms():
    entry = make_entry("u", "pw", ["LOGIN", "DIGEST-MD5"], "realm.example")
    assert entry.mechanisms == ["PLAIN", "LOGIN", "DIGEST-MD5"]
    assert entry.cram_md5 is None and entry.scram_sha_256 is None
    assert entry.digest_md5.ha1 == digest_md5_ha1("u", "realm.example", "pw")
    with pytest.raises(ValueError, match="GSSAPI"):
        make_entry("u", "pw", ["GSSAPI"], "r")


def test_render_and_parse_round_trip_with_awkward_names():
    names = ['a"b\\c', "jürgen", "user@example.org", "with space", "plain-name_1"]
    entries = {n: make_entry(n, "pw", ["PLAIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"],
                             "r") for n in names}
    text = render_users(entries)
    assert parse_users(text, "f") == entries
    assert '"pw"' not in text


def test_file_holds_no_password(tmp_path):
    path = tmp_path / "users.toml"
    secret = "Very-Secret-Password-123"
    write_users(path, {"u": make_entry("u", secret, ["PLAIN", "CRAM-MD5", "DIGEST-MD5",
                                                     "SCRAM-SHA-256"], "r")})
    assert secret not in path.read_text()
    assert secret.encode().hex() not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("text", "expected"), [
    ('[users.a]\npasword = "x"', "f.toml: users.a.pasword: unknown key 'pasword'"),
    ('[users.a]\npassword = "secret"', "f.toml: users.a.password: expected an argon2id"),
    ('[users.a]\ncram_md5 = "abcd"', "f.toml: users.a.cram_md5: expected 64 hex digits"),
    ('[users.a]\ndigest_md5 = { realm = "r" }', "f.toml: users.a.digest_md5: expected"),
    ('[users.a.scram_sha_256]\niterations = 4096\nsalt = "c2FsdA=="\nstored_key = "AA=="\n'
     'server_key = "AA=="', "f.toml: users.a.scram_sha_256: expected"),
    ('[users."x@y"]\nscram_sha_256 = 1', 'f.toml: users."x@y".scram_sha_256: expected'),
    ("[users]\na = 1", "f.toml: users.a: expected a table (got int)"),
    ("[other]\n", "f.toml: other: unknown key 'other'"),
    ("[users.a\n", "f.toml: "),  # TOML syntax: tomli's line and column follow
])
def test_parse_errors_name_the_file_and_key(text, expected):
    with pytest.raises(UsersFileError) as err:
        parse_users(text, "f.toml")
    assert expected in str(err.value)


def test_every_problem_is_reported():
    text = '[users.a]\npassword = "x"\n[users.b]\ncram_md5 = "y"\n'
    with pytest.raises(UsersFileError) as err:
        parse_users(text, "f.toml")
    assert len(str(err.value).splitlines()) == 2


def test_dovecot_style_values_are_accepted():
    key = CramMD5Key.from_password("pw")
    users = parse_users(f'[users.a]\ncram_md5 = "{{CRAM-MD5}}{key.to_hex()}"\n', "f")
    assert users["a"].cram_md5 == key


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.toml"
    write_users(path, {"alice": make_entry("alice", "pencil", ["PLAIN", "DIGEST-MD5",
                                                               "SCRAM-SHA-256"], "r.example")})
    return path


def test_backend_answers(users_file):
    backend = UsersFile(users_file)
    assert backend.verify_password("alice", "pencil") is True
    assert backend.verify_password("alice", "pencil!") is False
    assert backend.verify_password("nobody", "pencil") is None
    assert backend.digest_md5_ha1("alice", "r.example") == digest_md5_ha1("alice", "r.example",
                                                                          "pencil")
    assert backend.digest_md5_ha1("alice", "other.example") is None
    keys = backend.scram_keys("alice", "SCRAM-SHA-256")
    assert keys == ScramKeys.from_password("pencil", keys.salt, keys.iterations)
    assert backend.scram_keys("alice", "SCRAM-SHA-1") is None
    assert backend.cram_md5_key("alice") is None


def test_unknown_user_costs_a_hash_verification(users_file, monkeypatch):
    checked = []
    real = users_module.verify_password_hash
    monkeypatch.setattr(users_module, "verify_password_hash",
                        lambda h, p: checked.append(h) or real(h, p))
    backend = UsersFile(users_file)
    assert backend.verify_password("nobody", "x") is None
    assert len(checked) == 1 and checked[0].startswith("$argon2id$v=19$m=65536,t=3,p=4$")


def test_permission_warning(users_file, caplog):
    backend = UsersFile(users_file)
    backend.load()
    assert backend.warnings == []
    os.chmod(users_file, 0o644)
    backend.load()
    assert "readable or writable by group or others (mode 0644)" in backend.warnings[0]
    with caplog.at_level(logging.WARNING, "smtp_appliance.auth"):
        UsersFile(users_file).get("alice")  # the serving path logs it
    assert "mode 0644" in caplog.text


def test_file_is_reread_when_it_changes(users_file):
    backend = UsersFile(users_file)
    assert backend.verify_password("alice", "pencil") is True
    users = dict(backend.users())
    users["alice"] = make_entry("alice", "crayon", ["PLAIN"], "r")
    write_users(users_file, users)
    assert backend.verify_password("alice", "crayon") is True
    assert backend.verify_password("alice", "pencil") is False


def test_broken_file_keeps_the_last_good_version(users_file, caplog, monkeypatch):
    backend = UsersFile(users_file)
    assert backend.get("alice") is not None
    users_file.write_text('[users.alice]\npassword = "oops"\n')
    parsed = []
    real = users_module.parse_users
    monkeypatch.setattr(users_module, "parse_users", lambda *a: parsed.append(1) or real(*a))
    with caplog.at_level(logging.ERROR, "smtp_appliance.auth"):
        assert backend.verify_password("alice", "pencil") is True
        backend.get("alice")
    assert caplog.text.count("keeping the last good version") == 1  # logged once, not per call
    assert len(parsed) == 1  # the broken version is not parsed again until it changes
    with pytest.raises(UsersFileError):
        backend.reload()  # an explicit reload (SIGHUP) reports the problem


def test_never_readable_file_means_backend_unavailable(tmp_path):
    backend = UsersFile(tmp_path / "missing.toml")
    with pytest.raises(BackendUnavailable):
        backend.verify_password("alice", "pencil")


# --- the command, end to end --------------------------------------------------------


def cli(*args: str, stdin: str = "", config_dir: Path | None = None):
    argv = [sys.executable, "-m", "appliance"]
    if config_dir is not None:
        argv += ["--config-dir", str(config_dir)]
    return subprocess.run([*argv, "users", *args], input=stdin, capture_output=True, text=True,
                          timeout=120, cwd=REPO, check=False)


def test_cli_add_list_passwd_delete(tmp_path):
    path = tmp_path / "users.toml"
    f = ("--file", str(path))
    done = cli("add", "alice@example.org", *f, "--password-stdin", "--realm", "mx.example.org",
               "--mechanisms", "PLAIN,CRAM-MD5,DIGEST-MD5,SCRAM-SHA-256", stdin="pencil\n")
    assert done.returncode == 0, done.stderr
    assert "added alice@example.org: PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5, SCRAM-SHA-256" \
        in done.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "pencil" not in path.read_text()
    backend = UsersFile(path)
    assert backend.verify_password("alice@example.org", "pencil") is True
    assert backend.cram_md5_key("alice@example.org") == CramMD5Key.from_password("pencil")

    done = cli("add", "bob", *f, "--password-stdin", "--scheme", "sha512-crypt",
               stdin="hunter2\n")
    assert done.returncode == 0, done.stderr
    bob = UsersFile(path).get("bob").password
    assert bob.startswith("$6$") and "rounds=" not in bob  # glibc's default 5000 rounds

    listed = cli("list", *f)
    assert listed.returncode == 0
    assert listed.stdout.splitlines() == [
        "alice@example.org  PLAIN,LOGIN,CRAM-MD5,DIGEST-MD5,SCRAM-SHA-256  "
        "password=argon2id realm=mx.example.org",
        "bob  PLAIN,LOGIN,SCRAM-SHA-256  password=sha512-crypt",
        "-- 2 user(s)",
    ]

    again = cli("add", "bob", *f, "--password-stdin", stdin="x\n")
    assert again.returncode == 1 and "already exists" in again.stderr

    changed = cli("passwd", "alice@example.org", *f, "--password-stdin", stdin="crayon\n")
    assert changed.returncode == 0, changed.stderr
    backend = UsersFile(path)
    assert backend.verify_password("alice@example.org", "crayon") is True
    assert backend.verify_password("alice@example.org", "pencil") is False
    entry = backend.get("alice@example.org")
    assert entry.mechanisms == ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"]
    assert entry.digest_md5.realm == "mx.example.org"  # kept from before

    assert cli("delete", "bob", *f).returncode == 0
    assert list(UsersFile(path).load()) == ["alice@example.org"]
    gone = cli("delete", "bob", *f)
    assert gone.returncode == 1 and "no user 'bob'" in gone.stderr
    missing = cli("passwd", "carol", *f, "--password-stdin", stdin="x\n")
    assert missing.returncode == 1 and "use `users add`" in missing.stderr


def test_cli_refuses_bad_input_and_changes_nothing(tmp_path):
    path = tmp_path / "users.toml"
    f = ("--file", str(path))
    empty = cli("add", "alice", *f, "--password-stdin", stdin="\n")
    assert empty.returncode == 1 and "empty password" in empty.stderr
    unknown = cli("add", "alice", *f, "--password-stdin", "--mechanisms", "PLAIN,NTLM",
                  stdin="x\n")
    assert unknown.returncode == 1 and "NTLM" in unknown.stderr
    few = cli("add", "alice", *f, "--password-stdin", "--scram-iterations", "4095",
              stdin="x\n")
    assert few.returncode == 1 and "at least 4096" in few.stderr
    assert not path.exists()
    # Without a terminal, getpass reads the two prompts' answers from stdin.
    differ = cli("add", "alice", *f, stdin="one\ntwo\n")
    assert differ.returncode == 1 and "passwords differ" in differ.stderr
    assert not path.exists()
    assert cli("list", *f).returncode == 1


def test_cli_reports_a_broken_file(tmp_path):
    path = tmp_path / "users.toml"
    path.write_text("[users.a]\nbogus = 1\n")
    done = cli("add", "b", "--file", str(path), "--password-stdin", stdin="x\n")
    assert done.returncode == 1
    assert f"{path}: users.a.bogus: unknown key" in done.stderr
    assert path.read_text() == "[users.a]\nbogus = 1\n"


def test_cli_realm_defaults_to_the_configured_hostname(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "10-server.toml").write_text('[server]\nhostname = "smtp.config.example"\n')
    path = tmp_path / "users.toml"
    done = cli("add", "alice", "--file", str(path), "--password-stdin",
               "--mechanisms", "DIGEST-MD5", stdin="pw\n", config_dir=conf)
    assert done.returncode == 0, done.stderr
    assert "realm smtp.config.example" in done.stdout
    assert UsersFile(path).digest_md5_ha1("alice", "smtp.config.example") == \
        digest_md5_ha1("alice", "smtp.config.example", "pw")


def test_cli_takes_the_file_from_the_configuration(tmp_path):
    path = tmp_path / "users.toml"
    assert cli("add", "alice", "--file", str(path), "--password-stdin",
               stdin="pw\n").returncode == 0
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "20-auth.toml").write_text('[auth]\nusers_file = "../users.toml"\n')
    listed = cli("list", config_dir=conf)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("alice  PLAIN,LOGIN,SCRAM-SHA-256")
    done = cli("add", "bob", "--password-stdin", "--config-dir", str(conf), stdin="pw2\n")
    assert done.returncode == 0, done.stderr
    assert f"in {path}" in done.stdout
    assert sorted(UsersFile(path).load()) == ["alice", "bob"]


# --- the same secrets as Dovecot (doveadm pw, a real peer; Debian's dovecot-core) ------------


def doveadm_pw(scheme: str, *extra: str) -> str:
    if shutil.which("doveadm") is None:
        pytest.skip("doveadm not installed (scripts/deps-system.sh installs dovecot-core)")
    return subprocess.run(["doveadm", "pw", "-s", scheme, "-p", "pencil", *extra],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()


def test_dovecot_cram_md5_and_digest_md5_values_are_ours():
    cram = doveadm_pw("CRAM-MD5")
    assert cram == "{CRAM-MD5}" + CramMD5Key.from_password("pencil").to_hex()
    digest = doveadm_pw("DIGEST-MD5", "-u", "alice@mx.example.org")  # user@realm
    assert digest == "{DIGEST-MD5}" + digest_md5_ha1("alice", "mx.example.org", "pencil").hex()


def test_dovecot_password_hashes_verify():
    for scheme in ("SHA512-CRYPT", "ARGON2ID"):
        hashed = doveadm_pw(scheme)
        assert verify_password_hash(hashed, "pencil"), hashed
        assert not verify_password_hash(hashed, "pencil2")


def test_dovecot_values_can_be_pasted_into_the_users_file(tmp_path):
    scram = doveadm_pw("SCRAM-SHA-256")
    text = (f'[users.alice]\npassword = "{doveadm_pw("ARGON2ID")}"\n'
            f'cram_md5 = "{doveadm_pw("CRAM-MD5")}"\n'
            f'scram_sha_256 = "{scram}"\n'
            f'digest_md5 = {{ realm = "mx.example.org", '
            f'ha1 = "{doveadm_pw("DIGEST-MD5", "-u", "alice@mx.example.org")}" }}\n')
    alice = parse_users(text, "f")["alice"]
    assert alice.mechanisms == ["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"]
    keys = alice.scram_sha_256
    assert keys == ScramKeys.from_password("pencil", keys.salt, keys.iterations)
    assert parse_users(render_users({"alice": alice}), "f")["alice"] == alice
