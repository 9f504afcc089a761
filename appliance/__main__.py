"""Entry point. gevent's monkey-patching comes first, before ssl, dnspython or
any plugin is imported (see gevent's docs on monkey-patching)."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    from appliance.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
