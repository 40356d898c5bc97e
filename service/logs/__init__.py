"""The log pipeline every process installs, ending in the digit scrubber.

Named ``logs``, not ``logging``: it would shadow the standard library.
"""
