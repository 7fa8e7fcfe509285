"""The dashboard: static pages and ES modules served at ``/ui/`` by the manager and the agent.

No build step and no third-party script: ``static/`` holds plain ES modules, and
``static/js`` is herder.js (``clients/js``), served as ``/ui/herder.js`` so that any
page of the daemon's origin can import it. ``install`` adds the routes to an app;
``PUBLIC_PATHS`` lists every file's path for the front door, since a browser loads
a page and its modules without the token it has not bought yet (they hold no secret).
``install_api_pages`` serves ``/docs`` and ``/redoc`` from local files (``apidocs``).
"""

from __future__ import annotations

from herder.lazy import lazy_exports

_HOMES = {
    "install": "mount",
    "public_paths": "mount",
    "UiFiles": "mount",
    "install_api_pages": "apidocs:install",
    "api_pages_public_paths": "apidocs:public_paths",
}

__getattr__ = lazy_exports(__name__, _HOMES)
__all__ = [*_HOMES]
