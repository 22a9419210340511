"""Balances, transfers and ledger history: an agent's own accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from syntropism.api.dependencies import ERRORS, CallerDep, IdempotencyKey, ServicesDep
from syntropism.api.shapes import receipt_out
from syntropism.domain import economy
from syntropism.schemas import BalanceOut, HistoryOut, ReceiptOut, TransferIn

router = APIRouter(prefix="/economic", tags=["economic"], responses=ERRORS)


@router.get("/balance", response_model=BalanceOut)
async def get_balance(svc: ServicesDep, me: CallerDep) -> BalanceOut:
    balance = await svc.database.short(svc.accounts.balance, me.agent_id)
    return BalanceOut(agent_id=me.agent_id, available=balance.available, locked=balance.locked)


@router.post("/transfer", response_model=ReceiptOut)
def post_transfer(svc: ServicesDep, me: CallerDep, body: TransferIn, key: IdempotencyKey) -> ReceiptOut:
    receipt = svc.accounts.transfer(me.agent_id, body.to_agent, body.amount, key=key, purpose=body.purpose)
    return receipt_out(receipt)


@router.get("/history", response_model=HistoryOut)
def get_history(
    svc: ServicesDep,
    me: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=economy.MAX_JOURNAL_SEQ)] = None,
) -> HistoryOut:
    page = svc.accounts.history(me.agent_id, limit=limit, before=before)
    return HistoryOut(entries=[receipt_out(r) for r in page.entries], next_before=page.next_before)
