"""Key Protect API v2: instance (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
