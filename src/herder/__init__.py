"""herder: run, supervise and reach processes on a fleet of hosts.

The package is split as ``docs/architecture.md`` describes: ``wire`` (sans-IO framing),
``rpc`` (peers), ``agent`` (the per-host daemon), ``manager`` (the fleet's state),
``client`` (the Python SDK) and ``cli`` (the ``herder`` command). Importing ``herder``
imports none of them, so ``herder --version`` stays instant.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
