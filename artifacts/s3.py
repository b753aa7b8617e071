"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Cloudflare R2), through
django-storages' S3 backend.

What the filesystem store does with files, this does with objects:

- A save is one PUT (multipart past boto3's threshold): an object appears whole or not at
  all, so the protocol gives what temp + fsync + rename give on disk. Names are sha256s, so a
  name that exists holds those bytes: saving it again overwrites it with the same bytes, it
  never makes a second name (django-storages' `file_overwrite=False` would).
- `exists` is a HEAD; the store asks it before a PUT (dedupe) and the reuse check asks it of a
  source's outputs.
- An open is a HEAD (a missing object is FileNotFoundError at once, as on disk) and then
  ranged GETs: every GET names the bytes it wants, so a preview that reads a bounded head or
  a Parquet footer fetches those bytes, never the object (django-storages' own S3File
  downloads the whole object into a temp file before the first read). Sequential reads (a
  download, a zip member, a worker's input) ask for growing windows, so a big object is a
  few GETs, streamed: memory stays flat.
- With `presigned` (STEPWORKS_S3_PRESIGNED=1) a download may be a short-lived presigned URL
  that carries our Content-Disposition and media type (response-content-disposition and
  response-content-type), so the bytes go from the bucket to the browser.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

# The first GET after an open or a seek asks for at least this much (a preview's head, a
# Parquet footer and its metadata come in one request); a read that continues where the
# last window ended asks for twice the last window, up to MAX_WINDOW.
MIN_WINDOW = 64 * 1024
SEQUENTIAL_WINDOW = 1024 * 1024
MAX_WINDOW = 64 * 1024 * 1024
PRESIGNED_EXPIRES_S = 60


def _not_found(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error.response.get("Error", {}).get("Code")
    return status == 404 or code in ("NoSuchKey", "404", "NotFound")


class RangedObjectReader(io.RawIOBase):
    """A read-only, seekable file over one object, read by ranged GETs.

    At most one response body is open at a time; it is read as the caller reads (never held
    in memory) and closed on a seek elsewhere or at the end of its range.
    """

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        self.name = key
        self.size = size
        self._pos = 0
        self._body: Any = None
        self._body_pos = 0  # the next byte the open body yields
        self._body_end = -1  # the last byte (inclusive) it was asked for
        self._window = 0  # the length of the last GET
        self.requests: list[tuple[int, int]] = []  # (first, last) of every GET, in order

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._pos = target
        return target

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._pos < self.size:
            if self._body is None or self._body_pos != self._pos:
                self._open_at(self._pos, len(view) - filled)
            want = min(len(view) - filled, self._body_end - self._body_pos + 1)
            chunk = self._read_body(want)
            if not chunk:  # the server sent less than the range: never spin
                raise OSError(f"s3://{self._bucket}/{self._key}: short read at {self._pos}")
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
            self._pos += len(chunk)
            self._body_pos += len(chunk)
            if self._body_pos > self._body_end:
                self._close_body()
        return filled

    def _read_body(self, want: int) -> bytes:
        try:
            data: bytes = self._body.read(want)
        except (BotoCoreError, OSError) as error:
            self._close_body()
            raise OSError(f"s3://{self._bucket}/{self._key}: {error}") from error
        return data

    def _open_at(self, first: int, want: int) -> None:
        continuing = self._body is None and first == self._body_end + 1 and self._window > 0
        self._close_body()
        if continuing:  # a sequential reader: fewer, bigger requests
            length = min(max(2 * self._window, SEQUENTIAL_WINDOW), MAX_WINDOW)
        else:
            length = MIN_WINDOW
        length = max(length, want)
        last = min(self.size - 1, first + length - 1)
        try:
            response = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={first}-{last}"
            )
        except ClientError as error:
            if _not_found(error):
                raise FileNotFoundError(f"s3://{self._bucket}/{self._key}") from error
            raise OSError(f"s3://{self._bucket}/{self._key}: {error}") from error
        except BotoCoreError as error:
            raise OSError(f"s3://{self._bucket}/{self._key}: {error}") from error
        self.requests.append((first, last))
        self._body = response["Body"]
        self._body_pos = first
        self._body_end = last
        self._window = last - first + 1

    def _close_body(self) -> None:
        if self._body is not None:
            body, self._body = self._body, None
            body.close()

    def close(self) -> None:
        self._close_body()
        super().close()


class ArtifactS3Storage(S3Storage):  # type: ignore[misc]  # django-storages has no types
    """django-storages' S3 backend, content-addressed, with ranged reads and presigned
    downloads (see the module docstring)."""

    def __init__(
        self,
        *,
        presigned: bool = False,
        presigned_expires_s: int = PRESIGNED_EXPIRES_S,
        presigned_endpoint_url: str | None = None,
        **options: Any,
    ) -> None:
        options["file_overwrite"] = True  # content-addressed: a name is its bytes
        options.setdefault(
            "client_config",
            # Signature v4 everywhere (AWS's newer regions and MinIO take nothing else); a
            # few retries for the blips of a store across the network.
            Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
        )
        super().__init__(**options)
        self.presigned = presigned
        self.presigned_expires_s = presigned_expires_s
        # The address browsers reach the bucket by, when it differs from the one this
        # process uses (a compose network's `http://minio:9000` vs `https://s3.example`).
        self.presigned_endpoint_url = presigned_endpoint_url or self.endpoint_url
        self._signer: Any = None
        self._signer_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_signer", None)
        state.pop("_signer_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._signer = None
        self._signer_lock = threading.Lock()

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return str(clean_name(name))

    def _key(self, name: str) -> str:
        return str(self._normalize_name(clean_name(name)))

    def _open(self, name: str, mode: str = "rb") -> RangedObjectReader:
        if mode != "rb":
            raise ValueError("artifacts are immutable: open them 'rb'")
        key = self._key(name)
        client = self.connection.meta.client
        try:
            head = client.head_object(Bucket=self.bucket_name, Key=key)
        except ClientError as error:
            if _not_found(error):
                raise FileNotFoundError(f"s3://{self.bucket_name}/{key}") from error
            raise
        return RangedObjectReader(client, self.bucket_name, key, int(head["ContentLength"]))

    def presigned_download_url(self, name: str, *, disposition: str, content_type: str) -> str:
        """A GET URL for `name`, valid `presigned_expires_s`, whose response carries these
        Content-Disposition and Content-Type headers. Signing is local (no request)."""
        url: str = self._signing_client().generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket_name,
                "Key": self._key(name),
                "ResponseContentDisposition": disposition,
                "ResponseContentType": content_type,
            },
            ExpiresIn=self.presigned_expires_s,
        )
        return url

    def _signing_client(self) -> Any:
        """A client for the address browsers use, made once (boto3 clients are thread-safe,
        making one is not)."""
        with self._signer_lock:
            if self._signer is None:
                self._signer = self._create_session().client(
                    "s3",
                    region_name=self.region_name,
                    endpoint_url=self.presigned_endpoint_url,
                    config=self.client_config,
                    verify=self.verify,
                )
            return self._signer
