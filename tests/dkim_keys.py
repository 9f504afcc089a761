"""DKIM keys made in the test set-up and messages signed by dkimpy's real signer;
the public keys are published as zone-file lines for the real DNS server
(tests/dns_fixture.py)."""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from nacl.signing import SigningKey


class Key:
    """An RSA key pair: ``private`` as PKCS#1 PEM (what dkimpy signs with)."""

    def __init__(self, bits: int = 1024) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.private = key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                         serialization.NoEncryption())
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public = base64.b64encode(der).decode()

    def record(self, selector: str, name: str) -> str:
        """``selector._domainkey.name TXT "..."``, split into 200-character strings
        (a TXT string holds at most 255)."""
        text = f"v=DKIM1; k=rsa; p={self.public}"
        parts = " ".join(f'"{text[i:i + 200]}"' for i in range(0, len(text), 200))
        return f"{selector}._domainkey.{name} TXT {parts}"

    def sign(self, message: bytes, domain: str, selector: str = "sel",
             canonicalize: tuple[bytes, bytes] = (b"simple", b"simple")) -> bytes:
        """``message`` with a DKIM-Signature field on top."""
        field = dkim.sign(message, selector.encode(), domain.encode(), self.private,
                          canonicalize=canonicalize,
                          include_headers=[b"from", b"to", b"subject", b"message-id"])
        return field + message


class Ed25519Key:
    """An Ed25519 key pair (RFC 8463), as dkimpy signs with it."""

    def __init__(self) -> None:
        key = SigningKey.generate()
        self.private = base64.b64encode(bytes(key))
        self.public = base64.b64encode(bytes(key.verify_key)).decode()

    def record(self, selector: str, name: str) -> str:
        return f'{selector}._domainkey.{name} TXT "v=DKIM1; k=ed25519; p={self.public}"'

    def sign(self, message: bytes, domain: str, selector: str = "ed") -> bytes:
        field = dkim.sign(message, selector.encode(), domain.encode(), self.private,
                          signature_algorithm=b"ed25519-sha256",
                          canonicalize=(b"relaxed", b"relaxed"),
                          include_headers=[b"from", b"to", b"subject", b"message-id"])
        return field + message
