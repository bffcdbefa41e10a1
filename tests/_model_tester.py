"""Shared model tests (in the spirit of transformers' `ModelTesterMixin`): every family's test class subclasses
`ModelTesterMixin` and says how to build a tiny config and inputs; the tests here then run for all three.

Covered: output shapes and batch-consistent geometry, save/load round trip, batching equivalence, attentions and
hidden states (with `retain_grad`), weight initialisation after `ignore_mismatched_sizes`, `pixel_mask` checks,
backbone selection (`backbone=` / timm / `use_pretrained_backbone`) and, where transformers has the model, the
output fields against transformers' own class and loading its checkpoints without a type-mismatch warning.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import transformers


def padded_batch(sizes, frames: int | None = None, seed: int = 0):
    """Random images (videos with `frames`) of `sizes` padded bottom/right with zeros to a multiple of 32, and their
    `[batch, H, W]` pixel mask."""
    generator = torch.Generator().manual_seed(seed)
    height = -(-max(h for h, _ in sizes) // 32) * 32
    width = -(-max(w for _, w in sizes) // 32) * 32
    lead = (len(sizes),) if frames is None else (len(sizes), frames)
    pixel_values = torch.zeros(*lead, 3, height, width)
    pixel_mask = torch.zeros(len(sizes), height, width, dtype=torch.long)
    for index, (h, w) in enumerate(sizes):
        pixel_values[index, ..., :h, :w] = torch.randn(*lead[1:], 3, h, w, generator=generator)
        pixel_mask[index, :h, :w] = 1
    return pixel_values, pixel_mask


class ModelTesterMixin:
    """Subclasses set the class attributes and `config_kwargs(**overrides)` (the tiny config's arguments)."""

    config_class: type
    model_class: type  # the head model
    base_model_class: type
    input_name = "pixel_values"
    frames: int | None = None  # videos: frames per clip
    transformers_model_class: type | None = None  # transformers' counterpart (image families)
    num_decoder_layers: int  # layers of the query decoder (attentions per forward)

    def config_kwargs(self, **overrides) -> dict:
        raise NotImplementedError

    def config(self, **overrides):
        """The tiny config; `backbone_config=None` leaves the backbone to other arguments (`backbone=` ...)."""
        kwargs = self.config_kwargs(**overrides)
        if "backbone_config" in overrides and overrides["backbone_config"] is None:
            del kwargs["backbone_config"]
        return self.config_class(**kwargs)

    def model(self, **overrides):
        torch.manual_seed(0)
        return self.model_class(self.config(**overrides)).eval()

    def inputs(self, sizes=((64, 96), (40, 50)), seed: int = 0) -> dict[str, torch.Tensor]:
        pixel_values, pixel_mask = padded_batch(sizes, self.frames, seed)
        return {self.input_name: pixel_values, "pixel_mask": pixel_mask}

    def targets(self, inputs, counts=(2, 1)):
        generator = torch.Generator().manual_seed(3)
        pixels = inputs[self.input_name]
        size = pixels.shape[-2:] if self.frames is None else (self.frames, *pixels.shape[-2:])
        masks = [(torch.rand(n, *size, generator=generator) > 0.5).float() for n in counts]
        labels = [torch.randint(0, 4, (n,), generator=generator) for n in counts]
        return {"mask_labels": masks, "class_labels": labels}

    # ------------------------------------------------------------------------------------------ shapes, geometry

    def test_output_geometry_has_one_row_per_image(self):
        model = self.model()
        inputs = self.inputs()
        with torch.no_grad():
            outputs = model(**inputs)
        height, width = inputs[self.input_name].shape[-2:]
        assert outputs.image_sizes.tolist() == [[64, 96], [40, 50]]
        assert outputs.padded_image_size.tolist() == [[height, width]] * 2
        assert outputs.class_queries_logits.shape[:2] == outputs.masks_queries_logits.shape[:2]
        assert outputs.masks_queries_logits.shape[-2:] == (height // 4, width // 4)
        with torch.no_grad():
            no_mask = model(inputs[self.input_name])
        assert no_mask.image_sizes.tolist() == [[height, width]] * 2

    def test_batching_equivalence(self):
        """Each image of a padded batch of 2 gives, alone (same padding and mask), the same outputs within 1e-4."""
        model = self.model()
        inputs = self.inputs()
        with torch.no_grad():
            batched = model(**inputs, output_auxiliary_logits=True)
            for index in range(2):
                alone = model(**{name: value[index : index + 1] for name, value in inputs.items()},
                              output_auxiliary_logits=True)
                height, width = (int(v) for v in batched.image_sizes[index])
                crop = (..., slice(0, -(-height // 4)), slice(0, -(-width // 4)))
                torch.testing.assert_close(alone.class_queries_logits[0], batched.class_queries_logits[index],
                                           atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(alone.masks_queries_logits[0][crop],
                                           batched.masks_queries_logits[index][crop], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(alone.masks_queries_logits[0], batched.masks_queries_logits[index],
                                           atol=1e-4, rtol=1e-4)
                for ours, theirs in zip(alone.auxiliary_logits, batched.auxiliary_logits):
                    torch.testing.assert_close(ours["class_queries_logits"][0], theirs["class_queries_logits"][index],
                                               atol=1e-4, rtol=1e-4)
                assert alone.image_sizes.tolist() == batched.image_sizes[index : index + 1].tolist()
                assert alone.padded_image_size.tolist() == batched.padded_image_size[index : index + 1].tolist()

    def test_save_load_round_trip(self, tmp_path):
        model = self.model()
        model.save_pretrained(tmp_path)
        reloaded = self.model_class.from_pretrained(tmp_path).eval()
        base = self.base_model_class.from_pretrained(tmp_path).eval()  # the head checkpoint's `model.` weights
        inputs = self.inputs()
        with torch.no_grad():
            expected, actual = model(**inputs), reloaded(**inputs)
            base_expected, base_actual = model.model(**inputs), base(**inputs)
        torch.testing.assert_close(actual.class_queries_logits, expected.class_queries_logits)
        torch.testing.assert_close(actual.masks_queries_logits, expected.masks_queries_logits)
        torch.testing.assert_close(base_actual.transformer_decoder_intermediate_states,
                                   base_expected.transformer_decoder_intermediate_states)
        assert not reloaded.config.use_pretrained_backbone

    # ---------------------------------------------------------------------------------- initialisation (issue 16.1)

    def test_init_after_mismatched_num_labels(self, tmp_path):
        """`from_pretrained(folder, num_labels=7, ignore_mismatched_sizes=True)` (fine-tuning on a new label set)
        rebuilds the loss's class weights instead of leaving uninitialised memory."""
        model = self.model(no_object_weight=0.25)
        model.save_pretrained(tmp_path)
        reloaded = self.model_class.from_pretrained(tmp_path, num_labels=7, ignore_mismatched_sizes=True)
        assert reloaded.criterion.empty_weight.tolist() == [1.0] * 7 + [0.25]
        assert reloaded.class_predictor.weight.shape[0] == 8
        assert torch.isfinite(reloaded.class_predictor.weight).all()
        assert reloaded.class_predictor.weight.abs().max() < 10
        reloaded.train()
        inputs = self.inputs()
        targets = self.targets(inputs)
        targets["class_labels"] = [labels + 3 for labels in targets["class_labels"]]  # ids 3..6: new labels
        loss = reloaded(**inputs, **targets).loss
        assert torch.isfinite(loss) and 0 < loss.item() < 1e3
        loss.backward()

    # ----------------------------------------------------------------------- attentions, hidden states (issue 16.5)

    def test_attentions_are_per_layer_tensors(self):
        model = self.model()
        inputs = self.inputs()
        with torch.no_grad():
            outputs = model(**inputs, output_attentions=True)
        queries = outputs.class_queries_logits.shape[1]
        assert len(outputs.attentions) == self.num_decoder_layers
        for attention in outputs.attentions:
            assert isinstance(attention, torch.Tensor)
            assert attention.shape[0] == 2 and attention.shape[-2:] == (queries, queries)
            torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))
        assert len(outputs.cross_attentions) == self.num_decoder_layers
        assert all(cross.shape[:3] == outputs.attentions[0].shape[:3] for cross in outputs.cross_attentions)
        with torch.no_grad():
            plain = model(**inputs)
        assert plain.attentions is None and plain.cross_attentions is None
        torch.testing.assert_close(plain.class_queries_logits, outputs.class_queries_logits, atol=1e-5, rtol=1e-5)

    def test_retain_grad_hidden_states_attentions(self):
        """As transformers' test: gradients reach the returned hidden states and attentions."""
        model = self.model(freeze_backbone_batch_norm=False)
        model.train()
        inputs = self.inputs()
        outputs = model(**inputs, **self.targets(inputs), output_hidden_states=True, output_attentions=True)
        retained = [
            outputs.encoder_hidden_states[0],
            outputs.pixel_decoder_hidden_states[0],
            outputs.transformer_decoder_hidden_states[0],
            outputs.attentions[0],
            outputs.cross_attentions[0],
        ]
        for tensor in retained:
            tensor.retain_grad()
        outputs.loss.backward()
        for tensor in retained:
            assert tensor.grad is not None and torch.isfinite(tensor.grad).all()

    # ------------------------------------------------------------------------------------- pixel_mask (issue 16.9)

    def test_bad_pixel_mask_raises(self):
        model = self.model()
        inputs = self.inputs()
        pixels, mask = inputs[self.input_name], inputs["pixel_mask"]
        with pytest.raises(ValueError, match=r"pixel_mask must be .*got \(2, 32, 48\)"):
            model(pixels, pixel_mask=mask[:, :32, :48])
        with pytest.raises(ValueError, match=r"pixel_mask must be .*got \(1, "):
            model(pixels, pixel_mask=mask[:1])
        empty = mask.clone()
        empty[1] = 0
        with pytest.raises(ValueError, match=r"all zero for image\(s\) \[1\]"):
            model(pixels, pixel_mask=empty)
        with pytest.raises(ValueError, match="pixel_mask"):
            self.base_model_class(model.config)(pixels, pixel_mask=mask[:, :32])

    # -------------------------------------------------------------------------------- backbones (issue 16.2, 16.4)

    def test_timm_backbone_by_name(self):
        """`backbone=` builds that timm model through `TimmBackbone` (stages 1-4), as transformers 5 does."""
        config = self.config(backbone_config=None, backbone="test_resnet")
        assert config.backbone_config.model_type == "timm_backbone"
        assert list(config.backbone_config.out_indices) == [1, 2, 3, 4]
        torch.manual_seed(0)
        model = self.model_class(config).eval()
        encoder = model.model.pixel_level_module.encoder
        assert type(encoder).__name__ == "TimmBackbone"
        assert list(encoder.channels) == [32, 48, 192, 96]
        with torch.no_grad():
            outputs = model(**self.inputs(), output_hidden_states=True)
        assert [tuple(f.shape[-2:]) for f in outputs.encoder_hidden_states] == [(16, 24), (8, 12), (4, 6), (2, 3)]
        kwargs_config = self.config(backbone_config=None, backbone="test_convnext", use_timm_backbone=True,
                                    backbone_kwargs={"out_indices": (0, 1, 2, 3)})
        assert self.model_class(kwargs_config).model.pixel_level_module.encoder.channels == [24, 32, 48, 64]

    def test_transformers_backbone_by_folder(self, tmp_path):
        from tests._tiny_configs import tiny_resnet

        tiny_resnet(out_features=None).save_pretrained(tmp_path)
        config = self.config(backbone_config=None, backbone=str(tmp_path), use_timm_backbone=False)
        assert config.backbone_config.model_type == "resnet"
        assert config.backbone_config.out_features == ["stage1", "stage2", "stage3", "stage4"]
        with pytest.raises(ValueError, match="cannot load the config of backbone"):
            self.config(backbone_config=None, backbone=str(tmp_path / "missing"), use_timm_backbone=False)

    def test_backbone_arguments_are_never_silently_ignored(self):
        with pytest.raises(ValueError, match="need `backbone`"):
            self.config(backbone_config=None, backbone_kwargs={"out_indices": (1, 2, 3, 4)})
        with pytest.raises(ValueError, match="not both"):
            self.config(backbone="test_resnet", use_timm_backbone=True)
        with pytest.raises(ValueError, match="use_pretrained_backbone=True needs `backbone=`"):
            self.config(use_pretrained_backbone=True)

    def test_use_pretrained_backbone_offline_fails_fast(self, monkeypatch):
        """No silent random weights: offline, building the model fails at once with a one-line message."""
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "is_offline_mode", lambda: True)
        config = self.config(backbone_config=None, backbone="test_resnet", use_pretrained_backbone=True)
        with pytest.raises(OSError, match=r"cannot download the weights of backbone 'test_resnet' in offline") as error:
            self.model_class(config)
        assert "\n" not in str(error.value)

    # ------------------------------------------------------------------------- against transformers (image only)

    def transformers_config(self):
        """transformers' config of the same tiny model (None: transformers has no counterpart)."""
        return None

    def _transformers_pair(self):
        their_config = self.transformers_config()
        if their_config is None:
            pytest.skip("transformers has no counterpart of this model")
        torch.manual_seed(0)
        return self.transformers_model_class(their_config).eval(), self.model_class(self.config()).eval()

    def test_output_fields_match_transformers(self):
        theirs, ours = self._transformers_pair()
        pixel_values = self.inputs()[self.input_name]
        with torch.no_grad():
            # (the default of `output_auxiliary_logits` differs: ours follows `use_auxiliary_loss`, see README)
            expected = theirs(pixel_values, output_hidden_states=True, output_attentions=True,
                              output_auxiliary_logits=True)
            actual = ours(pixel_values, output_hidden_states=True, output_attentions=True,
                          output_auxiliary_logits=True)
        their_fields = [field.name for field in dataclasses.fields(type(expected))]
        our_fields = [field.name for field in dataclasses.fields(type(actual))]
        assert set(their_fields) <= set(our_fields)
        if expected.auxiliary_logits:  # transformers' MaskFormer has them only with `use_auxiliary_loss`
            assert len(actual.auxiliary_logits) == len(expected.auxiliary_logits)
        for name in their_fields:
            value, reference = getattr(actual, name), getattr(expected, name)
            if name == "auxiliary_logits":
                continue
            assert (value is None) == (reference is None), name
            if isinstance(reference, torch.Tensor):
                assert value.shape == reference.shape, name
            elif isinstance(reference, tuple) and name not in self.documented_differences:
                assert len(value) == len(reference), name
                for ours_item, their_item in zip(value, reference):
                    assert ours_item.shape == their_item.shape, name

    # fields whose structure differs from transformers' on purpose (README, "Differences from transformers")
    documented_differences: tuple[str, ...] = ()

    def test_loading_a_transformers_checkpoint_does_not_warn(self, tmp_path, capfd, caplog):
        theirs, _ = self._transformers_pair()
        theirs.save_pretrained(tmp_path)
        capfd.readouterr()
        with caplog.at_level(logging.WARNING):
            model = self.model_class.from_pretrained(tmp_path)
        printed = capfd.readouterr()
        messages = printed.err + printed.out + caplog.text
        assert "to instantiate a model of type" not in messages
        assert model.config.model_type == self.config_class.model_type
        assert transformers.AutoConfig.from_pretrained(tmp_path).model_type != model.config.model_type
