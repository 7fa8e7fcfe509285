"""Builds of real apps whose dependencies come from the package registry (PyPI).

The other build tests install hand-written wheels from a local directory; these two need
what only the registry has: Django with gunicorn, as Heroku's own getting-started app
uses them (collectstatic for real), and setuptools, which a ``setup.py`` app is built
with. PyPI is one of this machine's registries; on CI too. The downloads are a few MB.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import AgentFactory
from tests.fixtures.builds.wheels import HELLO_SERVER
from tests.test_builds import create, running, write_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DJANGO_SETTINGS = """\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "only-for-a-test"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.staticfiles"]
MIDDLEWARE = []
ROOT_URLCONF = "mysite.urls"
DATABASES = {}
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "assets"]
USE_TZ = True
"""

DJANGO_URLS = """\
import os
import sys

from django.conf import settings
from django.http import JsonResponse
from django.urls import path


def index(request):
    collected = (settings.STATIC_ROOT / "site.css").is_file()
    return JsonResponse({"collected": collected, "prefix": sys.prefix, "cwd": os.getcwd()})


urlpatterns = [path("", index)]
"""

DJANGO_WSGI = """\
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
"""

MANAGE_PY = """\
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""


def django_app(root: Path) -> Path:
    """A Django project served by gunicorn, its static files only in ``assets/``."""
    app = write_app(
        root,
        {
            "Procfile": "web: exec gunicorn --bind 127.0.0.1:$PORT --workers 1 mysite.wsgi\n",
            "requirements.txt": "Django==5.2.20\ngunicorn==23.0.0\n",
            "manage.py": MANAGE_PY,
        },
    )
    (app / "mysite").mkdir()
    (app / "mysite" / "__init__.py").write_text("")
    (app / "mysite" / "settings.py").write_text(DJANGO_SETTINGS)
    (app / "mysite" / "urls.py").write_text(DJANGO_URLS)
    (app / "mysite" / "wsgi.py").write_text(DJANGO_WSGI)
    (app / "assets").mkdir()
    (app / "assets" / "site.css").write_text("body { color: teal }\n")
    return app


async def test_a_django_app_with_gunicorn_serves_after_collectstatic(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    app = django_app(tmp_path / "app")
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        created = await create(client, "web.0", app.as_uri())
        answer = await running(agent, "hello.web.0")
        assert answer["collected"] is True  # manage.py collectstatic ran in the build
        assert answer["prefix"].startswith(str(agent.config.data_dir / "builds"))
        log_text = (await client.get(created["status"])).json()["build_log"]
        text = (await client.get(log_text)).text
        assert "collectstatic" in text
        assert "static file" in text  # Django's own "1 static file copied to ..."


SETUP_PY = """\
from setuptools import setup

setup(
    name="helloapp",
    version="1.0",
    py_modules=["helloapp"],
    entry_points={"console_scripts": ["helloapp-serve = helloapp:main"]},
)
"""


async def test_a_setup_py_app_is_installed_into_its_venv(make_agent: AgentFactory, tmp_path: Path) -> None:
    # The build tests' own HTTP server, as the app's one module.
    app = write_app(
        tmp_path / "app",
        {"Procfile": "web: exec helloapp-serve\n", "setup.py": SETUP_PY, "helloapp.py": HELLO_SERVER},
    )
    async with make_agent() as agent, httpx.AsyncClient(base_url=agent.url, timeout=30) as client:
        await create(client, "web.0", app.as_uri())
        answer = await running(agent, "hello.web.0")
        venv = Path(answer["prefix"])
        assert venv.is_relative_to(agent.config.data_dir / "builds")
        # Installed into the venv (setuptools built it), its console script on PATH.
        assert list(venv.glob("lib/python*/site-packages/helloapp.py")), json.dumps(answer)
        assert (venv / "bin" / "helloapp-serve").is_file()
