"""Errors in Google's REST shape: `{"error": {"code", "message", "status"}}`."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error the emulator answers with, as the real API would."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        """The JSON body Google sends with an error."""
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def invalid_argument(message: str) -> ApiError:
    """A 400 INVALID_ARGUMENT: the caller must fix the request."""
    return ApiError(400, "INVALID_ARGUMENT", message)


def not_found(message: str) -> ApiError:
    """A 404 NOT_FOUND: the resource does not exist (or no longer)."""
    return ApiError(404, "NOT_FOUND", message)


def line_error(exc: ApiError) -> dict[str, Any]:
    """The google.rpc.Status a failed request carries inside a batch's output."""
    return {"code": exc.code, "message": exc.message, "status": exc.status}
