"""Config switches as a command line gives them."""

from __future__ import annotations

WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def config_bool(value: bool | str, name: str) -> bool:
    """A config switch: a bool, or the words a command line gives (``--epoch_trust#enabled false`` arrives as the
    string ``"false"``, which Python would read as true).

    Args:
        value: a bool, returned as it is, or a word: ``true``/``yes``/``1`` or ``false``/``no``/``0`` (any case).
        name: the switch's config id, named in the error when ``value`` is neither.
    """
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in WORDS:
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return WORDS[word]
