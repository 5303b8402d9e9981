"""--arch with torchvision and timm names, through stand-in `torchvision` / `timm` packages written to a temp
folder (they keep the real packages' calling conventions and build the model from our zoo), and the errors when
a package is missing or does not know the name."""
from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from edge_compress.compress.cli.main import main
from edge_compress.compress.errors import InputError
from edge_compress.compress.model_io import resolve_arch

STAND_INS = {
    "torchvision/__init__.py": "from . import models\n",
    "torchvision/models/__init__.py": """
        from edge_compress.compress.archs.resnet_imagenet import resnet18 as _resnet18

        def resnet18(*, weights=None, progress=True, **kwargs):   # torchvision's signature: keyword-only
            if weights is not None:
                raise ValueError("the stand-in has no weights")
            return _resnet18(**kwargs)

        def get_model(name, **config):
            builders = {"resnet18": resnet18}
            if name not in builders:
                raise ValueError(f"Unknown model {name}")
            return builders[name](**config)
        """,
    # torch_pruning imports timm when it can and reads these two classes (torch_pruning/utils/op_counter.py)
    "timm/models/__init__.py": "from . import swin_transformer, vision_transformer\n",
    "timm/models/vision_transformer.py": "import torch\n\n\nclass Attention(torch.nn.Module):\n    pass\n",
    "timm/models/swin_transformer.py": "import torch\n\n\nclass WindowAttention(torch.nn.Module):\n    pass\n",
    "timm/__init__.py": """
        from . import models
        from edge_compress.compress.archs.resnet_imagenet import resnet18 as _resnet18

        def create_model(model_name, pretrained=False, num_classes=None, **kwargs):
            if model_name != "resnet18":
                raise RuntimeError(f"Unknown model ({model_name})")
            if num_classes is not None:
                kwargs["num_classes"] = num_classes
            return _resnet18(**kwargs)
        """,
}
PACKAGES = ("timm", "timm.models", "timm.models.vision_transformer", "timm.models.swin_transformer", "torchvision",
            "torchvision.models")


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    for rel, text in STAND_INS.items():
        path = tmp_path / "site" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for name in PACKAGES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield tmp_path / "site"
    for name in PACKAGES:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("spec", ["torchvision.models:resnet18", "torchvision:resnet18", "timm:resnet18"])
def test_torchvision_and_timm_names_build_the_model(spec, stand_ins):
    model, info = resolve_arch(spec, {"num_classes": 10, "width": 8})
    assert info is None
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_unknown_names_are_one_line(stand_ins):
    with pytest.raises(InputError, match=r"timm cannot build 'resnet1800'.*timm.list_models"):
        resolve_arch("timm:resnet1800")
    with pytest.raises(InputError, match=r"torchvision cannot build 'vit'"):
        resolve_arch("torchvision:vit")
    with pytest.raises(InputError, match="name a timm model after the colon"):
        resolve_arch("timm:")


@pytest.mark.parametrize("spec, package", [("timm:resnet18", "timm"), ("torchvision:resnet18", "torchvision"),
                                           ("torchvision.models:resnet18", "torchvision")])
def test_a_missing_package_says_how_to_install_it(spec, package, monkeypatch):
    for name in PACKAGES:
        monkeypatch.setitem(sys.modules, name, None)   # not importable, even where the real one is installed
    with pytest.raises(InputError, match=rf"'{package}' is not installed; install it with `pip install {package}`"):
        resolve_arch(spec)


def test_cli_with_a_timm_name_and_its_weights(stand_ins, tmp_path, capsys):
    model, _ = resolve_arch("timm:resnet18", {"num_classes": 10, "width": 8})
    weights = tmp_path / "r18.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "out"
    code = main(["--target", "raspberry-pi-4", "--arch", "timm:resnet18", "--arch-kwargs",
                 '{"num_classes": 10, "width": 8}', "--input-shape", "1x3x32x32", "--macs", "80%", "--criterion", "l1",
                 "--out", str(out), str(weights)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert (out / "model.onnx").is_file()


def test_cli_missing_package_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    weights = tmp_path / "w.pt"
    torch.save({"conv1.weight": torch.zeros(8, 3, 7, 7)}, weights)
    code = main(["--target", "raspberry-pi-4", "--arch", "timm:resnet18", "--input-shape", "1x3x32x32",
                 "--macs", "80%", "--out", str(tmp_path / "o"), str(weights)])
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("compress: error")]
    assert code == 2 and len(errors) == 1 and "'timm' is not installed; install it with `pip install timm`" in errors[0]
