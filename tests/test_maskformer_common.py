"""The shared model tests (`tests/_model_tester.py`) for MaskFormer, plus its transformers-specific config paths."""

from __future__ import annotations

import torch
from transformers import MaskFormerConfig, MaskFormerForInstanceSegmentation

import hf_maskformer_series as hms
from tests._model_tester import ModelTesterMixin
from tests._tiny_configs import STAGES, tiny_maskformer_kwargs, tiny_swin


class TestMaskFormer(ModelTesterMixin):
    config_class = hms.SeriesMaskFormerConfig
    model_class = hms.SeriesMaskFormerForInstanceSegmentation
    base_model_class = hms.SeriesMaskFormerModel
    transformers_model_class = MaskFormerForInstanceSegmentation
    num_decoder_layers = 3
    # ours: the 4 FPN maps (transformers leaves out the /32 stem output, so `hidden_states` has one map more);
    # transformers 5 returns an empty `attentions` tuple (its default sdpa attention cannot output them), ours has one
    # tensor per decoder layer
    documented_differences = ("pixel_decoder_hidden_states", "hidden_states", "attentions")

    def config_kwargs(self, **overrides):
        return tiny_maskformer_kwargs(**overrides)

    def transformers_config(self):
        return MaskFormerConfig(**tiny_maskformer_kwargs())

    def test_combined_hidden_states(self):
        with torch.no_grad():
            outputs = self.model()(**self.inputs(), output_hidden_states=True)
        assert len(outputs.transformer_decoder_hidden_states) == self.num_decoder_layers + 1
        assert not outputs.transformer_decoder_hidden_states[0].any()  # the decoder's zero input
        expected = (outputs.encoder_hidden_states + outputs.pixel_decoder_hidden_states
                    + outputs.transformer_decoder_hidden_states)
        assert len(outputs.hidden_states) == len(expected) == 4 + 4 + self.num_decoder_layers + 1
        assert all(ours is theirs for ours, theirs in zip(outputs.hidden_states, expected))


def test_plain_swin_config_is_accepted_as_transformers_does():
    """A `SwinConfig` with its default `out_features` (['stage4']) becomes the 4-stage `maskformer-swin` backbone,
    as transformers' MaskFormer does, and the two models then have the same weights layout."""
    swin = tiny_swin(out_features=None)
    assert swin.out_features == ["stage4"]
    config = hms.SeriesMaskFormerConfig(**tiny_maskformer_kwargs(swin))
    assert config.backbone_config.model_type == "maskformer-swin"
    assert config.backbone_config.out_features == STAGES
    torch.manual_seed(0)
    ours = hms.SeriesMaskFormerForInstanceSegmentation(config).eval()
    theirs = MaskFormerForInstanceSegmentation(MaskFormerConfig(**tiny_maskformer_kwargs(tiny_swin(out_features=None))))
    assert set(ours.model.pixel_level_module.encoder.state_dict()) == set(
        theirs.model.pixel_level_module.encoder.state_dict()
    )
    with torch.no_grad():
        outputs = ours(torch.randn(1, 3, 64, 64))
    assert outputs.masks_queries_logits.shape == (1, 6, 16, 16)
