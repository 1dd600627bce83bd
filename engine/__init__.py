"""The queue itself: the pure core (``core``) and the runtime that drives it (``runtime``).

Import the public API from ``cloudqueue``; this package is its implementation.
"""
