"""One canonical reading of a location (a local path or a URI), and whether it lies under a root.

Every decision "is this location inside that part of the storage?" goes through `parse` and
`under`: admission (spec sources, checkpoint storage, endpoint model URIs), the operator and
`graft run` for a model URI read back from a result document, and the job code for locations it
reads from storage (progress files, result documents, image tables). Pure: no I/O (the job code
resolves symlinks with `graft.storage.inside`, which checks the real path with these rules again).

Canonical forms:

- a local path: `/abs/path`, `//abs/path` (POSIX reads a leading `//` as `/`), `file:/abs/path`,
  `file:///abs/path` and `file://localhost/abs/path` are all the local path `/abs/path`; repeated
  slashes and `.` segments collapse; a relative path stays relative (it is read from the process's
  working directory, never from a storage root);
- a URI `SCHEME://AUTHORITY/PATH`: the scheme lower-cased (`s3a` is `s3`, `gcs` is `gs`: the same
  stores), the authority (bucket) lower-cased, the path collapsed like a local path.

Refused (`LocationError`): an empty value, control characters (NUL included), backslashes, a `..`
segment in any form, a `file://` URI naming another host, a URI without an authority, and
percent-encoding, except the one level a `file://` or `http(s)://` URI carries (the job decodes it once, so a
second level, `%252e`, would be read literally on one side and decoded on the other).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_FILE = re.compile(r"^file:(.*)$", re.DOTALL | re.IGNORECASE)
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
WEB_SCHEMES = ("http", "https")  # percent-encoding is their own syntax: decoded once, then judged
SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs", "abfss": "abfs"}


class LocationError(ValueError):
    """A location that has no single reading; the message says why and what to write instead."""


@dataclass(frozen=True)
class Location:
    """A canonical location. `scheme` is "" for a local path; `path` is then the collapsed path
    (absolute: starts with `/`), else `AUTHORITY[/PATH]` without a leading or trailing slash."""

    scheme: str
    path: str

    @property
    def local(self) -> bool:
        return self.scheme == ""

    def __str__(self) -> str:
        return self.path if self.local else f"{self.scheme}://{self.path}"


def _collapse(path: str, value: str) -> list[str]:
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise LocationError(f"{value!r} contains a '..' segment; give the path without it")
    return segments


def _check_plain(text: str, value: str, *, encoded: bool) -> None:
    if _CONTROL.search(text):
        raise LocationError(f"{value!r} contains a control character")
    if "\\" in text:
        raise LocationError(f"{value!r} contains a backslash; write the path with '/'")
    if _PERCENT.search(text):
        what = "is percent-encoded twice" if encoded else "contains percent-encoding"
        raise LocationError(f"{value!r} {what}; write the path plainly")


def _local(path: str, value: str) -> Location:
    segments = _collapse(path, value)
    if path.startswith("/"):
        return Location("", "/" + "/".join(segments))
    return Location("", "/".join(segments) or ".")


def parse(value: str) -> Location:
    """The canonical `Location` of a path or URI; raises `LocationError` for one with no single reading."""
    if not value or not value.strip():
        raise LocationError("an empty location")
    if (m := _FILE.match(value)) is not None:
        rest = unquote(m.group(1))
        _check_plain(rest, value, encoded=True)
        if rest.startswith("//"):
            host, slash, tail = rest[2:].partition("/")
            if host.lower() not in ("", "localhost"):
                raise LocationError(f"{value!r} names host {host!r}; a file:// URI names a path on this machine (file:///PATH)")
            rest = slash + tail
        if not rest.startswith("/"):
            raise LocationError(f"{value!r} is not an absolute file URI; write file:///ABSOLUTE/PATH")
        return _local(rest, value)
    m = _SCHEME.match(value)
    web = m is not None and m.group(1).lower() in WEB_SCHEMES
    _check_plain(unquote(value) if web else value, value, encoded=web)
    if m is not None:
        scheme = m.group(1).lower()
        scheme = SCHEME_ALIASES.get(scheme, scheme)
        authority, _, tail = m.group(2).partition("/")
        if not authority or authority in (".", ".."):
            raise LocationError(f"{value!r} names no bucket or host after {scheme}://")
        segments = _collapse(unquote(tail) if web else tail, value)
        return Location(scheme, "/".join([authority.lower(), *segments]))
    return _local(value, value)


def canonical(value: str) -> str:
    """`str(parse(value))`: the form every comparison of locations uses."""
    return str(parse(value))


def under(value: str | Location, root: str | Location) -> bool:
    """True when `value` is `root` or lies below it on a segment boundary (`/mnt/graft/team-a`
    covers `/mnt/graft/team-a/x`, never `/mnt/graft/team-ab`), in the same store. A relative
    path is under no absolute root. Raises `LocationError` when either has no single reading."""
    v = value if isinstance(value, Location) else parse(value)
    r = root if isinstance(root, Location) else parse(root)
    if v.scheme != r.scheme:
        return False
    if r.path == "/":
        return v.path.startswith("/")
    return v.path == r.path or v.path.startswith(r.path + "/")


def part_below(value: str | Location, root: str | Location) -> str | None:
    """The first segment of `value` below `root` (on shared storage, the namespace whose part it
    is); None when `value` is not below `root` or is `root` itself."""
    v = value if isinstance(value, Location) else parse(value)
    r = root if isinstance(root, Location) else parse(root)
    if not under(v, r) or v.path == r.path:
        return None
    rest = v.path[len(r.path):].lstrip("/")
    return rest.split("/", 1)[0]


def problem(value: str) -> str | None:
    """Why `value` has no single reading (None when it has one)."""
    try:
        parse(value)
    except LocationError as exc:
        return str(exc)
    return None


__all__ = ["Location", "LocationError", "canonical", "parse", "part_below", "problem", "under"]
