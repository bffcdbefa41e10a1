"""The shared model tests (`tests/_model_tester.py`) for the image Mask2Former."""

from __future__ import annotations

from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

import hf_maskformer_series as hms
from tests._model_tester import ModelTesterMixin
from tests._tiny_configs import tiny_mask2former_kwargs


class TestMask2Former(ModelTesterMixin):
    config_class = hms.SeriesMask2FormerConfig
    model_class = hms.SeriesMask2FormerForUniversalSegmentation
    base_model_class = hms.SeriesMask2FormerModel
    transformers_model_class = Mask2FormerForUniversalSegmentation
    num_decoder_layers = 4  # decoder_layers=5 predictions
    # transformers returns the decoder's hidden states sequence-first `[queries, batch, hidden]`; ours are
    # batch-first like every other field
    documented_differences = ("transformer_decoder_hidden_states",)

    def config_kwargs(self, **overrides):
        return tiny_mask2former_kwargs(**overrides)

    def transformers_config(self):
        return Mask2FormerConfig(**tiny_mask2former_kwargs())

    def test_decoder_hidden_states_are_transformers_transposed(self):
        import torch

        their, ours = self._transformers_pair()
        pixel_values = self.inputs()["pixel_values"]
        with torch.no_grad():
            expected = their(pixel_values, output_hidden_states=True)
            actual = ours(pixel_values, output_hidden_states=True)
        assert len(actual.transformer_decoder_hidden_states) == len(expected.transformer_decoder_hidden_states)
        for ours_state, their_state in zip(actual.transformer_decoder_hidden_states,
                                           expected.transformer_decoder_hidden_states):
            assert ours_state.shape == their_state.transpose(0, 1).shape
