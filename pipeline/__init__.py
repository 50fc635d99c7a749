"""Build side of InSPyReNet engines: checkpoint -> export model -> artifacts -> bundle.

Imports ``serving`` (bundle format, image contract, backends) so the build
checks exactly what is served; ``serving`` never imports this package.
"""

__version__ = "0.1.0"
