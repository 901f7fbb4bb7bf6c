"""Key Protect API v2: aliases (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
