"""kiln's image catalogue: ``repository:tag`` → the manifest digest it means, in the store's
SQLite file (table ``image_tags``).

Tags are immutable here: once ``web:1.4.2`` has meant a digest, a different digest under that
tag is refused with ``Conflict`` naming both (a trigger refuses it too). ``latest`` is the one
moving tag (Docker's convention). Prune forgets the tags of the manifests it deletes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from kiln.errors import Conflict
from kiln.model.image import MOVING_TAG, CatalogueEntry

if TYPE_CHECKING:
    from kiln.store.sqlite import SqliteStore

_COLUMNS = "repository, tag, digest, image_id, size, labels, created_at, created_by"


class ImageCatalogue:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def get(self, repository: str, tag: str) -> CatalogueEntry | None:
        with self._store._read(f"read image {repository}:{tag}") as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM image_tags WHERE repository = ? AND tag = ?",
                (repository, tag),
            ).fetchone()
        return _entry(row) if row else None

    def list(self, repository: str | None = None) -> list[CatalogueEntry]:
        with self._store._read("list images") as conn:
            if repository is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM image_tags ORDER BY repository, created_at"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM image_tags WHERE repository = ? ORDER BY created_at",
                    (repository,),
                ).fetchall()
        return [_entry(row) for row in rows]

    def record(self, entry: CatalogueEntry) -> CatalogueEntry:
        """Add ``entry``; the same digest again keeps the first record; a different digest under
        an immutable tag is refused (``Conflict`` naming both digests)."""
        from kiln.store.sqlite import _to_db

        with self._store._write(f"record image {entry.repository}:{entry.tag}") as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM image_tags WHERE repository = ? AND tag = ?",
                (entry.repository, entry.tag),
            ).fetchone()
            if row is not None:
                known = _entry(row)
                if known.digest == entry.digest:
                    return known
                if entry.tag != MOVING_TAG:
                    raise tag_conflict(known, entry.digest)
                conn.execute(
                    "DELETE FROM image_tags WHERE repository = ? AND tag = ?",
                    (entry.repository, entry.tag),
                )
            conn.execute(
                f"INSERT INTO image_tags ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.repository,
                    entry.tag,
                    entry.digest,
                    entry.image_id,
                    entry.size,
                    json.dumps(entry.labels, sort_keys=True),
                    _to_db(entry.created_at),
                    entry.created_by,
                ),
            )
        return entry

    def forget(self, repository: str, digest: str) -> int:
        """Drop every tag meaning ``digest`` (its manifest was deleted); how many."""
        with self._store._write(f"forget image {repository}@{digest}") as conn:
            cursor = conn.execute(
                "DELETE FROM image_tags WHERE repository = ? AND digest = ?", (repository, digest)
            )
            return int(cursor.rowcount)


def tag_conflict(known: CatalogueEntry, digest: str) -> Conflict:
    return Conflict(
        f"{known.repository}:{known.tag} already means {known.digest} (recorded"
        f" {known.created_at:%Y-%m-%d %H:%M} UTC by {known.created_by}); refusing {digest} under"
        " the same tag: tags are immutable in kiln. Give the new image a new tag"
        f" (e.g. {known.repository}:<next version>)"
    )


def _entry(row: Any) -> CatalogueEntry:
    from kiln.store.sqlite import _from_db

    repository, tag, digest, image_id, size, labels, created_at, created_by = row
    return CatalogueEntry(
        repository=repository,
        tag=tag,
        digest=digest,
        image_id=image_id,
        size=size,
        labels=json.loads(labels),
        created_at=_from_db(created_at),
        created_by=created_by,
    )
