"""Key Protect API v2: key_policies (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
