"""Build side of InSPyReNet engines: checkpoint -> export model -> artifacts -> bundle.

Imports ``serving`` (bundle format, image contract, backends) so the build
checks exactly what is served; ``serving`` never imports this package.
"""

import os

# transparent-background imports albumentations, which asks PyPI for its latest
# version on import: a network wait (and a warning) on every offline build.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
