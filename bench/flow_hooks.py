"""CPU cost of flow control per message, without the network: the flow plugin's
hooks for one persistent session's messages (MAIL, RCPT, DATA, as in S1) with
every limit of bench/flow-on.toml on, counting in the local table the server uses
with several workers (shared memory). Process CPU time, so a busy machine disturbs
it less than a throughput run.

    .venv/bin/python bench/flow_hooks.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from appliance_plugins.flow import FlowControl
from appliance_plugins.flow.settings import FlowSettings

from appliance.config import PluginConfig, load_config
from appliance.mail.context import SessionContext, Transaction
from appliance.state import LocalCounters
from appliance.state.table import LocalTable

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=20000)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flow-hooks-"))
    try:
        (work / "10.toml").write_text(
            f'[listeners.mta]\nport = 2525\n[queue]\ndirectory = "{work / "spool"}"\n')
        shutil.copy(HERE / "flow-on.toml", work / "20-flow-on.toml")
        config = load_config(work, {"flow": PluginConfig}, {"flow": FlowSettings})
    finally:
        shutil.rmtree(work)
    plugin = FlowControl(PluginConfig())
    plugin.on_configure(config, LocalCounters(LocalTable(owners=2)))
    session = SessionContext(session_id="S1", listener="mta", local_ip="127.0.0.1",
                             local_port=2525, remote_ip="127.0.0.1", remote_port=40000)
    assert plugin.on_connect(session) is None
    start = time.process_time()
    for _ in range(args.messages):
        tx = Transaction(queue_id="Q", mail_from="sender@example.org")
        assert plugin.on_mail_from(session, tx) is None
        assert plugin.on_rcpt_to(session, tx) is None
        assert plugin.on_data_start(session, tx) is None
    cpu = time.process_time() - start
    plugin.on_disconnect(session)
    print(f"flow hooks: {cpu * 1e6 / args.messages:.1f} µs CPU per message "
          f"({args.messages} messages, MAIL + RCPT + DATA, every limit on)")


if __name__ == "__main__":
    main()
