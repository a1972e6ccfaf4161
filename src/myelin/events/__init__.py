"""Pure (no I/O) Matrix event code: canonical JSON, room versions, the
:class:`Event` wrapper, hashing, signing, redaction, authorization rules and
state resolution v2.

Nothing in this package touches the network, the database or the clock, so
it can be used from any layer of the homeserver and tested in isolation.
"""
