"""The security layer: who is calling (auth, keyfile, callers), what they may use (ratelimit)
and what they used (accounting), enforced by one ASGI middleware in front of every route (guard).
"""
