"""Server-side SASL mechanisms for SMTP AUTH, sans-IO (docs/auth.md).

Each mechanism is a small state machine fed decoded client data; credentials
come from a ``CredentialsBackend`` (the users file, or a plugin's). No gevent,
no sockets: the session drives an ``AuthExchange`` and runs slow backends in
its thread pool (``ThreadedBackend``).
"""

from __future__ import annotations

from appliance.sasl.backend import CredentialsBackend, ThreadedBackend
from appliance.sasl.cram_md5 import CramMD5
from appliance.sasl.digest_md5 import DigestMD5
from appliance.sasl.exchange import AuthExchange, AuthReply
from appliance.sasl.keys import CramMD5Key, ScramKeys, digest_md5_ha1
from appliance.sasl.mechanism import Mechanism, MechanismFactory, SASLOptions
from appliance.sasl.oauth import OAuthBearer, XOAuth2
from appliance.sasl.password import Login, Plain
from appliance.sasl.scram import ScramSHA256
from appliance.sasl.steps import (
    BackendUnavailable,
    Challenge,
    ExchangeOver,
    Failure,
    MechanismTooWeak,
    Step,
    Success,
)

MECHANISMS: dict[str, type[Mechanism]] = {
    m.name: m for m in (Plain, Login, CramMD5, DigestMD5, ScramSHA256, XOAuth2, OAuthBearer)
}

try:  # GSSAPI needs python-gssapi and the Kerberos libraries (the ``gssapi`` extra)
    from appliance.sasl.gssapi_mech import GSSAPI
except ImportError:  # pragma: no cover - depends on the install
    GSSAPI = None
else:
    MECHANISMS[GSSAPI.name] = GSSAPI


def create(name: str, options: SASLOptions) -> Mechanism:
    """A fresh mechanism for one AUTH command; KeyError for an unknown name."""
    return MECHANISMS[name.upper()](options)


__all__ = [
    "MECHANISMS", "AuthExchange", "AuthReply", "BackendUnavailable", "Challenge",
    "CramMD5", "CramMD5Key", "CredentialsBackend", "DigestMD5", "ExchangeOver", "Failure",
    "Login", "Mechanism", "MechanismFactory", "MechanismTooWeak", "OAuthBearer", "Plain",
    "SASLOptions", "ScramKeys", "ScramSHA256", "Step", "Success", "ThreadedBackend", "XOAuth2",
    "create", "digest_md5_ha1",
]
