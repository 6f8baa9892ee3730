"""``orch bench``: the way the lab notes measure speed, and a ledger that remembers it.

- ``schedule``: which prompt sizes and context depths to ask for (pure).
- ``stats``: the steady-state cut, min/mean/max, and the regression test (pure).
- ``ledger``: results as JSON lines in the state folder (parsing pure, appending thin).
- ``chart``: the depth sweep as an SVG picture and as terminal bars (pure).
- ``run``: the requests against a running engine (effects).
"""
