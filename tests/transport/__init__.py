"""The kombu transport (kombu_appengine.transport) against a real emulator, over real HTTP.

Every test talks to an in-process :class:`~kombu_appengine.emulator.Emulator`
through kombu's public API, and checks the outcome in the emulator's own
state (``emulator.service``), never through the transport's internals.
Where a test needs time to pass (a lease to end), it polls with a deadline.
"""
