"""The 12 landmarks (`data.landmarks.LANDMARK_NAMES`) of a face drawn by `data.render`, from its geometry.

The renderer places every feature in face-box fractions (u across, v down) from the identity and the expression's
controls; this module evaluates the same formulas at the points the landmark set names, then moves them with the
head pose exactly as `render.warp_layers` moves the pixels. Each point matches its Face Mesh definition
(`MESH_LANDMARK_INDICES`): a brow end is the middle of the drawn brow at that end, an eye centre is the mean of the
two corners and the mid upper and lower lid, a lip point is the middle of that lip on the midline, the nose tip is
the tip's highlight and the chin the bottom of the face ellipse. The expression is quantised as the render cache
quantises it (`render.INTENSITY_LEVELS`), so the points belong to the face actually drawn.

Keep in step with `render.FaceRenderer._draw_brows/_draw_eyes/_draw_mouth`: `tests/test_zoo_data.py` checks the
points against the rendered masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stress_lightning.data import render
from stress_lightning.data.landmarks import LANDMARK_NAMES


def canonical_landmarks_uv(identity: render.Identity, c: render.Controls) -> np.ndarray:
    """[12, 2] (u, v) face-box fractions of the canonical (unposed) render with controls `c`."""
    points: dict[str, tuple[float, float]] = {}
    # Brows (`_draw_brows`): centre line at the inner (x = 0) and outer (x = 1) end, where the arch is zero; the
    # drawn top is clipped at BROW_TOP_MIN_V, so the middle of what is drawn is used.
    half = identity.brow_thickness / 2
    for side, name in ((-1, "left"), (1, "right")):
        inner_u = 0.5 + side * (render.BROW_INNER_U - c.brow_inner_du)
        outer_u = 0.5 + side * render.BROW_OUTER_U
        for end, u, v, th in (
            ("inner", inner_u, identity.brow_v + c.brow_inner_dv, half * 1.15),
            ("outer", outer_u, identity.brow_v + render.BROW_OUTER_DV + c.brow_outer_dv, half * 0.65),
        ):
            top = max(v - th, render.BROW_TOP_MIN_V)
            points[f"{name}_brow_{end}"] = (u, (top + v + th) / 2)
    # Eyes (`_draw_eyes`): corners on EYE_LINE_V, mid lids hu above and hl below it.
    ev = render.EYE_LINE_V
    hu = render.EYE_LID_UPPER * identity.eye_size * c.eye_upper
    hl = render.EYE_LID_LOWER * identity.eye_size * c.eye_lower
    for side, name in ((-1, "left"), (1, "right")):
        points[f"{name}_eye_centre"] = (0.5 + side * identity.eye_sep, ev + (hl - hu) / 4)
    # Nose (`_render`): the tip's specular highlight.
    points["nose_tip"] = (0.5, render.EYE_LINE_V + identity.nose_length - 0.02)
    # Mouth (`_draw_mouth`): corners at x = +-1 (no bulge), lips on the midline x = 0.
    mw = identity.mouth_width * c.mouth_width
    mv = render.MOUTH_LINE_V
    points["mouth_left_corner"] = (0.5 - mw, mv + c.corner_dv)
    points["mouth_right_corner"] = (0.5 + mw, mv + c.corner_dv)
    lt = identity.lip_thickness * c.lip_thickness
    up_in = mv - (0.25 * c.mouth_open + c.upper_lip_up)
    up_out = max(up_in - lt * 0.9 - 0.002, render.LIP_TOP_MIN_V)
    lo_in = mv + 0.75 * c.mouth_open
    lo_out = lo_in + lt * 1.1 + 0.002
    points["upper_lip"] = (0.5, (up_in + up_out) / 2)
    points["lower_lip"] = (0.5, (lo_in + lo_out) / 2)
    points["chin"] = (0.5, 1.0)
    return np.array([points[name] for name in LANDMARK_NAMES], dtype=np.float64)


def rendered_controls(label: str, intensity: float) -> render.Controls:
    """The controls of the face `FaceRenderer.layers(label, intensity)` draws (intensity quantised as it does)."""
    level = int(round(float(np.clip(intensity, 0.0, 1.0)) * render.INTENSITY_LEVELS))
    if level == 0:
        return render.controls_at("neutral", 0.0)
    return render.controls_at(label, level / render.INTENSITY_LEVELS)


def frame_landmarks(renderer: render.FaceRenderer, label: str, intensity: float, pose: render.Pose) -> np.ndarray:
    """[12, 2] pixel coordinates of one rendered frame's landmarks (pixel-centre convention of the frame)."""
    uv = canonical_landmarks_uv(renderer.identity, rendered_controls(label, intensity))
    x0, y0, x1, y1 = renderer.box
    xy = np.stack([x0 + uv[:, 0] * (x1 - x0), y0 + uv[:, 1] * (y1 - y0)], axis=1)
    # cv2.warpAffine's matrix maps canonical pixels to posed ones (it inverts it to sample).
    m = pose.matrix((renderer.box[:2] + renderer.box[2:]) / 2)
    return xy @ m[:, :2].T + m[:, 2]


def session_landmarks(
    renderer: render.FaceRenderer,
    labels: Sequence[str],
    intensity: Sequence[float],
    poses: Sequence[render.Pose],
) -> np.ndarray:
    """float32 [N, 12, 2] landmarks of a rendered session (per-frame expression label, intensity and pose)."""
    cache: dict[tuple[str, int], np.ndarray] = {}
    out = np.empty((len(poses), len(LANDMARK_NAMES), 2), dtype=np.float32)
    x0, y0, x1, y1 = renderer.box
    scale = np.array([x1 - x0, y1 - y0])
    origin = np.array([x0, y0])
    centre = (renderer.box[:2] + renderer.box[2:]) / 2
    for i, (label, level, pose) in enumerate(zip(labels, intensity, poses, strict=True)):
        q = int(round(float(np.clip(level, 0.0, 1.0)) * render.INTENSITY_LEVELS))
        key = ("neutral", 0) if q == 0 else (label, q)
        if key not in cache:
            uv = canonical_landmarks_uv(renderer.identity, rendered_controls(label, level))
            cache[key] = origin + uv * scale
        m = pose.matrix(centre)
        out[i] = cache[key] @ m[:, :2].T + m[:, 2]
    return out
