"""Key Protect API v2: key_rings (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
