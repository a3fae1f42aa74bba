"""What only an admin sees: the dead-letter stream (runs the runners gave up on, poison entries)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from services.gateway.auth import Caller
from services.gateway.problems import Problem
from services.gateway.runtime import Runtime, caller_of, runtime_of

CallerDep = Annotated[Caller, Depends(caller_of)]
RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api/trading/admin", tags=["admin"])

    @router.get("/deadletters", summary="Newest dead-lettered queue entries (admins only)")
    async def deadletters(
        caller: CallerDep, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        if not caller.admin:
            raise Problem(
                403, "Dead letters are for admins: your role does not include admin.", slug="forbidden"
            )
        entries: Any = await runtime.redis.xrevrange(runtime.settings.common.keys.deadletter, count=limit)
        return {"deadletters": [_entry(entry_id, fields) for entry_id, fields in entries]}

    return router


def _entry(entry_id: bytes | str, fields: dict[Any, Any]) -> dict[str, Any]:
    text = {_s(k): _s(v) for k, v in fields.items()}
    return {
        "id": _s(entry_id),
        "runId": text.get("r", ""),
        "reason": text.get("reason", ""),
        "detail": text.get("detail", ""),
        "deliveries": int(text.get("deliveries") or 0),
        "runner": text.get("runner", ""),
        "queue": text.get("queue", ""),
        "at": float(text.get("at") or 0),
    }


def _s(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
