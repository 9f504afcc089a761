"""``smtp-appliance ... --help`` through the real command: every subcommand lists the
options it takes, ``--config-dir`` included, wherever the admin may type it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CLI = str(Path(sys.executable).with_name("smtp-appliance"))


def _help(*path: str) -> str:
    done = subprocess.run([CLI, *path, "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _subcommands(text: str) -> list[str]:
    """The ``{a,b,c}`` choices of a usage text, empty for a leaf command."""
    found = re.search(r"\{([a-z,-]+)\}", text)
    return found.group(1).split(",") if found else []


def _all_commands() -> dict[tuple[str, ...], str]:
    """Every command path (``("queue", "list")``...) and its help, read from the CLI."""
    helps: dict[tuple[str, ...], str] = {}
    todo: list[tuple[str, ...]] = [()]
    while todo:
        procs = {path: subprocess.Popen([CLI, *path, "--help"], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
                 for path in todo}
        todo = []
        for path, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, (path, err)
            helps[path] = out
            todo += [(*path, name) for name in _subcommands(out)]
    return helps


def test_every_subcommand_help_lists_config_dir():
    helps = _all_commands()
    assert {("serve",), ("check-config",), ("plugins",), ("queue", "list"),
            ("users", "add"), ("bans", "list")} <= set(helps)
    missing = [" ".join(path) for path, text in helps.items()
               if "--config-dir" not in text]
    assert missing == []
    assert "directory of *.toml files" in helps[("serve",)]


def test_queue_actions_list_spool():
    for action in ("list", "count", "show", "delete"):
        assert "--spool" in _help("queue", action), action


def test_config_dir_before_or_after_the_subcommand(tmp_path):
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "00-test.toml").write_text(f'[queue]\ndirectory = "{tmp_path / "spool"}"\n')
    for args in (["--config-dir", str(conf), "check-config"],
                 ["check-config", "--config-dir", str(conf)]):
        done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert done.stdout.startswith("configuration OK (1 files)"), done.stdout
        assert str(conf / "00-test.toml") in done.stdout
    done = subprocess.run([CLI, "check-config"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode != 0  # the default directory is not this test's
