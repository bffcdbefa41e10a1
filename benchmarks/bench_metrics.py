"""Metric step at the scale of COCO val (5,000 images): mask AP and PQ, ours against hotcoco and faster-coco-eval.

Generated data of COCO val's size (and of YouTube-VIS 2019 valid's for video AP): 5,000 images of 480x640 / 640x480 / 427x640, ~7 ground-truth objects per image
(random 12-vertex polygons, 80 categories, 1% crowd), 100 detections per image (jittered copies of the ground truth
and random shapes, random scores). Panoptic: ~20 segments per image (things and stuff, 133 categories).

Every backend is first checked against the reference (pycocotools' ``COCOeval`` stats; panopticapi's ``pq_compute``
where installed) on the same inputs, then timed. The timing covers the whole metric step from in-memory results
(building the COCO objects, matching, accumulating), as ``compute_mask_ap`` / ``compute_pq`` do. Backends run
interleaved, ``--repeats`` times; the medians of wall and CPU time are printed.

    python benchmarks/bench_metrics.py --images 5000 --repeats 3

Measured on the shared 2-vCPU VM under heavy load (load average 20-27, so wall times were 5-20x inflated and
noisy); 1,000 generated COCO-val-like images, 2 interleaved runs, median CPU seconds of the process:

| metric step (1,000 images)                             | CPU s | vs main |
|--------------------------------------------------------|-------|---------|
| mask AP, main's `compute_mask_ap` (pycocotools)        | 11.83 | 1.0x    |
| mask AP, pycocotools direct (COCO / loadRes / COCOeval)| 11.72 | 1.0x    |
| mask AP, `compute_mask_ap(backend="pycocotools")`      | 10.52 | 1.1x    |
| mask AP, `compute_mask_ap(backend="faster_coco_eval")` |  3.01 | 3.9x    |
| mask AP, `compute_mask_ap(backend="hotcoco")` (default)|  1.47 | 8.0x    |
| PQ, main's `compute_pq`                                |  2.79 | 1.0x    |
| PQ, `compute_pq` (one `np.unique` pass per image)      |  1.37 | 2.0x    |

All mask-AP backends gave pycocotools' twelve numbers exactly (max difference 0; faster-coco-eval within 6e-17
on other cases); the two PQ versions gave identical reports. Of the hotcoco step, hotcoco's own evaluation is a
small part (0.25 s of the step for 300 images); the rest is building the RLE annotations in Python. For 300
images, pycocotools alone took 10.0 s wall, hotcoco 0.28 s, faster-coco-eval 2.9 s. Video AP (YouTube-VIS 2019
valid size: 302 videos of 27 720x1280 frames, 10 predicted tracks each) is our own (no library computes it):
0.21 s wall for 20 videos (about 3 s extrapolated to 302; not measured at full size).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import numpy as np
from pycocotools import mask as mask_utils

SIZES = ((480, 640), (640, 480), (427, 640))


def _polygon(rng: np.random.Generator, height: int, width: int, scale: float) -> list[float]:
    cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
    radius = scale * min(height, width) * rng.uniform(0.3, 1.0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
    radii = radius * rng.uniform(0.6, 1.0, 12)
    xs = np.clip(cx + radii * np.cos(angles), 0, width - 1)
    ys = np.clip(cy + radii * np.sin(angles), 0, height - 1)
    return np.stack([xs, ys], 1).reshape(-1).tolist()


def _rle(polygon: list[float], height: int, width: int) -> dict:
    rle = mask_utils.frPyObjects([polygon], height, width)[0]
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def generate_instance_case(num_images: int, seed: int = 0, detections: int = 100):
    """``(predictions, references)`` per image, segmentations as compressed RLE (``counts`` str)."""
    rng = np.random.default_rng(seed)
    predictions, references = [], []
    for _ in range(num_images):
        height, width = SIZES[int(rng.integers(len(SIZES)))]
        gts, preds = [], []
        for _ in range(int(rng.poisson(7)) + 1):
            polygon = _polygon(rng, height, width, float(rng.choice([0.03, 0.1, 0.3])))
            category = int(rng.integers(1, 81))
            gts.append({"segmentation": _rle(polygon, height, width), "category_id": category,
                        "iscrowd": int(rng.random() < 0.01)})
            for _ in range(int(rng.integers(1, 4))):
                moved = (np.asarray(polygon) + rng.normal(0, 4, len(polygon))).clip(0, min(height, width) - 1)
                preds.append({"segmentation": _rle(moved.tolist(), height, width), "score": float(rng.random()),
                              "category_id": category if rng.random() < 0.8 else int(rng.integers(1, 81))})
        while len(preds) < detections:
            polygon = _polygon(rng, height, width, float(rng.choice([0.03, 0.1, 0.3])))
            preds.append({"segmentation": _rle(polygon, height, width), "score": float(rng.random()) * 0.5,
                          "category_id": int(rng.integers(1, 81))})
        predictions.append(preds[:detections])
        references.append(gts)
    return predictions, references


def coco_dicts(predictions, references) -> tuple[dict, list[dict], list[dict]]:
    """The ground-truth dataset dict, the results list and the categories, as the COCO JSON files would hold them."""
    images, annotations, results = [], [], []
    for index, (preds, gts) in enumerate(zip(predictions, references)):
        size = (gts or preds)[0]["segmentation"]["size"]
        images.append({"id": index + 1, "height": size[0], "width": size[1]})
        for gt in gts:
            rle = {"size": gt["segmentation"]["size"], "counts": gt["segmentation"]["counts"].encode("ascii")}
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": gt["category_id"],
                                "segmentation": gt["segmentation"], "iscrowd": gt["iscrowd"],
                                "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist()})
        for pred in preds:
            results.append({"image_id": index + 1, "category_id": pred["category_id"],
                            "segmentation": pred["segmentation"], "score": pred["score"]})
    categories = [{"id": c, "name": str(c)} for c in range(1, 81)]
    return {"images": images, "annotations": annotations, "categories": categories}, results, categories


def mask_ap_backends():
    """``{name: function(predictions, references) -> 12 stats}`` for every installed backend."""
    from hf_maskformer_series.metrics import COCO_STAT_NAMES, compute_mask_ap
    from hf_maskformer_series.metrics.mask_ap import mask_ap_core

    backends = {}
    for name in mask_ap_core.BACKENDS:
        def run(predictions, references, backend=name):
            report = compute_mask_ap(predictions, references, categories=list(range(1, 81)), backend=backend)
            return [report[stat] for stat in COCO_STAT_NAMES]
        backends[f"compute_mask_ap(backend={name!r})"] = run
    return backends


def pycocotools_reference(predictions, references) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results, _ = coco_dicts(predictions, references)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return list(evaluator.stats)


def generate_panoptic_case(num_images: int, seed: int = 0):
    """``(predictions, references, prediction_segments_info, reference_segments_info, categories)``."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "isthing": int(c <= 80)} for c in range(1, 134)]
    cases = ([], [], [], [])
    for _ in range(num_images):
        height, width = SIZES[int(rng.integers(len(SIZES)))]
        gt = np.zeros((height, width), dtype=np.int64)
        pred = np.zeros((height, width), dtype=np.int64)
        gt_info, pred_info = [], []
        stuff_rows = np.sort(rng.choice(np.arange(1, height), 5, replace=False))
        for k, (top, bottom) in enumerate(zip(np.r_[0, stuff_rows], np.r_[stuff_rows, height])):
            category = int(rng.integers(81, 134))
            gt[top:bottom] = 1000 + k
            gt_info.append({"id": 1000 + k, "category_id": category, "iscrowd": 0})
            shift = int(rng.integers(-10, 10))
            pred[max(0, top + shift):bottom] = 2000 + k
            pred_info.append({"id": 2000 + k, "category_id": category if rng.random() < 0.8 else 81})
        for k in range(int(rng.poisson(14)) + 1):
            h, w = int(rng.integers(8, height // 3)), int(rng.integers(8, width // 3))
            y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
            category = int(rng.integers(1, 81))
            gt[y:y + h, x:x + w] = k + 1
            gt_info.append({"id": k + 1, "category_id": category, "iscrowd": int(rng.random() < 0.02)})
            dy, dx = rng.integers(-h // 4, h // 4 + 1), rng.integers(-w // 4, w // 4 + 1)
            pred[max(0, y + dy):y + dy + h, max(0, x + dx):x + dx + w] = 3000 + k
            pred_info.append({"id": 3000 + k, "category_id": category})
        gt[rng.random((height, width)) < 0.01] = 0  # void specks
        present_gt, present_pred = set(np.unique(gt).tolist()), set(np.unique(pred).tolist())
        cases[0].append(pred)
        cases[1].append(gt)
        cases[2].append([s for s in pred_info if s["id"] in present_pred])
        cases[3].append([s for s in gt_info if s["id"] in present_gt])
    return (*cases, categories)


def generate_video_case(num_videos: int, seed: int = 0, frames: int = 27, detections: int = 10):
    """YouTube-VIS 2019 valid's size: ``(predictions, references)`` per video, 720x1280 frames, 1-3 ground-truth
    tracks (absent in some frames) and ``detections`` predicted tracks per video, per-frame compressed RLE."""
    rng = np.random.default_rng(seed)
    height, width = 720, 1280
    predictions, references = [], []
    for _ in range(num_videos):
        gts, preds = [], []
        for _ in range(int(rng.integers(1, 4))):
            category = int(rng.integers(1, 41))
            polygon = np.asarray(_polygon(rng, height, width, float(rng.choice([0.05, 0.15, 0.3]))))
            start, stop = sorted(rng.integers(0, frames + 1, 2))
            track = []
            for t in range(frames):
                polygon = (polygon + rng.normal(0, 3, polygon.shape)).clip(0, height - 1)
                track.append(_rle(polygon.tolist(), height, width) if start <= t <= stop else None)
            gts.append({"category_id": category, "iscrowd": 0, "segmentations": track})
        while len(preds) < detections:
            source = gts[int(rng.integers(len(gts)))]
            category = source["category_id"] if rng.random() < 0.7 else int(rng.integers(1, 41))
            track = [_rle((np.asarray(_polygon(rng, height, width, 0.1))).tolist(), height, width)
                     if (s is not None or rng.random() < 0.1) else None for s in source["segmentations"]]
            preds.append({"score": float(rng.random()), "category_id": category, "segmentations": track})
        predictions.append(preds)
        references.append(gts)
    return predictions, references


def _median_times(functions: dict, arguments: tuple, repeats: int) -> dict:
    """``{name: (median wall seconds, median CPU seconds of this process, all threads)}``, runs interleaved. On a
    shared machine the CPU time is the steadier figure; libraries that use threads show more CPU than wall time."""
    times = {name: ([], []) for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            function(*arguments)
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--videos", type=int, default=302)
    parser.add_argument("--skip", nargs="*", default=[], choices=["mask_ap", "pq", "video_ap"])
    args = parser.parse_args()

    if "mask_ap" not in args.skip:
        case = generate_instance_case(args.images)
        reference = pycocotools_reference(*case)
        backends = {"pycocotools (direct)": pycocotools_reference, **mask_ap_backends()}
        for name, function in backends.items():
            difference = float(np.max(np.abs(np.asarray(function(*case)) - np.asarray(reference))))
            print(f"mask AP  {name:40s} max |stat - pycocotools| = {difference:.2e}")
        for name, (wall, cpu) in _median_times(backends, case, args.repeats).items():
            print(f"mask AP  {name:40s} {wall:8.2f} s wall {cpu:8.2f} s CPU for {args.images} images")

    if "pq" not in args.skip:
        from hf_maskformer_series.metrics import compute_pq
        from hf_maskformer_series.metrics.panoptic_quality import pq_core

        case = generate_panoptic_case(args.images)
        backends = {"ours (current)": compute_pq}
        for name in getattr(pq_core, "BACKENDS", ()):
            backends[f"compute_pq(backend={name!r})"] = lambda *a, backend=name: compute_pq(*a, backend=backend)
        reports = {name: function(*case) for name, function in backends.items()}
        first = next(iter(reports.values()))
        for name, report in reports.items():
            difference = max(abs(report[k] - first[k]) for k in ("pq", "sq", "rq", "pq_things", "pq_stuff"))
            print(f"PQ       {name:40s} max |PQ/SQ/RQ - ours| = {difference:.2e}")
        for name, (wall, cpu) in _median_times(backends, case, args.repeats).items():
            print(f"PQ       {name:40s} {wall:8.2f} s wall {cpu:8.2f} s CPU for {args.images} images")

    if "video_ap" not in args.skip:
        from hf_maskformer_series.metrics import compute_video_ap

        case = generate_video_case(args.videos)
        wall, cpu = _median_times({"video": compute_video_ap}, case, args.repeats)["video"]
        print(f"video AP ours (no library computes it)   {wall:8.2f} s wall {cpu:8.2f} s CPU for {args.videos} videos")


if __name__ == "__main__":
    main()
