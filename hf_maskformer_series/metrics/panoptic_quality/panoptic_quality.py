"""``evaluate`` metric: panoptic quality (PQ, SQ, RQ; all / things / stuff; per class) as panopticapi's pq_compute.

Load it offline from its folder: ``evaluate.load("<path>/metrics/panoptic_quality")`` (or
``hf_maskformer_series.metrics.load_metric("panoptic_quality")``).
"""

import datasets
import evaluate
import numpy as np

from .pq_core import compute_pq

_DESCRIPTION = """
Panoptic quality (Kirillov et al., 2019) with the semantics of panopticapi's `pq_compute`: segments match at
IoU > 0.5 (void pixels of the ground truth left out of the union), crowd ground truth is never matched, and an
unmatched prediction lying more than half on void or on a crowd region of its class is not a false positive.
PQ / SQ / RQ are averaged over the categories that occur: all, things and stuff. Values are fractions in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `[height, width]` int arrays): predicted segment-id maps (0 or negative = void).
    references (`list` of `[height, width]` int arrays): ground-truth segment-id maps (0 = void).
    prediction_segments_info (`list` of `list` of `{"id", "category_id"}`): one list per image.
    reference_segments_info (`list` of `list` of `{"id", "category_id", "iscrowd"}`): one list per image;
        `iscrowd` is optional (default 0).
    categories (`list` of `{"id", "isthing"}`): the dataset categories, passed to `compute`.
Returns:
    `pq`, `sq`, `rq`, `n` (all), the same with `_things` and `_stuff` suffixes, and `per_class`
    (`{category_id: {pq, sq, rq, tp, fp, fn}}`).
Examples:
    >>> pq = evaluate.load("hf_maskformer_series/metrics/panoptic_quality")
    >>> gt = np.array([[1, 1], [2, 2]])
    >>> pq.compute(predictions=[gt], references=[gt],
    ...            prediction_segments_info=[[{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}]],
    ...            reference_segments_info=[[{"id": 1, "category_id": 1, "iscrowd": 0},
    ...                                      {"id": 2, "category_id": 2, "iscrowd": 0}]],
    ...            categories=[{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}])["pq"]
    1.0
"""

_CITATION = """
@inproceedings{kirillov2019panoptic,
  title={Panoptic Segmentation}, author={Kirillov, Alexander and He, Kaiming and Girshick, Ross and Rother, Carsten
  and Doll{\\'a}r, Piotr}, booktitle={CVPR}, year={2019}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PanopticQuality(evaluate.Metric):
    """Panoptic quality as panopticapi's `pq_compute`."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "prediction_segments_info": datasets.List(
                        {"id": datasets.Value("int64"), "category_id": datasets.Value("int64")}
                    ),
                    "reference_segments_info": datasets.List(
                        {
                            "id": datasets.Value("int64"),
                            "category_id": datasets.Value("int64"),
                            "iscrowd": datasets.Value("int64"),
                        }
                    ),
                }
            ),
            reference_urls=["https://github.com/cocodataset/panopticapi"],
        )

    def add(self, *, prediction=None, reference=None, **kwargs):
        """One image; ``reference_segments_info`` entries may leave out ``iscrowd`` (default 0)."""
        return super().add(prediction=prediction, reference=reference, **_with_iscrowd(kwargs, batched=False))

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Several images; ``reference_segments_info`` entries may leave out ``iscrowd`` (default 0)."""
        return super().add_batch(predictions=predictions, references=references, **_with_iscrowd(kwargs, batched=True))

    def compute(self, *, predictions=None, references=None, **kwargs):
        """The PQ report; pass ``categories`` here, and the inputs if nothing was added."""
        if predictions is not None:
            kwargs = _with_iscrowd(kwargs, batched=True)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def _compute(self, predictions, references, prediction_segments_info, reference_segments_info, categories=None):
        if categories is None:
            raise ValueError("Pass categories=[{'id': ..., 'isthing': ...}, ...] to compute().")
        return compute_pq(
            [np.asarray(p, dtype=np.int64) for p in predictions],
            [np.asarray(r, dtype=np.int64) for r in references],
            prediction_segments_info,
            reference_segments_info,
            categories,
        )


def _with_iscrowd(kwargs: dict, batched: bool) -> dict:
    """``kwargs`` with ``iscrowd: 0`` added to the reference segments that lack it (the features require the key)."""
    info = kwargs.get("reference_segments_info")
    if info is None:
        return kwargs
    images = info if batched else [info]
    filled = [[{"iscrowd": 0, **segment} for segment in segments] for segments in images]
    return {**kwargs, "reference_segments_info": filled if batched else filled[0]}
