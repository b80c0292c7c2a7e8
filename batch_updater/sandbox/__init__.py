"""A built-in server that behaves like Capillary's "Update Customer Details" and "Add
Customer" APIs (docs/api.md), with configurable business errors, rate limits and faults.

Independent of the client code: nothing here imports from the rest of batch_updater.
"""

from .app import make_app
from .auth import basic_auth_header
from .ratelimit import max_in_window
from .record import RecordedRequest
from .server import Sandbox, SandboxThread, serve
from .settings import Faults, RateLimit, SandboxSettings
from .state import SandboxState

__all__ = ["Faults", "RateLimit", "RecordedRequest", "Sandbox", "SandboxSettings",
           "SandboxState", "SandboxThread", "basic_auth_header", "make_app", "max_in_window",
           "serve"]
