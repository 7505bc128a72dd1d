"""The settings of a collection and what each may hold: one table for the command line, audit configs and the API.

:data:`SETTINGS` maps each setting (the audit config's key; the CLI option is the same name with dashes,
``max_tokens`` being ``--max-tokens``/``--max-new-tokens``) to its kind and range. The command line checks
its options with :func:`option_callback`, an audit config its ``[defaults]``, ``[student]`` and
``[[teachers]]`` entries with :func:`problem`, and :class:`~attribution.distill.endpoint.ApiDecoding` /
:class:`~attribution.distill.endpoint.EndpointOptions` check themselves with :func:`check`: a value one of
them refuses, every other refuses too, with the same words.

An API key pasted where the name of its environment variable belongs (``--api-key-env sk-...``) is refused
without being repeated (E419): :func:`key_problem`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError, model_error

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Prefixes of provider keys (OpenAI, Anthropic, Google, Hugging Face, GitHub, GitLab, Groq, xAI, AWS, Stripe...).
_KEY_PREFIXES = ("sk-", "sk_", "pk_", "rk_", "ak-", "hf_", "ghp_", "gho_", "ghs_", "github_pat_", "glpat-", "gsk_",
                 "xai-", "aiza", "akia", "asia", "bearer ")


@dataclass(frozen=True)
class Setting:
    """What a setting may hold: ``kind`` (``int``, ``number``, ``bool``, ``text``, ``template``, ``stops``,
    ``env``) and, for numbers, a closed range [``low``, ``high``] (``above``: strictly above ``low``)."""

    kind: str
    low: float | None = None
    high: float | None = None
    above: bool = False

    @property
    def expected(self) -> str:
        """The words for a valid value, e.g. ``an integer >= 1``."""
        noun = {"int": "an integer", "number": "a finite number", "bool": "true or false", "text": "a string",
                "template": "a string containing {prompt}", "stops": "a list of at most 4 strings",
                "env": "the name of an environment variable"}[self.kind]
        if self.low is not None and self.high is not None:
            return f"{noun} in {'(' if self.above else '['}{_number(self.low)}, {_number(self.high)}]"
        if self.low is not None:
            return f"{noun} {'>' if self.above else '>='} {_number(self.low)}"
        return noun

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is of this kind and in range (a bool is not a number)."""
        kind = self.kind
        if kind == "bool":
            return isinstance(value, bool)
        if kind in ("text", "template", "env"):
            return isinstance(value, str) and (kind != "template" or "{prompt}" in value) and (
                kind != "env" or bool(_ENV_NAME.fullmatch(value)))
        if kind == "stops":
            return isinstance(value, (list, tuple)) and len(value) <= 4 and all(isinstance(s, str) and s
                                                                                 for s in value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int"
                                                                              and not isinstance(value, int)):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.above else value < self.low):
            return False
        return self.high is None or value <= self.high


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


#: Every setting of a collection from an endpoint (decoding, client, prompt selection) and what it may hold.
SETTINGS: dict[str, Setting] = {
    "max_tokens": Setting("int", low=1, high=1_000_000),
    "sample": Setting("bool"),
    "temperature": Setting("number", low=0),
    "top_p": Setting("number", low=0, high=1, above=True),
    "seed": Setting("int", low=-(2 ** 63), high=2 ** 63 - 1),
    "stop": Setting("stops"),
    "system": Setting("text"),
    "prompt_template": Setting("template"),
    "completion": Setting("bool"),
    "api_key_env": Setting("env"),
    "concurrency": Setting("int", low=1, high=1024),
    "rpm": Setting("number", low=0),
    "tpm": Setting("number", low=0),
    "max_retries": Setting("int", low=0, high=100),
    "timeout": Setting("number", low=0, above=True),
    "limit": Setting("int", low=0),
}


def key_problem(value: Any) -> str | None:
    """Why ``value`` is not the name of an environment variable, in words that never repeat it (an API key pasted
    in its place must not reach a message); None for a valid name."""
    if not isinstance(value, str):
        return "is not a string"
    if value.lower().startswith(_KEY_PREFIXES) and len(value) > 8:
        return "starts like an API key"
    if not _ENV_NAME.fullmatch(value):
        return "is not a variable name (letters, digits and _, not starting with a digit)"
    if len(value) >= 24 and re.fullmatch(r"[0-9a-fA-F]+", value) and any(c.isdigit() for c in value):
        return "is a long hexadecimal string, like a key"
    if len(value) >= 20 and all(any(test(c) for c in value) for test in (str.islower, str.isupper, str.isdigit)):
        return "mixes upper and lower case letters and digits, like a key"
    return None


def problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for setting ``name`` (the expected kind and range), or None when it is fine.

    The text never repeats an API key: for ``api_key_env`` it says only why the value was refused.
    """
    if name == "api_key_env":
        why = key_problem(value)
        return None if why is None else f"the name of an environment variable; the value given {why}"
    setting = SETTINGS[name]
    return None if setting.accepts(value) else setting.expected


def check(name: str, value: Any, *, label: str | None = None) -> Any:
    """``value`` when it is valid for setting ``name``; else raise ``E210`` (``E419`` for ``api_key_env``, whose
    value is never repeated). ``label`` names the setting in the message (default: ``name``)."""
    if name == "api_key_env":
        why = key_problem(value)
        if why is not None:
            raise key_error(label or name, why)
    elif not SETTINGS[name].accepts(value):
        raise model_error("E210", name=label or name, expected=SETTINGS[name].expected, got=value)
    return value


def check_sampling(sample: bool, temperature: float, top_p: float) -> None:
    """Sampling needs a temperature above 0 (``E210``); greedy decoding ignores temperature and top-p."""
    if sample and not temperature > 0:
        raise model_error("E210", name="temperature", expected="above 0 with sampling (--sample, sample = true)",
                          got=temperature)


def key_error(name: str, why: str) -> ModelError:
    """``E419``: an API key was given where the name of its variable belongs (the key is not repeated)."""
    return model_error("E419", name=name, why=why)


def option_callback(name: str) -> Any:
    """A Typer option callback checking the option's value against setting ``name``: a usage error (exit 2)
    naming the option and the expected range; for ``--api-key-env``, E419 without the value."""

    def callback(value: Any) -> Any:
        import typer

        if value is None:
            return value
        if name == "api_key_env":
            return check(name, value, label="--api-key-env")
        checked = list(value) if name == "stop" else value
        if not SETTINGS[name].accepts(checked):
            raise typer.BadParameter(f"must be {SETTINGS[name].expected} (got {value!r})")
        return value

    return callback
