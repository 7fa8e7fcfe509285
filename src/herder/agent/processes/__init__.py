"""Supervised processes: their lifecycle table, spawning, output and restarts.

Also the descendants' ledger and the keeper that cleans up if the agent dies.
"""
