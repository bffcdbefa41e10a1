"""Tests of the segmentation metrics (hf_maskformer_series.metrics): hand-computed cases, the reference tools
(panopticapi's pq_compute when installed, pycocotools' COCOeval) and loading as offline `evaluate` modules."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hf_maskformer_series.data import encode_mask
from hf_maskformer_series.metrics import (
    COCO_STAT_NAMES,
    MASK_AP_BACKENDS,
    PanopticQualityAccumulator,
    compute_mask_ap,
    compute_mean_iou,
    compute_pq,
    compute_video_ap,
    load_metric,
    metric_path,
    spatio_temporal_iou,
)

# ---------------------------------------------------------------- panoptic quality

CATEGORIES = [{"id": 1, "isthing": 1, "name": "thing"}, {"id": 2, "isthing": 0, "name": "stuff"},
              {"id": 3, "isthing": 1, "name": "never seen"}]


def _pq_case():
    """Two 10x10 images; expected numbers derived by hand from panopticapi's definitions below."""
    # image 1 -- ground truth: A (id 1, thing) rows 0-4 cols 0-4; B (id 2, thing) rows 0-4 cols 5-9;
    # C (id 3, stuff) rows 5-8; row 9 void.
    gt1 = np.zeros((10, 10), dtype=np.int64)
    gt1[0:5, 0:5], gt1[0:5, 5:10], gt1[5:9] = 1, 2, 3
    gt1_info = [{"id": 1, "category_id": 1, "iscrowd": 0}, {"id": 2, "category_id": 1, "iscrowd": 0},
                {"id": 3, "category_id": 2, "iscrowd": 0}]
    # prediction: 10 (thing) rows 0-4 cols 0-3 -> IoU with A = 20/25 = 0.8, a match;
    # 11 (thing) rows 0-1 cols 5-9 -> IoU with B = 10/25 = 0.4: B is a FN and 11 a FP;
    # 13 (stuff) rows 5-8 + row 9 cols 4-9: 46 px, 6 on void -> IoU = 40 / (46 + 40 - 40 - 6) = 1.0;
    # 14 (thing) row 9 cols 0-3: entirely on void -> ignored, not a FP.
    pred1 = np.zeros((10, 10), dtype=np.int64)
    pred1[0:5, 0:4], pred1[0:2, 5:10], pred1[5:9], pred1[9, 4:10], pred1[9, 0:4] = 10, 11, 13, 13, 14
    pred1_info = [{"id": 10, "category_id": 1}, {"id": 11, "category_id": 1}, {"id": 13, "category_id": 2},
                  {"id": 14, "category_id": 1}]
    # image 2 -- ground truth: crowd thing (id 5) rows 0-4, stuff (id 6) rows 5-9.
    gt2 = np.zeros((10, 10), dtype=np.int64)
    gt2[0:5], gt2[5:10] = 5, 6
    gt2_info = [{"id": 5, "category_id": 1, "iscrowd": 1}, {"id": 6, "category_id": 2, "iscrowd": 0}]
    # prediction: 20 (thing) rows 0-2, all on the crowd region of its class -> ignored; the crowd is no FN;
    # 21 (stuff) rows 3-9 -> IoU with 6 = 50 / 70, a match.
    pred2 = np.zeros((10, 10), dtype=np.int64)
    pred2[0:3], pred2[3:10] = 20, 21
    pred2_info = [{"id": 20, "category_id": 1}, {"id": 21, "category_id": 2}]
    return [pred1, pred2], [gt1, gt2], [pred1_info, pred2_info], [gt1_info, gt2_info]


def test_pq_hand_computed():
    report = compute_pq(*_pq_case(), CATEGORIES)
    # thing class 1: TP 1 (IoU 0.8), FP 1, FN 1 -> PQ = 0.8 / 2 = 0.4, SQ = 0.8, RQ = 1 / 2 = 0.5
    # stuff class 2: TP 2 (IoU 1 and 5/7), FP 0, FN 0 -> SQ = PQ = (12/7) / 2 = 6/7, RQ = 1
    # class 3 never occurs -> left out of the means (n = 2)
    assert report["per_class"][1] == pytest.approx({"pq": 0.4, "sq": 0.8, "rq": 0.5, "tp": 1, "fp": 1, "fn": 1})
    assert report["per_class"][2] == pytest.approx({"pq": 6 / 7, "sq": 6 / 7, "rq": 1.0, "tp": 2, "fp": 0, "fn": 0})
    assert report["per_class"][3] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert report["pq"] == pytest.approx((0.4 + 6 / 7) / 2)
    assert report["sq"] == pytest.approx((0.8 + 6 / 7) / 2)
    assert report["rq"] == pytest.approx(0.75)
    assert report["n"] == 2 and report["n_things"] == 1 and report["n_stuff"] == 1
    assert (report["pq_things"], report["sq_things"], report["rq_things"]) == pytest.approx((0.4, 0.8, 0.5))
    assert (report["pq_stuff"], report["sq_stuff"], report["rq_stuff"]) == pytest.approx((6 / 7, 6 / 7, 1.0))


def test_pq_perfect_and_empty_prediction():
    predictions, references, pred_info, gt_info = _pq_case()
    report = compute_pq(references, references,
                        [[{k: s[k] for k in ("id", "category_id")} for s in info] for info in gt_info], gt_info,
                        CATEGORIES)
    assert report["pq"] == report["sq"] == report["rq"] == 1.0
    empty = compute_pq([np.zeros((10, 10), dtype=np.int64)] * 2, references, [[], []], gt_info, CATEGORIES)
    assert empty["pq"] == 0.0 and empty["per_class"][1]["fn"] == 2 and empty["per_class"][2]["fn"] == 2
    # transformers' post-processing names the class "label_id"
    renamed = [[{"id": s["id"], "label_id": s["category_id"]} for s in info] for info in pred_info]
    assert compute_pq(predictions, references, renamed, gt_info, CATEGORIES) == compute_pq(
        predictions, references, pred_info, gt_info, CATEGORIES)
    # -1 in a prediction map (unassigned pixels in transformers' post-processing) is void
    negative = compute_pq([np.full((10, 10), -1)] * 2, references, [[], []], gt_info, CATEGORIES)
    assert negative["per_class"] == empty["per_class"]


def test_pq_rejects_inconsistent_predictions():
    predictions, references, pred_info, gt_info = _pq_case()
    accumulator = PanopticQualityAccumulator(CATEGORIES)
    with pytest.raises(ValueError, match="img.png: predicted segment id 14 is in the map but not in the"):
        accumulator.update(predictions[0], pred_info[0][:3], references[0], gt_info[0], image_name="img.png")
    with pytest.raises(ValueError, match=r"segment ids \[99\] are in segments_info but not in the map"):
        accumulator.update(predictions[0], pred_info[0] + [{"id": 99, "category_id": 1}], references[0], gt_info[0])
    with pytest.raises(ValueError, match="segment 10 has unknown category_id 7"):
        accumulator.update(predictions[0], [{"id": 10, "category_id": 7}] + pred_info[0][1:], references[0],
                           gt_info[0])
    with pytest.raises(ValueError, match="same shape"):
        accumulator.update(predictions[0][:5], pred_info[0], references[0], gt_info[0])
    # the argument order of version 0.1.0 (segments before maps) is caught, not scored
    with pytest.raises(ValueError, match=r"prediction_segments_info, reference_segments_info, categories\)"):
        compute_pq(predictions, pred_info, references, gt_info, CATEGORIES)


def test_pq_iscrowd_is_optional_everywhere(monkeypatch):
    """``iscrowd`` defaults to 0 in the function, the accumulator and the evaluate module's add / add_batch."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("evaluate")
    predictions, references, pred_info, gt_info = _pq_case()
    gt_info[1][0]["iscrowd"] = 0  # the crowd segment becomes a plain one: the same as dropping the key
    expected = compute_pq(predictions, references, pred_info, gt_info, CATEGORIES)
    no_crowd = [[{k: v for k, v in s.items() if k != "iscrowd"} for s in info] for info in gt_info]
    assert compute_pq(predictions, references, pred_info, no_crowd, CATEGORIES) == expected
    assert expected["per_class"][1]["tp"] == 2  # prediction 20 now matches the former crowd (IoU 30/50)
    metric = load_metric("panoptic_quality")
    metric.add(predictions=predictions[0], references=references[0], prediction_segments_info=pred_info[0],
               reference_segments_info=no_crowd[0])
    metric.add_batch(predictions=predictions[1:], references=references[1:], prediction_segments_info=pred_info[1:],
                     reference_segments_info=no_crowd[1:])
    assert metric.compute(categories=CATEGORIES)["pq"] == pytest.approx(expected["pq"], abs=1e-15)


def _random_panoptic_case(seed, num_images=6, size=24):
    """Ground truth with things, stuff, void and crowd; predictions from shifted, relabelled, merged segments."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c, "isthing": int(c <= 3), "name": str(c)} for c in range(1, 6)]
    cases = ([], [], [], [])
    for _ in range(num_images):
        gt = np.where(np.arange(size)[:, None] < rng.integers(6, 18), 1000, 2000).repeat(size, 1)
        info = {1000: (4, 0), 2000: (5, 0)}
        for k in range(int(rng.integers(1, 5))):
            y, x, h, w = rng.integers(0, size - 4, 2).tolist() + rng.integers(3, 10, 2).tolist()
            gt[y : y + h, x : x + w] = 10 + k
            info[10 + k] = (int(rng.integers(1, 4)), int(rng.random() < 0.2))
        gt[:, :2] = 0  # void
        info = {i: v for i, v in info.items() if (gt == i).any()}
        pred_map = np.roll(gt, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(0, 1))
        pred_info = []
        for i in np.unique(pred_map):
            if i == 0 or rng.random() < 0.1:
                pred_map[pred_map == i] = 0
                continue
            category = info[i][0] if rng.random() > 0.2 else int(rng.integers(1, 6))
            pred_info.append({"id": int(i), "category_id": category})
        y, x = rng.integers(0, size - 6, 2)
        pred_map[y : y + 6, x : x + 6] = 77
        pred_info = [s for s in pred_info if (pred_map == s["id"]).any()] + [
            {"id": 77, "category_id": int(rng.integers(1, 6))}]
        cases[0].append(pred_map)
        cases[2].append(pred_info)
        cases[1].append(gt)
        cases[3].append([{"id": i, "category_id": c, "iscrowd": crowd} for i, (c, crowd) in info.items()])
    return (*cases, categories)


def _id_to_rgb(ids):
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def test_pq_equals_panopticapi_pq_compute(tmp_path):
    """Same inputs written as PNG + JSON and scored by panopticapi (pip install --no-deps panopticapi-lite)."""
    evaluation = pytest.importorskip("panopticapi.evaluation")
    predictions, references, pred_info, gt_info, categories = _random_panoptic_case(0)
    for folder in ("gt", "pred"):
        (tmp_path / folder).mkdir()
    gt_json = {"images": [], "annotations": [], "categories": categories}
    pred_json = {"annotations": []}
    for index, (pred, p_info, gt, g_info) in enumerate(zip(predictions, pred_info, references, gt_info)):
        name = f"{index}.png"
        Image.fromarray(_id_to_rgb(gt)).save(tmp_path / "gt" / name)
        Image.fromarray(_id_to_rgb(pred)).save(tmp_path / "pred" / name)
        segments = [{**s, "area": int((gt == s["id"]).sum())} for s in g_info]
        gt_json["images"].append({"id": index, "file_name": name})
        gt_json["annotations"].append({"image_id": index, "file_name": name, "segments_info": segments})
        pred_json["annotations"].append({"image_id": index, "file_name": name, "segments_info": p_info})
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / "pred.json").write_text(json.dumps(pred_json))
    with contextlib.redirect_stdout(io.StringIO()):
        expected = evaluation.pq_compute(str(tmp_path / "gt.json"), str(tmp_path / "pred.json"),
                                         str(tmp_path / "gt"), str(tmp_path / "pred"))
    ours = compute_pq(predictions, references, pred_info, gt_info, categories)
    for group, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for key in ("pq", "sq", "rq", "n"):
            assert ours[key + suffix] == pytest.approx(expected[group][key], abs=1e-12)
    for category_id, values in expected["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert ours["per_class"][category_id][key] == pytest.approx(values[key], abs=1e-12)


def test_pq_random_case_is_nontrivial_and_stable():
    """The random case used against panopticapi exercises FPs, FNs, crowd and void (numbers checked there)."""
    report = compute_pq(*_random_panoptic_case(0))
    totals = {k: sum(v[k] for v in report["per_class"].values()) for k in ("tp", "fp", "fn")}
    assert totals["tp"] > 0 and totals["fp"] > 0 and totals["fn"] > 0
    assert 0.0 < report["pq"] < 1.0 and report["pq"] == pytest.approx(report["sq"] * report["rq"], rel=0.5)


# ---------------------------------------------------------------- mean IoU


def test_mean_iou_hand_computed():
    prediction = np.array([[0, 0, 1], [1, 2, 2]])
    reference = np.array([[0, 1, 1], [255, 2, 0]])
    report = compute_mean_iou([prediction], [reference], num_labels=4, ignore_index=255)
    # class 0: I=1, pred 2, gt 2 -> IoU 1/3, acc 1/2; class 1: I=1, pred 1 (the ignored pixel drops), gt 2 -> 1/2, 1/2;
    # class 2: I=1, pred 2, gt 1 -> 1/2, 1; class 3 absent -> NaN, skipped by the means.
    np.testing.assert_allclose(report["per_category_iou"][:3], [1 / 3, 1 / 2, 1 / 2])
    np.testing.assert_allclose(report["per_category_accuracy"][:3], [1 / 2, 1 / 2, 1.0])
    assert np.isnan(report["per_category_iou"][3]) and np.isnan(report["per_category_accuracy"][3])
    assert report["mean_iou"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert report["mean_accuracy"] == pytest.approx(2 / 3)
    assert report["overall_accuracy"] == pytest.approx(3 / 5)
    assert compute_mean_iou([prediction], [reference], 4, nan_to_num=0.0)["per_category_iou"][3] == 0.0
    # areas add up over images before dividing (not a mean of per-image IoUs)
    two = compute_mean_iou([prediction, np.zeros((2, 3), int)], [reference, np.zeros((2, 3), int)], 4)
    assert two["per_category_iou"][0] == pytest.approx((1 + 6) / (3 + 6))


def test_mean_iou_reduce_labels_and_label_map():
    prediction = np.array([[0, 1, 2]])
    reference = np.array([[1, 2, 0]])  # reduce_labels: 1 -> 0, 2 -> 1, 0 (background) -> ignored
    report = compute_mean_iou([prediction], [reference], num_labels=3, reduce_labels=True)
    np.testing.assert_allclose(report["per_category_iou"][:2], [1.0, 1.0])
    assert report["overall_accuracy"] == 1.0 and np.isnan(report["per_category_iou"][2])
    mapped = compute_mean_iou([prediction], [np.array([[5, 1, 2]])], num_labels=3, label_map={5: 0})
    assert mapped["overall_accuracy"] == 1.0


def test_mean_iou_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"reference labels \[7\] are outside \[0, 3\)"):
        compute_mean_iou([np.zeros((2, 2), int)], [np.full((2, 2), 7)], num_labels=3)
    with pytest.raises(ValueError, match=r"predicted labels \[3\]"):
        compute_mean_iou([np.full((2, 2), 3)], [np.zeros((2, 2), int)], num_labels=3)
    with pytest.raises(ValueError, match="differs from reference shape"):
        compute_mean_iou([np.zeros((2, 3), int)], [np.zeros((2, 2), int)], num_labels=3)


# ---------------------------------------------------------------- COCO mask AP


def _box(height, width, y0, y1, x0, x1):
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_mask_ap_hand_computed():
    gt = _box(20, 20, 0, 10, 0, 10)  # 100 px
    pred = _box(20, 20, 0, 9, 0, 8)  # 72 px inside -> IoU 0.72: a match at IoU 0.50 .. 0.70 (5 of 10 thresholds)
    report = compute_mask_ap([[{"segmentation": pred, "score": 0.9, "category_id": 1}]],
                             [[{"segmentation": gt, "category_id": 1}]])
    assert report["AP"] == pytest.approx(0.5) and report["AP50"] == pytest.approx(1.0) and report["AP75"] == 0.0
    assert report["APs"] == pytest.approx(0.5) and report["APm"] == -1.0 and report["APl"] == -1.0
    assert report["AR100"] == pytest.approx(0.5)

    # ranking: two images, detections by score: hit (image 1), miss (image 2), hit (image 2)
    # precision 1 up to recall 0.5, then 2/3 -> 101-point AP = (51 * 1 + 50 * 2/3) / 101 at every threshold.
    # A detection on a crowd region is ignored (neither TP nor FP).
    g1, g2 = _box(20, 20, 0, 10, 0, 10), _box(20, 20, 5, 15, 5, 15)
    crowd = _box(20, 20, 16, 20, 0, 20)
    report = compute_mask_ap(
        [[{"segmentation": g1, "score": 0.9, "category_id": 1}],
         [{"segmentation": _box(20, 20, 0, 4, 0, 4), "score": 0.8, "category_id": 1},
          {"segmentation": g2, "score": 0.7, "category_id": 1},
          {"segmentation": crowd, "score": 0.95, "category_id": 1}]],
        [[{"segmentation": g1, "category_id": 1}],
         [{"segmentation": g2, "category_id": 1}, {"segmentation": crowd, "category_id": 1, "iscrowd": 1}]],
        per_class=True,
    )
    expected = (51 + 50 * 2 / 3) / 101
    assert report["AP"] == pytest.approx(expected) and report["AP50"] == pytest.approx(expected)
    assert report["per_class_AP"] == {1: pytest.approx(expected)}


def test_mask_ap_rejects_masks_of_different_sizes():
    """A prediction of another size than its ground truth used to score AP 0 silently."""
    gt = [[{"segmentation": _box(20, 20, 0, 10, 0, 10), "category_id": 1}]]
    for prediction in (_box(40, 40, 0, 20, 0, 20), encode_mask(_box(40, 40, 0, 20, 0, 20))):
        with pytest.raises(ValueError, match="40x40 .* 20x20"):
            compute_mask_ap([[{"segmentation": prediction, "score": 0.9, "category_id": 1}]], gt)
    with pytest.raises(ValueError, match="20x20 .* 30x30"):
        compute_mask_ap([[]], gt, image_sizes=[(30, 30)])


def _random_instance_case(seed, num_images=5, size=40):
    rng = np.random.default_rng(seed)
    references, predictions = [], []
    for _ in range(num_images):
        gts, preds = [], []
        for _ in range(int(rng.integers(0, 5))):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(6, 20, 2)
            mask = _box(size, size, y, y + h, x, x + w)
            category = int(rng.integers(1, 4))
            gts.append({"segmentation": encode_mask(mask), "category_id": category,
                        "iscrowd": int(rng.random() < 0.15)})
            if rng.random() < 0.8:
                dy, dx = rng.integers(-1, 2, 2)
                moved = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
                preds.append({"segmentation": encode_mask(moved), "score": float(rng.random()),
                              "category_id": category if rng.random() > 0.1 else int(rng.integers(1, 4))})
        for _ in range(int(rng.integers(0, 3))):
            y, x = rng.integers(0, size - 8, 2)
            preds.append({"segmentation": encode_mask(_box(size, size, y, y + 6, x, x + 6)),
                          "score": float(rng.random()), "category_id": int(rng.integers(1, 4))})
        references.append(gts)
        predictions.append(preds)
    return predictions, references


@pytest.mark.parametrize("backend", MASK_AP_BACKENDS)
def test_mask_ap_equals_pycocotools_cocoeval_on_files(tmp_path, backend):
    """The same inputs written as a COCO GT file and a results file, scored by COCO / loadRes / COCOeval; every
    backend (hotcoco, faster-coco-eval, pycocotools itself) gives pycocotools' twelve numbers."""
    if backend != "pycocotools":
        pytest.importorskip(backend)
    predictions, references = _random_instance_case(1)
    size = references[0][0]["segmentation"]["size"] if references[0] else [40, 40]
    gt_json = {"images": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}
    results = []
    for index, (preds, gts) in enumerate(zip(predictions, references)):
        gt_json["images"].append({"id": 100 + index, "height": size[0], "width": size[1], "file_name": f"{index}.jpg"})
        for obj in gts:
            rle = {"size": obj["segmentation"]["size"], "counts": obj["segmentation"]["counts"].encode()}
            gt_json["annotations"].append({
                "id": len(gt_json["annotations"]) + 1, "image_id": 100 + index, "category_id": obj["category_id"],
                "segmentation": obj["segmentation"], "iscrowd": obj["iscrowd"], "area": float(mask_utils.area(rle)),
                "bbox": mask_utils.toBbox(rle).tolist(),
            })
        results += [{"image_id": 100 + index, **p} for p in preds]
    (tmp_path / "gt.json").write_text(json.dumps(gt_json))
    (tmp_path / "results.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_dt = coco_gt.loadRes(str(tmp_path / "results.json"))
        evaluator = COCOeval(coco_gt, coco_dt, "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    ours = compute_mask_ap(predictions, references, categories=[1, 2, 3], per_class=True, backend=backend)
    np.testing.assert_allclose([ours[name] for name in COCO_STAT_NAMES], evaluator.stats, rtol=0, atol=1e-12)
    assert 0.05 < ours["AP"] < 0.95
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    for k, category_id in enumerate((1, 2, 3)):
        values = precision[:, :, k][precision[:, :, k] > -1]
        assert ours["per_class_AP"][category_id] == pytest.approx(values.mean() if values.size else -1.0, abs=1e-12)


@pytest.mark.parametrize("backend", MASK_AP_BACKENDS)
def test_mask_ap_backends_agree_on_edge_cases(backend):
    """Hand-computed figures, no prediction at all, an image without objects, a class without ground truth."""
    if backend != "pycocotools":
        pytest.importorskip(backend)
    gt = _box(20, 20, 0, 10, 0, 10)
    report = compute_mask_ap([[{"segmentation": _box(20, 20, 0, 9, 0, 8), "score": 0.9, "category_id": 1}], []],
                             [[{"segmentation": gt, "category_id": 1}], []], categories=[1, 2], per_class=True,
                             backend=backend)
    assert report["AP"] == pytest.approx(0.5, abs=1e-12) and report["APm"] == -1.0
    assert report["per_class_AP"] == {1: pytest.approx(0.5, abs=1e-12), 2: -1.0}
    empty = compute_mask_ap([[]], [[{"segmentation": gt, "category_id": 1}]], backend=backend)
    assert empty["AP"] == 0.0 and empty["AR100"] == 0.0
    # more than maxDets (100) detections per image and tied scores: the same cut and the same order
    rng = np.random.default_rng(4)
    predictions, references = _random_instance_case(2, num_images=3)
    for image in predictions:
        image += [{"segmentation": _box(40, 40, *sorted(rng.integers(0, 40, 2)), *sorted(rng.integers(0, 40, 2))),
                   "score": float(rng.integers(0, 3)) / 2, "category_id": int(rng.integers(1, 4))} for _ in range(110)]
    expected = compute_mask_ap(predictions, references, categories=[1, 2, 3], per_class=True, backend="pycocotools")
    ours = compute_mask_ap(predictions, references, categories=[1, 2, 3], per_class=True, backend=backend)
    for name in COCO_STAT_NAMES:
        assert ours[name] == pytest.approx(expected[name], abs=1e-12)
    assert ours["per_class_AP"] == pytest.approx(expected["per_class_AP"], abs=1e-12)
    with pytest.raises(ValueError, match="Unknown backend 'detectron2'"):
        compute_mask_ap([[]], [[]], categories=[1], backend="detectron2")


# ---------------------------------------------------------------- YouTube-VIS video AP


def _track(masks):
    return [encode_mask(m) if m is not None else None for m in masks]


def test_spatio_temporal_iou_hand_computed():
    g = [_box(8, 8, 0, 4, 0, 4), _box(8, 8, 0, 4, 0, 4), None]
    p = [_box(8, 8, 0, 4, 0, 4), _box(8, 8, 0, 4, 1, 5), _box(8, 8, 6, 7, 0, 2)]
    # frame 0: I 16, U 16; frame 1: I 12, U 20; frame 2: ground truth absent, U += 2 -> 28 / 38
    assert spatio_temporal_iou(_track(p), _track(g)) == pytest.approx(28 / 38)
    assert spatio_temporal_iou(_track([None, None, None]), _track([None, None, None])) == 0.0


def test_video_ap_perfect_and_degraded():
    rng = np.random.default_rng(0)
    references, predictions = [], []
    for _ in range(3):
        tracks = []
        for category in (1, 2):
            y, x = rng.integers(0, 10, 2)
            tracks.append({"category_id": category, "segmentations": _track(
                [_box(20, 20, y + t, y + t + 6, x, x + 6) if t != 2 else None for t in range(4)])})
        references.append(tracks)
        predictions.append([{**t, "score": 0.9} for t in tracks])
    perfect = compute_video_ap(predictions, references)
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert perfect[name] == pytest.approx(1.0, abs=1e-12), name

    g = [_box(8, 8, 0, 4, 0, 4), _box(8, 8, 0, 4, 0, 4), None]
    p = [_box(8, 8, 0, 4, 0, 4), _box(8, 8, 0, 4, 1, 5), _box(8, 8, 6, 7, 0, 2)]
    degraded = compute_video_ap([[{"score": 0.8, "category_id": 1, "segmentations": _track(p)}]],
                                [[{"category_id": 1, "segmentations": _track(g)}]])
    # spatio-temporal IoU 28/38 = 0.737 -> matched at 0.50 .. 0.70: 5 of 10 thresholds
    assert degraded["AP"] == pytest.approx(0.5) and degraded["AP50"] == pytest.approx(1.0) and degraded["AP75"] == 0.0
    # a track's area is its mean per-frame area (16 px): small (< 128^2) in the YouTube-VIS ranges
    assert degraded["APs"] == pytest.approx(0.5) and degraded["APm"] == -1.0


def test_video_ap_ranking_and_absent_frames():
    g1 = _track([_box(16, 16, 0, 6, 0, 6), None])
    g2 = _track([None, _box(16, 16, 8, 14, 8, 14)])
    miss = _track([_box(16, 16, 10, 12, 0, 2), _box(16, 16, 0, 2, 10, 12)])
    report = compute_video_ap(
        [[{"score": 0.9, "category_id": 3, "segmentations": g1}, {"score": 0.8, "category_id": 3, "segmentations": miss},
          {"score": 0.7, "category_id": 3, "segmentations": g2}]],
        [[{"category_id": 3, "segmentations": g1}, {"category_id": 3, "segmentations": g2}]],
        per_class=True,
    )
    expected = (51 + 50 * 2 / 3) / 101  # precision 1 up to recall 0.5, 2/3 after
    assert report["AP"] == pytest.approx(expected) and report["per_class_AP"] == {3: pytest.approx(expected)}
    with pytest.raises(ValueError, match="different numbers of frames"):
        compute_video_ap([[{"score": 1.0, "category_id": 3, "segmentations": g1[:1]}]],
                         [[{"category_id": 3, "segmentations": g1}]])


def test_video_ap_on_single_frame_videos_equals_mask_ap():
    """One-frame tracks make the spatio-temporal IoU the mask IoU: AP, AP50, AP75 and ARs equal COCO mask AP."""
    predictions, references = _random_instance_case(2, size=40)
    video_predictions = [[{"score": p["score"], "category_id": p["category_id"],
                           "segmentations": [p["segmentation"]]} for p in preds] for preds in predictions]
    video_references = [[{"category_id": g["category_id"], "iscrowd": g["iscrowd"],
                          "segmentations": [g["segmentation"]]} for g in gts] for gts in references]
    images = compute_mask_ap(predictions, references, categories=[1, 2, 3])
    videos = compute_video_ap(video_predictions, video_references, categories=[1, 2, 3])
    for name in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
        assert videos[name] == pytest.approx(images[name], abs=1e-12), name


# ---------------------------------------------------------------- evaluate modules


def test_metric_modules_load_offline_and_match_the_functions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")

    pq = load_metric("panoptic_quality")
    predictions, references, pred_info, gt_info = _pq_case()
    for pred, p_info, gt, g_info in zip(predictions, pred_info, references, gt_info):
        pq.add(predictions=pred, references=gt, prediction_segments_info=p_info, reference_segments_info=g_info)
    result = pq.compute(categories=CATEGORIES)
    expected = compute_pq(predictions, references, pred_info, gt_info, CATEGORIES)
    assert result["pq"] == pytest.approx(expected["pq"]) and result["pq_stuff"] == pytest.approx(6 / 7)

    miou = evaluate.load(str(Path(metric_path("mean_iou")) / "mean_iou.py"))  # the direct path to the script
    result = miou.compute(predictions=[np.array([[0, 0, 1], [1, 2, 2]])],
                          references=[np.array([[0, 1, 1], [255, 2, 0]])], num_labels=4, ignore_index=255)
    assert result["mean_iou"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)

    mask_predictions, mask_references = _random_instance_case(1)
    mask_ap = load_metric("mask_ap")
    result = mask_ap.compute(predictions=mask_predictions, references=mask_references, categories=[1, 2, 3])
    assert result["AP"] == compute_mask_ap(mask_predictions, mask_references, categories=[1, 2, 3])["AP"]

    g = _track([_box(8, 8, 0, 4, 0, 4), None])
    video_ap = load_metric("video_ap")
    result = video_ap.compute(
        predictions=[[{"score": 0.5, "category_id": 1, "segmentations": json.dumps(g)}]],
        references=[[{"category_id": 1, "iscrowd": 0, "segmentations": json.dumps(g)}]],
    )
    assert result["AP"] == pytest.approx(1.0)

    with pytest.raises(ValueError, match="Unknown metric 'pq'"):
        metric_path("pq")
