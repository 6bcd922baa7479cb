"""Shared test configuration.

Server fixtures live next to the tests in ``tests/_<backend>_server.py`` modules; test modules
import the fixtures they use from there (pytest puts this folder on ``sys.path``).
"""
