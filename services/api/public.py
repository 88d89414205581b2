"""What the application may use of the API service: the Flask app and what it is built from."""

from __future__ import annotations

from services.api.app import ApiDeps, create_app

__all__ = ["ApiDeps", "create_app"]
