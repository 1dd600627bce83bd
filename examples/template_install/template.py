"""The template the example installs: a zip archive of site files and JSON collections.

``make_archive`` writes the same bytes every time for the same arguments (seeded content, fixed
timestamps), so a test can check an installation against ``expected_contents``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from pathlib import Path
from typing import Any

FILES_PREFIX = "files/"
COLLECTIONS_PREFIX = "collections/"
_EPOCH = (2026, 1, 1, 0, 0, 0)

DEFAULT_COLLECTIONS = {"users": 2_000, "posts": 10_000, "comments": 30_000}


def _file_body(rng: random.Random, index: int) -> bytes:
    size = rng.randint(2_000, 40_000)
    if index % 3 == 0:  # some binary "images"
        return rng.randbytes(size)
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "template", "blog", "queue"]
    return " ".join(rng.choice(words) for _ in range(size // 6)).encode()


def _rows(rng: random.Random, name: str, count: int) -> list[dict[str, Any]]:
    return [{"objectId": f"{name[:2]}{i:06d}", "title": f"{name} {i}",
             "score": rng.randint(0, 1000), "tags": rng.sample(["a", "b", "c", "d", "e"], 2)}
            for i in range(count)]


def archive_bytes(files: int = 300, collections: dict[str, int] | None = None,
                  seed: int = 7) -> bytes:
    """The template as zip bytes: ``files`` site files under ``files/`` and one JSON array of
    objects (each with an ``objectId``) per collection under ``collections/``."""
    rng = random.Random(seed)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for i in range(files):
            folder = ("assets", "pages", "partials")[i % 3]
            suffix = ".bin" if i % 3 == 0 else ".html"
            info = zipfile.ZipInfo(f"{FILES_PREFIX}{folder}/file{i:04d}{suffix}", _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, _file_body(rng, i))
        for name, count in (collections or DEFAULT_COLLECTIONS).items():
            info = zipfile.ZipInfo(f"{COLLECTIONS_PREFIX}{name}.json", _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, json.dumps(_rows(rng, name, count)))
    return out.getvalue()


def make_archive(path: Path, **kwargs: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = archive_bytes(**kwargs)
    if not path.exists() or path.read_bytes() != data:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path


def expected_contents(archive: Path) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """What a finished install must hold: sha256 of each site file by its path under ``files/``,
    and each collection's rows."""
    files: dict[str, str] = {}
    collections: dict[str, list[dict[str, Any]]] = {}
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.startswith(FILES_PREFIX) and not name.endswith("/"):
                files[name[len(FILES_PREFIX):]] = hashlib.sha256(zf.read(name)).hexdigest()
            elif name.startswith(COLLECTIONS_PREFIX) and name.endswith(".json"):
                collections[name[len(COLLECTIONS_PREFIX):-5]] = json.loads(zf.read(name))
    return files, collections
