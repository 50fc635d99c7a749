"""Bundles on Cloud Storage: the client (``gcs``) and versioned publish/pull (``bundles``)."""
