"""code_digest: the source of a stage and of every package module it imports, in each form of a
relative import the package uses, and nothing else."""

import pytest
from stresnet import provenance

MODULES = {
    "__init__.py": "",
    "stage.py": '"""A stage."""\nfrom . import util, other as renamed\nfrom .models import (\n    build,  # a comment\n'
                "    checkpoint)\n\n\ndef main():\n    from .lazy import thing  # imported when called\n",
    "util.py": "import os\n",
    "other.py": "",
    "lazy.py": "",
    "unrelated.py": "",
    "models/__init__.py": "from .build import net\n",
    "models/build.py": "from ..util import helper\n",
    "models/checkpoint.py": "",
}


@pytest.fixture
def package(tmp_path, monkeypatch):
    root = tmp_path / "stresnet"
    for name, text in MODULES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.setattr(provenance, "PACKAGE", root)
    provenance._source.cache_clear(), provenance._imports.cache_clear()
    yield root
    provenance._source.cache_clear(), provenance._imports.cache_clear()


def digest_after(root, name, text):
    (root / name).write_text(text)
    provenance._source.cache_clear(), provenance._imports.cache_clear()
    return provenance.code_digest("stage")


def test_each_import_form_is_found(package):
    assert provenance._imports("stresnet.stage") == {
        "stresnet", "stresnet.util", "stresnet.other", "stresnet.models", "stresnet.models.build",
        "stresnet.models.checkpoint", "stresnet.lazy"}
    assert provenance._imports("stresnet.models") == {"stresnet.models.build"}
    assert provenance._imports("stresnet.models.build") == {"stresnet.util"}


def test_the_digest_follows_imported_sources_only(package):
    before = provenance.code_digest("stage")
    assert digest_after(package, "unrelated.py", "x = 1\n") == before
    for name in ("util.py", "lazy.py", "models/checkpoint.py", "stage.py"):
        changed = digest_after(package, name, (package / name).read_text() + "# edited\n")
        assert changed != before, name
        before = changed
