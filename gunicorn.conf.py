"""gunicorn settings in the checkout: ``gunicorn -c gunicorn.conf.py`` (the same as
``gunicorn -c python:idp.gunicorn_conf``, which an installed package uses). The module runs
afresh each time this file is read, as a config file's code does."""

import runpy

globals().update({name: value for name, value in runpy.run_module("idp.gunicorn_conf").items()
                  if not name.startswith("__")})
