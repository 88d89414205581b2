"""Address-register adapters: a local YAML/JSON file, or an HTTP service (national address register).

Lookups that fail (unknown, unreachable) answer None: the message is held and retried, never guessed.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from forlop.config import Settings
from services.messaging.domain.model import MunicipalEntry, Recipient

log = logging.getLogger(__name__)

DEFAULT_FILE = Path(__file__).resolve().parents[3] / "profiles" / "messaging" / "municipal-directory.yaml"


def _recipient(d: dict[str, Any], default_name: str) -> Recipient | None:
    if not d or not d.get("herId"):
        return None
    org = d.get("organisation") or d.get("office") or {}
    return Recipient(
        her_id=str(d["herId"]),
        name=str(d.get("name") or default_name),
        org_her_id=str(org["herId"]) if org.get("herId") else None,
        org_name=org.get("name"),
        org_number=str(org["orgNumber"]) if org.get("orgNumber") else None,
        dialog_version=str(d["dialogmelding"]) if d.get("dialogmelding") else None,
    )


class FileDirectory:
    """Both registers from one file; re-read when the file changes, so a fixed entry releases held messages."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._data: dict[str, Any] = {}

    def _load(self) -> dict[str, Any]:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime_ns
            except FileNotFoundError:
                log.warning("address directory file missing", extra={"ctx_path": str(self.path)})
                return {}
            if mtime != self._mtime:
                text = self.path.read_text(encoding="utf-8")
                data = json.loads(text) if self.path.suffix == ".json" else yaml.safe_load(text)
                self._data, self._mtime = data or {}, mtime
            return self._data

    def municipality(self, kommunenummer: str) -> MunicipalEntry | None:
        entry = (self._load().get("municipalities") or {}).get(str(kommunenummer))
        recipient = _recipient(entry or {}, f"Kommune {kommunenummer}")
        return MunicipalEntry(kommunenummer, recipient) if recipient else None

    def gp_for(self, national_id: str) -> Recipient | None:
        return _recipient((self._load().get("gps") or {}).get(national_id) or {}, "Fastlege")


class HttpDirectory:
    """GET {base}/municipalities/{kommunenummer}; POST {base}/gp-lookup {"nationalId"} (no fødselsnummer in URLs)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, req: urllib.request.Request) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                log.warning("address register answered an error", extra={"ctx_status": exc.code})
            return None
        except (OSError, ValueError) as exc:
            log.warning("address register unreachable", extra={"ctx_error": type(exc).__name__})
            return None

    def municipality(self, kommunenummer: str) -> MunicipalEntry | None:
        nr = urllib.parse.quote(str(kommunenummer), safe="")
        data = self._call(urllib.request.Request(f"{self.base}/municipalities/{nr}"))
        recipient = _recipient(data or {}, f"Kommune {kommunenummer}")
        return MunicipalEntry(kommunenummer, recipient) if recipient else None

    def gp_for(self, national_id: str) -> Recipient | None:
        body = json.dumps({"nationalId": national_id}).encode()
        req = urllib.request.Request(
            f"{self.base}/gp-lookup", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        return _recipient(self._call(req) or {}, "Fastlege")


def open_directory(location: str | None) -> FileDirectory | HttpDirectory:
    if location and location.startswith(("http://", "https://")):
        return HttpDirectory(location)
    return FileDirectory(location or DEFAULT_FILE)


def directories_from(settings: Settings) -> tuple[FileDirectory | HttpDirectory, FileDirectory | HttpDirectory]:
    """(municipal directory, GP directory) as FORLOP_MUNICIPAL_DIRECTORY and FORLOP_GP_DIRECTORY say
    (the GP lookup defaults to the municipal directory), else the shipped synthetic file."""
    municipal = settings.municipal_directory
    return open_directory(municipal), open_directory(settings.gp_directory or municipal)
