"""Downloads verified by SHA-256, from a list of mirrors; a bad file is deleted, never used."""

from __future__ import annotations

import contextlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from expkit.errors import ExpkitError
from expkit.utils.files import sha256_of


class DownloadError(ExpkitError):
    """Every mirror failed: a short reason for the console, and each mirror's own error."""

    def __init__(self, filename: str, failures: list[str], offline: bool) -> None:
        why = "no network?" if offline else "see each mirror's error with EXPKIT_DEBUG=1"
        super().__init__(f"could not download {filename} ({len(failures)} "
                         f"mirror{'s' if len(failures) != 1 else ''} tried; {why})")
        self.failures = failures
        self.offline = offline


def download_verified(filename: str, mirrors: list[str], sha256: str, dest_dir: Path,
                      timeout: float = 30.0) -> Path:
    """Fetch `filename` from the first mirror that serves it with the expected SHA-256.

    The file is written as `<name>.part` and renamed only once its checksum matches; a
    mismatch deletes it and tries the next mirror. All mirrors failing raises a DownloadError
    that says how many were tried and keeps why each one failed.
    """
    dest_dir = Path(dest_dir)
    made = [d for d in (dest_dir, *dest_dir.parents) if not d.exists()]  # removed again on failure
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / filename
    part = dest_dir / (filename + ".part")
    failures = []
    unreachable = 0  # mirrors that could not be reached at all (no DNS, no route, refused, timeout)
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as e:
            part.unlink(missing_ok=True)
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
            unreachable += not isinstance(e, urllib.error.HTTPError)
            continue
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            failures.append(f"{url}: checksum mismatch (sha256 {got[:12]}..., expected "
                            f"{sha256[:12]}...), file deleted")
            continue
        part.replace(target)
        return target
    for folder in made:  # deepest first: an offline first run leaves no empty cache folder
        with contextlib.suppress(OSError):
            folder.rmdir()
    raise DownloadError(filename, failures, offline=bool(failures) and unreachable == len(failures))
