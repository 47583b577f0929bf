"""Maps the component folders onto one import namespace.

Each top-level folder (platform/, features/, training/, serving/, experiments/, console/) is a source root
holding ``recsys/<component>/``; ``recsys`` itself is a PEP 420 namespace, so
``import recsys.serving`` works while no folder named ``platform`` is ever importable as a
top-level package (which would shadow the standard library's ``platform`` module).
Static metadata lives in pyproject.toml; only the package map needs code.
"""

from setuptools import find_namespace_packages, setup

COMPONENT_ROOTS = ("platform", "features", "training", "serving", "experiments", "console")

packages: list[str] = []
package_dir: dict[str, str] = {}
for root in COMPONENT_ROOTS:
    for pkg in find_namespace_packages(where=root, include=["recsys.*"]):
        packages.append(pkg)
        package_dir[pkg] = f"{root}/{pkg.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
