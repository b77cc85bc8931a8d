"""Every input and output of the farm: local paths, file:// and s3:// URIs (see store.Storage)."""
from farm.storage.store import Storage, StorageOptions

__all__ = ["Storage", "StorageOptions"]
