"""Key Protect API v2: keys (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
