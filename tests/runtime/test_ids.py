"""Random task ids are canonical version-4 UUID strings, all different."""

from __future__ import annotations

import uuid

from cloudqueue.engine.runtime.ids import random_uuid


def test_random_ids_are_canonical_version_4_uuids() -> None:
    for _ in range(2_000):  # crosses the pool's 4 KiB refill
        text = random_uuid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_random_ids_do_not_repeat() -> None:
    ids = [random_uuid() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
