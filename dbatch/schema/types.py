"""Column types by their pyarrow names: ``int64``, ``decimal128(12, 2)``, ``timestamp[us, tz=UTC]``.

Every type a user meets in real files can be declared: signed and unsigned
integers, float32/64, ``decimal128(p, s)``, bool, string and large_string,
binary, date32, ``time64[unit]``, ``timestamp[unit]`` and
``timestamp[unit, tz=ZONE]``, plus a few friendly aliases (``int``, ``float``,
``date``, ``timestamp``...). ``TYPES`` lists them for the docs.
"""

from __future__ import annotations

import re
import zoneinfo

import pyarrow as pa

from ..errors import JobSpecError

__all__ = ["parse_type", "type_name", "widens", "TYPES", "ALIASES"]

#: Friendly names and what they stand for.
ALIASES = {
    "int": "int64",
    "integer": "int64",
    "float": "float64",
    "double": "float64",
    "str": "string",
    "text": "string",
    "utf8": "string",
    "boolean": "bool",
    "date": "date32",
    "time": "time64[us]",
    "timestamp": "timestamp[us]",
    "datetime": "timestamp[us]",
}

#: The declarable types (name -> what it holds), the table of the docs.
TYPES = {
    "int8, int16, int32, int64": "signed whole numbers",
    "uint8, uint16, uint32, uint64": "unsigned whole numbers",
    "float32, float64": "floating-point numbers",
    "decimal128(p, s)": "exact decimals, p digits of which s after the point (money)",
    "bool": "true/false (also 1/0, t/f, yes/no in text)",
    "string, large_string": "text",
    "binary": "bytes (text is kept as its UTF-8 bytes)",
    "date32": "dates (ISO 8601: 2026-11-01)",
    "time64[us], time64[ns]": "times of day (10:30:00.25)",
    "timestamp[s|ms|us|ns]": "date and time without a zone; text with Z or an offset is "
    "converted to UTC",
    "timestamp[unit, tz=ZONE]": "an instant, shown in ZONE (UTC, Europe/Berlin...); text without "
    "an offset is read as UTC",
}

_SIMPLE = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "date32": pa.date32(),
}
_UNITS = ("s", "ms", "us", "ns")
_DECIMAL = re.compile(r"^decimal(?:128)?\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_TIMESTAMP = re.compile(r"^timestamp\[\s*(s|ms|us|ns)\s*(?:,\s*tz\s*=\s*([^\]\s]+)\s*)?\]$")
_TIME = re.compile(r"^time64\[\s*(us|ns)\s*\]$")


def parse_type(name: str | pa.DataType, *, key: str = "type") -> pa.DataType:
    """A declared column type from its pyarrow name.

    Examples
    --------
    >>> parse_type("decimal128(12, 2)")
    Decimal128Type(decimal128(12, 2))
    >>> parse_type("timestamp[us, tz=UTC]")
    TimestampType(timestamp[us, tz=UTC])
    >>> parse_type("date")
    DataType(date32[day])
    """
    if isinstance(name, pa.DataType):
        return name
    text = str(name).strip()
    text = ALIASES.get(text.lower(), text)
    found = _SIMPLE.get(text.lower())
    if found is not None:
        return found
    decimal = _DECIMAL.match(text.lower())
    if decimal:
        precision, scale = int(decimal.group(1)), int(decimal.group(2))
        if not 1 <= precision <= 38 or scale > precision:
            raise JobSpecError(
                f"{name!r}: a decimal128 has 1 to 38 digits, of which at most all after the "
                "point; for example decimal128(12, 2)",
                key=key,
            )
        return pa.decimal128(precision, scale)
    stamp = _TIMESTAMP.match(text)
    if stamp:
        return pa.timestamp(stamp.group(1), tz=_zone(stamp.group(2), name, key))
    time = _TIME.match(text)
    if time:
        return pa.time64(time.group(1))
    raise JobSpecError(
        f"unknown column type {name!r}; use a pyarrow type name: int8..int64, uint8..uint64, "
        "float32, float64, decimal128(p, s), bool, string, large_string, binary, date32, "
        "time64[us], timestamp[us] or timestamp[us, tz=UTC] (aliases: int, float, date, "
        "timestamp)",
        key=key,
    )


def _zone(zone: str | None, name: object, key: str) -> str | None:
    if zone is None:
        return None
    if zone.upper() == "UTC":
        return "UTC"
    if re.fullmatch(r"[+-]\d{2}:\d{2}", zone):
        return zone
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise JobSpecError(
            f"{name!r}: unknown time zone {zone!r}; use UTC, an offset such as +02:00 or an "
            "IANA name such as Europe/Berlin",
            key=key,
        ) from None
    return zone


def type_name(t: pa.DataType) -> str:
    """The name ``parse_type`` reads back as ``t``.

    Examples
    --------
    >>> type_name(pa.timestamp("ms", tz="UTC"))
    'timestamp[ms, tz=UTC]'
    """
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, tz={t.tz}]" if t.tz else f"timestamp[{t.unit}]"
    if pa.types.is_decimal(t):
        return f"decimal128({t.precision}, {t.scale})"
    names = {pa.bool_(): "bool", pa.float64(): "float64", pa.float32(): "float32"}
    if t in names:
        return names[t]
    return str(t).replace("[day]", "")


_UNIT_ORDER = {"s": 0, "ms": 1, "us": 2, "ns": 3}


def widens(have: pa.DataType, want: pa.DataType) -> bool:
    """Whether a file's column of type ``have`` reads exactly into a declared ``want``.

    Integers into wider ones of the same sign (or unsigned into a wider signed),
    integers into floats, floats into wider floats, decimals into decimals with as
    many digits before and after the point, decimals of up to 15 digits into
    float64, dictionary, large or plain text into text, timestamps into a finer
    unit with the same kind of zone. Anything else is drift.

    Examples
    --------
    >>> widens(pa.int32(), pa.int64()), widens(pa.int64(), pa.int32())
    (True, False)
    >>> widens(pa.decimal128(10, 2), pa.decimal128(12, 2))
    True
    """
    if pa.types.is_dictionary(have):
        return widens(have.value_type, want)
    if pa.types.is_integer(have) and pa.types.is_integer(want):
        if pa.types.is_signed_integer(have) == pa.types.is_signed_integer(want):
            return want.bit_width >= have.bit_width
        return pa.types.is_unsigned_integer(have) and want.bit_width > have.bit_width
    if pa.types.is_integer(have) and pa.types.is_floating(want):
        return True
    if pa.types.is_floating(have) and pa.types.is_floating(want):
        return want.bit_width >= have.bit_width
    if pa.types.is_decimal(have) and pa.types.is_decimal(want):
        return want.scale >= have.scale and (
            want.precision - want.scale >= have.precision - have.scale
        )
    if pa.types.is_decimal(have) and want == pa.float64():
        return have.precision <= 15
    if pa.types.is_integer(have) and pa.types.is_decimal(want):
        digits = len(str(2 ** (have.bit_width - pa.types.is_signed_integer(have)) - 1))
        return want.precision - want.scale >= digits
    if pa.types.is_timestamp(have) and pa.types.is_timestamp(want):
        same_kind = (have.tz is None) == (want.tz is None)
        return same_kind and _UNIT_ORDER[want.unit] >= _UNIT_ORDER[have.unit]
    text = (pa.string(), pa.large_string())
    if have in text and want in text:
        return True
    return have in (pa.binary(), pa.large_binary()) and want in (pa.binary(), pa.large_binary())
