"""Development tooling: the local stack behind ``make run`` and the tests, and a caller simulator.

Not used by the deployed services.
"""
