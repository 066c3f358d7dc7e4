"""WSGI entry point: ``gunicorn wsgi:app`` (settings from gunicorn.conf.py)."""

from chatcompat import create_app

app = create_app()
