"""``evaluate`` metric: YouTube-VIS video AP (spatio-temporal mask IoU, COCOeval-style AP over IoU 0.50:0.95).

Load it offline from its folder: ``evaluate.load("<path>/metrics/video_ap")`` (or
``hf_maskformer_series.metrics.load_metric("video_ap")``).
"""

import json

import datasets
import evaluate

from .video_ap_core import compute_video_ap

_DESCRIPTION = """
YouTube-VIS video instance segmentation AP, as the YouTube-VIS API (ytvoseval): the IoU of two tracks is the sum
over frames of mask intersections divided by the sum over frames of unions; matching, 101-point interpolated AP over
IoU thresholds 0.50:0.95 and max 1/10/100 detections per video are pycocotools' COCOeval; area ranges are
small < 128^2 <= medium < 256^2 <= large on the mean per-frame area. Values are fractions in [0, 1].
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `{"score", "category_id", "segmentations"}`): one list per video;
        `segmentations` is the list of per-frame compressed RLE dicts (`{"size", "counts": str}`) or `None`,
        serialised with `json.dumps` (Arrow columns need one type).
    references (`list` of `list` of `{"category_id", "iscrowd", "segmentations"}`): the same, per video.
    categories (`list` of `int`, optional): category ids to evaluate (default: those in the references).
    per_class (`bool`, optional): also return `per_class_AP`.
Returns:
    `AP`, `AP50`, `AP75`, `APs`, `APm`, `APl`, `AR1`, `AR10`, `AR100`, `ARs`, `ARm`, `ARl`.
"""


def _decode_tracks(videos):
    return [[{**track, "segmentations": json.loads(track["segmentations"])
              if isinstance(track["segmentations"], str) else track["segmentations"]} for track in video]
            for video in videos]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VideoAP(evaluate.Metric):
    """YouTube-VIS video AP."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.List(
                        {"score": datasets.Value("float64"), "category_id": datasets.Value("int64"),
                         "segmentations": datasets.Value("string")}
                    ),
                    "references": datasets.List(
                        {"category_id": datasets.Value("int64"), "iscrowd": datasets.Value("int64"),
                         "segmentations": datasets.Value("string")}
                    ),
                }
            ),
            reference_urls=["https://github.com/youtubevos/cocoapi"],
        )

    def _compute(self, predictions, references, categories=None, per_class=False):
        return compute_video_ap(_decode_tracks(predictions), _decode_tracks(references), categories=categories,
                                per_class=per_class)
