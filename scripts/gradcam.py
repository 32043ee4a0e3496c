"""Snakemake adapter: Grad-CAM panels, heatmaps and per-class focus scores of one run on its test split.

No `from __future__` import: Snakemake's script: directive puts its preamble above the first line.
"""

import csv
import io

import numpy as np

from bloodcells.atomic import write_text_atomic
from bloodcells.dataset import class_names_of, load_split
from bloodcells.gradcam import (
    MIN_MAP_SIDE,
    central_disc_mask,
    focus_scores,
    focus_table,
    gradcam_maps,
    plot_panels,
    resolve_layer,
    save_heatmaps,
    select_examples,
    spatial_layers,
    suggest_layer,
    upsample,
)
from bloodcells.hardware import enforce_gpu_requirement
from bloodcells.logs import log_to_file

UPSAMPLE_CHUNK = 256  # heatmaps upsampled at a time for the focus scores (bounds memory at 224 px)


def region_masks(source: dict, test_images: np.ndarray, disc_radius: float) -> tuple[np.ndarray, str]:
    """The cell region of each test image and its description: true masks on synthetic data, else a centred disc."""
    size = test_images.shape[1]
    if source["source"] == "synthetic":
        from bloodcells.synthetic import make_synthetic_dataset

        arrays = make_synthetic_dataset(
            size, source["n_train"], source["n_val"], source["n_test"], source.get("seed", 0), with_masks=True
        )
        regenerated = arrays["test_images"]
        if regenerated.shape != test_images.shape or not np.array_equal(regenerated, test_images):
            raise ValueError(
                "the synthetic test images regenerated from the dataset config (seed, n_train, n_val, n_test) differ "
                "from the prepared dataset file, so their cell masks cannot be trusted; re-run prepare_dataset "
                "(the config or scripts/bloodcells/synthetic.py changed since the file was made)"
            )
        return arrays["test_masks"], "cell mask"
    disc = central_disc_mask(size, disc_radius)
    return np.broadcast_to(disc, (len(test_images), size, size)), f"centred disc r={disc_radius:g} x side"


def table_csv(rows: list[dict]) -> str:
    """The focus table as CSV text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(smk) -> None:
    """Compute Grad-CAM for every test image (predicted class), then write panels, heatmaps.npz and focus.csv."""
    log_to_file(smk.log[0])
    from bloodcells.gpu_lock import pin_job_to_gpu
    from bloodcells.model import load_model  # imports TensorFlow: after the log redirect, so its output is logged

    pin_job_to_gpu(smk)  # a GPU no other running job holds, before TensorFlow starts; no-op without GPU
    enforce_gpu_requirement(smk.params.require_gpu, "gradcam")
    import tensorflow as tf

    try:  # only possible before TensorFlow's first op (always so in a Snakemake job)
        tf.config.threading.set_intra_op_parallelism_threads(smk.threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as error:
        print(f"note: TensorFlow already initialised, thread/GPU settings kept ({error})", flush=True)
    run, source = smk.wildcards.run, smk.params.dataset
    class_names = class_names_of(source)
    test = load_split(smk.input.data, "test", len(class_names))
    with np.load(smk.input.predictions) as saved:
        probabilities, labels = saved["probabilities"].astype(np.float32), saved["labels"].reshape(-1)
    if len(labels) != len(test.labels) or not np.array_equal(labels, test.labels):
        raise ValueError(
            f"{smk.input.predictions}: labels differ from the test split of {smk.input.data}; re-run evaluate"
        )

    model = load_model(smk.input.model)  # safe mode, with the custom layers registered
    try:
        layer = resolve_layer(model, smk.params.layer)
    except ValueError as error:  # name the config key and the model file, beside the valid layers
        raise ValueError(f"config key 'gradcam.layer' for {smk.input.model}: {error}") from error
    h, w = spatial_layers(model)[layer]
    print(
        f"run {run}: Grad-CAM at '{layer}' ({h}x{w} map for {test.images.shape[1]} px images), "
        f"class score = logit of the predicted class, {len(labels)} test images",
        flush=True,
    )
    if min(h, w) < MIN_MAP_SIDE:
        print(
            f"note: a {h}x{w} map is coarse; '{suggest_layer(model)}' is the deepest block with at least "
            f"{MIN_MAP_SIDE}x{MIN_MAP_SIDE} cells (set gradcam.layer in the config)",
            flush=True,
        )

    predicted = probabilities.argmax(axis=1)
    maps = gradcam_maps(model, test.images, layer, predicted, smk.params.batch_size)
    masks, region = region_masks(source, test.images, smk.params.disc_radius)
    size = test.images.shape[1:3]
    focus = (
        np.concatenate(
            [
                focus_scores(
                    upsample(maps[start : start + UPSAMPLE_CHUNK], size), masks[start : start + UPSAMPLE_CHUNK]
                )
                for start in range(0, len(maps), UPSAMPLE_CHUNK)
            ]
        )
        if len(maps)
        else np.zeros(0)
    )

    selection = select_examples(labels, probabilities, smk.params.per_class_correct, smk.params.per_class_mistakes)
    chosen = selection.indices
    heatmaps = upsample(maps[chosen], size)
    plot_panels(
        test.images,
        heatmaps,
        labels,
        probabilities,
        selection,
        class_names,
        smk.output.panel,
        smk.output.pdf,
        title=f"{run}: Grad-CAM at {layer} ({h}x{w}), predicted class",
    )
    save_heatmaps(
        smk.output.heatmaps,
        heatmaps=heatmaps,  # panel images, N x H x W in [0, 1]
        indices=chosen,  # their test-split indices
        is_mistake=predicted[chosen] != labels[chosen],
        maps=maps,  # every test image, at the layer's resolution, not normalised
        labels=labels,
        predicted=predicted,
        probability=probabilities[np.arange(len(labels)), predicted],
        focus=focus,
        layer=np.array(layer),
        score=np.array("logit"),
        region=np.array(region),
        class_names=np.array(class_names),
    )
    rows = focus_table(labels, focus, masks, class_names, region)
    write_text_atomic(smk.output.focus, table_csv(rows))
    overall = rows[-1]
    print(
        f"focus (share of heat in {region}): {overall['focus_mean']:.3f} over {overall['n_images']} images, "
        f"region area share {overall['region_area_share']:.3f}, ratio {overall['focus_ratio']:.2f}"
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821  (injected by Snakemake's script: directive)
