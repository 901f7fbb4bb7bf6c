"""Key Protect API v2: import_tokens (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
