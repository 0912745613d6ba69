"""Column types between SQLAlchemy and Arrow: for reading tables and for creating them."""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa

__all__ = ["arrow_type", "sql_type"]


def arrow_type(t: sa.types.TypeEngine) -> pa.DataType | None:
    """The Arrow type for a database column type, or None to infer it from the values.

    Examples
    --------
    >>> arrow_type(sa.BigInteger())
    DataType(int64)
    """
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    if isinstance(t, sa.Float):
        return pa.float64()
    if isinstance(t, sa.Numeric):
        p, s = t.precision, t.scale
        if p is not None and s is not None and 0 < p <= 38:
            return pa.decimal128(p, s)
        return pa.float64()
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if t.timezone else None)
    if isinstance(t, sa.Date):
        return pa.date32()
    if isinstance(t, sa.Time):
        return pa.time64("us")
    if isinstance(t, sa.Interval):
        return pa.duration("us")
    if isinstance(t, sa.LargeBinary | sa.types._Binary):
        return pa.binary()
    if isinstance(t, sa.JSON | sa.String | sa.Enum | sa.Uuid):
        return pa.string()
    return None


def sql_type(t: pa.DataType) -> sa.types.TypeEngine:
    """The SQLAlchemy column type for an Arrow type (tables created from data).

    Examples
    --------
    >>> sql_type(pa.int64())
    BigInteger()
    """
    if pa.types.is_dictionary(t):
        return sql_type(t.value_type)
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        return (
            sa.BigInteger()
            if t.bit_width > 32 or not pa.types.is_signed_integer(t)
            else sa.Integer()
        )
    if pa.types.is_floating(t):
        return sa.Double()
    if pa.types.is_decimal(t):
        return sa.Numeric(t.precision, t.scale)
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_time(t):
        return sa.Time()
    if pa.types.is_duration(t):
        return sa.Interval()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return sa.LargeBinary()
    if pa.types.is_nested(t):
        return sa.JSON()
    return sa.Text()
