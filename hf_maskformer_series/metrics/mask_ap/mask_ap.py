"""``evaluate`` metric: COCO mask AP (AP, AP50, AP75, APs, APm, APl and the ARs): pycocotools' COCOeval, run by
hotcoco or faster-coco-eval when installed (same numbers, faster).

Load it offline from its folder: ``evaluate.load("<path>/metrics/mask_ap")`` (or
``hf_maskformer_series.metrics.load_metric("mask_ap")``).
"""

import datasets
import evaluate

from .mask_ap_core import compute_mask_ap

_DESCRIPTION = """
COCO instance-segmentation average precision of pycocotools' COCOeval (iouType "segm") with its default
parameters, computed by hotcoco or faster-coco-eval when installed (the same numbers). Inputs are per-image lists of objects whose masks are compressed RLE dicts ({"size": [h, w],
"counts": str}); encode a bool mask with `hf_maskformer_series.data.encode_mask`. Values are fractions in [0, 1],
-1 where undefined.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `{"segmentation", "score", "category_id"}`): one list per image.
    references (`list` of `list` of `{"segmentation", "category_id", "iscrowd"}`): one list per image.
    categories (`list` of `int`, optional): category ids to evaluate (default: those in the references).
    per_class (`bool`, optional): also return `per_class_AP`.
    backend (`str`, optional): "hotcoco", "faster_coco_eval" or "pycocotools" (default: the fastest installed;
        all give pycocotools' numbers).
Returns:
    `AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR1`, `AR10`, `AR100`, `ARs`, `ARm`, `ARl`.
"""

_RLE = {"size": datasets.List(datasets.Value("int64")), "counts": datasets.Value("string")}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MaskAP(evaluate.Metric):
    """COCO mask AP through pycocotools."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(
                        {"segmentation": _RLE, "score": datasets.Value("float64"),
                         "category_id": datasets.Value("int64")}
                    ),
                    "references": datasets.List(
                        {"segmentation": _RLE, "category_id": datasets.Value("int64"),
                         "iscrowd": datasets.Value("int64")}
                    ),
                }
            ),
            reference_urls=["https://github.com/cocodataset/cocoapi"],
        )

    def _compute(self, predictions, references, categories=None, per_class=False, backend=None):
        return compute_mask_ap(predictions, references, categories=categories, per_class=per_class, backend=backend)
