"""A plugin module that is present but imports a package that is not installed: a real failure."""

import not_installed_dependency  # noqa: F401
