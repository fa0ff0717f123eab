"""Load a tokenizer offline and pick its chat template: ``load_tokenizer(model) -> LoadedTokenizer``.

MODEL is a local folder (tokenizer.json, or vocab.json + merges.txt, or a SentencePiece ``*.model``) or a Hugging
Face id found in the local HF cache (``HF_HUB_CACHE``, else ``HF_HOME``/hub, else ~/.cache/huggingface/hub).
Nothing is downloaded unless ``allow_download=True``; ``trust_remote_code`` is never set. A SentencePiece-only folder
(``tokenizer.model`` without ``tokenizer.json``: Llama-2, Mistral v0.1, TinyLlama) is converted to a fast tokenizer
by transformers on load, as the trainer's own loading does; that needs ``sentencepiece`` and ``protobuf``.

The chat template comes from the first of:
  1. ``chat_template=`` (``--chat-template``): a Jinja string, a ``.jinja`` file, or a JSON file with a
     ``chat_template`` key (the forms AutoModel's ``dataset.chat_template`` accepts);
  2. ``chat_template.jinja`` in the folder;
  3. ``chat_template.json`` in the folder (``{"chat_template": ...}``);
  4. ``tokenizer_config.json``'s ``chat_template``: a string, or a list of ``{"name", "template"}`` (``default``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import trainer
from .errors import DataprepError, MissingDependency, ModelNotFound, UnreadableInput, UsageError

# Files a tokenizer folder may hold (name -> what it is); ``files`` reports those present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "config.json",
)
_DOWNLOAD_PATTERNS = [*TOKENIZER_FILES, "*.model", "*.tiktoken", "config.json", "generation_config.json"]


@dataclass(frozen=True)
class LoadedTokenizer:
    """A tokenizer loaded offline, with the chat template chosen and where it came from."""

    tokenizer: Any  # transformers PreTrainedTokenizerFast (TokenizersBackend in 5.x), .chat_template set
    model: str
    model_dir: Path
    template: str | None
    template_source: str | None
    template_sha256: str | None
    has_generation_tags: bool
    files: dict[str, Path] = field(default_factory=dict)
    # ids that end a generation: the EOS plus generation_config.json's eos_token_id(s)
    stop_token_ids: tuple[int, ...] = ()

    def special_tokens(self) -> dict[str, Any]:
        """bos/eos/pad/unk as ``{"token", "id"}``, whether encoding adds BOS/EOS, and the stop ids."""
        tok = self.tokenizer
        out: dict[str, Any] = {}
        for name in ("bos", "eos", "pad", "unk"):
            token = getattr(tok, f"{name}_token", None)
            out[name] = (
                None if token is None else {"token": str(token), "id": getattr(tok, f"{name}_token_id", None)}
            )
        with_special = tok.encode("a", add_special_tokens=True)
        plain = tok.encode("a", add_special_tokens=False)
        bos_id, eos_id = tok.bos_token_id, tok.eos_token_id
        out["adds_bos"] = bos_id is not None and with_special[:1] == [bos_id] and plain[:1] != [bos_id]
        out["adds_eos"] = eos_id is not None and with_special[-1:] == [eos_id] and plain[-1:] != [eos_id]
        out["stop_token_ids"] = list(self.stop_token_ids)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_dir": str(self.model_dir),
            "tokenizer_class": type(self.tokenizer).__name__,
            "vocab_size": len(self.tokenizer),
            "template_source": self.template_source,
            "template_sha256": self.template_sha256,
            "has_generation_tags": self.has_generation_tags,
            "files": {k: str(v) for k, v in sorted(self.files.items())},
            "special_tokens": self.special_tokens(),
        }


# ---------------------------------------------------------------------------------------------------
# Finding the folder
# ---------------------------------------------------------------------------------------------------


def hub_cache_dir() -> Path:
    """The HF hub cache, read from the environment at call time (tests change HF_HOME per test)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _cached_snapshot(repo_id: str, cache: Path) -> Path | None:
    """The snapshot folder of ``repo_id`` in the cache (refs/main first, else the newest snapshot)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = snapshots / ref.read_text(encoding="utf-8").strip()
        if snap.is_dir():
            return snap
    candidates = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def _has_tokenizer_files(folder: Path) -> bool:
    return (
        (folder / "tokenizer.json").is_file()
        or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())
        or any(folder.glob("*.model"))
        or (folder / "vocab.txt").is_file()
    )


def resolve_model_dir(model: str, *, allow_download: bool = False) -> Path:
    """The local folder holding MODEL's tokenizer; ModelNotFound names every place looked at."""
    path = Path(model).expanduser()
    if path.is_dir():
        path = path.resolve()
        if not _has_tokenizer_files(path):
            raise ModelNotFound(
                f"{path} has no tokenizer files (looked for tokenizer.json, vocab.json + merges.txt, *.model)",
                hint="point at the folder holding the tokenizer (the model checkpoint folder usually does)",
            )
        return path
    looks_like_path = model.startswith((".", "/", "~")) or path.exists() or not _HUB_ID.match(model)
    if looks_like_path:
        raise ModelNotFound(f"{model}: no such folder (looked at {path.resolve()})")
    cache = hub_cache_dir()
    snap = _cached_snapshot(model, cache)
    if snap is not None and _has_tokenizer_files(snap):
        return snap
    if allow_download:
        return _download(model, cache)
    where = f"{path.resolve()} (no such folder) and the HF cache {cache}"
    if snap is not None:
        where += f" ({snap} holds no tokenizer files)"
    raise ModelNotFound(
        f"{model} is neither a local folder nor in the local Hugging Face cache: looked at {where}",
        hint="pass a local folder, download it first (huggingface-cli download "
        f"{model}), or add $[allow_download]",
    )


def _download(model: str, cache: Path) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, cache_dir=str(cache), allow_patterns=_DOWNLOAD_PATTERNS))
    except Exception as err:  # network, auth, offline mode: all mean "not found" to the user
        raise ModelNotFound(f"{model}: download failed ({type(err).__name__}: {err})") from err


# ---------------------------------------------------------------------------------------------------
# Choosing the template
# ---------------------------------------------------------------------------------------------------


def _pick_named(value: Any, where: str) -> tuple[str | None, str]:
    """A template from a string, a list of ``{"name", "template"}`` or a dict name -> template (``default``)."""
    if value is None or isinstance(value, str):
        return value, where
    named: dict[str, str] = {}
    if isinstance(value, list):
        named = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
    elif isinstance(value, dict):
        named = dict(value)
    if "default" in named and isinstance(named["default"], str):
        return named["default"], f"{where} (named template 'default' of {sorted(n for n in named if n)})"
    if len(named) == 1:
        name, template = next(iter(named.items()))
        if isinstance(template, str):
            return template, f"{where} (named template {name!r})"
    raise UnreadableInput(where, f"chat_template has no 'default' among the named templates {sorted(named)}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableInput(path, f"not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise UnreadableInput(path, "expected a JSON object")
    return data


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UnreadableInput(path, str(err)) from err


def template_from_option(value: str) -> tuple[str, str]:
    """``--chat-template``: a ``.jinja`` file, a JSON file with ``chat_template``, or the Jinja text itself."""
    is_template_text = "{{" in value or "{%" in value
    path = Path(value).expanduser()
    if not is_template_text and path.is_file():
        if path.suffix == ".json":
            data = _read_json(path)
            if "chat_template" not in data:
                raise UsageError(
                    f"{path} has no 'chat_template' key", hint="pass a .jinja file or the template text"
                )
            template, source = _pick_named(data["chat_template"], f"--chat-template {path}")
            if template is None:
                raise UsageError(f"{path}: chat_template is null")
            return template, source
        return _read_text(path), f"--chat-template {path}"
    if not is_template_text and (path.suffix in (".jinja", ".json", ".j2") or os.sep in value):
        raise UsageError(
            f"$[chat_template] {value}: no such file",
            hint="pass a .jinja file, a JSON file with a chat_template key, or the template text",
        )
    return value, "--chat-template (string)"


def find_template(model_dir: Path, chat_template: str | None = None) -> tuple[str | None, str | None]:
    """(template, source) by the order in the module docstring; (None, None) when there is none."""
    if chat_template is not None:
        return template_from_option(chat_template)
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return _read_text(jinja), "chat_template.jinja"
    cj = model_dir / "chat_template.json"
    if cj.is_file():
        template, source = _pick_named(_read_json(cj).get("chat_template"), "chat_template.json")
        if template is not None:
            return template, source
    tc = model_dir / "tokenizer_config.json"
    if tc.is_file():
        template, source = _pick_named(_read_json(tc).get("chat_template"), "tokenizer_config.json")
        if template is not None:
            return template, source
    return None, None


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def _load_backend(model_dir: Path) -> Any:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found" banner on stderr
    try:
        from transformers import AutoTokenizer
    except ImportError as err:  # pragma: no cover - transformers is a hard dependency
        raise MissingDependency(f"transformers is needed to load tokenizers ({err})") from err
    try:
        return AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, trust_remote_code=False)
    except (
        Exception
    ) as first:  # custom tokenizer classes (remote code), odd configs: fall back to tokenizer.json
        if (model_dir / "tokenizer.json").is_file():
            try:
                from transformers import PreTrainedTokenizerFast

                return PreTrainedTokenizerFast.from_pretrained(str(model_dir), local_files_only=True)
            except Exception:
                pass
        said = f"{type(first).__name__}: {first}"
        cause = _sentencepiece_cause(model_dir, said)
        if cause is not None:
            raise cause from first
        raise UnreadableInput(
            model_dir,
            f"the tokenizer cannot be loaded offline without remote code: {said}",
            hint="point at a folder with tokenizer.json (never loaded with trust_remote_code)",
        ) from first


_TIKTOKEN_LINE = re.compile(rb"[A-Za-z0-9+/]+=* \d+\r?\n")


def _sentencepiece_cause(model_dir: Path, said: str) -> DataprepError | None:
    """The real reason a folder whose tokenizer is a SentencePiece ``.model`` (no tokenizer.json) did not load.

    transformers converts that file with sentencepiece + protobuf; when the conversion fails for any reason
    (a package missing, sentencepiece's schema refusing the installed protobuf, a broken file) it logs a warning
    (silenced here) and reads the file as tiktoken instead, so the error it raises blames tiktoken. None when the
    folder is not of that kind, or the file is tiktoken text (then transformers' error is the right one).
    """
    if (model_dir / "tokenizer.json").is_file():
        return None
    sp = model_dir / "tokenizer.model"
    if not sp.is_file():
        return None
    try:
        data = sp.read_bytes()
    except OSError as err:
        return UnreadableInput(sp, str(err))
    if _TIKTOKEN_LINE.match(data[:1024]):
        return None
    for module, package in (("sentencepiece", "sentencepiece"), ("google.protobuf", "protobuf")):
        try:
            importlib.import_module(module)
        except ImportError as err:
            return MissingDependency(
                f"{model_dir}: the tokenizer is a SentencePiece tokenizer.model without tokenizer.json, and "
                f"transformers needs the {package} package to convert it, which is not installed ({err})",
                hint='pip install "sentencepiece<0.2.3" protobuf (the versions dataprep requires)',
            )
    try:
        from sentencepiece import sentencepiece_model_pb2
    except Exception as err:  # protobuf's VersionError is no ImportError
        return MissingDependency(
            f"{model_dir}: the tokenizer is a SentencePiece tokenizer.model without tokenizer.json, and "
            f"sentencepiece's model schema does not load with the installed protobuf: {type(err).__name__}: {err}",
            hint='pip install "sentencepiece<0.2.3" (0.2.3 needs protobuf>=7.36.1), or upgrade protobuf',
        )
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(data)
        parsed = len(proto.pieces) > 0
    except Exception:  # protobuf's DecodeError
        parsed = False
    if not parsed:
        return UnreadableInput(
            sp,
            f"not a SentencePiece model (nor tiktoken text), so the tokenizer cannot be built from it "
            f"(transformers: {said})",
            hint="point at a folder whose tokenizer.model is intact, or one with tokenizer.json",
        )
    return UnreadableInput(
        model_dir,
        f"transformers could not convert the SentencePiece model {sp.name} (it parses: {len(proto.pieces)} pieces) "
        f"to a fast tokenizer; its last error: {said}",
        hint="save the tokenizer with tokenizer.json where it loads (tokenizer.save_pretrained) and point at that",
    )


def _stop_ids(tok: Any, model_dir: Path) -> tuple[int, ...]:
    ids: list[int] = []
    if tok.eos_token_id is not None:
        ids.append(int(tok.eos_token_id))
    gen = model_dir / "generation_config.json"
    if gen.is_file():
        try:
            value = json.loads(gen.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, ValueError):
            value = None
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)
    return tuple(ids)


def load_tokenizer(
    model: str, *, chat_template: str | None = None, allow_download: bool = False
) -> LoadedTokenizer:
    """Load MODEL's tokenizer offline with its chat template chosen (see the module docstring for the order)."""
    model_dir = resolve_model_dir(model, allow_download=allow_download)
    template, source = find_template(model_dir, chat_template)
    tok = _load_backend(model_dir)
    own = getattr(tok, "chat_template", None)
    if chat_template is None and isinstance(own, dict) and template is not None and template in own.values():
        # Named templates stay named: with tools, transformers renders the ``tool_use`` one (as the trainer).
        pass
    else:
        tok.chat_template = template
    files = {name: model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()}
    for sp in sorted(model_dir.glob("*.model")):
        files.setdefault(sp.name, sp)
    return LoadedTokenizer(
        tokenizer=tok,
        model=model,
        model_dir=model_dir,
        template=template,
        template_source=source,
        template_sha256=None if template is None else sha256(template),
        has_generation_tags=template is not None and trainer.has_generation_tags(tok.chat_template),
        files=files,
        stop_token_ids=_stop_ids(tok, model_dir),
    )
