"""Key Protect API v2: actions (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
