"""The shipped demo pack, installed as the package data of ``engine.assets`` (see ``engine/paths.py``)."""
