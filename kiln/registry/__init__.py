"""The artifact repository seam: where releases' images live, pinned by digest (see README.md)."""

from kiln.registry.base import Credentials, Registry
from kiln.registry.reference import ImageReference, is_digest, parse_reference, pinned_parts

__all__ = [
    "Credentials",
    "ImageReference",
    "Registry",
    "is_digest",
    "parse_reference",
    "pinned_parts",
]
