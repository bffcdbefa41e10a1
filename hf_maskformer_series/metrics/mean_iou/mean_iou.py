"""``evaluate`` metric: mean IoU, per-class IoU and accuracy, pixel accuracy, with ``ignore_index``.

Load it offline from its folder: ``evaluate.load("<path>/metrics/mean_iou")`` (or
``hf_maskformer_series.metrics.load_metric("mean_iou")``).
"""

import datasets
import evaluate

from .miou_core import compute_mean_iou

_DESCRIPTION = """
Mean intersection-over-union for semantic segmentation. Areas are summed per class over the dataset, then
IoU_c = intersection_c / union_c, accuracy_c = intersection_c / ground-truth area_c; mean_iou and mean_accuracy skip
classes that never occur (NaN); overall_accuracy is pixel accuracy. Ground-truth pixels equal to ignore_index are
left out.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `[height, width]` int arrays): predicted label maps.
    references (`list` of `[height, width]` int arrays): ground-truth label maps.
    num_labels (`int`): number of classes (passed to `compute`).
    ignore_index (`int`, default 255): ground-truth value to leave out.
    reduce_labels (`bool`, default False): map ground-truth 0 to ignore_index and shift the others down by one.
    label_map (`dict`, optional): ground-truth relabelling applied first.
    nan_to_num (`float`, optional): replace NaN (absent classes) with this value.
Returns:
    `mean_iou`, `mean_accuracy`, `overall_accuracy` (floats), `per_category_iou`, `per_category_accuracy`
    (`[num_labels]` arrays).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    """Mean IoU for semantic segmentation."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_labels=None, ignore_index=255, reduce_labels=False,
                 label_map=None, nan_to_num=None):
        if num_labels is None:
            raise ValueError("Pass num_labels to compute().")
        return compute_mean_iou(predictions, references, num_labels, ignore_index, reduce_labels, label_map,
                                nan_to_num)
