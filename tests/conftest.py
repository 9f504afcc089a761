"""Fixtures for every test directory."""

pytest_plugins = ["tests.redis_fixture", "tests.dovecot_fixture", "tests.kdc_fixture",
                  "tests.dns_fixture", "tests.postgrey_fixture", "tests.milter_fixture",
                  "tests.redis_topologies", "tests.lmtp_fixture"]
