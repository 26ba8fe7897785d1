"""Downloads verified by SHA-256, from a list of mirrors; a bad file is deleted, never used."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from expkit.errors import ExpkitError


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(filename: str, mirrors: list[str], sha256: str, dest_dir: Path,
                      timeout: float = 30.0) -> Path:
    """Fetch `filename` from the first mirror that serves it with the expected SHA-256.

    The file is written as `<name>.part` and renamed only once its checksum matches; a
    mismatch deletes it and tries the next mirror. All mirrors failing raises an ExpkitError
    that lists why each one failed.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / filename
    part = dest_dir / (filename + ".part")
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            part.unlink(missing_ok=True)
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
            continue
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            failures.append(f"{url}: checksum mismatch (sha256 {got[:12]}..., expected "
                            f"{sha256[:12]}...), file deleted")
            continue
        part.replace(target)
        return target
    raise ExpkitError(f"could not download {filename}: " + "; ".join(failures))
