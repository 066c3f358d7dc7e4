"""gunicorn configuration for a checkout: ``gunicorn wsgi:app`` reads this file.

The settings live in ``chatcompat/gunicorn_config.py`` so that ``chatcompat serve``
(an installed package has no top-level files) uses exactly the same ones: gevent
workers, bind from the chatcompat config file, env overrides (see that module).
"""

from chatcompat.gunicorn_config import *  # noqa: F401,F403
