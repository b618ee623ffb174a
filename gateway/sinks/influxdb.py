"""The ``influxdb`` sink: line protocol over the InfluxDB v2 write API.

InfluxDB 2.x, InfluxDB 3.x and VictoriaMetrics all accept ``POST /api/v2/write``.
Uses influxdb-client's async API for the HTTP part (auth header, gzip, TLS);
the line protocol itself is ours (``gateway.encoding``) because it is the hot
path. The sink only classifies what the server said; the core retries.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import aiohttp
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.rest import ApiException
from influxdb_client.service.write_service import WriteService
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from gateway.config_types import Duration, SecretFile, resolve_secret
from gateway.encoding import EncodingError
from gateway.frame import Frame
from gateway.frame_encoding import FrameLineProtocolEncoder
from gateway.model import Reading
from gateway.sink import Outcome, SendResult, Sink, SinkConfig, SinkHealth

log = logging.getLogger(__name__)

# zlib-ng at level 2 compresses our line protocol as well as zlib's fastest level (8.8x vs 8.3x) for
# ~45 % less CPU (0.28 vs 0.51 us a value, bench/bench_gzip.py): after the encoding, the body's gzip is the
# sink's biggest cost. Its format is gzip: the server sees no difference.
_compress: Callable[[bytes, int], bytes] = gzip.compress
GZIP_LIBRARY, DEFAULT_GZIP_LEVEL = "zlib", 1
try:
    from zlib_ng import gzip_ng  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # no wheel for this machine (32-bit ARM, pyproject.toml): the standard library's zlib
    pass
else:
    _compress = gzip_ng.compress
    GZIP_LIBRARY, DEFAULT_GZIP_LEVEL = "zlib-ng", 2

DETAIL_MAX = 300  # server messages can echo a whole batch; keep logs readable


def gzip_body(body: bytes, level: int | None = None) -> bytes:
    """``body`` as gzip (RFC 1952), with zlib-ng where it is installed."""
    return _compress(body, DEFAULT_GZIP_LEVEL if level is None else level)


class InfluxDBSinkConfig(SinkConfig):
    type: Literal["influxdb"] = "influxdb"
    url: str = Field(
        pattern=r"^https?://[^\s/]+", description="http:// or https:// and the server, e.g. http://influx.local:8086"
    )
    # Required even though VictoriaMetrics and InfluxDB 3 ignore it: InfluxDB 2
    # answers 400 without one, which would dead-letter every batch.
    org: str = Field(min_length=1, description="InfluxDB 2 organisation (any value for VictoriaMetrics)")
    bucket: str = Field(min_length=1)
    token: SecretStr | None = Field(
        default=None, description='inline only as "${ENV_VAR}" (substituted at load); prefer token_file'
    )
    token_file: SecretFile | None = Field(default=None, description="relative paths are under $CREDENTIALS_DIRECTORY")
    token_env: str | None = Field(default=None, description="name of the environment variable holding the token")
    gzip: bool = True
    gzip_level: int | None = Field(
        default=None,
        ge=1,
        le=9,
        description="1: fastest, 9: smallest; default: 2 with zlib-ng (x86-64, arm64), 1 with the standard zlib",
    )
    timeout: Duration = Field(default=10.0, gt=0, le=300)
    precision: Literal["ns"] = "ns"
    verify_ssl: bool = True
    ssl_ca_cert: Path | None = None

    # A field validator, not a model validator: pydantic's message for a model
    # error echoes the whole section (token included) into the config error.
    @field_validator("token_file", "token_env")
    @classmethod
    def _one_token_source(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            others = [k for k in ("token", "token_file") if k != info.field_name and info.data.get(k) is not None]
            if others:
                raise ValueError(f"set only one of token, token_file, token_env ({others[0]} is set too)")
        return value


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _text(body: object) -> str:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    text = str(body or "").strip()
    return text if len(text) <= DETAIL_MAX else text[:DETAIL_MAX] + "..."


def classify_status(status: int, message: str, retry_after: str | None) -> SendResult:
    """What an HTTP error answer of the write API means for the batch."""
    detail = f"HTTP {status}: {_text(message)}"
    if status == 413:
        return SendResult(Outcome.TOO_LARGE, detail)
    if status in (400, 422):
        return SendResult(Outcome.REJECTED, detail)
    if status in (401, 403):
        return SendResult(Outcome.AUTH, detail)
    if status == 404:
        # InfluxDB answers 404 for a missing bucket/org *and* for a token that
        # cannot see the bucket: an operator must act, like 401/403.
        return SendResult(Outcome.AUTH, detail)
    # 429, 5xx, 408 and anything unexpected: keep the data, back off, try again.
    return SendResult(Outcome.RETRY, detail, retry_after_seconds(retry_after))


class InfluxDBSink(Sink):
    config_model = InfluxDBSinkConfig

    def __init__(self, config: InfluxDBSinkConfig, *, site: str, gateway: str, state_dir: Path | None = None) -> None:
        super().__init__(config, site=site, gateway=gateway, state_dir=state_dir)
        self.cfg = config
        self._encoder = FrameLineProtocolEncoder()
        self._client: InfluxDBClientAsync | None = None
        self._writes: WriteService | None = None
        self._health = SinkHealth(self.name, log)

    async def open(self) -> None:
        """Build the HTTP client. No request is made, so a dead server cannot fail this."""
        cfg = self.cfg
        token = resolve_secret(
            value=cfg.token.get_secret_value() if cfg.token else None,
            file=cfg.token_file,
            env=cfg.token_env,
            what=f"sinks.{self.name}.token",
        )
        kwargs: dict[str, Any] = {"verify_ssl": cfg.verify_ssl}
        if cfg.ssl_ca_cert is not None:
            kwargs["ssl_ca_cert"] = str(cfg.ssl_ca_cert)
        self._client = InfluxDBClientAsync(
            url=cfg.url,
            token=token or "",  # empty: no Authorization header (an open VictoriaMetrics)
            org=cfg.org,
            timeout=int(cfg.timeout * 1000),
            # We gzip the body ourselves: the library always compresses at level 9,
            # which cost 4-7 us per value, more than everything else in the sink.
            enable_gzip=False,
            **kwargs,
        )
        # The write service under the library's WriteApiAsync, which takes no Content-Encoding.
        self._writes = WriteService(self._client.api_client)  # type: ignore[no-untyped-call]

    async def send(self, batch: Sequence[Reading]) -> SendResult:
        if not batch:
            return SendResult.ok()
        try:
            body = self._encoder.encode(batch)
        except EncodingError as exc:
            return self._outcome(SendResult(Outcome.REJECTED, str(exc)))
        return await self._write(body)

    async def send_frames(self, frames: Sequence[Frame]) -> SendResult:
        """The same lines as ``send`` of the frames' readings, each frame's built from one template."""
        try:
            body = self._encoder.encode_frames(frames)
        except EncodingError as exc:
            return self._outcome(SendResult(Outcome.REJECTED, str(exc)))
        if not body:
            return SendResult.ok()
        return await self._write(body)

    async def _write(self, body: bytes) -> SendResult:
        if self._writes is None:
            await self.open()
        assert self._writes is not None
        cfg = self.cfg
        encoding: dict[str, str] = {}  # the Content-Encoding header, as the service names it
        if cfg.gzip:
            body = gzip_body(body, cfg.gzip_level)
            encoding["content_encoding"] = "gzip"
        try:
            await self._writes.post_write_async(  # type: ignore[no-untyped-call]
                org=cfg.org,
                bucket=cfg.bucket,
                body=body,
                precision="ns",
                content_type="text/plain; charset=utf-8",
                async_req=False,
                _return_http_data_only=False,
                **encoding,
            )
        except ApiException as exc:
            if not exc.status:  # raised by the client before any answer
                return self._outcome(SendResult(Outcome.RETRY, _text(exc.reason)))
            message = exc.message if isinstance(exc, InfluxDBError) and exc.message else exc.body
            return self._outcome(classify_status(int(exc.status), _text(message), exc.retry_after))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return self._outcome(SendResult(Outcome.RETRY, f"cannot reach {self.cfg.url}: {_text(reason)}"))
        return self._outcome(SendResult.ok())

    def _outcome(self, result: SendResult) -> SendResult:
        return self._health.record(result)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
        self._client = None
        self._writes = None

    def status(self) -> dict[str, Any]:
        return {
            "url": self.cfg.url,
            "bucket": self.cfg.bucket,
            **self._health.status(),
        }
