"""One gate for untrusted bytes (docs/reproducibility.md#one-gate): weights, checkpoints and
TorchScript archives are read only in clipzss_d2/checkpoint.py, config files only in
clipzss_d2/utils/config_loading.py. A scan of every module a user's command runs fails on any
other way of reading them, so a new `torch.load` or `merge_from_file` cannot slip in."""

import re

from tests.helpers import ROOT, RunsACommand

GATES = {
    "clipzss_d2/checkpoint.py": "weights",
    "clipzss_d2/utils/config_loading.py": "configs",
}
# ways to read bytes that can run code (or, for merge_from_file, fall back to yaml.unsafe_load)
UNSAFE = re.compile(
    r"\btorch\.load\(|\btorch\.jit\.load\(|\bpickle\.(load|loads|Unpickler)\b|\bUnpickler\b"
    r"|\byaml\.(load|unsafe_load|full_load|load_all|unsafe_load_all)\(|\.merge_from_file\("
    r"|allow_pickle\s*=\s*True|\bdill\b|\bjoblib\.load\("
    # open_clip's own file readers (torch.load underneath): CLIP weights go through the gate
    r"|\bload_checkpoint\(|\bload_state_dict\(\s*(checkpoint|path)|pretrained\s*=\s*checkpoint"
)
EXEMPT = "# safe-load:"  # a line may say why it is safe (e.g. reading back its own output)


def scanned_files():
    for pattern in ("clipzss_d2/**/*.py", "tools/*.py", "demo/**/*.py", "datasets/*.py"):
        yield from sorted(ROOT.glob(pattern))
    yield ROOT / "train_net.py"


def test_untrusted_bytes_are_read_only_through_the_gates():
    found = []
    files = list(scanned_files())
    assert len(files) > 40  # the scan sees the package, the tools and the demos
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in GATES:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if EXEMPT not in line else ""
            if UNSAFE.search(code):
                found.append(f"{rel}:{number}: {line.strip()}")
    assert not found, "read through clipzss_d2/checkpoint.py or utils/config_loading.py:\n" + (
        "\n".join(found)
    )


def test_the_gates_themselves_load_safely():
    """Inside the gates: torch.load only with weights_only=True, configs only without unsafe
    fallback, pickle only through the restricted unpicklers."""
    weights = (ROOT / "clipzss_d2/checkpoint.py").read_text()
    calls = re.findall(r"torch\.load\([^)]*\)", weights)
    assert calls and all("weights_only=True" in call for call in calls), calls
    assert not re.search(r"pickle\.loads?\(", weights)
    unpicklers = re.findall(r"class (\w+)\(pickle\.Unpickler\)", weights)
    assert unpicklers == ["_ModelZooUnpickler", "_TorchScriptUnpickler"]
    for name in unpicklers:  # each overrides find_class, the only way globals are resolved
        body = weights.split(f"class {name}(pickle.Unpickler)", 1)[1].split("\nclass ", 1)[0]
        assert "def find_class(self, module, name):" in body
    configs = (ROOT / "clipzss_d2/utils/config_loading.py").read_text()
    assert re.findall(r"\.merge_from_file\([^)]*\)", configs) == [
        ".merge_from_file(config_file, allow_unsafe=False)"
    ]


def test_the_scan_finds_what_it_is_for():
    for bad in ("torch.load(f)", "x = pickle.loads(b)", "cfg.merge_from_file(p)",
                "np.load(p, allow_pickle=True)", "yaml.unsafe_load(s)", "torch.jit.load(p)"):  # fmt: skip
        assert UNSAFE.search(bad), bad
    for bad in ("open_clip.load_checkpoint(model, p)", "create_model(n, pretrained=checkpoint)"):
        assert UNSAFE.search(bad), bad
    for fine in ("torch_load_safely(p)", "yaml.safe_load(s)", "merge_config_file(cfg, p)"):
        assert not UNSAFE.search(fine), fine


# -- through the routes users take ----------------------------------------------------------------
def test_a_hostile_swin_imagenet_file_is_refused(tmp_path):
    import pytest
    import torch

    from clipzss_d2.checkpoint import UnsafeCheckpointError
    from clipzss_d2.modeling.backbones import load_swin_imagenet

    marker, path = tmp_path / "ran", tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": RunsACommand(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="asks to load posix.system|could run code"):
        load_swin_imagenet(None, str(path))  # MODEL.SWIN.PRETRAINED's loader
    assert not marker.exists()


def test_predictor_config_files_run_no_code(tmp_path):
    import pytest

    from clipzss_d2.errors import UserInputError
    from clipzss_d2.predictor import OpenVocabularyPredictor

    marker, config = tmp_path / "ran", tmp_path / "config.yaml"
    config.write_text(f'MODEL: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(UserInputError, match=r"Python tags \(!!python/...\) are refused"):
        OpenVocabularyPredictor.from_config_file(str(config))
    assert not marker.exists()


def test_a_model_folder_reads_nothing_outside_itself(tmp_path):
    """A received model folder is self-contained: its config.yaml may not name a URL, a
    _BASE_ or a path outside the folder (the demo would fetch, or read and write elsewhere)."""
    import pytest
    import yaml
    from detectron2.modeling import build_model

    from clipzss_d2.errors import UserInputError
    from clipzss_d2.model_folder import CONFIG_FILE, write_model_folder
    from clipzss_d2.predictor import OpenVocabularyPredictor
    from tests.helpers import tiny_cfg

    cfg = tiny_cfg(extra_opts=["DATASETS.TEST", (), "MODEL.CLIPZSS.TEST_VOCABULARY", ["a", "b"]])
    folder = tmp_path / "model"
    write_model_folder(cfg, build_model(cfg), str(folder))
    OpenVocabularyPredictor.from_folder(str(folder))  # as written: loads
    config = folder / CONFIG_FILE
    written = yaml.safe_load(config.read_text())
    tampered = [
        ({"_BASE_": "https://example.com/base.yaml"}, "names _BASE_ 'https://example.com/base"),
        ({"MODEL": {"WEIGHTS": "https://example.com/model.pth"}}, "MODEL.WEIGHTS is 'https://"),
        ({"MODEL": {"WEIGHTS": "../elsewhere.pth"}}, "MODEL.WEIGHTS is '../elsewhere.pth'"),
        ({"MODEL": {"CLIPZSS": {"TEXT": {"CACHE_DIR": str(tmp_path / "x")}}}}, "CACHE_DIR is '/"),
    ]
    for change, message in tampered:
        data = yaml.safe_load(yaml.safe_dump(written))
        node, path = data, change
        while True:  # merge the change into the written config
            ((key, value),) = path.items()
            if isinstance(value, dict):
                node, path = node.setdefault(key, {}), value
            else:
                node[key] = value
                break
        config.write_text(yaml.safe_dump(data))
        with pytest.raises(UserInputError) as error:
            OpenVocabularyPredictor.from_folder(str(folder))
        assert message in str(error.value) and "\n" not in str(error.value)
