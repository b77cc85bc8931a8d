"""Every input and output of the farm: local paths, file:// and s3:// URIs (see store.Storage)."""
from farm.storage.options import StorageOptions
from farm.storage.store import Storage

__all__ = ["Storage", "StorageOptions"]
