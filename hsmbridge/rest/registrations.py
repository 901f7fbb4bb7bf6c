"""Key Protect API v2: registrations (to be implemented)."""

from fastapi import APIRouter

router = APIRouter()
