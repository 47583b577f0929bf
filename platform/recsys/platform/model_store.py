"""Versioned, immutable model artifacts under a local directory or any fsspec URI.

Training writes, serving reads; this module is where they meet, so neither imports the other.

Layout (``<root>`` is a path or URI such as ``s3://bucket/models``)::

    <root>/<model_name>/<version>/metadata.json   # name, version, kind, metrics, data_hash, params, files+sha256
    <root>/<model_name>/<version>/<files...>      # weights, embeddings, id maps, FAISS index ...
    <root>/<model_name>/PROMOTED                  # text: the version serving should load

Versions are immutable: a version is written into a staging name and only becomes visible
when ``metadata.json`` (written last) exists; writing an existing version raises.  ``promote``
verifies every file's checksum first, so a corrupt or half-copied artifact is refused while
the previously promoted version keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
METADATA = "metadata.json"
PROMOTED = "PROMOTED"


class ModelStoreError(RuntimeError):
    """Any store problem a user must act on: missing version, corrupt file, overwrite attempt."""


@dataclass(frozen=True)
class ModelVersion:
    """A readable, verified pointer to one stored version."""

    name: str
    version: str
    uri: str
    metadata: dict[str, Any] = field(hash=False, compare=False)

    @property
    def kind(self) -> str:
        return str(self.metadata.get("kind", ""))

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.metadata.get("metrics", {}))

    def path(self, filename: str) -> str:
        return posixpath.join(self.uri, filename)


def _sha256(fs: fsspec.AbstractFileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def metrics_lines(metrics: dict[str, Any]) -> list[str]:
    """Readable lines of a version's metrics: scalars, the promotion gate's paired comparison, metric sets."""
    lines = []
    for key, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            lines.append(f"{key}: {value:.4f}")
        elif key == "gate" and isinstance(value, dict):
            verdict = "PASSED" if value.get("passed") else "REFUSED"
            lines.append(f"gate: {verdict} on {value.get('window')} ({value.get('n_users')} users): "
                         f"{value.get('reason')}")
            for m, v in (value.get("metrics") or {}).items():
                lines.append(f"  {m}: pipeline {v['pipeline']:.4f} vs retrieval {v['retrieval']:.4f}, "
                             f"diff {v['diff']:+.4f} CI [{v['lo']:+.4f}, {v['hi']:+.4f}]")
            for m, v in (value.get("candidate_recall") or {}).items():
                lines.append(f"  {m}: {v:.4f}")
        elif isinstance(value, dict):
            scalars = {k: v for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            shown = [k for k in scalars if k.startswith(("recall@", "ndcg@"))] or list(scalars)[:6]
            lines.append(f"{key}: " + ", ".join(f"{k}={scalars[k]:.4f}" for k in shown))
    return lines


class ModelStore:
    """Read/write versions; see module docstring for the layout and guarantees."""

    def __init__(self, root: str | Path):
        self.root = str(root).rstrip("/")
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        self._is_local = self.fs.protocol in ("file", ("file", "local")) or "file" in self.fs.protocol

    # ------------------------------------------------------------ path helpers
    def _p(self, *parts: str) -> str:
        return posixpath.join(self._root_path, *parts)

    def _uri(self, *parts: str) -> str:
        if self._is_local:
            return self._p(*parts)
        return self.fs.unstrip_protocol(self._p(*parts))

    @staticmethod
    def _check_name(what: str, value: str) -> None:
        if not _NAME_RE.match(value):
            raise ModelStoreError(
                f"invalid {what} {value!r}: use 1-64 characters a-z, 0-9, '_', '-', '.', starting alphanumeric"
            )

    @staticmethod
    def new_version_id(now: datetime | None = None) -> str:
        """Sortable default version id, e.g. ``v20261123-171500-123456``."""
        now = now or datetime.now(UTC)
        return now.strftime("v%Y%m%d-%H%M%S-%f")

    # ------------------------------------------------------------------ write
    @contextmanager
    def write_version(
        self,
        name: str,
        version: str | None = None,
        *,
        kind: str,
        metrics: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        data_hash: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Iterator[Path]:
        """Yield a local staging directory; on clean exit publish it as ``name/version``.

        Files are checksummed, uploaded, and ``metadata.json`` is written last so readers never
        see a partial version.  On an exception nothing is published.
        """
        self._check_name("model name", name)
        version = version or self.new_version_id()
        self._check_name("version", version)
        target = self._p(name, version)
        if self.fs.exists(posixpath.join(target, METADATA)):
            raise ModelStoreError(f"{name}/{version} already exists in {self.root}; versions are immutable")
        staging = Path(tempfile.mkdtemp(prefix=f"recsys-{name}-"))
        try:
            yield staging
            files = {}
            for f in sorted(staging.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(staging).as_posix()
                    if rel == METADATA:
                        raise ModelStoreError(f"{METADATA} is written by the store; do not create it")
                    files[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
            meta = {
                "name": name,
                "version": version,
                "kind": kind,
                "created_at": datetime.now(UTC).isoformat(),
                "metrics": metrics or {},
                "params": params or {},
                "data_hash": data_hash,
                "files": files,
                **(extra or {}),
            }
            self.fs.makedirs(target, exist_ok=True)
            for rel in files:
                dst = posixpath.join(target, rel)
                self.fs.makedirs(posixpath.dirname(dst), exist_ok=True)
                self.fs.put_file(str(staging / rel), dst)
            with self.fs.open(posixpath.join(target, METADATA), "w") as fh:
                fh.write(json.dumps(meta, indent=2, default=str))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ------------------------------------------------------------------- read
    def list_models(self) -> list[str]:
        if not self.fs.exists(self._root_path):
            return []
        return sorted(
            posixpath.basename(p.rstrip("/")) for p in self.fs.ls(self._root_path, detail=False) if self.fs.isdir(p)
        )

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Published versions of ``name``, oldest first."""
        base = self._p(name)
        if not self.fs.exists(base):
            return []
        out = []
        for p in sorted(self.fs.ls(base, detail=False)):
            v = posixpath.basename(p.rstrip("/"))
            if self.fs.exists(posixpath.join(p, METADATA)):
                out.append(self.get(name, v, verify=False))
        return out

    def get(self, name: str, version: str | None = None, *, verify: bool = False) -> ModelVersion:
        """Return a version (the promoted one when ``version`` is None); optionally verify checksums."""
        if version is None:
            version = self.promoted(name)
            if version is None:
                raise ModelStoreError(f"no promoted version of {name!r} in {self.root}; run `recsys models promote`")
        meta_path = self._p(name, version, METADATA)
        if not self.fs.exists(meta_path):
            known = [v.version for v in self.list_versions(name)]
            raise ModelStoreError(f"{name}/{version} not found in {self.root}; known versions: {known or 'none'}")
        try:
            with self.fs.open(meta_path, "r") as fh:
                meta = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelStoreError(f"{name}/{version}: {METADATA} is corrupt ({e})") from e
        mv = ModelVersion(name=name, version=version, uri=self._uri(name, version), metadata=meta)
        if verify:
            self.verify(mv)
        return mv

    def verify(self, mv: ModelVersion) -> None:
        """Raise ModelStoreError if any file is missing or its sha256 differs from metadata."""
        for rel, digest in mv.metadata.get("files", {}).items():
            p = self._p(mv.name, mv.version, rel)
            if not self.fs.exists(p):
                raise ModelStoreError(f"{mv.name}/{mv.version}: file {rel} is missing")
            if _sha256(self.fs, p) != digest:
                raise ModelStoreError(f"{mv.name}/{mv.version}: file {rel} is corrupt (checksum mismatch)")

    def local_path(self, mv: ModelVersion, cache_dir: str | Path | None = None) -> Path:
        """A local directory holding the version's files (downloaded to ``cache_dir`` for remote stores)."""
        if self._is_local:
            return Path(self._p(mv.name, mv.version))
        cache = Path(cache_dir or Path(tempfile.gettempdir()) / "recsys-model-cache") / mv.name / mv.version
        if not (cache / METADATA).exists():
            cache.mkdir(parents=True, exist_ok=True)
            self.fs.get(self._p(mv.name, mv.version) + "/", str(cache) + "/", recursive=True)
        return cache

    def add_metrics(self, name: str, version: str, metrics: dict[str, Any]) -> ModelVersion:
        """Merge evaluation results into a version's ``metadata["metrics"]`` (files stay untouched).

        Artifacts are immutable; what we learn about them later (the promotion gate's paired
        comparison, test-set metrics) is recorded next to them so ``recsys models show`` can print
        every version's numbers.  ``metadata.json`` is replaced atomically (write + rename).
        """
        mv = self.get(name, version)
        meta = dict(mv.metadata)
        meta["metrics"] = {**meta.get("metrics", {}), **metrics}
        tmp = self._p(name, version, f".{METADATA}.tmp")
        with self.fs.open(tmp, "w") as fh:
            fh.write(json.dumps(meta, indent=2, default=str))
        self.fs.mv(tmp, self._p(name, version, METADATA))
        return self.get(name, version)

    # --------------------------------------------------------------- promote
    def promoted(self, name: str) -> str | None:
        p = self._p(name, PROMOTED)
        if not self.fs.exists(p):
            return None
        with self.fs.open(p, "r") as fh:
            return fh.read().strip() or None

    def promote(self, name: str, version: str) -> ModelVersion:
        """Verify ``version`` completely, then point PROMOTED at it; on failure nothing changes."""
        mv = self.get(name, version, verify=True)
        tmp = self._p(name, f".{PROMOTED}.tmp")
        with self.fs.open(tmp, "w") as fh:
            fh.write(version + "\n")
        self.fs.mv(tmp, self._p(name, PROMOTED))
        return mv
