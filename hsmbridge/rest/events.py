"""Key Protect API v2: events (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
