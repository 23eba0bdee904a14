"""Names, aliases and the ref grammar (one grammar everywhere: CLI, API, HTTP ``model``, TUI).

    name            = name@latest
    name@3          version number 3 of name
    name@prod       alias "prod" of name (aliases are never all digits)
    sha256:ab12cd34 content id of a version, any unique prefix of >= 8 hex digits
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters_store.errors import InvalidName

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # always fullmatch: "$" allows a "\n"
HEX_RE = re.compile(r"[0-9a-f]{8,64}")
NUMBER_RE = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²" and "٣"
MAX_NUMBER = 2**63 - 1  # SQLite's INTEGER
LATEST = "latest"
DIGEST_PREFIX = "sha256:"
MIN_PREFIX = 8


@dataclass(frozen=True)
class ParsedRef:
    """One parsed ref: exactly one of ``number``, ``alias`` (``latest`` included) and
    ``digest_prefix`` is set."""

    text: str
    name: str | None = None
    number: int | None = None
    alias: str | None = None  # "latest" included
    digest_prefix: str | None = None  # lowercase hex, without "sha256:"


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid adapter name, else raise InvalidName."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidName(
            f"invalid {what} {name!r}: use 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, without '..'",
            hint="for example 'sentiment-lora' or 'intent_v2'",
        )
    return name


def check_alias(alias: str, *, allow_latest: bool = False) -> str:
    """Return ``alias`` if it is a valid alias (a name that is not all digits)."""
    check_name(alias, "alias")
    if alias.isdigit():
        raise InvalidName(
            f"invalid alias {alias!r}: an alias cannot be all digits, those are version numbers",
            hint="pick a word such as 'prod', 'staging' or 'v2'",
        )
    if alias == LATEST and not allow_latest:
        raise InvalidName(
            "'latest' is maintained by the store and always points to the newest version",
            hint="pick another alias such as 'prod' or 'stable'",
        )
    return alias


def parse_ref(ref: str) -> ParsedRef:
    """Parse ``ref`` into its parts; raise InvalidName when it does not follow the grammar."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidName(
            f"invalid ref {ref!r}: a ref is empty",
            hint="use name, name@3, name@alias or sha256:<8+ hex digits>",
        )
    text = ref.strip()
    if text.lower().startswith(DIGEST_PREFIX):
        prefix = text[len(DIGEST_PREFIX):].lower()
        if not HEX_RE.fullmatch(prefix):
            raise InvalidName(
                f"invalid content id {ref!r}: after 'sha256:' give {MIN_PREFIX} to 64 hex digits",
                hint="copy the digest from `adapters list` or `adapters show NAME`",
            )
        return ParsedRef(text=text, digest_prefix=prefix)
    name, sep, tail = text.partition("@")
    check_name(name)
    if not sep:
        return ParsedRef(text=text, name=name, alias=LATEST)
    if NUMBER_RE.fullmatch(tail):
        number = int(tail) if len(tail) <= 30 else MAX_NUMBER + 1
        if number > MAX_NUMBER:
            raise InvalidName(
                f"invalid ref {ref!r}: version number {tail[:30]}{'…' if len(tail) > 30 else ''} "
                f"is out of range (version numbers go up to {MAX_NUMBER})",
                hint=f"see `adapters list --name {name}` for its versions, or use {name}@latest")
        return ParsedRef(text=text, name=name, number=number)
    if not tail or not NAME_RE.fullmatch(tail) or ".." in tail:
        raise InvalidName(
            f"invalid ref {ref!r}: after '@' give a version number or an alias",
            hint=f"for example {name}@3, {name}@prod or {name}@latest",
        )
    return ParsedRef(text=text, name=name, alias=tail)
