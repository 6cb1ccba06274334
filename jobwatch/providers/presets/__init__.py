"""Descriptions of well-known job APIs shipped with jobwatch, each a provider by its own name.

A preset is a generic description (``<name>.toml`` beside this module) and nothing else: its
provider reads ``[jobwatch.<name>]`` for the description's variables only (``repository``
for ``github-actions``), and ``base_url`` defaults to the API's public URL. ``jobwatch
providers NAME`` prints the file, to copy into ``[jobwatch.generic]`` and adapt.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..._errors import ConfigError
from .._describe import Description, read_description
from ..generic import GenericProvider

__all__ = [
    "PRESETS",
    "GitHubActionsProvider",
    "OpenAIBatchProvider",
    "ReplicateProvider",
    "preset_description",
    "preset_text",
]

#: The presets shipped with jobwatch, by provider name.
PRESETS = ("github-actions", "openai-batch", "replicate")


def preset_text(name: str) -> str:
    """The TOML of the preset ``name``; a ConfigError listing the presets if there is none."""
    if name not in PRESETS:
        raise ConfigError(f"there is no preset {name!r}; the presets are {', '.join(PRESETS)}")
    return resources.files(__package__).joinpath(f"{name}.toml").read_text(encoding="utf-8")


@functools.cache
def preset_description(name: str) -> Description:
    """The preset ``name``, read and compiled once per process."""
    document = tomllib.loads(preset_text(name))
    description, _ = read_description(
        document["jobwatch"]["generic"], f"[jobwatch.generic] of the {name} preset"
    )
    return description


class Preset(GenericProvider):
    """A generic provider whose description ships with jobwatch."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.remedy = (
            f"`jobwatch providers {cls.name}` prints this description, to adapt in "
            "[jobwatch.generic] with the value mapped"
        )

    @classmethod
    def read(
        cls, table: Mapping[str, Any], where: str
    ) -> tuple[Description, Mapping[str, Any], str]:
        return preset_description(cls.name), table, where


class OpenAIBatchProvider(Preset):
    """OpenAI Batch API jobs (``openai-batch``)."""

    name = "openai-batch"


class GitHubActionsProvider(Preset):
    """GitHub Actions workflow runs of one repository (``github-actions``)."""

    name = "github-actions"


class ReplicateProvider(Preset):
    """Replicate predictions (``replicate``)."""

    name = "replicate"
