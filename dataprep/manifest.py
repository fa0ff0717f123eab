"""manifest.json: what a training run was prepared against, so merge_lora can check it gets the same.

AutoModel's PEFT rule: merging a LoRA adapter needs the same base checkpoint and tokenizer the adapter was
trained with. The manifest pins them: the model as given (a folder or a Hugging Face id) with the HF cache
revision (the snapshot commit) when it came from the cache, the sha256 of every tokenizer file and of the
chat template text in use, and the sha256 and row counts of the train and validation files.
``verify_manifest`` recomputes the file hashes for a model and reports a ``manifest_mismatch`` error naming
every file that differs.

Reading the manifest and hashing files needs neither transformers nor tokenizers.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ModelNotFound, UnreadableInput
from .findings import Finding, finding
from .split import file_sha256

MANIFEST_VERSION = 1

# Files that decide how text becomes token ids (and, for config.json, which checkpoint shape is expected).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
    "config.json",
    "generation_config.json",
)
# Extra templates newer transformers keep beside the default one.
TEMPLATE_DIR = "additional_chat_templates"
# Weights are hashed in full only up to this total size; above it, sizes are recorded (and compared).
WEIGHT_HASH_LIMIT = 512 * 1024 * 1024
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class ResolvedModel:
    """A model argument resolved to a folder: ``revision`` is the HF cache snapshot commit, if any."""

    model: str
    path: Path
    repo_id: str | None = None
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "path": str(self.path),
            "repo_id": self.repo_id,
            "revision": self.revision,
        }


def hf_hub_cache() -> Path:
    """The hub cache folder, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def resolve_model(model: str, revision: str | None = None) -> ResolvedModel:
    """A local folder as is; otherwise ``org/name`` looked up in the local HF cache (never the network)."""
    p = Path(model).expanduser()
    if p.is_dir():
        return ResolvedModel(model=model, path=p.resolve())
    cache = hf_hub_cache()
    repo_dir = cache / ("models--" + model.replace("/", "--"))
    if repo_dir.is_dir():
        rev = revision
        if rev is None:
            ref = repo_dir / "refs" / "main"
            rev = ref.read_text().strip() if ref.is_file() else None
        if rev is None and (repo_dir / "snapshots").is_dir():
            # No refs/main: the newest snapshot, as the tokenizer loader picks it.
            snaps = sorted(
                (p for p in (repo_dir / "snapshots").iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
            )
            rev = snaps[-1].name if snaps else None
        if rev is not None and (repo_dir / "snapshots" / rev).is_dir():
            return ResolvedModel(
                model=model, path=(repo_dir / "snapshots" / rev), repo_id=model, revision=rev
            )
    raise ModelNotFound(
        f"{model}: not a local folder and not in the Hugging Face cache (looked in {p.resolve()} and {repo_dir})",
        hint=f"pass the base model folder, or download it first: huggingface-cli download {model}",
    )


def resolved_from_dir(model: str, model_dir: str | os.PathLike) -> ResolvedModel:
    """A folder some loader already found: a ``.../models--org--name/snapshots/<commit>`` one gives its revision."""
    path = Path(model_dir).absolute()
    parent = path.parent
    if parent.name == "snapshots" and parent.parent.name.startswith("models--"):
        repo_id = parent.parent.name[len("models--") :].replace("--", "/")
        return ResolvedModel(model=model, path=path, repo_id=repo_id, revision=path.name)
    return ResolvedModel(model=model, path=path)


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) or name in WEIGHT_INDEXES


def tokenizer_files(model_dir: Path) -> dict[str, Path]:
    """name -> path of each tokenizer file present in the folder (HF cache symlinks followed)."""
    found = {name: model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()}
    tdir = model_dir / TEMPLATE_DIR
    if tdir.is_dir():
        for p in sorted(tdir.glob("*.jinja")):
            found[f"{TEMPLATE_DIR}/{p.name}"] = p
    return found


def hash_tokenizer_files(model_dir: Path) -> dict[str, str]:
    return {name: file_sha256(path) for name, path in sorted(tokenizer_files(model_dir).items())}


def weight_files(model_dir: Path, hash_limit: int = WEIGHT_HASH_LIMIT) -> dict[str, dict[str, Any]]:
    """name -> {size, sha256 (None when the weights are too large to hash cheaply)}."""
    files = sorted(p for p in model_dir.iterdir() if p.is_file() and _is_weight_file(p.name))
    total = sum(p.stat().st_size for p in files)
    do_hash = total <= hash_limit
    return {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p) if do_hash else None} for p in files}


def library_versions() -> dict[str, str | None]:
    """dataprep, transformers, tokenizers and (when installed) nemo-automodel versions, read from package
    metadata (no heavy import), plus the AutoModel version dataprep's trainer model describes."""
    from importlib import metadata

    from .trainer import AUTOMODEL_VERSION

    out: dict[str, str | None] = {
        "dataprep": __version__,
        "trainer_model": f"nemo-automodel {AUTOMODEL_VERSION}",
    }
    for name in ("transformers", "tokenizers", "nemo-automodel"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def now() -> str:
    """UTC, seconds, ``Z``: the timestamps of manifest.json and preflight's outputs."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class DataFile:
    path: str
    sha256: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "rows": self.rows}


@dataclass(frozen=True)
class Manifest:
    """The base model, its tokenizer files and template, and the data files, each with its sha256."""

    model: ResolvedModel
    tokenizer_files: Mapping[str, str]
    chat_template: Mapping[str, Any] | None
    weights: Mapping[str, Mapping[str, Any]]
    data: Mapping[str, DataFile]
    method: str | None = None
    versions: Mapping[str, str | None] = field(default_factory=library_versions)
    created: str = field(default_factory=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "created": self.created,
            "method": self.method,
            "base_model": self.model.to_dict(),
            "tokenizer_files": dict(self.tokenizer_files),
            "chat_template": dict(self.chat_template) if self.chat_template is not None else None,
            "weights": {k: dict(v) for k, v in self.weights.items()},
            "data": {k: v.to_dict() for k, v in self.data.items()},
            "versions": dict(self.versions),
            "note": "merge_lora needs the same base checkpoint and tokenizer: "
            "check with `dataprep verify-manifest manifest.json --model MODEL`",
        }


def template_entry(
    template: str | None, source: str | None = None, path: str | os.PathLike | None = None
) -> dict[str, Any] | None:
    """sha256 of the chat template text in use, where it came from, and the override file's hash."""
    if template is None:
        return None
    import hashlib

    entry: dict[str, Any] = {"sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(), "source": source}
    if path is not None and Path(path).is_file():
        entry["path"] = str(Path(path).resolve())
        entry["file_sha256"] = file_sha256(path)
    return entry


def build_manifest(
    model: str,
    *,
    data: Mapping[str, DataFile],
    chat_template: str | None = None,
    template_source: str | None = None,
    chat_template_path: str | os.PathLike | None = None,
    method: str | None = None,
    resolved: ResolvedModel | None = None,
) -> Manifest:
    """Hash the model's tokenizer files (and small weights) and pin the data files."""
    resolved = resolved or resolve_model(model)
    return Manifest(
        model=resolved,
        tokenizer_files=hash_tokenizer_files(resolved.path),
        chat_template=template_entry(chat_template, template_source, chat_template_path),
        weights=weight_files(resolved.path),
        data=dict(data),
        method=method,
    )


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnreadableInput(path, "no such file", hint="pass the manifest.json preflight wrote") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableInput(
            path, f"not a manifest: {err}", hint="pass the manifest.json preflight wrote"
        ) from None
    if not isinstance(doc, dict) or "tokenizer_files" not in doc or "base_model" not in doc:
        raise UnreadableInput(
            path,
            "not a dataprep manifest (no base_model / tokenizer_files)",
            hint="pass the manifest.json preflight wrote",
        )
    files, weights = doc["tokenizer_files"], doc.get("weights") or {}
    well_formed = (
        isinstance(doc["base_model"], dict)
        and isinstance(files, dict)
        and all(isinstance(v, str) for v in files.values())
        and isinstance(weights, dict)
        and all(isinstance(v, dict) for v in weights.values())
        and isinstance(doc.get("chat_template") or {}, dict)
    )
    if not well_formed:
        raise UnreadableInput(
            path,
            "not a dataprep manifest (base_model, tokenizer_files, weights or chat_template malformed)",
            hint="pass the manifest.json preflight wrote",
        )
    return doc


@dataclass(frozen=True)
class ManifestCheck:
    """The differences between a manifest and a model as it is now."""

    manifest: str
    model: ResolvedModel
    changed: tuple[str, ...]
    missing: tuple[str, ...]  # in the manifest, absent now
    added: tuple[str, ...]  # present now, not in the manifest
    revision_changed: tuple[str | None, str | None] | None
    template_changed: bool

    @property
    def differing(self) -> list[str]:
        return sorted({*self.changed, *self.missing, *self.added})

    @property
    def ok(self) -> bool:
        return not self.differing and self.revision_changed is None and not self.template_changed

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "model": self.model.to_dict(),
            "ok": self.ok,
            "differing_files": self.differing,
            "changed": list(self.changed),
            "missing": list(self.missing),
            "added": list(self.added),
            "revision": (
                {"manifest": self.revision_changed[0], "now": self.revision_changed[1]}
                if self.revision_changed
                else None
            ),
            "template_changed": self.template_changed,
        }


def check_manifest(manifest_path: str | os.PathLike, model: str) -> ManifestCheck:
    """Compare a manifest's base model and tokenizer with ``model`` as it is on disk now."""
    doc = load_manifest(manifest_path)
    resolved = resolve_model(model)
    want: dict[str, str] = dict(doc.get("tokenizer_files") or {})
    have = hash_tokenizer_files(resolved.path)
    changed = [n for n in want if n in have and have[n] != want[n]]
    missing = [n for n in want if n not in have]
    added = [n for n in have if n not in want]
    # Weights: compare what both sides know (sha256 when hashed, else the size).
    want_w: dict[str, dict] = dict(doc.get("weights") or {})
    if want_w:
        have_w = weight_files(resolved.path, hash_limit=WEIGHT_HASH_LIMIT if _any_hashed(want_w) else -1)
        for name, w in want_w.items():
            now = have_w.get(name)
            if now is None:
                missing.append(name)
            elif w.get("sha256") and now.get("sha256") and w["sha256"] != now["sha256"]:
                changed.append(name)
            elif w.get("size") != now.get("size"):
                changed.append(name)
        added += [n for n in have_w if n not in want_w]
    base = doc.get("base_model") or {}
    old_rev = base.get("revision")
    rev_changed = (
        (old_rev, resolved.revision)
        if old_rev and resolved.revision and old_rev != resolved.revision
        else None
    )
    # An override template file that changed since (the tokenizer's own template is in the files above).
    tmpl = doc.get("chat_template") or {}
    template_changed = False
    if tmpl.get("path") and tmpl.get("file_sha256"):
        p = Path(tmpl["path"])
        template_changed = not p.is_file() or file_sha256(p) != tmpl["file_sha256"]
    return ManifestCheck(
        manifest=str(manifest_path),
        model=resolved,
        changed=tuple(sorted(set(changed))),
        missing=tuple(sorted(set(missing))),
        added=tuple(sorted(set(added))),
        revision_changed=rev_changed,
        template_changed=template_changed,
    )


def _any_hashed(weights: Mapping[str, Mapping[str, Any]]) -> bool:
    return any(w.get("sha256") for w in weights.values())


def mismatch_findings(check: ManifestCheck) -> list[Finding]:
    """One ``manifest_mismatch`` error naming every differing file, or nothing when all match."""
    if check.ok:
        return []
    parts = []
    if check.changed:
        parts.append("changed: " + ", ".join(check.changed))
    if check.missing:
        parts.append("missing: " + ", ".join(check.missing))
    if check.added:
        parts.append("new: " + ", ".join(check.added))
    if check.revision_changed:
        parts.append(f"revision {check.revision_changed[0]} -> {check.revision_changed[1]}")
    if check.template_changed:
        parts.append("the $[chat_template] file changed")
    return [
        finding(
            "manifest_mismatch",
            f"{check.model.model} differs from {check.manifest}: " + "; ".join(parts),
            files=check.differing,
        )
    ]


def verify_manifest(manifest_path: str | os.PathLike, model: str) -> list[Finding]:
    """``manifest_mismatch`` (error) listing the differing files; empty when the model matches."""
    return mismatch_findings(check_manifest(manifest_path, model))
