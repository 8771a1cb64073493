"""Imported by pytest before any test module: minibert comes before NumPy here, so that its
OPENBLAS_THREAD_TIMEOUT reaches OpenBLAS when NumPy loads it (see minibert/__init__.py), as in the
``minibert`` command."""
import minibert  # noqa: F401
