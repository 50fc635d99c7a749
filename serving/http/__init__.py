"""The HTTP server: settings, request parameters, the LitAPI, the gateway middleware, metrics.

Data flow: ``server`` (preflight, LitServe) -> ``gateway`` (limits, admission, hand-off)
-> ``api`` (inference worker: decode, backend, cutout, encode).
"""
