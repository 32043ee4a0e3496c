"""Procedurally drawn peripheral-blood-cell micrographs: an offline, seeded stand-in for BloodMNIST.

Each image is a stained smear seen in transmitted light: a pale peach background with pale red
erythrocytes (lighter centres) and one central cell whose look follows the real morphology of
its class. Colours are composited in optical density (OD = -ln(I / 255)), so overlaps darken
the way stain does. Every image is described by size-free parameters in normalised coordinates
([-1, 1] across the image), so one seed gives the same cells at 32, 64 or 224 px, like
BloodMNIST's sizes that all come from one 200 x 200 crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .dataset import MIN_SIZE, SPLITS, check_arrays
from .names import BLOODMNIST_CLASSES

# BloodMNIST training split (medmnist 3.0.2), in label order; 11,959 images.
BLOODMNIST_TRAIN_COUNTS: tuple[int, ...] = (852, 2181, 1085, 2026, 849, 993, 2330, 1643)
BLOODMNIST_PROPORTIONS: tuple[float, ...] = tuple(
    count / sum(BLOODMNIST_TRAIN_COUNTS) for count in BLOODMNIST_TRAIN_COUNTS
)
N_CLASSES = len(BLOODMNIST_CLASSES)

BASOPHIL, EOSINOPHIL, ERYTHROBLAST, IMMATURE_GRANULOCYTE, LYMPHOCYTE, MONOCYTE, NEUTROPHIL, PLATELET = range(8)

Scene = dict[str, np.ndarray]  # size-free parameters of n images; every array has a leading n axis

MAX_RBC = 10
N_CHROMATIN = 90
PIXELS_PER_CHUNK = 1 << 17  # small enough that the float temporaries of one pass stay in cache

# Colours as they look on white (RGB); rendering converts them to optical density.
BACKGROUND_WARM = (253, 233, 210)
BACKGROUND_COOL = (232, 234, 246)
ERYTHROCYTE = (226, 196, 214)
CYTOPLASM = {
    BASOPHIL: (175, 135, 185),
    EOSINOPHIL: (232, 170, 160),
    ERYTHROBLAST: (168, 158, 205),
    IMMATURE_GRANULOCYTE: (196, 178, 222),
    LYMPHOCYTE: (172, 180, 222),
    MONOCYTE: (196, 188, 220),
    NEUTROPHIL: (228, 206, 222),
    PLATELET: (196, 168, 212),
}
NUCLEUS = {
    BASOPHIL: (88, 52, 128),
    EOSINOPHIL: (92, 62, 150),
    ERYTHROBLAST: (48, 24, 78),
    IMMATURE_GRANULOCYTE: (104, 70, 164),
    LYMPHOCYTE: (72, 42, 122),
    MONOCYTE: (112, 80, 160),
    NEUTROPHIL: (82, 46, 132),
    PLATELET: (82, 46, 132),
}
GRANULE = {
    BASOPHIL: (52, 28, 92),
    EOSINOPHIL: (214, 104, 86),
    ERYTHROBLAST: (48, 24, 78),
    IMMATURE_GRANULOCYTE: (128, 72, 150),
    LYMPHOCYTE: (120, 70, 150),
    MONOCYTE: (150, 120, 180),
    NEUTROPHIL: (190, 150, 190),
    PLATELET: (100, 52, 138),
}
# Granule radius (Gaussian sigma, normalised units): a class constant so a batch blurs once.
GRANULE_SIGMA = {
    BASOPHIL: 0.034,
    EOSINOPHIL: 0.026,
    ERYTHROBLAST: 0.02,
    IMMATURE_GRANULOCYTE: 0.022,
    LYMPHOCYTE: 0.02,
    MONOCYTE: 0.016,
    NEUTROPHIL: 0.016,
    PLATELET: 0.018,
}
# Immature nuclei and monocytes have fine, lacy chromatin; erythroblasts and lymphocytes dense, even.
CHROMATIN_SIGMA = {IMMATURE_GRANULOCYTE: 0.024, MONOCYTE: 0.026}
CHROMATIN_CONTRAST = {
    BASOPHIL: (0.1, 0.3),
    EOSINOPHIL: (0.15, 0.35),
    ERYTHROBLAST: (0.05, 0.2),
    IMMATURE_GRANULOCYTE: (0.25, 0.45),
    LYMPHOCYTE: (0.15, 0.35),
    MONOCYTE: (0.2, 0.4),
    NEUTROPHIL: (0.15, 0.35),
    PLATELET: (0.0, 0.0),
}
# Borderline cells: a few images of a class are drawn with the morphology of the class it is
# most confused with in BloodMNIST (band neutrophil vs metamyelocyte, large lymphocyte vs
# erythroblast, ...), so even a perfect model cannot reach 100 %.
LOOKALIKE = {
    BASOPHIL: IMMATURE_GRANULOCYTE,
    EOSINOPHIL: NEUTROPHIL,
    ERYTHROBLAST: LYMPHOCYTE,
    IMMATURE_GRANULOCYTE: MONOCYTE,
    LYMPHOCYTE: ERYTHROBLAST,
    MONOCYTE: IMMATURE_GRANULOCYTE,
    NEUTROPHIL: IMMATURE_GRANULOCYTE,
}
LOOKALIKE_RATE = 0.03
# Basophil and promyelocyte granules lie over the nucleus; the others sit in the cytoplasm.
GRANULES_OVER_NUCLEUS = {BASOPHIL, IMMATURE_GRANULOCYTE, PLATELET}


def _od(rgb: tuple[int, int, int]) -> np.ndarray:
    """Optical density of a colour seen on white."""
    return -np.log(np.asarray(rgb, np.float32) / 255.0)


def check_size(size: int) -> None:
    """Raise ValueError naming `size` when it is not an integer of at least MIN_SIZE px."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"image size {size!r} is not supported: expected an integer >= {MIN_SIZE} px")


def stratified_counts(n: int, proportions: tuple[float, ...] = BLOODMNIST_PROPORTIONS) -> np.ndarray:
    """Per-class counts summing to `n` by largest remainder, every class at least 1 when n >= classes."""
    if n < 0:
        raise ValueError(f"number of images {n} is negative")
    p = np.asarray(proportions, np.float64)
    exact = n * p / p.sum()
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    if n >= len(p):
        # Take the missing images from the largest classes, where one image matters least.
        while (counts == 0).any():
            counts[np.argmax(counts)] -= 1
            counts[np.argmin(counts)] += 1
    return counts


def stratified_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` labels in shuffled order whose class counts follow BloodMNIST's training split exactly."""
    labels = np.repeat(np.arange(N_CLASSES), stratified_counts(n))
    return rng.permutation(labels)


def _uniform(rng: np.random.Generator, low: float, high: float, shape: int | tuple[int, ...]) -> np.ndarray:
    """Float32 uniform samples."""
    return rng.uniform(low, high, shape).astype(np.float32)


def _jitter_colour(rng: np.random.Generator, rgb: tuple[int, int, int], n: int, spread: float) -> np.ndarray:
    """Per-image OD colours (n x 3): the class colour with random intensity and hue changes."""
    intensity = np.exp(rng.normal(0.0, spread, (n, 1)))
    hue = np.exp(rng.normal(0.0, spread * 0.6, (n, 3)))
    return (_od(rgb)[None, :] * intensity * hue).astype(np.float32)


def _chain(points: np.ndarray, vertex_r: np.ndarray, segment_r: np.ndarray) -> dict[str, np.ndarray]:
    """Nucleus as a polyline: discs at the vertices joined by capsules (cell-local units)."""
    return {
        "nuc_xy": points.astype(np.float32),
        "nuc_rv": vertex_r.astype(np.float32),
        "nuc_rs": segment_r.astype(np.float32),
    }


def _arc_points(
    rng: np.random.Generator, n: int, k: int, arc_r: np.ndarray, spacing: np.ndarray, wiggle: float
) -> np.ndarray:
    """k points (n x k x 2) `spacing` radians apart on an arc around the origin, each displaced a little."""
    angle = rng.uniform(0, 2 * np.pi, (n, 1)) + spacing[:, None] * np.arange(k)[None, :]
    angle = angle + rng.normal(0, wiggle, (n, k))
    radius = arc_r[:, None] * (1 + rng.normal(0, wiggle, (n, k)))
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _pad_chain(points: np.ndarray, vertex_r: np.ndarray, n_active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the last active vertex so chains of different lengths share one array shape."""
    k = points.shape[1]
    index = np.minimum(np.arange(k)[None, :], (n_active - 1)[:, None])
    rows = np.arange(len(points))[:, None]
    return points[rows, index], vertex_r[rows, index]


def _nucleus(label: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Class-specific nucleus geometry in units of the cell radius."""
    if label == NEUTROPHIL:
        # 3-5 lobes joined by thin chromatin strands; some band forms (a thick C-shaped sausage).
        lobes = rng.choice([3, 4, 5], size=n, p=[0.45, 0.4, 0.15])
        band = rng.random(n) < 0.1
        spacing = np.where(band, rng.uniform(0.45, 0.65, n), rng.uniform(0.85, 1.15, n))
        points = _arc_points(rng, n, 5, rng.uniform(0.42, 0.52, n), spacing, 0.08)
        vertex_r = rng.uniform(0.23, 0.3, (n, 5))
        points, vertex_r = _pad_chain(points, vertex_r, np.where(band, 5, lobes))
        seg_r = np.where(band[:, None], vertex_r[:, :4] * 0.85, rng.uniform(0.04, 0.08, (n, 4)))
        return _chain(points, vertex_r, seg_r)
    if label == EOSINOPHIL:
        # Bilobed ("spectacle") nucleus, occasionally three lobes.
        lobes = np.where(rng.random(n) < 0.12, 3, 2)
        points = _arc_points(rng, n, 3, rng.uniform(0.4, 0.5, n), rng.uniform(1.6, 2.2, n), 0.06)
        vertex_r = rng.uniform(0.28, 0.36, (n, 3))
        points, vertex_r = _pad_chain(points, vertex_r, lobes)
        return _chain(points, vertex_r, rng.uniform(0.05, 0.1, (n, 2)))
    if label == BASOPHIL:
        points = rng.normal(0, 0.15, (n, 2, 2))
        return _chain(points, rng.uniform(0.3, 0.42, (n, 2)), rng.uniform(0.25, 0.35, (n, 1)))
    if label == LYMPHOCYTE:
        # Round nucleus filling most of the cell, pushed to one side so the blue rim is uneven.
        offset = rng.uniform(0.03, 0.12, (n, 1, 1)) * _unit_vectors(rng, n)[:, None, :]
        points = offset + rng.normal(0, 0.04, (n, 2, 2))
        radius = rng.uniform(0.76, 0.88, (n, 2))
        return _chain(points, radius, radius[:, :1])
    if label == MONOCYTE:
        # Kidney / horseshoe: a thick sausage bent around an off-centre point.
        centre = rng.uniform(0.0, 0.22, (n, 1, 1)) * _unit_vectors(rng, n)[:, None, :]
        points = centre + _arc_points(rng, n, 4, rng.uniform(0.36, 0.5, n), rng.uniform(0.6, 1.0, n), 0.05)
        vertex_r = rng.uniform(0.24, 0.34, (n, 4))
        return _chain(points, vertex_r, np.minimum(vertex_r[:, 1:], vertex_r[:, :-1]) * rng.uniform(0.8, 1.0, (n, 1)))
    if label == IMMATURE_GRANULOCYTE:
        # Large round or oval nucleus; a third are metamyelocytes with an indented, kidney-like one.
        kidney = rng.random(n) < 0.35
        centre = rng.uniform(0.0, 0.18, (n, 1, 1)) * _unit_vectors(rng, n)[:, None, :]
        oval = centre + rng.normal(0, 0.12, (n, 4, 2))
        bent = centre + _arc_points(rng, n, 4, rng.uniform(0.3, 0.4, n), rng.uniform(0.4, 0.7, n), 0.04)
        points = np.where(kidney[:, None, None], bent, oval)
        vertex_r = np.where(kidney[:, None], rng.uniform(0.3, 0.38, (n, 4)), rng.uniform(0.48, 0.62, (n, 4)))
        return _chain(points, vertex_r, np.minimum(vertex_r[:, 1:], vertex_r[:, :-1]))
    if label == ERYTHROBLAST:
        # One small, very dense, round nucleus.
        points = rng.uniform(0.0, 0.18, (n, 1, 1)) * _unit_vectors(rng, n)[:, None, :]
        return _chain(points, rng.uniform(0.48, 0.66, (n, 1)), np.zeros((n, 0)))
    raise ValueError(f"class {label} has no nucleus")


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random directions (n x 2)."""
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


# Cell radius range (normalised units; a neutrophil spans about 60 % of a BloodMNIST crop),
# granule count range and granule opacity range per class.
CELL_RADIUS = {
    BASOPHIL: (0.46, 0.6),
    EOSINOPHIL: (0.52, 0.66),
    ERYTHROBLAST: (0.32, 0.48),
    IMMATURE_GRANULOCYTE: (0.54, 0.74),
    LYMPHOCYTE: (0.34, 0.5),
    MONOCYTE: (0.58, 0.76),
    NEUTROPHIL: (0.5, 0.64),
    PLATELET: (0.12, 0.22),  # spread of the platelet clump
}
GRANULES = {
    BASOPHIL: ((50, 90), (0.7, 1.2)),
    EOSINOPHIL: ((110, 170), (0.6, 1.0)),
    ERYTHROBLAST: ((0, 0), (0.0, 0.0)),
    IMMATURE_GRANULOCYTE: ((8, 50), (0.35, 0.8)),
    LYMPHOCYTE: ((0, 4), (0.3, 0.6)),
    MONOCYTE: ((0, 30), (0.1, 0.3)),
    NEUTROPHIL: ((20, 60), (0.1, 0.3)),
    PLATELET: ((15, 60), (0.5, 1.0)),
}
MAX_GRANULES = 170
MAX_FRAGMENTS = 8


def sample_scene(label: int, n: int, rng: np.random.Generator) -> Scene:
    """Draw size-free parameters of `n` images of class `label` (normalised coordinates)."""
    if not 0 <= label < N_CLASSES:
        raise ValueError(f"label {label} is outside 0..{N_CLASSES - 1}")
    s: Scene = {}
    # Cells sit near the centre, as in BloodMNIST's centred crops.
    s["centre"] = np.clip(rng.normal(0, 0.06, (n, 2)), -0.16, 0.16).astype(np.float32)
    s["theta"] = _uniform(rng, 0, 2 * np.pi, n)
    s["soft"] = _uniform(rng, 0.012, 0.06, n)  # focus: width of the edges
    s["noise"] = _uniform(rng, 1.0, 8.0, n)  # sensor noise sd, 0-255 scale
    s["stain"] = np.exp(rng.normal(0, 0.12, (n, 1)) + rng.normal(0, 0.05, (n, 3))).astype(np.float32)
    s["illum"] = rng.normal(0, 0.12, (n, 2)).astype(np.float32)
    cool = rng.beta(0.6, 3.0, (n, 1))
    s["bg"] = (
        ((1 - cool) * _od(BACKGROUND_WARM) + cool * _od(BACKGROUND_COOL)) * np.exp(rng.normal(0, 0.2, (n, 1)))
    ).astype(np.float32)
    s["rbc_od"] = _jitter_colour(rng, ERYTHROCYTE, n, 0.2)
    s["cyto_od"] = _jitter_colour(rng, CYTOPLASM[label], n, 0.12)
    s["nuc_od"] = _jitter_colour(rng, NUCLEUS[label], n, 0.1)
    s["gran_od"] = _jitter_colour(rng, GRANULE[label], n, 0.1)
    low, high = CELL_RADIUS[label]
    cell_r = _uniform(rng, low, high, n)
    s["cell_r"] = cell_r
    s["aspect"] = _uniform(rng, 0.88, 1.0, n)
    wobble = 0.07 if label == MONOCYTE else 0.035
    s["wobble"] = (rng.uniform(0, wobble, (n, 2)) * [1.0, 0.6]).astype(np.float32)
    s["wobble_phase"] = _uniform(rng, 0, 2 * np.pi, (n, 2))
    s.update(_chromatin(label, n, cell_r, rng))
    if label == PLATELET:
        s.update(_platelet_fragments(n, cell_r, rng))
        hub = s["frag"][:, :, :2]
    else:
        s.update(_nucleus(label, n, rng))
        hub = None
    s["gran_xy"], s["gran_w"] = _granules(label, n, s, hub, rng)
    s["rbc"] = _erythrocytes(n, s["centre"], cell_r if label != PLATELET else cell_r * 0.6, rng)
    return s


def _chromatin(label: int, n: int, cell_r: np.ndarray, rng: np.random.Generator) -> Scene:
    """Chromatin clumps (cell-local points over the cell disc) and how strongly they mottle the nucleus."""
    radius = np.sqrt(rng.random((n, N_CHROMATIN))) * cell_r[:, None]
    angle = rng.uniform(0, 2 * np.pi, (n, N_CHROMATIN))
    xy = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    low, high = CHROMATIN_CONTRAST[label]
    return {
        "chrom_xy": xy.astype(np.float32),
        "chrom_w": _uniform(rng, 0.6, 1.0, (n, N_CHROMATIN)),
        "chrom_contrast": _uniform(rng, low, high, n),
    }


def _platelet_fragments(n: int, cluster_r: np.ndarray, rng: np.random.Generator) -> Scene:
    """Small clumps of platelets: up to MAX_FRAGMENTS discs (x, y, r, local to the centre)."""
    count = rng.integers(2, MAX_FRAGMENTS + 1, n)
    # One or two clumps; each fragment belongs to one of them.
    second = rng.normal(0, 1, (n, 1, 2)) * 0.22
    clump = np.where(rng.random((n, MAX_FRAGMENTS, 1)) < 0.25, second, 0.0)
    xy = clump + rng.normal(0, 1, (n, MAX_FRAGMENTS, 2)) * cluster_r[:, None, None] * 0.35
    r = rng.uniform(0.06, 0.12, (n, MAX_FRAGMENTS))
    r = np.where(np.arange(MAX_FRAGMENTS)[None, :] < count[:, None], r, 0.0)
    return {"frag": np.concatenate([xy, r[..., None]], axis=-1).astype(np.float32)}


def _granules(
    label: int, n: int, s: Scene, hub: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Granule centres (n x G x 2, cell-local) and opacities (n x G, 0 for unused slots)."""
    (count_lo, count_hi), (w_lo, w_hi) = GRANULES[label]
    count = rng.integers(count_lo, count_hi + 1, n)
    if hub is None:
        # Uniform over the cytoplasm disc; basophil granules also spill over the cell edge.
        reach = 1.02 if label == BASOPHIL else 0.9
        radius = np.sqrt(rng.random((n, MAX_GRANULES))) * reach * s["cell_r"][:, None]
        angle = rng.uniform(0, 2 * np.pi, (n, MAX_GRANULES))
        xy = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)
    else:
        # Platelet granules cluster in each fragment's centre (the granulomere).
        pick = rng.integers(0, MAX_FRAGMENTS, (n, MAX_GRANULES))
        pick = np.minimum(pick, np.maximum((s["frag"][:, :, 2] > 0).sum(1) - 1, 0)[:, None])
        centres = np.take_along_axis(hub, pick[..., None], axis=1)
        frag_r = np.take_along_axis(s["frag"][:, :, 2], pick, axis=1)
        xy = centres + rng.normal(0, 1, (n, MAX_GRANULES, 2)) * frag_r[..., None] * 0.4
    weight = rng.uniform(w_lo, w_hi, (n, MAX_GRANULES))
    weight = np.where(np.arange(MAX_GRANULES)[None, :] < count[:, None], weight, 0.0)
    return xy.astype(np.float32), weight.astype(np.float32)


def _erythrocytes(n: int, centre: np.ndarray, cell_r: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Erythrocytes (n x MAX_RBC x [x, y, r, pallor radius, pallor depth]) around the central cell."""
    count = rng.integers(3, MAX_RBC + 1, n)
    xy = rng.uniform(-1.3, 1.3, (n, MAX_RBC, 2))
    r = rng.uniform(0.22, 0.3, (n, MAX_RBC)) * rng.uniform(0.9, 1.1, (n, 1))
    # The white cell pushes erythrocytes aside; let them touch or overlap its edge a little.
    away = xy - centre[:, None, :]
    dist = np.linalg.norm(away, axis=-1) + 1e-6
    keep_out = cell_r[:, None] + r * rng.uniform(0.3, 0.9, (n, MAX_RBC))
    scale = np.maximum(1.0, keep_out / dist)
    xy = centre[:, None, :] + away * scale[..., None]
    r = np.where(np.arange(MAX_RBC)[None, :] < count[:, None], r, 0.0)
    pallor_r = rng.uniform(0.35, 0.6, (n, MAX_RBC))
    pallor = rng.uniform(0.35, 0.8, (n, MAX_RBC))
    return np.concatenate([xy, r[..., None], pallor_r[..., None], pallor[..., None]], axis=-1).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], shaped to broadcast as (..., 1, W) and (..., H, 1)."""
    axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return axis.reshape(1, 1, size), axis.reshape(1, size, 1)


def _coverage(signed_distance: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Opacity in [0, 1] from a signed distance (negative inside), with a linear edge `soft` wide."""
    alpha = 0.5 - signed_distance / soft
    return _clip01(alpha)


def _clip01(values: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place (np.clip's wrapper costs more than the two ufuncs)."""
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 1.0, out=values)


def _to_image(local: np.ndarray, centre: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate cell-local points (n x k x 2) by theta and move them to the cell centre."""
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x, y = local[..., 0], local[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1) + centre[:, None, :]


def _chain_distance(
    xy: np.ndarray, vertex_r: np.ndarray, seg_r: np.ndarray, gx: np.ndarray, gy: np.ndarray
) -> np.ndarray:
    """Signed distance (n x H x W) to a union of discs and capsules along a polyline."""
    # Loop over the few vertices so each temporary is one n x H x W array that stays in cache.
    best = None
    for k in range(xy.shape[1]):
        dx = gx - xy[:, k, 0, None, None]
        dy = gy - xy[:, k, 1, None, None]
        d = np.sqrt(dx * dx + dy * dy)
        d -= vertex_r[:, k, None, None]
        best = d if best is None else np.minimum(best, d, out=best)
        if k < seg_r.shape[1]:
            ex = (xy[:, k + 1, 0] - xy[:, k, 0])[:, None, None]
            ey = (xy[:, k + 1, 1] - xy[:, k, 1])[:, None, None]
            inv_length2 = 1.0 / (ex * ex + ey * ey + 1e-9)
            # Projection parameter t along the segment splits into an x part and a y part.
            t = dx * (ex * inv_length2) + dy * (ey * inv_length2)
            _clip01(t)
            qx = dx - t * ex
            qy = dy - t * ey
            qx *= qx
            qy *= qy
            qx += qy
            np.sqrt(qx, out=qx)
            qx -= seg_r[:, k, None, None]
            np.minimum(best, qx, out=best)
    return best


def _cell_distance(s: Scene, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Signed distance (n x H x W) to the cell outline: a slightly irregular ellipse."""
    c, sn = np.cos(s["theta"])[:, None, None], np.sin(s["theta"])[:, None, None]
    x = gx - s["centre"][:, 0, None, None]
    y = gy - s["centre"][:, 1, None, None]
    # Rotated, stretched coordinates are sums of an x-only and a y-only term: one full-size add each.
    u = (c / s["aspect"][:, None, None]) * x + (sn / s["aspect"][:, None, None]) * y
    v = -sn * x + c * y
    uu, vv, uv = u * u, v * v, u * v
    rho2 = uu + vv + 1e-9
    rho = np.sqrt(rho2)
    # cos/sin of 2 phi and 3 phi from polynomials in u, v: no atan2.
    w2, w3 = s["wobble"][:, 0, None, None], s["wobble"][:, 1, None, None]
    p2, p3 = s["wobble_phase"][:, 0, None, None], s["wobble_phase"][:, 1, None, None]
    harmonic2 = (w2 * np.cos(p2)) * (uu - vv) - (2 * w2 * np.sin(p2)) * uv
    harmonic3 = (w3 * np.cos(p3)) * u * (uu - 3 * vv) - (w3 * np.sin(p3)) * v * (3 * uu - vv)
    outline = harmonic2 / rho2 + harmonic3 / (rho2 * rho)
    outline += 1.0
    outline *= s["cell_r"][:, None, None]
    return rho - outline


def _erythrocyte_density(rbc: np.ndarray, gx: np.ndarray, gy: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Relative stain (n x H x W) of the erythrocytes: discs with a pale centre."""
    r = rbc[..., 2]
    active = r > 0
    r_safe = np.where(active, r, 1.0)
    # Near the rim (d^2 - r^2) / 2r is the signed distance, so coverage is linear in d^2:
    # c0 - a d^2, split into x and y parts so only one add per erythrocyte is full size.
    a = 1.0 / (2 * r_safe * soft[:, None])
    c0 = np.where(active, 0.5 + a * r * r, -1.0)
    b = rbc[..., 4] / (r_safe * rbc[..., 3]) ** 2
    total = np.zeros((len(rbc), gy.shape[1], gx.shape[2]), np.float32)
    for k in np.flatnonzero(active.any(axis=0)):
        dx2 = (gx - rbc[:, k, 0, None, None]) ** 2
        dy2 = (gy - rbc[:, k, 1, None, None]) ** 2
        disc = (c0[:, k, None, None] - a[:, k, None, None] * dx2) - a[:, k, None, None] * dy2
        _clip01(disc)
        # Central pallor: depth * (1 - d^2 / rp^2), floored at 0.
        pallor = (rbc[:, k, 4, None, None] - b[:, k, None, None] * dx2) - b[:, k, None, None] * dy2
        np.maximum(pallor, 0.0, out=pallor)
        pallor *= disc
        disc -= pallor
        total += disc
    return total


def _splat(xy: np.ndarray, weight: np.ndarray, size: int) -> np.ndarray:
    """Deposit weighted points (n x k, normalised coords) onto n images, bilinearly."""
    n = len(xy)
    fx = (xy[..., 0] + 1) * 0.5 * size - 0.5
    fy = (xy[..., 1] + 1) * 0.5 * size - 0.5
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    ax, ay = fx - x0, fy - y0
    image = np.arange(n)[:, None] * size * size
    total = np.zeros(n * size * size)
    for dx, dy, w in ((0, 0, (1 - ax) * (1 - ay)), (1, 0, ax * (1 - ay)), (0, 1, (1 - ax) * ay), (1, 1, ax * ay)):
        x, y = x0 + dx, y0 + dy
        inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
        index = image + np.clip(y, 0, size - 1) * size + np.clip(x, 0, size - 1)
        total += np.bincount(index.ravel(), (w * weight * inside).ravel(), minlength=n * size * size)
    return total.reshape(n, size, size).astype(np.float32)


def _gaussian_blur(images: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur of n x H x W arrays with zero padding."""
    reach = max(1, int(np.ceil(2.5 * sigma_px)))
    taps = np.exp(-0.5 * (np.arange(-reach, reach + 1) / sigma_px) ** 2).astype(np.float32)
    taps /= taps.sum()
    n, size = len(images), images.shape[-1]
    padded = np.zeros((n, size + 2 * reach, size + 2 * reach), np.float32)
    padded[:, reach : reach + size, reach : reach + size] = images
    rows = np.zeros((n, size, size + 2 * reach), np.float32)
    for j, tap in enumerate(taps):
        rows += tap * padded[:, j : j + size, :]
    out = np.zeros((n, size, size), np.float32)
    for j, tap in enumerate(taps):
        out += tap * rows[:, :, j : j + size]
    return out


def _spots(s: Scene, local_xy: np.ndarray, weight: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Opacity (n x H x W) of Gaussian spots `sigma` wide at cell-local points, saturating where packed."""
    sigma_px = max(sigma * size / 2, 0.5)
    xy = _to_image(local_xy, s["centre"], s["theta"])
    # Scaled so an isolated spot peaks near 1 whatever the resolution.
    spots = _gaussian_blur(_splat(xy, weight * np.float32(-1.6 * 2 * np.pi * sigma_px**2), size), sigma_px)
    np.exp(spots, out=spots)
    return np.subtract(1.0, spots, out=spots)


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: np.ndarray) -> np.ndarray:
    """Zero-mean noise with per-image standard deviation `sd` (0-255 scale), for n x ... arrays."""
    # The sum of two uniform random bytes is near-Gaussian and ~10x faster to draw than normals.
    raw = np.frombuffer(rng.bytes(2 * int(np.prod(shape))), np.uint8).reshape(2, *shape)
    noise = raw[0].astype(np.float32)
    noise += raw[1]
    noise -= 255.0
    noise *= (sd / np.float32(np.sqrt(2 * (256**2 - 1) / 12))).reshape(-1, *([1] * (len(shape) - 1)))
    return noise


def render_scene(label: int, s: Scene, size: int, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render parameters `s` of class `label` at `size` px: uint8 images (n x H x W x 3), bool masks."""
    check_size(size)
    n = len(s["theta"])
    gx, gy = _grid(size)
    pixel = 2.0 / size
    # Keep edges at least about a pixel wide so small renders stay anti-aliased.
    soft = np.sqrt(s["soft"] ** 2 + pixel * pixel).astype(np.float32)
    soft3 = soft[:, None, None]

    if label == PLATELET:
        frag = s["frag"]
        xy = _to_image(frag[..., :2], s["centre"], s["theta"])
        body = _chain_distance(xy, frag[..., 2] - np.where(frag[..., 2] > 0, 0.0, 1.0), np.zeros((n, 0)), gx, gy)
    else:
        body = _cell_distance(s, gx, gy)
    body_alpha = _coverage(body, soft3)
    granules = _spots(s, s["gran_xy"], s["gran_w"], GRANULE_SIGMA[label], size)
    if label not in GRANULES_OVER_NUCLEUS:
        granules *= body_alpha
    # Layers bottom to top: (opacity, field that scales the colour or None, colour index).
    layers: list[tuple[np.ndarray, np.ndarray | None, str]] = [(body_alpha, None, "cyto_od")]
    if label != PLATELET:
        r = s["cell_r"][:, None]
        nuc_xy = _to_image(s["nuc_xy"] * r[..., None], s["centre"], s["theta"])
        nucleus = _chain_distance(nuc_xy, s["nuc_rv"] * r, s["nuc_rs"] * r, gx, gy)
        # Chromatin is never outside the cell membrane.
        nuc_alpha = _coverage(np.maximum(nucleus, body + 0.02), soft3)
        clumps = _spots(s, s["chrom_xy"], s["chrom_w"], CHROMATIN_SIGMA.get(label, 0.03), size)
        # Clumps are darker and the gaps between them paler than the nucleus' mean colour.
        contrast = s["chrom_contrast"][:, None, None]
        mottle = (1 - contrast) + (2 * contrast) * clumps
        layers.append((nuc_alpha, mottle, "nuc_od"))
    layers.insert(len(layers) if label in GRANULES_OVER_NUCLEUS else 1, (granules, None, "gran_od"))

    # Compositing is linear in the colours: find each layer's weight top-down into one
    # channel-first stack, then mix all colours with a single batched matmul.
    fields = np.empty((n, len(layers) + 2, size, size), np.float32)
    remaining = np.ones_like(body_alpha)
    for i, (alpha, scale, _) in enumerate(reversed(layers)):
        np.multiply(alpha, remaining, out=fields[:, i])
        remaining -= fields[:, i]
        if scale is not None:
            fields[:, i] *= scale
    illum = 1 + s["illum"][:, 0, None, None] * gx + s["illum"][:, 1, None, None] * gy
    np.multiply(remaining, illum, out=fields[:, -2])
    np.multiply(remaining, _erythrocyte_density(s["rbc"], gx, gy, soft), out=fields[:, -1])
    colours = [s[key] for _, _, key in reversed(layers)] + [s["bg"], s["rbc_od"]]
    palette = (np.stack(colours, axis=2) * s["stain"][:, :, None]).astype(np.float32)
    od = np.matmul(palette, fields.reshape(n, len(colours), size * size))
    # 255 * exp(-od) + noise, rounded and clipped, in place.
    np.subtract(np.float32(np.log(255.0)), od, out=od)
    np.exp(od, out=od)
    od += _sensor_noise(noise_rng, od.shape, s["noise"])
    od += 0.5
    np.clip(od, 0, 255, out=od)
    images = od.astype(np.uint8).transpose(0, 2, 1).reshape(n, size, size, 3)
    return images, body < 0


def pick_looks(label: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """The class whose morphology each of `n` images of class `label` is drawn with (mostly `label`)."""
    sister = LOOKALIKE.get(label)
    looks = np.full(n, label)
    if sister is not None:
        looks[rng.random(n) < LOOKALIKE_RATE] = sister
    return looks


def _take(s: Scene, index: slice | np.ndarray) -> Scene:
    """The parameters of a subset of images."""
    return {key: value[index] for key, value in s.items()}


def _child(seed: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """A fixed child stream of `seed` (unlike spawn(), the same however often it is asked for)."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, *key))


def draw_images(labels: np.ndarray, size: int, seed: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x H x W x 3) and masks (N x H x W) for `labels`, drawn class by class in chunks."""
    check_size(size)
    labels = np.asarray(labels).reshape(-1)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    masks = np.empty((len(labels), size, size), bool)
    chunk = max(1, PIXELS_PER_CHUNK // (size * size))
    for label in range(N_CLASSES):
        where = np.flatnonzero(labels == label)
        param_rng = np.random.default_rng(_child(seed, label, 0))
        noise_rng = np.random.default_rng(_child(seed, label, 1))
        looks = pick_looks(label, len(where), param_rng)
        for look in np.unique(looks):
            subset = where[looks == look]
            # All parameters are drawn before rendering, so chunking (which depends on size) cannot change them.
            scene = sample_scene(int(look), len(subset), param_rng)
            for start in range(0, len(subset), chunk):
                part = slice(start, start + chunk)
                images[subset[part]], masks[subset[part]] = render_scene(int(look), _take(scene, part), size, noise_rng)
    return images, masks


def make_synthetic_dataset(
    size: int, n_train: int, n_val: int, n_test: int, seed: int, with_masks: bool = False
) -> dict[str, np.ndarray]:
    """A BloodMNIST-schema dataset of synthetic cells; labels N x 1 uint8, optional bool masks."""
    check_size(size)
    arrays: dict[str, np.ndarray] = {}
    counts = dict(zip(SPLITS, (n_train, n_val, n_test), strict=True))
    # One independent stream per split: a split's images do not depend on the other splits' sizes.
    root = np.random.SeedSequence(seed)
    for index, split in enumerate(SPLITS):
        labels = stratified_labels(counts[split], np.random.default_rng(_child(root, index, 0)))
        images, masks = draw_images(labels, size, _child(root, index, 1))
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
        if with_masks:
            arrays[f"{split}_masks"] = masks
    check_arrays(arrays, N_CLASSES, "synthetic")
    return arrays


def _save_cell(picture: Image.Image, folder: Path, number: int, mode: int) -> None:
    """One cell image as a file: mode 0 grayscale PNG, 1 RGBA PNG, 2 16-bit PNG, any other a JPEG."""
    if mode == 0:
        picture.convert("L").save(folder / f"{number:05d}.png")
    elif mode == 1:
        picture.convert("RGBA").save(folder / f"{number:05d}.png")
    elif mode == 2:
        grey = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(folder / f"{number:05d}.png")  # mode I;16
    else:
        picture.save(folder / f"{number:05d}.jpg", quality=95)


def write_synthetic_folder(
    root: Path,
    classes: dict[str, str],
    n_train: int,
    n_test: int,
    size: int,
    seed: int,
    odd_files: bool,
    train: str,
    test: str,
) -> dict[str, int]:
    """Synthetic cells of the named classes written as image files in Raabin-WBC's folder layout (tests, demo).

    Class names must be BloodMNIST classes. With `odd_files`, some images are written as grayscale, RGBA and
    16-bit PNGs, and one unreadable file is added per split. Returns the number of readable images per split.
    """
    label_of = {name: BLOODMNIST_CLASSES.index(name) for name in classes.values()}
    names = list(classes)
    root = Path(root)
    counts = {}
    for index, (split, n) in enumerate(((train, n_train), (test, n_test))):
        folder_labels = np.arange(n) % len(names)
        labels = np.array([label_of[classes[names[k]]] for k in folder_labels])
        images, _ = draw_images(labels, size, np.random.SeedSequence([seed, index]))
        for number, (k, image) in enumerate(zip(folder_labels, images, strict=True)):
            folder = root / split / names[k]
            folder.mkdir(parents=True, exist_ok=True)
            _save_cell(Image.fromarray(image), folder, number, number % 8 if odd_files else 7)
        if odd_files:
            (root / split / names[0] / "broken.jpg").write_bytes(b"not an image")
        counts[split] = n
    return counts
