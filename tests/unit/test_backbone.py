"""The CLIP backbone adapter: names, weights in every supported container, freezing, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import open_clip
import pytest
import torch

from prometar.backbone import Backbone, list_backbones, load_clip, load_model_config
from prometar.errors import BackboneError


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    torch.manual_seed(0)
    return load_clip("tiny-test")


def _fp32_only_state(model: torch.nn.Module, seed: int = 7) -> dict[str, torch.Tensor]:
    """Weights that fp16 cannot represent: any fp16 round trip on the way in changes them."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, tensor in model.state_dict().items():
        values = torch.randn(tensor.shape, generator=generator) * 0.02 + 1.0 / 3.0
        assert not torch.equal(values.half().float(), values)
        state[key] = values
    return state


def _assert_weights_equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert loaded[key].dtype == torch.float32, key
        assert torch.equal(loaded[key], value.reshape(loaded[key].shape)), key


def test_project_and_open_clip_names_are_listed():
    names = list_backbones()
    assert names[:2] == ["parity-tiny", "tiny-test"]
    assert "ViT-B-16-quickgelu" in names
    assert len(names) == len(set(names))


def test_loaded_backbone_is_frozen_fp32_eval(tiny: Backbone):
    model = tiny.model
    assert isinstance(model, open_clip.CLIP)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert tiny.name == "tiny-test" and tiny.pretrained is None
    assert tiny.image_size == 32 and tiny.context_length == 77
    assert tiny.mean == tuple(open_clip.OPENAI_DATASET_MEAN) and tiny.std == tuple(
        open_clip.OPENAI_DATASET_STD
    )
    tokens = tiny.tokenizer(["a photo of a cat.", "a dog."])
    assert tokens.dtype == torch.long and tokens.shape == (2, 77)
    image = torch.zeros(1, 3, 32, 32)
    assert model.encode_image(image).shape == (1, 24)


def test_parity_config_matches_the_reference_shapes():
    config = load_model_config("parity-tiny")
    model = open_clip.CLIP(**config)
    assert config["quick_gelu"] is True
    assert len(model.transformer.resblocks) == 12 and len(model.visual.transformer.resblocks) == 12
    assert model.transformer.resblocks[0].attn.num_heads == 1
    assert model.visual.transformer.resblocks[0].attn.num_heads == 1
    assert model.visual.positional_embedding.shape == (17, 64)
    assert model.text_projection.shape == (64, 64) and model.visual.proj.shape == (64, 64)


def test_open_clip_format_checkpoint_round_trips(tiny: Backbone, tmp_path: Path):
    state = _fp32_only_state(tiny.model)
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    _assert_weights_equal(load_clip("tiny-test", str(plain)).model, state)
    # open_clip training checkpoints wrap the weights, DataParallel prefixes them with "module."
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    _assert_weights_equal(load_clip("tiny-test", str(wrapped)).model, state)


def test_openai_fp16_and_scalar_shapes_load_into_fp32_parameters(tiny: Backbone, tmp_path: Path):
    state = {k: v.half() for k, v in _fp32_only_state(tiny.model).items()}
    state["logit_scale"] = state["logit_scale"].reshape(1)  # some releases store it as [1]
    state.update(
        input_resolution=torch.tensor(32), context_length=torch.tensor(77), vocab_size=torch.tensor(49408)
    )
    path = tmp_path / "openai_fp16.pt"
    torch.save(state, path)
    model = load_clip("tiny-test", str(path)).model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.visual.proj, state["visual.proj"].float())
    assert model.logit_scale.shape == tiny.model.logit_scale.shape


def test_torchscript_archive_loads_without_fp16_rounding(tiny: Backbone, tmp_path: Path):
    state = _fp32_only_state(tiny.model)
    source = load_clip("tiny-test").model
    source.load_state_dict(state)
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(source), str(path))
    _assert_weights_equal(load_clip("tiny-test", str(path)).model, state)


def test_safetensors_checkpoint_loads(tiny: Backbone, tmp_path: Path):
    from safetensors.torch import save_file

    state = _fp32_only_state(tiny.model)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    _assert_weights_equal(load_clip("tiny-test", str(path)).model, state)


def test_checkpoint_of_another_model_is_rejected_naming_the_file(tmp_path: Path):
    path = tmp_path / "parity.pt"
    torch.save(load_clip("parity-tiny").model.state_dict(), path)
    with pytest.raises(
        BackboneError,
        match=r"parity\.pt does not fit the model: .*wrong shape: \[.ln_final.bias \(64,\) != \(32,\)",
    ):
        load_clip("tiny-test", str(path))


def test_incomplete_or_foreign_checkpoints_are_rejected(tiny: Backbone, tmp_path: Path):
    state = dict(tiny.model.state_dict())
    state.pop("visual.proj")
    state["extra.weight"] = torch.zeros(1)
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    with pytest.raises(BackboneError, match=r"missing: \['visual.proj'\].*unexpected: \['extra.weight'\]"):
        load_clip("tiny-test", str(partial))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match=r"junk\.pt: cannot be read"):
        load_clip("tiny-test", str(junk))
    notes = tmp_path / "notes.pt"
    torch.save({"visual.proj": "text"}, notes)
    with pytest.raises(BackboneError, match=r"notes\.pt: entry 'visual.proj' is a str"):
        load_clip("tiny-test", str(notes))


def test_bad_names_tags_and_paths_say_what_is_wrong(tmp_path: Path):
    with pytest.raises(BackboneError, match=r"unknown backbone 'ViT-Q-99'.*tiny-test"):
        load_clip("ViT-Q-99")
    with pytest.raises(BackboneError, match=r"not found: .*missing\.pt"):
        load_clip("tiny-test", str(tmp_path / "missing.pt"))
    with pytest.raises(
        BackboneError, match=r"'laion9000' .* neither a file nor a known tag; tags for 'ViT-B-16-quickgelu'"
    ):
        load_clip("ViT-B-16-quickgelu", "laion9000")
    with pytest.raises(BackboneError, match=r"precision 'fp8'"):
        load_clip("tiny-test", precision="fp8")


def test_openai_tag_without_quickgelu_is_refused_before_any_download():
    with pytest.raises(BackboneError, match=r"quick_gelu=True .* use 'ViT-B-16-quickgelu'"):
        load_clip("ViT-B-16", "openai")


def test_towers_prompts_cannot_enter_are_refused():
    with pytest.raises(BackboneError, match=r"'RN50' cannot carry deep prompts: its image tower is a ResNet"):
        load_clip("RN50")


def test_low_precision_is_an_explicit_choice():
    torch.manual_seed(0)
    backbone = load_clip("tiny-test", precision="bf16")
    assert {p.dtype for p in backbone.model.parameters()} == {torch.bfloat16}
