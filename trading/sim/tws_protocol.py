"""The IB TWS socket protocol at server version 176, as the simulator speaks it: framing, lenient field parsing
and builders for the server-to-client messages (layouts in shared/docs/ib-wire-protocol.md)."""
from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SERVER_VERSION = 176
MIN_CLIENT_VERSION = 157
UNSET_INTEGER = 2**31 - 1
UNSET_DOUBLE = 1.7976931348623157e308
Field = str | int | float | bool | None


# ---- message ids ------------------------------------------------------------------------------------------

class In:
    """Client-to-server message ids."""

    REQ_MKT_DATA = 1
    CANCEL_MKT_DATA = 2
    PLACE_ORDER = 3
    CANCEL_ORDER = 4
    REQ_OPEN_ORDERS = 5
    REQ_ACCOUNT_UPDATES = 6
    REQ_EXECUTIONS = 7
    REQ_IDS = 8
    REQ_CONTRACT_DATA = 9
    REQ_AUTO_OPEN_ORDERS = 15
    REQ_ALL_OPEN_ORDERS = 16
    REQ_MANAGED_ACCTS = 17
    REQ_CURRENT_TIME = 49
    REQ_GLOBAL_CANCEL = 58
    REQ_MARKET_DATA_TYPE = 59
    REQ_POSITIONS = 61
    REQ_ACCOUNT_SUMMARY = 62
    CANCEL_ACCOUNT_SUMMARY = 63
    CANCEL_POSITIONS = 64
    START_API = 71
    REQ_ACCOUNT_UPDATES_MULTI = 76
    CANCEL_ACCOUNT_UPDATES_MULTI = 77
    REQ_SEC_DEF_OPT_PARAMS = 78
    REQ_COMPLETED_ORDERS = 99


class Out:
    """Server-to-client message ids."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    TICK_OPTION_COMPUTATION = 21
    TICK_STRING = 46
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    SEC_DEF_OPT_PARAMS = 75
    SEC_DEF_OPT_PARAMS_END = 76
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


# ---- encoding -----------------------------------------------------------------------------------------------

def encode_field(value: Field) -> str:
    """How TWS writes a field: unset numbers and None as empty, bools as 0/1, finite floats in plain form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return "" if value == UNSET_INTEGER else str(value)
    if isinstance(value, float):
        if value == UNSET_DOUBLE:
            return ""
        if math.isinf(value):
            return "Infinite"
        return str(value)
    return str(value)


def frame(fields: Iterable[Field]) -> bytes:
    """One message: big-endian length, then each field terminated by NUL."""
    payload = "".join(encode_field(f) + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def split_payload(payload: bytes) -> list[str]:
    fields = payload.decode(errors="backslashreplace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    return fields


def as_int(value: str, default: int = 0) -> int:
    """Clients send ints as '12', sometimes as '12.0', and unset as ''."""
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        return int(float(value))


def as_float(value: str, default: float = 0.0) -> float:
    if value in ("", "Infinite"):
        return default if value == "" else math.inf
    return float(value)


class Cursor:
    """Reads a client message field by field; missing trailing fields read as ''."""

    def __init__(self, fields: Sequence[str], start: int = 0) -> None:
        self.fields = fields
        self.i = start

    def text(self) -> str:
        value = self.fields[self.i] if self.i < len(self.fields) else ""
        self.i += 1
        return value

    def integer(self, default: int = 0) -> int:
        return as_int(self.text(), default)

    def number(self, default: float = 0.0) -> float:
        return as_float(self.text(), default)

    def skip(self, n: int = 1) -> None:
        self.i += n


# ---- contracts as they travel -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ContractFields:
    """The 12 contract fields a client sends in reqMktData, placeOrder and (with extras) reqContractDetails."""

    con_id: int
    symbol: str
    sec_type: str
    expiry: str
    strike: float
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str

    @classmethod
    def read(cls, cur: Cursor) -> ContractFields:
        return cls(con_id=cur.integer(), symbol=cur.text(), sec_type=cur.text(), expiry=cur.text(), strike=cur.number(),
                   right=cur.text(), multiplier=cur.text(), exchange=cur.text(), primary_exchange=cur.text(),
                   currency=cur.text(), local_symbol=cur.text(), trading_class=cur.text())


def normalise_right(right: str) -> str:
    r = right.upper()
    return {"CALL": "C", "PUT": "P"}.get(r, r)
