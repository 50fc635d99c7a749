"""Batch cutouts: a folder or bucket of images in, a folder or bucket of cutouts out (``inspyrenet batch``).

``listing`` plans (which files, which output names, which task), ``locations``
reads and writes (local folder or Cloud Storage, with a record per output),
``run`` is the pipeline.
"""

from serving.errors import UserError


class BatchError(UserError):
    """The batch cannot start or cannot go on (SRC, DST, storage, the model); the message is one line."""
