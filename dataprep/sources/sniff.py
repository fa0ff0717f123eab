"""Say what a file is from its bytes: compression by magic number, then the format of what is inside.

Extensions are only a tie-breaker: a ``.json`` holding one object per line is JSONL, a ``.csv`` starting with a
UTF-8 BOM is still CSV, a ``.gz`` is whatever its decompressed bytes say.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import UnreadableInput
from ..safejson import loads as safe_loads
from .jsonl import ENCODING_HINT, UTF8_BOM, is_utf8

HEAD_BYTES = 64 * 1024

_MAGIC_COMPRESSION = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_COMPRESSION_EXT = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
_TEXT_EXT = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}
_BINARY_EXT = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".npy": "npy",
}
# A one-line JSON object whose single key is one of these is one chat record (JSONL), not a wrapper of records.
RECORD_KEYS = frozenset(
    {"messages", "conversations", "conversation", "turns", "dialog", "chosen", "rejected"}
)


@dataclass(frozen=True)
class Sniffed:
    """What a single file holds: ``format`` (csv|tsv|json|jsonl|parquet|arrow|npy) and ``compression``."""

    format: str
    compression: str = "none"


def compression_of(head: bytes) -> str:
    for magic, name in _MAGIC_COMPRESSION:
        if head.startswith(magic):
            return name
    return "none"


def strip_compression_ext(name: str) -> tuple[str, str | None]:
    """``x.jsonl.gz`` -> (``x.jsonl``, ``gzip``)."""
    stem, ext = os.path.splitext(name)
    comp = _COMPRESSION_EXT.get(ext.lower())
    return (stem, comp) if comp else (name, None)


def format_from_name(name: str) -> str | None:
    """The format an extension suggests (compression extensions looked through), or None."""
    base, _ = strip_compression_ext(name)
    ext = os.path.splitext(base)[1].lower()
    return _TEXT_EXT.get(ext) or _BINARY_EXT.get(ext)


def open_decompressed(path: str | Path, compression: str) -> BinaryIO:
    """A buffered binary stream of the file's decompressed bytes."""
    if compression == "gzip":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "bz2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if compression == "zstd":
        return io.BufferedReader(_ZstdRaw(path), buffer_size=1 << 16)  # type: ignore[return-value]
    return open(path, "rb")  # noqa: SIM115


class _ZstdRaw(io.RawIOBase):
    """Decompress zstd frames one after another; a stream that ends inside a frame raises EOFError.

    (zstandard's own stream_reader returns a silent short read on a truncated file.)
    """

    def __init__(self, path: str | Path):
        import zstandard

        self._zstd = zstandard
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._dobj = zstandard.ZstdDecompressor().decompressobj()
        self._out = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._out:
            chunk = self._fh.read(1 << 16)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd data ended before the end of its frame")
                return 0
            while chunk:
                self._in_frame = True
                self._out += self._dobj.decompress(chunk)
                if self._dobj.eof:
                    chunk = self._dobj.unused_data
                    self._dobj = self._zstd.ZstdDecompressor().decompressobj()
                    self._in_frame = False
                else:
                    chunk = b""
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def read_head(path: str | Path, compression: str, n: int = HEAD_BYTES) -> bytes:
    """Up to ``n`` decompressed bytes; a corrupt or truncated stream is UnreadableInput."""
    try:
        with open_decompressed(path, compression) as fh:
            return fh.read(n)
    except (EOFError, OSError, ValueError) as exc:
        # A head shorter than n that ends mid-stream: the archive is truncated or not what its magic says.
        raise UnreadableInput(
            path, f"corrupt or truncated {compression} data ({exc})", hint="re-create or re-download the file"
        ) from None
    except Exception as exc:  # zstandard.ZstdError has no common base with the stdlib errors
        if type(exc).__module__.startswith("zstandard"):
            raise UnreadableInput(
                path, f"corrupt or truncated zstd data ({exc})", hint="re-create or re-download the file"
            ) from None
        raise


def _wide(encoding: str) -> bool:
    """UTF-16 / UTF-32 (any byte order): text whose line breaks are not the byte 0x0A alone."""
    return codecs.lookup(encoding).name.replace("_", "-").startswith(("utf-16", "utf-32"))


def _decodes_as_utf8(head: bytes, complete: bool) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head.removeprefix(UTF8_BOM), final=complete)
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class EncodingProblem:
    """Why a file's head is not text in the encoding given (``message``), what to do (``hint``), and the
    1-based line of the first bad byte where that means something (``line``)."""

    message: str
    hint: str
    line: int | None = None
    whole_file: bool = True  # False: a byte that does not decode, in text that is otherwise fine so far


UTF8_HINT = "drop $[encoding]: UTF-8 is the default"


def encoding_problem(head: bytes, encoding: str, *, complete: bool) -> EncodingProblem | None:
    """Check a (decompressed) file head against a non-UTF-8 ``--encoding`` before any reader decodes it.

    Readers split lines on the byte 0x0A and pyarrow's transcoder raises from a Python callback, so a wrong
    encoding must be caught here: a head that does not decode, or whose line breaks vanish when decoded (UTF-8
    bytes read as UTF-16 become one line of CJK characters), is not text in that encoding. Files that really are
    UTF-16/32 never get this far: the sniffer refuses them (their BOM, or their NUL bytes). None when it reads.
    """
    if is_utf8(encoding):
        return None
    line = None
    try:
        text = codecs.getincrementaldecoder(encoding)("strict").decode(head, final=complete)
    except UnicodeDecodeError as exc:
        reason = exc.reason
        if not _wide(encoding):
            line = head.count(b"\n", 0, exc.start) + 1
            reason = f"byte 0x{head[exc.start]:02x}: {exc.reason}"
    except UnicodeError as exc:  # e.g. "UTF-16 stream does not start with BOM" (not a UnicodeDecodeError)
        reason = str(exc)
    else:
        if b"\n" not in head or "\n" in text:
            return None
        reason = "its line breaks do not survive the decoding"
    if _decodes_as_utf8(head, complete):
        return EncodingProblem(f"not valid {encoding} text ({reason}); it reads as UTF-8", UTF8_HINT, line)
    return EncodingProblem(
        f"not valid {encoding} text ({reason})", ENCODING_HINT, line, whole_file=line is None
    )


def looks_binary(head: bytes) -> bool:
    """NUL bytes or many control characters: not text in any encoding we read."""
    sample = head[:8192]
    if not sample:
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return controls / len(sample) > 0.05


def _first_lines(text: str, n: int) -> list[str]:
    out = []
    for line in text.splitlines():
        if line.strip():
            out.append(line.strip())
            if len(out) == n:
                break
    return out


def _object_of_records(obj: object) -> bool:
    """A dict with exactly one key whose value is a list of dicts (``{"data": [...]}``), not a chat record."""
    if not isinstance(obj, dict) or len(obj) != 1:
        return False
    ((key, value),) = obj.items()
    return key not in RECORD_KEYS and isinstance(value, list) and all(isinstance(v, dict) for v in value[:10])


def text_format(head: bytes, name: str, *, complete: bool) -> str:
    """csv|tsv|json|jsonl for decoded text. ``complete``: ``head`` is the whole file."""
    text = head.removeprefix(UTF8_BOM).decode("utf-8", errors="replace")
    stripped = text.lstrip()
    hinted = format_from_name(name)
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        lines = _first_lines(text, 2)
        if hinted == "jsonl":
            return "jsonl"
        try:
            first = safe_loads(lines[0])
        except ValueError:
            return "json"  # a pretty-printed object spans lines
        if len(lines) == 1 and complete and hinted != "jsonl" and _object_of_records(first):
            return "json"
        return "jsonl"
    if hinted in ("json", "jsonl"):
        # Not JSON at all from the first byte: read it as JSONL so the bad line is named.
        return "jsonl"
    if hinted == "tsv":
        return "tsv"
    first = _first_lines(text, 1)
    if first and first[0].count("\t") > first[0].count(","):
        return "tsv"
    return "csv"


def sniff_file(path: str | Path) -> Sniffed:
    """Format and compression of one regular file, from its content first and its name second."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw_head = fh.read(16)
    except FileNotFoundError:
        raise UnreadableInput(p, "no such file or directory", hint="check the path") from None
    except PermissionError:
        raise UnreadableInput(p, "permission denied", hint="check the file's permissions") from None
    except IsADirectoryError:
        raise UnreadableInput(p, "is a directory") from None
    except OSError as exc:
        raise UnreadableInput(p, f"cannot open: {exc.strerror or exc}") from None
    if not raw_head:
        raise UnreadableInput(p, "empty file", hint="the file has no bytes: re-create it")
    compression = compression_of(raw_head)
    if compression == "none":
        if raw_head.startswith(b"PAR1"):
            return Sniffed("parquet")
        if raw_head.startswith(b"ARROW1"):
            return Sniffed("arrow")
        if raw_head.startswith(b"\xff\xff\xff\xff") and format_from_name(p.name) in ("arrow", None):
            return Sniffed("arrow")  # Arrow IPC stream (what `datasets` writes)
        if raw_head.startswith(b"\x93NUMPY"):
            return Sniffed("npy")
        if raw_head.startswith(b"PK\x03\x04"):
            raise UnreadableInput(
                p,
                "a zip archive (npz, xlsx, ...) is not a supported input",
                hint="unzip it and pass the data file",
            )
    head = read_head(p, compression)
    if not head.strip(UTF8_BOM + b" \t\r\n"):
        raise UnreadableInput(
            p, "empty file" if compression == "none" else f"empty file (after {compression})"
        )
    if compression != "none":
        # Columnar formats are not compressed as a whole in practice, but the inner magic says so if they are.
        if head.startswith(b"PAR1") or head.startswith(b"ARROW1"):
            raise UnreadableInput(
                p,
                f"a {compression}-compressed Parquet/Arrow file",
                hint="decompress it first; Parquet and Arrow compress internally",
            )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableInput(
            p,
            "UTF-16 text (it starts with a UTF-16 byte-order mark)",
            hint="convert it to UTF-8 first: iconv -f UTF-16 -t UTF-8 IN > OUT",
        )
    if looks_binary(head):
        raise UnreadableInput(
            p,
            f"binary data in no supported format (starts with {head[:8].hex(' ')})",
            hint="inputs are CSV, TSV, JSON, JSONL (optionally gzip/bz2/zstd), Parquet, Arrow/Feather or a datasets folder",
        )
    complete = len(head) < HEAD_BYTES
    return Sniffed(text_format(head, p.name, complete=complete), compression)
