"""The local versioned adapter store. Imports no torch.

    from adapters_store import Store
    s = Store()                       # $ADAPTERS_HOME, else the user data dir
    v = s.put("out/adapter", "sentiment", lineage={...}, metrics={...})
    s.tag(v.ref, "prod"); s.resolve("sentiment@prod").path
"""

from adapters_store.core import Store, default_root, epoch_seconds
from adapters_store.errors import (
    AliasInUse,
    AlreadyStored,
    AmbiguousRef,
    DestinationExists,
    DestinationUnwritable,
    IntegrityError,
    InvalidAdapterDir,
    InvalidMetadata,
    InvalidName,
    PickleRefused,
    RefNotFound,
    StoreError,
    StoreLocked,
    StoreNotFound,
    StoreVersionError,
)
from adapters_store.model import GcPlan, Problem, Version
from adapters_store.refs import ParsedRef, check_alias, check_name, parse_ref

__all__ = [
    "AliasInUse",
    "AlreadyStored",
    "AmbiguousRef",
    "DestinationExists",
    "DestinationUnwritable",
    "GcPlan",
    "IntegrityError",
    "InvalidAdapterDir",
    "InvalidMetadata",
    "InvalidName",
    "ParsedRef",
    "PickleRefused",
    "Problem",
    "RefNotFound",
    "Store",
    "StoreError",
    "StoreLocked",
    "StoreNotFound",
    "StoreVersionError",
    "Version",
    "check_alias",
    "check_name",
    "default_root",
    "epoch_seconds",
    "parse_ref",
]
