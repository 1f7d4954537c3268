"""Packages found by setuptools, not listed by hand: every folder with an __init__.py below smolcli/, convert/ and
models/ (the last two install as smolcli.convert and smolcli.models). Metadata stays in pyproject.toml."""

from setuptools import find_packages, setup


def packages_under(folder: str, root: str) -> list[str]:
    return [root] + [f"{root}.{name}" for name in find_packages(folder)]


setup(
    packages=packages_under("smolcli", "smolcli")
    + packages_under("convert", "smolcli.convert")
    + packages_under("models", "smolcli.models")
)
