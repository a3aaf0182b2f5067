"""The installed package cites only what ships or is public: papers and the docs/ pages."""

import pathlib

import keras_gradcam

PACKAGE = pathlib.Path(keras_gradcam.__file__).parent


def test_no_module_cites_the_internal_spec():
    # METHODS.md is the project's working specification; it is not part of the package or the docs
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "METHODS.md" in line
    ]
    assert offenders == []


def test_docs_pages_cited_by_the_package_exist():
    docs = PACKAGE.parent / "docs"
    cited = {
        word.strip("()`.,;:")
        for path in PACKAGE.rglob("*.py")
        for word in path.read_text(encoding="utf-8").split()
        if word.strip("()`.,;:").startswith("docs/")
    }
    missing = [c for c in sorted(cited) if not (docs.parent / c).exists()]
    assert missing == []
