"""Small file helpers: checksums, canonical JSON, atomic writes, and the one reader of JSON that
nobody vouches for (``read_json``: bounded size, depth and numbers)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from survfusion.errors import UserError
from survfusion.limits import MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_NUMBER_CHARS


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def canonical_json(obj) -> bytes:
    """A byte-stable JSON form (sorted keys, no spaces) used for checksums of JSON objects."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def write_json(path: str | os.PathLike, obj) -> None:
    """Human-readable JSON (indented, sorted keys, no NaN), written atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_shareable(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (0600/0700) the permissions an ordinary one would have
    (0644/0755 under the usual umask): a bundle must stay readable by the container's non-root user."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        make_shareable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(frozen=True)
class JsonDocument:
    """A parsed JSON file and what the parser saw that a reader should know about."""

    value: object
    duplicate_keys: int = 0  # keys that repeated within an object (the first value was kept)
    duplicate_examples: tuple[str, ...] = ()


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in ``text`` (brackets inside strings do not count); linear
    time and no recursion, so it can be asked of any text before ``json.loads`` recurses into it."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def read_json(
    path: str | os.PathLike,
    what: str,
    *,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
    error: type[Exception] = UserError,
) -> JsonDocument:
    """Parse a JSON file that nobody vouches for: at most ``max_bytes``, nested at most ``max_depth``
    deep, numbers of at most ``MAX_NUMBER_CHARS`` characters (a 5,000-digit integer would otherwise
    fail Python's int limit, 100,000 nested arrays its recursion limit). Integers too large for a
    float become ``inf``, never an exception. A key repeated within an object keeps its *first* value
    (appended duplicates cannot override a value) and is counted. Every problem raises ``error``
    (default ``UserError``) with one line that names ``what`` and never quotes the file's content."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise error(f"{what} file {path.name} unreadable ({err.strerror or type(err).__name__})") from None
    if len(data) > max_bytes:
        raise error(f"{what} file {path.name} is larger than the limit of {max_bytes / 2**20:.0f} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} file {path.name} unreadable (not UTF-8 text)") from None
    if (depth := json_depth(text)) > max_depth:
        raise error(f"{what} file {path.name} is nested {depth} deep (limit {max_depth})")
    duplicates: list[str] = []

    def pairs(items):
        obj: dict = {}
        for key, value in items:
            if key in obj:
                duplicates.append(key)
            else:
                obj[key] = value
        return obj

    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, object_pairs_hook=pairs)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        why = str(err).split(":")[0] if isinstance(err, json.JSONDecodeError) else str(err)
        raise error(f"{what} file {path.name} unreadable (not usable JSON: {why})") from None
    return JsonDocument(value, len(duplicates), tuple(dict.fromkeys(duplicates))[:3])


def _parse_int(token: str):
    _check_number(token)
    return int(token) if len(token) <= 18 else float(token)  # float(): inf for 400 digits, no error


def _parse_float(token: str) -> float:
    _check_number(token)
    return float(token)


def _check_number(token: str) -> None:
    if len(token) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(token)} characters (limit {MAX_NUMBER_CHARS})")
