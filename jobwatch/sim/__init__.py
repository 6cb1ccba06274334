"""A local Reader API simulator for tests, benchmarks and demos.

It speaks Reader's wire formats (``/v1/read``, ``/v1/jobs/{id}``, both SSE streams, signed
webhooks, limits and errors) on loopback, with no account and no network. Jobs progress in
simulated time, which a test can speed up (`Simulator(time_scale=...)`) or drive by hand
(`ManualClock`), and faults can be injected on purpose (`Faults`).
"""

from ._clock import ManualClock
from ._engine import Step
from ._faults import Faults
from ._runner import main, running, serve
from ._service import RequestCounts
from ._simulator import Simulator
from ._webhooks import DeliveryAttempt

__all__ = [
    "DeliveryAttempt",
    "Faults",
    "ManualClock",
    "RequestCounts",
    "Simulator",
    "Step",
    "main",
    "running",
    "serve",
]
