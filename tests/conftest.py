"""Shared test fixtures: the real dataset samples and tiny CLIP models."""

import os
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        if os.environ.get("CLIPZSS_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"CLIPZSS_REQUIRE_SHARED_DATA=1 but {SHARED_DATA} does not exist")
        pytest.skip(f"real dataset samples not found at {SHARED_DATA} (set CLIPZSS_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def name(request):
    """A dataset name of this test's own; it and every name it prefixes leave the catalogs after."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    n = f"{module}_{request.node.name}".replace("[", "_").replace("]", "")
    yield n
    for k in [k for k in DatasetCatalog.list() if k.startswith(n)]:
        DatasetCatalog.remove(k)
        MetadataCatalog.remove(k)


@pytest.fixture(scope="module")
def prepared_root(shared_data, tmp_path_factory):
    """The real samples of every benchmark prepared and registered under a temporary root; the
    catalog is put back as the other tests expect it afterwards."""
    from clipzss_d2.data import register_all_zeroshot, registered_root
    from tests.data_samples import prepare_all_samples

    root = tmp_path_factory.mktemp("datasets")
    prepare_all_samples(shared_data, root)
    previous = registered_root()
    register_all_zeroshot(str(root))
    yield root
    register_all_zeroshot(previous)


def pytest_collection_modifyitems(items):
    """Marks by the fixture a test needs, to select or skip them with -m: `real_data` (the real
    samples) and `browser` (headless chromium)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "shared_data" in fixtures:
            item.add_marker(pytest.mark.real_data)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)
