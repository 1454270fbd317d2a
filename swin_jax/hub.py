"""Pretrained weights' names and files on the Hugging Face Hub.

Names are timm's: `architecture.tag` (`swin_jax.list_pretrained()`), a bare architecture for its
default tag, or `hf-hub:ORG/REPO[/FILE][@REVISION]` for any Hub repository. Files are fetched
with `huggingface_hub` into its standard cache (`HF_HOME`, `HF_HUB_CACHE`); a file already there
is used without asking the Hub, and `HF_HUB_OFFLINE=1` never asks. Loading them into a model is
`swin_jax.pretrained`'s job; this module only finds files, and needs neither jax nor torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from swin_jax.configs import MODEL_CONFIGS, PretrainedConfig, get_pretrained_config, split_model_name
from swin_jax.arguments import InputError, MissingInputError

HUB_PREFIX = "hf-hub:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # a repo's weights, looked for in this order (timm's)
TIMM_WEIGHTS_FILE = "model.safetensors"  # every timm repository of a registered tag has it


class WeightsNotCachedError(MissingInputError):
    """A Hub file is not in the local cache and the Hub cannot be asked (offline, no network)."""


@dataclass(frozen=True)
class HubWeights:
    """Where a set of pretrained weights lives on the Hub."""

    name: str  # as it was named
    repo_id: str
    filename: Optional[str] = None  # None: the first of WEIGHT_FILES the repository has
    revision: Optional[str] = None
    pretrained: Optional[PretrainedConfig] = None  # the registry's entry, for timm's names


def parse_hub_name(name: str) -> Optional[HubWeights]:
    """The Hub weights `name` stands for, or None when it names no pretrained weights (a file
    path, say). A known architecture with an unknown tag raises a ValueError listing its tags."""
    if name.startswith(HUB_PREFIX):
        rest, _, revision = name[len(HUB_PREFIX):].partition("@")
        parts = rest.strip("/").split("/")
        if len(parts) < 2 or not all(parts):
            raise InputError(f"{name!r}: a Hub name is {HUB_PREFIX}ORG/REPO[/FILE][@REVISION]")
        return HubWeights(name, "/".join(parts[:2]), "/".join(parts[2:]) or None, revision or None)
    architecture, _ = split_model_name(name)
    if architecture not in MODEL_CONFIGS:
        return None
    pretrained = get_pretrained_config(name)
    return HubWeights(name, pretrained.hf_hub_id, TIMM_WEIGHTS_FILE, pretrained=pretrained)


def _hub_cache(cache_dir: Optional[str | Path]) -> str:
    from huggingface_hub import constants

    return str(cache_dir or constants.HF_HUB_CACHE)


def _not_cached(repo_id: str, filenames: list[str], revision: Optional[str],
                cache_dir: Optional[str | Path]) -> WeightsNotCachedError:
    from huggingface_hub import constants

    at = f"@{revision}" if revision else ""
    why = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "the Hub cannot be reached"
    wanted = [f"{repo_id}/{f}{at}" for f in filenames]
    absent = f"{wanted[0]} is not" if len(wanted) == 1 else f"neither {' nor '.join(wanted)} is"
    fetch = f"hf download {repo_id} {filenames[0]}" + (f" --revision {revision}" if revision else "")
    return WeightsNotCachedError(
        f"{absent} in the Hugging Face cache ({_hub_cache(cache_dir)}) and {why}; fetch it where the Hub "
        f"is reachable with `{fetch}` and copy that cache here (or point HF_HUB_CACHE at it)")


def download(repo_id: str, filename: str, revision: Optional[str] = None,
             cache_dir: Optional[str | Path] = None) -> Path:
    """`huggingface_hub.hf_hub_download` of one file, with errors that name the repository and
    file and say what to do: not cached while offline, no such repository, no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError:
        raise _not_cached(repo_id, [filename], revision, cache_dir) from None
    except RepositoryNotFoundError:
        raise InputError(f"no Hub repository {repo_id!r} (or it is private: log in with `hf auth login`)") from None
    except RevisionNotFoundError:
        raise InputError(f"{repo_id} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise MissingInputError(f"{repo_id} has no file {filename!r}") from None
    except HfHubHTTPError as err:  # refused (401, 403), rate-limited, the Hub down, ...
        raise InputError(f"cannot fetch {repo_id}/{filename} from the Hub: {str(err).splitlines()[0][:200]}") from None
    except OSError as err:  # offline mode's refusal, an unwritable cache folder, a full disk
        raise InputError(f"cannot fetch {repo_id}/{filename} into the Hugging Face cache ({_hub_cache(cache_dir)}): "
                         f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no detail'}") from None


def _cached(repo_id: str, filename: str, revision: Optional[str], cache_dir: Optional[str | Path]) -> Optional[Path]:
    """The file if the local cache has it, without asking the Hub."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(found) if isinstance(found, str) else None


def weights_file(weights: HubWeights, cache_dir: Optional[str | Path] = None) -> Path:
    """The local path of `weights`' checkpoint file, fetched into the cache if not there yet."""
    from huggingface_hub.errors import EntryNotFoundError

    if weights.filename:
        return _cached(weights.repo_id, weights.filename, weights.revision, cache_dir) \
            or download(weights.repo_id, weights.filename, weights.revision, cache_dir)
    for filename in WEIGHT_FILES:
        found = _cached(weights.repo_id, filename, weights.revision, cache_dir)
        if found:
            return found
    not_cached = False
    for filename in WEIGHT_FILES:
        try:
            return download(weights.repo_id, filename, weights.revision, cache_dir)
        except WeightsNotCachedError:
            not_cached = True
        except (FileNotFoundError, EntryNotFoundError):
            continue
    if not_cached:
        raise _not_cached(weights.repo_id, list(WEIGHT_FILES), weights.revision, cache_dir)
    raise MissingInputError(f"{weights.repo_id} holds none of {', '.join(WEIGHT_FILES)}; "
                            f"name the file: {HUB_PREFIX}{weights.repo_id}/FILE")


def optional_json(weights: HubWeights, filename: str, cache_dir: Optional[str | Path]) -> Optional[dict]:
    """A JSON file of the repository, or None if it has none (or it cannot be fetched)."""
    path = _cached(weights.repo_id, filename, weights.revision, cache_dir)
    if path is None:
        try:
            path = download(weights.repo_id, filename, weights.revision, cache_dir)
        except (FileNotFoundError, ValueError):
            return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path} ({weights.repo_id}/{filename}): {err}") from None


def checkpoint_path(spec: str | Path, cache_dir: Optional[str | Path] = None) -> Path:
    """A local checkpoint file for `spec`: an existing file as it is; pretrained weights' name
    (`architecture.tag`, `hf-hub:...`) as their file in the Hugging Face cache, fetched if needed."""
    path = Path(spec)
    try:
        exists = path.exists()
    except OSError as err:  # a name too long, a folder that cannot be searched
        raise InputError(f"{path}: {err.strerror or err}") from None
    if exists or not isinstance(spec, str):
        return path
    weights = parse_hub_name(spec)
    return path if weights is None else weights_file(weights, cache_dir)
