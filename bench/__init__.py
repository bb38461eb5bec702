"""The IdP's benchmark (``make bench``, ``python -m bench``): the IdP under gunicorn with
production settings, driven by a small asyncio load generator; every figure is printed beside
its target. See docs/performance.md."""
