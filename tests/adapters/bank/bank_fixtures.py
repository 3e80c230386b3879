"""JSON fixtures of the bank interface and small utilities shared by the bank adapter tests."""

from __future__ import annotations

from typing import Any

BASE = "https://bank.test"


def account_json(**overrides: Any) -> dict[str, Any]:
    """An account as the interface returns it."""
    return {
        "id": "acct_bcdfghjklm",
        "object": "account",
        "account_number": "040820000001",
        "cci": "01808204082000000181",
        "dni": "10117410",
        "name": "Rosa Quispe Mamani",
        "ubigeo": "080206",
        "status": "open",
        "balance": 0,
        "opened_at": "2025-01-06T08:00:00-05:00",
        "closed_at": None,
        **overrides,
    }


def funding_json(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "acct_bbbbbbbbbb",
        "object": "funding_account",
        "account_number": "000010000000",
        "cci": "01800100001000000089",
        "name": "Programa Juntos",
        "balance": 1_000_00,
        "held": 400_00,
        "available": 600_00,
        "holds": [{"id": "hld_b", "batch_id": "bat_b", "amount": 400_00, "created_at": "2025-01-06T08:00:00-05:00"}],
        **overrides,
    }


def batch_json(**overrides: Any) -> dict[str, Any]:
    return {
        "id": "bat_bcdfghjklm",
        "object": "credit_batch",
        "reference": "2025-B1:batch:0001",
        "status": "received",
        "description": None,
        "item_count": 2,
        "control_amount": 400_00,
        "credited_count": 0,
        "credited_amount": 0,
        "rejected_count": 0,
        "rejected_amount": 0,
        "pending_count": 2,
        "created_at": "2025-01-06T08:00:00-05:00",
        "settled_at": None,
        **overrides,
    }


def item_json(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "id": f"itm_bcdfghj{'klmnpqrst'[n % 9]}{'bcdfghjkl'[n // 9 % 9]}{'bcdfghjkl'[n // 81 % 9]}",
        "object": "credit_item",
        "batch_id": "bat_bcdfghjklm",
        "reference": f"2025-B1:{n:07d}",
        "account_id": "acct_bcdfghjklm",
        "amount": 200_00,
        "status": "credited",
        "reason": None,
        "settled_at": "2025-01-06T08:05:00-05:00",
        "statement_line_id": "sln_bcdfghjklm",
        **overrides,
    }


def line_json(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "id": f"sln_bcdfghj{'klmnpqrst'[n % 9]}{'bcdfghjkl'[n // 9 % 9]}b",
        "object": "statement_line",
        "account_id": "acct_bcdfghjklm",
        "value_date": "2025-01-06",
        "posted_at": "2025-01-06T08:05:00-05:00",
        "type": "program_credit",
        "amount": 200_00,
        "balance_after": 200_00 * (n + 1),
        "reference": f"2025-B1:{n:07d}",
        "reverses": None,
        **overrides,
    }


def page(data: list[dict[str, Any]], has_more: bool = False) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": data[-1]["id"] if has_more else None,
    }


def error_json(
    code: str, message: str = "refused", type_: str = "invalid_request_error", **extra: Any
) -> dict[str, Any]:
    return {"error": {"type": type_, "code": code, "message": message, "request_id": "req_bcdfghjklm", **extra}}


class Sleeps:
    """An injectable ``sleep`` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
