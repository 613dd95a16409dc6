"""Access group for imap-pop3 (header X-Mailflow-Token and Authorization: Bearer <session token>)."""

from __future__ import annotations

from fastapi import APIRouter


def router(store, service_token: str, max_items: int = 1000) -> APIRouter:
    return APIRouter(prefix="/access", tags=["access"])
