"""Burla's backend-agnostic conformance suite, shipped as a pytest plugin.

Run it against any installed backend:

    pytest --pyargs conformance_tests --burla-backend NAME [--burla-backend-option KEY=VALUE ...]

See docs/conformance.md. Importing this package imports nothing else (pytest loads its plugin
module in every run).
"""
