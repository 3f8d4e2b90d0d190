"""Conformance of the emulator and the gateway to TASKQUEUE_API.md, method by method.

Requests go through google-api-python-client, as users send them, and
through plain HTTP where the client hides what the wire carries (status
codes, headers, exact JSON). Time is a fake clock the tests move, so lease
expiry is tested without sleeping.
"""
