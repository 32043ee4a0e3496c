"""Procedurally drawn peripheral-blood-cell micrographs: an offline, seeded stand-in for BloodMNIST.

Each image is a stained smear seen in transmitted light: a pale peach background with pale red
erythrocytes (lighter centres) and one central cell whose look follows the real morphology of
its class. Colours are composited in optical density (OD = -ln(I / 255)), so overlaps darken
the way stain does. Every image is described by size-free parameters in normalised coordinates
([-1, 1] across the image), so one seed gives the same cells at 32, 64 or 224 px, like
BloodMNIST's sizes that all come from one 200 x 200 crop.
"""

from __future__ import annotations

import numpy as np

from .dataset import BLOODMNIST_CLASSES, MIN_SIZE, SPLITS, check_arrays

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
PIXELS_PER_CHUNK = 1 << 20  # bounds the float temporaries of one rendering pass (~40 MB per array)

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
    IMMATURE_GRANULOCYTE: (122, 88, 176),
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
CHROMATIN_SIGMA = {IMMATURE_GRANULOCYTE: 0.022, MONOCYTE: 0.022}
CHROMATIN_CONTRAST = {
    BASOPHIL: (0.1, 0.3),
    EOSINOPHIL: (0.15, 0.35),
    ERYTHROBLAST: (0.05, 0.2),
    IMMATURE_GRANULOCYTE: (0.35, 0.6),
    LYMPHOCYTE: (0.15, 0.35),
    MONOCYTE: (0.35, 0.55),
    NEUTROPHIL: (0.15, 0.35),
    PLATELET: (0.0, 0.0),
}
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
    return {"nuc_xy": points.astype(np.float32), "nuc_rv": vertex_r.astype(np.float32),
            "nuc_rs": segment_r.astype(np.float32)}


def _arc_points(rng: np.random.Generator, n: int, k: int, arc_r: np.ndarray, spacing: np.ndarray,
                wiggle: float) -> np.ndarray:
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
    PLATELET: (0.0, 0.0),
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
    s["soft"] = _uniform(rng, 0.012, 0.05, n)  # focus: width of the edges
    s["noise"] = _uniform(rng, 1.0, 6.0, n)  # sensor noise sd, 0-255 scale
    s["stain"] = np.exp(rng.normal(0, 0.1, (n, 1)) + rng.normal(0, 0.04, (n, 3))).astype(np.float32)
    s["illum"] = rng.normal(0, 0.12, (n, 2)).astype(np.float32)
    cool = rng.beta(0.6, 3.0, (n, 1))
    s["bg"] = (((1 - cool) * _od(BACKGROUND_WARM) + cool * _od(BACKGROUND_COOL))
               * np.exp(rng.normal(0, 0.2, (n, 1)))).astype(np.float32)
    s["rbc_od"] = _jitter_colour(rng, ERYTHROCYTE, n, 0.2)
    s["cyto_od"] = _jitter_colour(rng, CYTOPLASM[label], n, 0.12)
    s["nuc_od"] = _jitter_colour(rng, NUCLEUS[label], n, 0.1)
    s["gran_od"] = _jitter_colour(rng, GRANULE[label], n, 0.1)
    low, high = CELL_RADIUS[label]
    cell_r = _uniform(rng, low, high, n) if label != PLATELET else _uniform(rng, 0.12, 0.22, n)
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
    return {"chrom_xy": xy.astype(np.float32), "chrom_w": _uniform(rng, 0.6, 1.0, (n, N_CHROMATIN)),
            "chrom_contrast": _uniform(rng, low, high, n)}


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


def _granules(label: int, n: int, s: Scene, hub: np.ndarray | None,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
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
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1)
    return axis.reshape(1, 1, size), axis.reshape(1, size, 1)


def _coverage(signed_distance: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Opacity in [0, 1] from a signed distance (negative inside), with a linear edge `soft` wide."""
    return np.clip(0.5 - signed_distance / soft, 0.0, 1.0)


def _to_image(local: np.ndarray, centre: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate cell-local points (n x k x 2) by theta and move them to the cell centre."""
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x, y = local[..., 0], local[..., 1]
    return np.stack([c * x - s * y, s * x + c * y], axis=-1) + centre[:, None, :]


def _chain_distance(xy: np.ndarray, vertex_r: np.ndarray, seg_r: np.ndarray, gx: np.ndarray,
                    gy: np.ndarray) -> np.ndarray:
    """Signed distance (n x H x W) to a union of discs and capsules along a polyline."""
    px, py = xy[..., 0, None, None], xy[..., 1, None, None]
    dx, dy = gx[:, None] - px, gy[:, None] - py
    best = (np.sqrt(dx * dx + dy * dy) - vertex_r[..., None, None]).min(axis=1)
    if seg_r.shape[1]:
        ex = (xy[:, 1:, 0] - xy[:, :-1, 0])[..., None, None]
        ey = (xy[:, 1:, 1] - xy[:, :-1, 1])[..., None, None]
        length2 = ex * ex + ey * ey + 1e-9
        ax, ay = dx[:, :-1], dy[:, :-1]
        t = np.clip((ax * ex + ay * ey) / length2, 0.0, 1.0)
        qx, qy = ax - t * ex, ay - t * ey
        capsule = (np.sqrt(qx * qx + qy * qy) - seg_r[..., None, None]).min(axis=1)
        best = np.minimum(best, capsule)
    return best


def _cell_distance(s: Scene, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Signed distance (n x H x W) to the cell outline: a slightly irregular ellipse."""
    theta = s["theta"][:, None, None]
    x = gx - s["centre"][:, 0, None, None]
    y = gy - s["centre"][:, 1, None, None]
    u = (np.cos(theta) * x + np.sin(theta) * y) / s["aspect"][:, None, None]
    v = -np.sin(theta) * x + np.cos(theta) * y
    rho = np.sqrt(u * u + v * v) + 1e-6
    cu, sv = u / rho, v / rho
    cos2, sin2 = cu * cu - sv * sv, 2 * cu * sv
    cos3, sin3 = cu * cos2 - sv * sin2, sv * cos2 + cu * sin2
    w2, w3 = s["wobble"][:, 0, None, None], s["wobble"][:, 1, None, None]
    p2, p3 = s["wobble_phase"][:, 0, None, None], s["wobble_phase"][:, 1, None, None]
    outline = 1 + w2 * (cos2 * np.cos(p2) - sin2 * np.sin(p2)) + w3 * (cos3 * np.cos(p3) - sin3 * np.sin(p3))
    return rho - s["cell_r"][:, None, None] * outline


def _erythrocyte_density(rbc: np.ndarray, gx: np.ndarray, gy: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """Relative stain (n x H x W) of the erythrocytes: discs with a pale centre."""
    px, py, r = rbc[..., 0, None, None], rbc[..., 1, None, None], rbc[..., 2, None, None]
    d2 = (gx[:, None] - px) ** 2 + (gy[:, None] - py) ** 2
    # (d^2 - r^2) / 2r is the signed distance near the rim, without a square root.
    disc = _coverage((d2 - r * r) / (2 * r + 1e-6), soft[:, None, None, None])
    pallor_r = r * rbc[..., 3, None, None]
    pallor = np.clip(1.0 - d2 / (pallor_r * pallor_r + 1e-6), 0.0, 1.0)
    return (disc * (1.0 - rbc[..., 4, None, None] * pallor)).sum(axis=1)


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
    reach = max(1, int(np.ceil(3 * sigma_px)))
    taps = np.exp(-0.5 * (np.arange(-reach, reach + 1) / sigma_px) ** 2).astype(np.float32)
    taps /= taps.sum()
    size = images.shape[-1]
    out = images
    for axis in (1, 2):
        padded = np.pad(out, [(0, 0)] + [(reach, reach) if a == axis else (0, 0) for a in (1, 2)])
        acc = np.zeros_like(out)
        for j, tap in enumerate(taps):
            acc += tap * (padded[:, j:j + size, :] if axis == 1 else padded[:, :, j:j + size])
        out = acc
    return out


def _spots(s: Scene, local_xy: np.ndarray, weight: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Opacity (n x H x W) of Gaussian spots `sigma` wide at cell-local points, saturating where packed."""
    sigma_px = max(sigma * size / 2, 0.5)
    xy = _to_image(local_xy, s["centre"], s["theta"])
    spots = _gaussian_blur(_splat(xy, weight, size), sigma_px) * (2 * np.pi * sigma_px * sigma_px)
    return 1.0 - np.exp(-1.6 * spots)


def _blend(od: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Lay a layer of OD `colour` with opacity `alpha` over `od` (all n x H x W x 3 broadcastable)."""
    return od + alpha[..., None] * (colour - od)


def render_scene(label: int, s: Scene, size: int, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Render parameters `s` of class `label` at `size` px: uint8 images (n x H x W x 3), bool masks."""
    check_size(size)
    n = len(s["theta"])
    gx, gy = _grid(size)
    pixel = 2.0 / size
    # Keep edges at least about a pixel wide so small renders stay anti-aliased.
    soft = np.sqrt(s["soft"] ** 2 + pixel * pixel).astype(np.float32)
    soft3 = soft[:, None, None]

    illum = 1 + s["illum"][:, 0, None, None] * gx + s["illum"][:, 1, None, None] * gy
    od = s["bg"][:, None, None, :] * illum[..., None]
    od = od + _erythrocyte_density(s["rbc"], gx, gy, soft)[..., None] * s["rbc_od"][:, None, None, :]

    if label == PLATELET:
        frag = s["frag"]
        xy = _to_image(frag[..., :2], s["centre"], s["theta"])
        body = _chain_distance(xy, frag[..., 2] - np.where(frag[..., 2] > 0, 0.0, 1.0), np.zeros((n, 0)), gx, gy)
    else:
        body = _cell_distance(s, gx, gy)
    body_alpha = _coverage(body, soft3)
    od = _blend(od, body_alpha, s["cyto_od"][:, None, None, :])

    granules = _spots(s, s["gran_xy"], s["gran_w"], GRANULE_SIGMA[label], size)
    if label not in GRANULES_OVER_NUCLEUS:
        granules = granules * body_alpha
    gran_od = s["gran_od"][:, None, None, :]
    if label not in GRANULES_OVER_NUCLEUS:
        od = _blend(od, granules, gran_od)
    if label != PLATELET:
        nuc_xy = _to_image(s["nuc_xy"] * s["cell_r"][:, None, None], s["centre"], s["theta"])
        nucleus = _chain_distance(nuc_xy, s["nuc_rv"] * s["cell_r"][:, None], s["nuc_rs"] * s["cell_r"][:, None],
                                  gx, gy)
        # Chromatin is never outside the cell membrane.
        nuc_alpha = _coverage(np.maximum(nucleus, body + 0.02), soft3)
        clumps = _spots(s, s["chrom_xy"], s["chrom_w"], CHROMATIN_SIGMA.get(label, 0.03), size)
        contrast = s["chrom_contrast"][:, None, None]
        # Clumps are darker and the gaps between them paler than the nucleus' mean colour.
        mottle = 1 + contrast * (2 * clumps - 1)
        od = _blend(od, nuc_alpha, s["nuc_od"][:, None, None, :] * mottle[..., None])
    if label in GRANULES_OVER_NUCLEUS:
        od = _blend(od, granules, gran_od)

    od = od * s["stain"][:, None, None, :]
    light = 255.0 * np.exp(-od)
    light += noise_rng.standard_normal(light.shape, dtype=np.float32) * s["noise"][:, None, None, None]
    images = np.clip(light + 0.5, 0, 255).astype(np.uint8)
    return images, body < 0


def draw_cell(label: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image of class `label`: uint8 H x W x 3 image and bool H x W mask of the central cell."""
    check_size(size)
    scene = sample_scene(label, 1, rng)
    # Noise gets its own stream so the parameters drawn next do not depend on the image size.
    noise_rng = np.random.default_rng(rng.integers(2**63))
    images, masks = render_scene(label, scene, size, noise_rng)
    return images[0], masks[0]


def _take(s: Scene, index: slice | np.ndarray) -> Scene:
    """The parameters of a subset of images."""
    return {key: value[index] for key, value in s.items()}


def draw_split(labels: np.ndarray, size: int, seed: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x H x W x 3) and masks (N x H x W) for `labels`, class by class in chunks."""
    check_size(size)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    masks = np.empty((len(labels), size, size), bool)
    chunk = max(1, PIXELS_PER_CHUNK // (size * size))
    for label, class_seed in zip(range(N_CLASSES), seed.spawn(N_CLASSES)):
        where = np.flatnonzero(labels == label)
        if not len(where):
            continue
        param_rng, noise_rng = (np.random.default_rng(child) for child in class_seed.spawn(2))
        # All parameters are drawn before rendering, so chunking (which depends on size) cannot change them.
        scene = sample_scene(label, len(where), param_rng)
        for start in range(0, len(where), chunk):
            part = slice(start, start + chunk)
            images[where[part]], masks[where[part]] = render_scene(label, _take(scene, part), size, noise_rng)
    return images, masks


def make_synthetic_dataset(size: int, n_train: int, n_val: int, n_test: int, seed: int,
                           with_masks: bool = False) -> dict[str, np.ndarray]:
    """A BloodMNIST-schema dataset of synthetic cells; labels N x 1 uint8, optional bool masks."""
    check_size(size)
    arrays: dict[str, np.ndarray] = {}
    counts = dict(zip(SPLITS, (n_train, n_val, n_test)))
    # One independent stream per split: a split's images do not depend on the other splits' sizes.
    for split, split_seed in zip(SPLITS, np.random.SeedSequence(seed).spawn(len(SPLITS))):
        label_seed, image_seed = split_seed.spawn(2)
        labels = stratified_labels(counts[split], np.random.default_rng(label_seed))
        images, masks = draw_split(labels, size, image_seed)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
        if with_masks:
            arrays[f"{split}_masks"] = masks
    check_arrays(arrays, N_CLASSES, "synthetic")
    return arrays
