"""Streaming uploads: the request body goes to disk chunk by chunk, hashed on the way.

Starlette's ``UploadFile`` spools into memory/temp files; here the multipart stream is parsed
incrementally (python-multipart) so memory stays flat whatever the size, and the size limit
counts the bytes actually received (a lying Content-Length does not matter).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 4096  # form fields besides the file are small options
MAX_FIELDS = 16
FILE_FIELD = "file"


class UploadError(ValueError):
    """A malformed or oversized upload; ``status`` is the HTTP answer (400, 413, 415, 422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    path: Path
    size: int = 0
    sha256: str = ""
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


@dataclass
class _Part:
    """Parser state of the part being read."""

    header: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    kind: str | None = None  # "file" | "field"
    name: str = ""


def _disposition(value: bytes) -> tuple[str | None, str | None]:
    _, params = parse_options_header(value)
    name = params.get(b"name")
    filename = params.get(b"filename")
    return (
        name.decode("utf-8", "replace") if name is not None else None,
        filename.decode("utf-8", "replace") if filename is not None else None,
    )


def clean_filename(name: str | None) -> str | None:
    """A display name only (never used as a path): last component, printable, bounded."""
    if not name:
        return None
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:255].strip()
    return name or None


async def receive_multipart(
    content_type: str,
    stream: AsyncIterator[bytes],
    dest: Path,
    max_bytes: int,
    allowed_fields: Collection[str] | None = None,
) -> Upload:
    """Parse ``multipart/form-data`` from ``stream``, the ``file`` part into ``dest``.

    ``allowed_fields`` (the names of the other parts) rejects an unexpected part as soon as its
    headers arrive, before its body is read; ``None`` accepts any name."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("multipart body without a boundary", 400)
    upload = Upload(dest)
    digest = hashlib.sha256()
    part = _Part()
    field_buf = bytearray()
    out = open(dest, "wb")  # noqa: SIM115 - closed in finally, written from callbacks
    files = 0
    file_done = False  # the file part's closing boundary was seen
    ended = False  # the body's closing boundary was seen

    def on_part_begin() -> None:
        part.headers = {}
        part.kind = None
        field_buf.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = part.header.lower()
        part.headers[key] = part.headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        part.header = b""

    def on_headers_finished() -> None:
        nonlocal files
        name, filename = _disposition(part.headers.get(b"content-disposition", b""))
        if name == FILE_FIELD:
            files += 1
            if files > 1:
                raise UploadError("only one `file` part is accepted", 400)
            part.kind = "file"
            upload.filename = clean_filename(filename)
        elif not name:
            raise UploadError("a form part has no name; send the video as the `file` part", 422)
        elif allowed_fields is not None and name not in allowed_fields:
            raise UploadError(
                f"unexpected form field {name!r}; send the video as the `file` part", 422
            )
        else:
            if len(upload.fields) >= MAX_FIELDS:
                raise UploadError("too many form fields", 400)
            part.kind = "field"
            part.name = name or ""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.kind == "file":
            chunk = data[start:end]
            upload.size += len(chunk)
            if upload.size > max_bytes:
                raise UploadError(f"upload exceeds the limit of {max_bytes} bytes", 413)
            digest.update(chunk)
            out.write(chunk)
        else:
            field_buf.extend(data[start:end])
            if len(field_buf) > MAX_FIELD_BYTES:
                raise UploadError(f"form field {part.name!r} is too long", 400)

    def on_part_end() -> None:
        nonlocal file_done
        if part.kind == "field":
            upload.fields[part.name] = field_buf.decode("utf-8", "replace")
        elif part.kind == "file":
            file_done = True

    def on_end() -> None:
        nonlocal ended
        ended = True

    complete = False
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": on_end,
        },
    )
    try:
        async for chunk in stream:
            if chunk:
                parser.write(chunk)
        parser.finalize()
        # finalize() does not check the final state: a body cut off mid-file (a dropped
        # connection) would otherwise be stored as a complete, truncated video.
        if not ended or (files and not file_done):
            raise UploadError("multipart body ended before its closing boundary", 400)
        if files == 0:
            raise UploadError("the multipart body has no `file` part", 422)
        complete = True
    except UploadError:
        raise
    except Exception as exc:  # the parser's own errors, a client gone: malformed body
        raise UploadError(f"malformed multipart body: {exc}", 400) from None
    finally:
        out.close()
        if not complete:  # any failure (a cancelled request too) leaves no partial file behind
            dest.unlink(missing_ok=True)
    upload.sha256 = digest.hexdigest()
    return upload
