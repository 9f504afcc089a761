"""An HTTP client for web services that answer JSON (the ``http-hooks`` plugin's
filters): pooled keep-alive connections per host, no retries and no redirects
(a filter that moved is misconfigured), one total timeout per request, and a
bounded read so a broken server cannot fill memory. urllib3's sockets are made
cooperative by gevent's monkey-patching, so a slow service delays only its session.
"""

from __future__ import annotations

import urllib3


class HttpFailed(Exception):
    """No usable answer: not reachable, too slow, not 200, or too large."""


class HttpClient:
    def __init__(self, pools: int = 16, connections_per_host: int = 16) -> None:
        # verify_tls -> pool manager: certificate checks on, or off for a test service
        self._pools = {
            verify: urllib3.PoolManager(num_pools=pools, maxsize=connections_per_host,
                                        retries=False,
                                        **({} if verify else {"cert_reqs": "CERT_NONE"}))
            for verify in (True, False)}

    def post(self, url: str, body: bytes, *, timeout: float, max_response: int,
             headers: dict[str, str] | None = None, verify_tls: bool = True) -> bytes:
        """POST ``body``; the response body of a 200, at most ``max_response`` bytes.
        Raises :class:`HttpFailed` for anything else."""
        try:
            resp = self._pools[verify_tls].request(
                "POST", url, body=body, headers=headers or {}, redirect=False,
                timeout=urllib3.Timeout(total=timeout), preload_content=False)
            try:
                if resp.status != 200:
                    raise HttpFailed(f"HTTP status {resp.status}")
                data = resp.read(max_response + 1)
                if len(data) > max_response:
                    raise HttpFailed(f"response larger than {max_response} bytes")
                return data
            finally:
                resp.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise HttpFailed(f"{type(exc).__name__}: {exc}") from None
