"""``smtp-appliance selftest``: probes of an SMTP server's front door (SMTP smuggling,
STARTTLS injection, pipelining before the greeting, odd bytes, over-long lines, a
stray PROXY header). It talks only to the target it is given and sends mail only
to the recipients the operator names. See docs/selftest.md."""

from appliance.selftest.client import ProbeError, Target
from appliance.selftest.probes import ERROR, FAIL, NOTE, OK, SKIPPED, Finding, run_all

__all__ = ["ERROR", "FAIL", "NOTE", "OK", "SKIPPED", "Finding", "ProbeError", "Target",
           "run_all"]
