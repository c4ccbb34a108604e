"""What the role tests of the API and of the web pages share: a route's path parameters
filled with sample values."""

from __future__ import annotations

import re


def fill_params(path: str, parameter: str, sample: dict[str, str]) -> str:
    """``path`` with each match of the regular expression ``parameter`` (group 1: the
    parameter's name) replaced by its value in ``sample``; a name without one fails."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in sample:
            raise AssertionError(f"add a sample value for path parameter {name!r} to SAMPLE")
        return sample[name]

    return re.sub(parameter, value, path)
