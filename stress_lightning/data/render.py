"""Parametric face renderer for the synthetic corpus.

A face is drawn once per (expression, intensity level) in a canonical pose, 4x supersampled and area-averaged
for anti-aliased edges, as layers: premultiplied reflectance (RGB), coverage (alpha), the skin fraction that
carries the blood-volume pulse, and a specular map. Every frame then warps those layers with the head pose
(`cv2.warpAffine`), composites them over a world-fixed background, applies lighting, subtracts the pulse from
the skin reflectance (more blood absorbs more light, so skin darkens at the systolic peak), adds sensor noise
(shot + read) and only then quantises to 8 bits.

Geometry is given in fractions of the face box (u across, v down; the box is the face ellipse's bounding box).
The forehead and cheek regions of docs/ARCHITECTURE.md are kept free of brows, eyes, mouth and hair at every
expression: brows stay below v = 0.296 (forehead ends at 0.28), eyes above v = 0.49 and the mouth below
v = 0.745 (cheeks span 0.52-0.72), the hairline above v = 0.05; `region_is_skin` checks it on rendered masks.

Expressions are action-unit-like controls (brow raise/lower, lid raise/tighten, cheek raise, nose wrinkle,
upper-lip raise, lip-corner pull/depress, lip stretch, jaw drop, lip press) combined into one prototype per
class, following the EMFACS prototypes (happy AU6+12, sad AU1+4+15, surprise AU1+2+5+26, fear
AU1+2+4+5+20+26, anger AU4+5+7+23/24, disgust AU9+10+15).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from stress_lightning.data.roi import FOREHEAD, LEFT_CHEEK, RIGHT_CHEEK
from stress_lightning.data.taxonomy import BASIC_EXPRESSIONS

# ARCHITECTURE.md ROI regions, fractions of the face box: (x0, x1, y0, y1).
ROI_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "forehead": FOREHEAD,
    "left_cheek": LEFT_CHEEK,
    "right_cheek": RIGHT_CHEEK,
}

EXPRESSION_NAMES = BASIC_EXPRESSIONS

# Fitzpatrick I-VI-like diffuse skin reflectances (RGB, 0-1), interpolated by a continuous tone in [0, 5].
SKIN_REFLECTANCE = np.array(
    [
        [0.90, 0.78, 0.70],
        [0.86, 0.70, 0.59],
        [0.78, 0.60, 0.48],
        [0.66, 0.47, 0.35],
        [0.50, 0.34, 0.25],
        [0.34, 0.23, 0.17],
    ]
)
# Relative pulsatile strength per channel of the normalised skin-reflection model used by CHROM/POS
# (de Haan & Jeanne 2013; Wang et al. 2017): green strongest.
PULSE_RGB_WEIGHTS = np.array([0.33, 0.77, 0.53])

SUPERSAMPLE = 4
INTENSITY_LEVELS = 32  # expression intensity is quantised to 1/32 steps for the render cache


@dataclass(frozen=True)
class Controls:
    """Action-unit-like face controls; zero = neutral. Distances are fractions of the face box."""

    brow_inner_dv: float = 0.0  # + moves the inner brow down (AU4), - up (AU1)
    brow_outer_dv: float = 0.0  # - raises the outer brow (AU2)
    brow_inner_du: float = 0.0  # + pulls the brows together (AU4)
    brow_arch: float = 0.0  # extra arch of the brow middle (up)
    eye_upper: float = 1.0  # upper-lid opening multiplier (AU5 > 1, AU7/droop < 1)
    eye_lower: float = 1.0  # lower-lid opening multiplier (AU6/7 < 1)
    mouth_width: float = 1.0  # multiplier (AU12/20 > 1)
    corner_dv: float = 0.0  # - lifts the lip corners (AU12), + depresses them (AU15)
    mouth_open: float = 0.0  # jaw drop / lips part (AU25/26)
    upper_lip_up: float = 0.0  # upper-lip raise (AU10)
    lip_thickness: float = 1.0  # < 1 presses the lips (AU23/24)
    teeth: float = 0.0  # how much of the opening shows teeth
    mouth_asym: float = 0.0  # one-sided upper-lip raise (disgust)
    nose_wrinkle: float = 0.0  # AU9


PROTOTYPES: dict[str, Controls] = {
    "neutral": Controls(),
    "happy": Controls(eye_upper=0.85, eye_lower=0.35, mouth_width=1.32, corner_dv=-0.045, mouth_open=0.035, teeth=1.0),
    "sad": Controls(
        brow_inner_dv=-0.035,
        brow_outer_dv=0.012,
        brow_inner_du=0.01,
        eye_upper=0.55,
        mouth_width=0.9,
        corner_dv=0.045,
        lip_thickness=1.3,
    ),
    "surprise": Controls(
        brow_inner_dv=-0.035,
        brow_outer_dv=-0.035,
        brow_arch=0.006,
        eye_upper=1.6,
        eye_lower=1.1,
        mouth_width=0.62,
        mouth_open=0.11,
        upper_lip_up=0.015,
        lip_thickness=0.8,
    ),
    "fear": Controls(
        brow_inner_dv=-0.03,
        brow_outer_dv=0.0,
        brow_inner_du=0.025,
        eye_upper=1.5,
        eye_lower=0.8,
        mouth_width=1.3,
        corner_dv=0.012,
        mouth_open=0.045,
        lip_thickness=0.6,
        teeth=1.0,
    ),
    "angry": Controls(
        brow_inner_dv=0.032,
        brow_outer_dv=-0.008,
        brow_inner_du=0.03,
        eye_upper=0.5,
        eye_lower=0.65,
        mouth_width=0.85,
        corner_dv=0.006,
        lip_thickness=0.35,
    ),
    "disgust": Controls(
        brow_inner_dv=0.018,
        brow_inner_du=0.015,
        eye_upper=0.7,
        eye_lower=0.5,
        corner_dv=0.025,
        mouth_open=0.018,
        upper_lip_up=0.03,
        teeth=1.0,
        mouth_asym=0.025,
        nose_wrinkle=1.0,
    ),
}


def controls_at(label: str, intensity: float) -> Controls:
    """Linear blend between neutral and the class prototype (intensity 0..1)."""
    if label not in PROTOTYPES:
        raise ValueError(f"unknown expression {label!r}; known: {EXPRESSION_NAMES}")
    proto, base = PROTOTYPES[label], Controls()
    values = {
        k: getattr(base, k) + intensity * (getattr(proto, k) - getattr(base, k)) for k in Controls.__dataclass_fields__
    }
    return Controls(**values)


@dataclass(frozen=True)
class Identity:
    """One subject's appearance."""

    skin_tone: float  # 0 (Fitzpatrick I) .. 5 (VI)
    gender: str  # "female" or "male"
    face_width_frac: float  # face box width / frame width
    face_aspect: float  # face box height / width
    eye_sep: float
    eye_width: float
    eye_size: float
    brow_v: float
    brow_thickness: float
    mouth_width: float
    lip_thickness: float
    nose_length: float
    expressiveness: float  # apex intensity scale of this subject's expressions
    specular: float  # specular strength (fraction of white)
    skin_rgb: tuple[float, float, float] = field(default=(0.8, 0.6, 0.5))
    lip_rgb: tuple[float, float, float] = field(default=(0.6, 0.3, 0.3))
    hair_rgb: tuple[float, float, float] = field(default=(0.1, 0.08, 0.06))
    iris_rgb: tuple[float, float, float] = field(default=(0.3, 0.2, 0.1))
    clothes_rgb: tuple[float, float, float] = field(default=(0.2, 0.3, 0.5))
    long_hair: bool = False
    background_seed: int = 0


def skin_reflectance(tone: float) -> np.ndarray:
    tone = float(np.clip(tone, 0.0, 5.0))
    i = min(int(tone), 4)
    w = tone - i
    return (1 - w) * SKIN_REFLECTANCE[i] + w * SKIN_REFLECTANCE[i + 1]


def sample_identity(rng: np.random.Generator, skin_tone: float, gender: str) -> Identity:
    """Random face geometry and colours for one subject; skin tone and gender are chosen by the caller."""
    male = gender == "male"
    skin = skin_reflectance(skin_tone)
    lip = skin * np.array([0.85, 0.55, 0.58]) * rng.uniform(0.9, 1.05)
    hair_palette = np.array(
        [[0.06, 0.05, 0.05], [0.20, 0.13, 0.08], [0.38, 0.25, 0.14], [0.70, 0.58, 0.36], [0.50, 0.22, 0.10]]
    )
    hair = hair_palette[rng.integers(len(hair_palette))] * rng.uniform(0.85, 1.1)
    iris_palette = np.array([[0.25, 0.15, 0.08], [0.12, 0.08, 0.05], [0.25, 0.40, 0.55], [0.30, 0.38, 0.22]])
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(60, 200), rng.uniform(60, 200)]]], dtype=np.uint8)
    clothes = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0] / 255.0
    return Identity(
        skin_tone=float(skin_tone),
        gender=gender,
        face_width_frac=float(rng.uniform(0.50, 0.56) if male else rng.uniform(0.46, 0.52)),
        face_aspect=float(rng.uniform(1.22, 1.32) if male else rng.uniform(1.28, 1.38)),
        eye_sep=float(rng.uniform(0.17, 0.195)),
        eye_width=float(rng.uniform(0.08, 0.095)),
        eye_size=float(rng.uniform(0.9, 1.0) if male else rng.uniform(1.0, 1.12)),
        brow_v=float(rng.uniform(0.35, 0.36)),
        brow_thickness=float(rng.uniform(0.022, 0.028) if male else rng.uniform(0.016, 0.022)),
        mouth_width=float(rng.uniform(0.125, 0.145)),
        lip_thickness=float(rng.uniform(0.014, 0.02) if male else rng.uniform(0.02, 0.026)),
        nose_length=float(rng.uniform(0.17, 0.2)),
        expressiveness=float(rng.uniform(0.7, 1.0)),
        specular=float(rng.uniform(0.02, 0.05)),
        skin_rgb=tuple(float(x) for x in skin),  # type: ignore[arg-type]
        lip_rgb=tuple(float(x) for x in np.clip(lip, 0, 1)),  # type: ignore[arg-type]
        hair_rgb=tuple(float(x) for x in np.clip(hair, 0, 1)),  # type: ignore[arg-type]
        iris_rgb=tuple(float(x) for x in iris_palette[rng.integers(len(iris_palette))]),  # type: ignore[arg-type]
        clothes_rgb=tuple(float(x) for x in clothes),  # type: ignore[arg-type]
        long_hair=bool(rng.random() < (0.2 if male else 0.8)),
        background_seed=int(rng.integers(2**31)),
    )


@dataclass
class Layers:
    """Canonical-pose render: premultiplied reflectance + alpha (4 channels) and pulse albedo + specular (4)."""

    face: np.ndarray  # float32 [H, W, 4]: RGB * alpha, alpha
    skin: np.ndarray  # float32 [H, W, 4]: skin albedo where skin (pulse carrier), specular map
    skin_mask: np.ndarray  # float32 [H, W]: fraction of the pixel that is skin


# Feature geometry in face-box fractions (u across, v down), shared with `render_landmarks`, which places the
# landmarks on the features these draw.
EYE_LINE_V = 0.45  # eye corners; the nose starts here
EYE_LID_UPPER = 0.033  # upper lid height at the middle, x eye_size x eye_upper
EYE_LID_LOWER = 0.024  # lower lid depth at the middle, x eye_size x eye_lower
BROW_INNER_U = 0.065  # inner brow end, from the midline
BROW_OUTER_U = 0.29  # outer brow end, from the midline
BROW_OUTER_DV = 0.008  # the outer end sits lower than the inner one
BROW_TOP_MIN_V = 0.296  # brows stay below it: the forehead ROI ends at v = 0.28
MOUTH_LINE_V = 0.80  # mouth corners
LIP_TOP_MIN_V = 0.745  # the upper lip stays below it: the cheek ROIs end at v = 0.72


class FaceRenderer:
    """Draws one identity in the canonical pose (face box centred) and caches renders per expression level."""

    def __init__(self, identity: Identity, width: int, height: int, skin_texture: float = 0.0) -> None:
        if skin_texture < 0:
            raise ValueError(f"FaceRenderer: skin_texture must be >= 0, got {skin_texture}")
        self.identity = identity
        self.width, self.height = width, height
        self.skin_texture = float(skin_texture)
        self._texture = skin_texture_map(identity, width, height, skin_texture) if skin_texture > 0 else None
        fw = identity.face_width_frac * width
        fh = fw * identity.face_aspect
        if fh > 0.78 * height:  # keep the face inside the frame for every head pose
            fh = 0.78 * height
            fw = fh / identity.face_aspect
        cx, cy = width / 2.0, height * 0.47
        self.box = np.array([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2])
        self._cache: dict[tuple[str, int], Layers] = {}
        self._ss_shape = (height * SUPERSAMPLE, width * SUPERSAMPLE)
        u = (np.arange(width) - self.box[0]) / fw
        v = (np.arange(height) - self.box[1]) / fh
        self._uu, self._vv = np.meshgrid(u.astype(np.float32), v.astype(np.float32))

    # -- geometry helpers -------------------------------------------------------------------------------
    def _pts(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Face-box fractions -> supersampled pixel coordinates (int32 polygon)."""
        x0, y0, x1, y1 = self.box
        x = (x0 + np.asarray(u) * (x1 - x0) + 0.5) * SUPERSAMPLE - 0.5
        y = (y0 + np.asarray(v) * (y1 - y0) + 0.5) * SUPERSAMPLE - 0.5
        return np.round(np.stack([x, y], axis=-1)).astype(np.int32).reshape(-1, 1, 2)

    def _mask(self, polys: list[np.ndarray]) -> np.ndarray:
        hi = np.zeros(self._ss_shape, dtype=np.uint8)
        cv2.fillPoly(hi, polys, 255)
        lo = cv2.resize(hi, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return lo.astype(np.float32) / 255.0

    def _ellipse_poly(self, cu: float, cv: float, ru: float, rv: float, n: int = 64) -> np.ndarray:
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return self._pts(cu + ru * np.cos(a), cv + rv * np.sin(a))

    # -- rendering ----------------------------------------------------------------------------------------
    def layers(self, label: str, intensity: float) -> Layers:
        level = int(round(float(np.clip(intensity, 0.0, 1.0)) * INTENSITY_LEVELS))
        key = ("neutral", 0) if level == 0 else (label, level)
        if key not in self._cache:
            self._cache[key] = self._render(controls_at(key[0], key[1] / INTENSITY_LEVELS))
        return self._cache[key]

    def _render(self, c: Controls) -> Layers:
        ident = self.identity
        h, w = self.height, self.width
        color = np.zeros((h, w, 3), np.float32)
        alpha = np.zeros((h, w), np.float32)
        skin = np.zeros((h, w), np.float32)

        def paint(mask: np.ndarray, rgb: np.ndarray | tuple[float, ...], is_skin: float) -> None:
            nonlocal color, alpha, skin
            m = mask[..., None]
            color = color * (1 - m) + m * np.asarray(rgb, np.float32)
            alpha = alpha * (1 - mask) + mask
            skin = skin * (1 - mask) + mask * is_skin

        skin_rgb = np.asarray(ident.skin_rgb, np.float32)
        hair_rgb = np.asarray(ident.hair_rgb, np.float32)
        uu, vv = self._uu, self._vv
        # Lambertian-like shading of an ellipsoid: darker towards the face border.
        r2 = np.clip(((uu - 0.5) / 0.5) ** 2 + ((vv - 0.5) / 0.5) ** 2, 0, 1)
        shade = (1.0 - 0.28 * r2**1.5)[..., None]

        if ident.long_hair:
            paint(self._mask([self._ellipse_poly(0.5, 0.55, 0.64, 0.62)]), hair_rgb, 0.0)
        # Neck (skin) and shoulders (clothes), moving with the head.
        neck = self._pts(np.array([0.33, 0.67, 0.70, 0.30]), np.array([0.78, 0.78, 1.45, 1.45]))
        paint(self._mask([neck]), skin_rgb * 0.82, 1.0)
        paint(self._mask([self._ellipse_poly(0.5, 1.62, 1.0, 0.4)]), ident.clothes_rgb, 0.0)
        # Hair cap behind the top of the face.
        paint(self._mask([self._ellipse_poly(0.5, 0.40, 0.55, 0.47)]), hair_rgb, 0.0)
        face_mask = self._mask([self._ellipse_poly(0.5, 0.5, 0.5, 0.5, 96)])
        paint(face_mask, skin_rgb * shade, 1.0)
        # Nose: side shading and nostrils.
        nl = ident.nose_length
        for side in (-1, 1):
            u = 0.5 + side * np.array([0.035, 0.05, 0.055, 0.04])
            v = 0.45 + nl * np.array([0.2, 0.6, 0.95, 1.0])
            paint(
                self._mask([self._pts(np.concatenate([u, u[::-1] + side * 0.012]), np.r_[v, v[::-1]])]),
                skin_rgb * shade * 0.86,
                1.0,
            )
            paint(
                self._mask([self._ellipse_poly(0.5 + side * 0.038, 0.45 + nl + 0.005, 0.018, 0.01)]),
                skin_rgb * 0.35,
                0.0,
            )
        if c.nose_wrinkle > 0.05:
            for k in range(3):
                vk = 0.46 + 0.025 * k
                uline = np.linspace(0.43, 0.57, 9)
                vline = vk + 0.012 * ((uline - 0.5) / 0.07) ** 2
                thick = 0.006 * c.nose_wrinkle
                poly = self._pts(np.r_[uline, uline[::-1]], np.r_[vline - thick, vline[::-1] + thick])
                paint(self._mask([poly]) * min(1.0, c.nose_wrinkle), skin_rgb * 0.55, 1.0)
        self._draw_eyes(c, paint)
        self._draw_brows(c, paint, hair_rgb * 0.8)
        self._draw_mouth(c, paint)
        # Fringe over the top of the face (hairline high enough to leave the forehead ROI bare).
        uline = np.linspace(0.0, 1.0, 33)
        hairline = 0.035 + 0.07 * ((uline - 0.5) / 0.5) ** 2
        fringe = self._pts(np.r_[uline, 1.0, 0.0], np.r_[hairline, -0.1, -0.1])
        paint(self._mask([fringe]) * face_mask, hair_rgb, 0.0)

        # Specular highlight on forehead and nose tip; it reflects the light's colour and carries no pulse.
        spec = np.exp(-(((uu - 0.5) / 0.16) ** 2) - (((vv - 0.2) / 0.07) ** 2))
        spec += 0.8 * np.exp(-(((uu - 0.5) / 0.035) ** 2) - (((vv - 0.45 - nl + 0.02) / 0.03) ** 2))
        if self._texture is not None:
            # Texture multiplies the skin's colour (and so its pulse, which is relative to the albedo) where skin.
            color = color * (1.0 + skin[..., None] * (self._texture - 1.0))
        skin_albedo = np.where(alpha[..., None] > 1e-4, color / np.maximum(alpha, 1e-4)[..., None], 0.0)
        face = np.concatenate([color, alpha[..., None]], axis=-1).astype(np.float32)
        skin_layer = np.concatenate([skin_albedo * skin[..., None], (spec * skin)[..., None]], axis=-1)
        return Layers(face, skin_layer.astype(np.float32), skin.astype(np.float32))

    def _draw_eyes(self, c: Controls, paint) -> None:
        ident = self.identity
        x = np.linspace(-1, 1, 25)
        ev = EYE_LINE_V
        hu = EYE_LID_UPPER * ident.eye_size * c.eye_upper
        hl = EYE_LID_LOWER * ident.eye_size * c.eye_lower
        for side in (-1, 1):
            eu = 0.5 + side * ident.eye_sep
            ew = ident.eye_width
            upper = ev - hu * (1 - x**2) ** 0.6
            lower = ev + hl * (1 - x**2) ** 0.8
            poly = self._pts(np.r_[eu + ew * x, eu + ew * x[::-1]], np.r_[upper, lower[::-1]])
            eye = self._mask([poly])
            paint(eye, (0.92, 0.90, 0.87), 0.0)
            iris_r = 0.036 * ident.eye_size
            iris = self._mask([self._ellipse_poly(eu, ev + 0.004, iris_r * 0.8, iris_r)]) * eye
            paint(iris, ident.iris_rgb, 0.0)
            pupil = self._mask([self._ellipse_poly(eu, ev + 0.004, iris_r * 0.35, iris_r * 0.42)]) * eye
            paint(pupil, (0.03, 0.03, 0.03), 0.0)
            # Upper lid line with lashes: the strongest eye cue at low resolution.
            t = 0.012
            lid = self._pts(np.r_[eu + ew * 1.08 * x, eu + ew * 1.08 * x[::-1]], np.r_[upper - t, upper[::-1] + 0.004])
            paint(self._mask([lid]), (0.08, 0.06, 0.05), 0.0)

    def _draw_brows(self, c: Controls, paint, rgb: np.ndarray) -> None:
        ident = self.identity
        half = ident.brow_thickness / 2
        x = np.linspace(0, 1, 17)  # 0 = inner end, 1 = outer end
        for side in (-1, 1):
            inner_u = 0.5 + side * (BROW_INNER_U - c.brow_inner_du)
            outer_u = 0.5 + side * BROW_OUTER_U
            u = inner_u + (outer_u - inner_u) * x
            v_inner = ident.brow_v + c.brow_inner_dv
            v_outer = ident.brow_v + BROW_OUTER_DV + c.brow_outer_dv
            arch = (0.012 + c.brow_arch) * np.sin(np.pi * np.clip(x * 1.15, 0, 1))
            v = v_inner + (v_outer - v_inner) * x - arch
            th = half * (1.15 - 0.5 * x)  # thicker at the inner end
            top = np.maximum(v - th, BROW_TOP_MIN_V)
            paint(self._mask([self._pts(np.r_[u, u[::-1]], np.r_[top, (v + th)[::-1]])]), rgb, 0.0)

    def _draw_mouth(self, c: Controls, paint) -> None:
        ident = self.identity
        x = np.linspace(-1, 1, 33)
        mw = ident.mouth_width * c.mouth_width
        mu, mv = 0.5, MOUTH_LINE_V
        center = mv + c.corner_dv * x**2
        bulge = 1 - x**2
        asym = c.mouth_asym * np.clip(x, 0, 1) * bulge * 2
        up_in = center - (0.25 * c.mouth_open + c.upper_lip_up) * bulge - asym
        lo_in = center + 0.75 * c.mouth_open * bulge
        lt = ident.lip_thickness * c.lip_thickness
        up_out = up_in - lt * np.sqrt(bulge) * 0.9 - 0.002
        lo_out = lo_in + lt * np.sqrt(bulge) * 1.1 + 0.002
        up_out = np.maximum(up_out, LIP_TOP_MIN_V)
        uu = mu + mw * x
        paint(self._mask([self._pts(np.r_[uu, uu[::-1]], np.r_[up_out, lo_out[::-1]])]), ident.lip_rgb, 0.0)
        opening = np.maximum(lo_in - up_in, 0)
        if opening.max() > 0.006:
            inner = self._mask([self._pts(np.r_[uu, uu[::-1]], np.r_[up_in, lo_in[::-1]])])
            paint(inner, (0.12, 0.04, 0.05), 0.0)
            if c.teeth > 0.05:
                teeth_lo = up_in + np.minimum(opening, 0.03 + 0.2 * opening) * 0.9
                teeth = self._mask([self._pts(np.r_[uu, uu[::-1]], np.r_[up_in, teeth_lo[::-1]])]) * inner
                paint(teeth * min(1.0, c.teeth), (0.9, 0.88, 0.82), 0.0)
        else:
            seam = self._pts(np.r_[uu, uu[::-1]], np.r_[up_in - 0.003, lo_in[::-1] + 0.003])
            paint(self._mask([seam]), np.asarray(ident.lip_rgb) * 0.45, 0.0)


def render_background(identity: Identity, width: int, height: int) -> np.ndarray:
    """World-fixed room background (float32 RGB reflectance): a wall gradient and a few soft objects."""
    rng = np.random.default_rng(identity.background_seed)
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(15, 90), rng.uniform(110, 220)]]], dtype=np.uint8)
    wall = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0
    ramp = np.linspace(1.08, 0.9, height, dtype=np.float32)[:, None, None]
    bg = np.ones((height, width, 3), np.float32) * wall * ramp
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 2)), y0 + int(rng.integers(height // 8, height // 2))
        col = rng.uniform(0.15, 0.85, 3).astype(np.float32)
        cv2.rectangle(bg, (x0, y0), (x1, y1), col.tolist(), -1)
    return cv2.GaussianBlur(bg, (0, 0), sigmaX=max(width / 128.0, 0.8))


def region_is_skin(skin_mask: np.ndarray, box: np.ndarray, threshold: float = 0.999) -> dict[str, bool]:
    """Whether each ARCHITECTURE ROI (pixel rows/cols as the reader rounds them) is all skin in skin_mask."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    out = {}
    for name, (fx0, fx1, fy0, fy1) in ROI_REGIONS.items():
        c0, c1 = int(round(x0 + fx0 * bw)), int(round(x0 + fx1 * bw))
        r0, r1 = int(round(y0 + fy0 * bh)), int(round(y0 + fy1 * bh))
        patch = skin_mask[max(r0, 0) : r1, max(c0, 0) : c1]
        out[name] = bool(patch.size > 0 and patch.min() >= threshold)
    return out


@dataclass(frozen=True)
class Pose:
    """Head pose relative to the canonical render: translation (px), in-plane rotation (deg), scale."""

    tx: float = 0.0
    ty: float = 0.0
    rot_deg: float = 0.0
    scale: float = 1.0

    def matrix(self, center: np.ndarray) -> np.ndarray:
        m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), self.rot_deg, self.scale)
        m[:, 2] += (self.tx, self.ty)
        return m

    def box(self, canonical_box: np.ndarray) -> np.ndarray:
        """Face box following the head (centre translated, size scaled; axis-aligned like a detector's box)."""
        cx = (canonical_box[0] + canonical_box[2]) / 2 + self.tx
        cy = (canonical_box[1] + canonical_box[3]) / 2 + self.ty
        hw = (canonical_box[2] - canonical_box[0]) / 2 * self.scale
        hh = (canonical_box[3] - canonical_box[1]) / 2 * self.scale
        return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def warp_layers(layers: Layers, renderer: FaceRenderer, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Face and skin layers in the posed frame."""
    center = (renderer.box[:2] + renderer.box[2:]) / 2
    m = pose.matrix(center)
    size = (renderer.width, renderer.height)
    face = cv2.warpAffine(layers.face, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    skin = cv2.warpAffine(layers.skin, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return face, skin


def posed_skin_mask(layers: Layers, renderer: FaceRenderer, pose: Pose) -> np.ndarray:
    center = (renderer.box[:2] + renderer.box[2:]) / 2
    return cv2.warpAffine(
        layers.skin_mask, pose.matrix(center), (renderer.width, renderer.height), flags=cv2.INTER_LINEAR
    )


def compose_frame(
    face: np.ndarray,
    skin: np.ndarray,
    background: np.ndarray,
    light_rgb: np.ndarray,
    gradient: np.ndarray,
    pulse_rel_rgb: np.ndarray,
    specular: float,
    noise: np.ndarray | None,
    shot_noise: float,
    read_noise: float,
    exposure: np.ndarray | float | None = None,
) -> np.ndarray:
    """One frame in 8-bit units (float) before quantisation; noise (standard normal [H, W, 3]) is optional.

    pulse_rel_rgb is the relative reflectance change per channel at this instant (negative when blood volume
    is up); it multiplies the skin albedo only. Shot-noise variance grows with the signal (shot_noise * value),
    read noise is constant; both are added before 8-bit quantisation, as in a camera.
    exposure: the camera's gain for this frame (a scalar, or [3] per channel with white balance), applied to the
    light before the noise (`AutoExposure.gain`); None (default) leaves the frame exactly as without it.
    """
    alpha = face[..., 3:4]
    refl = face[..., :3] + (1.0 - alpha) * background + skin[..., :3] * pulse_rel_rgb
    value = 255.0 * (light_rgb * gradient) * (refl + specular * skin[..., 3:4])
    if exposure is not None:
        value = value * np.asarray(exposure, dtype=np.float32)
    if noise is not None:
        sigma = np.sqrt(shot_noise * np.maximum(value, 0.0) + read_noise**2)
        value = value + sigma * noise
    return value


def quantize(value: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(value), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Camera realism options (all off by default; synthetic.py decides when to use them)
# ---------------------------------------------------------------------------------------------------------------


def skin_texture_map(identity: Identity, width: int, height: int, strength: float) -> np.ndarray:
    """Per-subject skin texture in the canonical pose: a multiplicative albedo map [H, W, 3] around 1.

    Pores and fine wrinkles (white noise blurred over 0.6 px, at the frame's pixel scale) plus blotches and
    freckles (blurred over 2.5 px), relative std `strength` in green (e.g. 0.05-0.15), a little stronger in blue
    and weaker in red, as melanin and haemoglobin spots absorb more at short wavelengths. Drawn from the
    subject's own seed, so every session of a subject shows the same skin. It moves with the head (it is warped
    with the face layers), so the ROI cells see it shift as the head moves: the motion artefact that a smooth
    synthetic skin lacks.
    """
    if strength < 0:
        raise ValueError(f"skin_texture_map: strength must be >= 0, got {strength}")
    rng = np.random.default_rng([identity.background_seed, 7])
    fine = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 0.6)
    blotch = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 2.5)
    field = fine / max(float(fine.std()), 1e-6) + 0.7 * blotch / max(float(blotch.std()), 1e-6)
    field = field / max(float(field.std()), 1e-6)
    channel = np.array([0.7, 1.0, 1.2], np.float32)
    return np.clip(1.0 + strength * field[..., None] * channel, 0.2, 2.0).astype(np.float32)


class AutoExposure:
    """A webcam's auto-exposure (and optional auto white balance) loop: it meters each frame and moves the gain
    of the following frames towards a target mean level.

    Exposure: metered on the frame's mean (8-bit units, all channels), the error in EV, log2(target / mean), is
    followed by a first-order loop with time constant `time_constant_s`, only while the error exceeds
    `deadband_ev` (so the camera does not hunt), and the applied exposure moves in steps of `step_ev` (sensor
    gain and exposure time are discrete): slow drifts of the scene are cancelled with a lag and show as small
    brightness steps. White balance (`white_balance_s` not None): per-channel gains that make the frame's mean
    grey (grey-world), followed with their own, slower time constant. Both react to the whole frame, whose
    brightness changes with lighting drifts and head motion; the pulse (a 0.3 % change on part of the frame) is
    far below what they follow within a beat.

    The first `update` converges at once (a camera that has been running): gains start where the first frame
    asks for. Use `gain` for frame i's `compose_frame(..., exposure=...)`, then `update(frame i's value)`.
    """

    def __init__(
        self,
        fps: float,
        target: float = 110.0,
        time_constant_s: float = 0.7,
        deadband_ev: float = 0.05,
        step_ev: float = 1.0 / 32.0,
        white_balance_s: float | None = None,
    ) -> None:
        if fps <= 0 or not 0 < target < 255 or time_constant_s <= 0 or deadband_ev < 0 or step_ev < 0:
            raise ValueError(
                "AutoExposure: need fps > 0, 0 < target < 255, time_constant_s > 0, deadband_ev >= 0 and "
                f"step_ev >= 0, got {fps}, {target}, {time_constant_s}, {deadband_ev}, {step_ev}"
            )
        if white_balance_s is not None and white_balance_s <= 0:
            raise ValueError(f"AutoExposure: white_balance_s must be > 0 or None, got {white_balance_s}")
        self.target = float(target)
        self.deadband_ev = float(deadband_ev)
        self.step_ev = float(step_ev)
        self._alpha = 1.0 - float(np.exp(-1.0 / (time_constant_s * fps)))
        self._wb_alpha = None if white_balance_s is None else 1.0 - float(np.exp(-1.0 / (white_balance_s * fps)))
        self._ev = 0.0  # the loop's continuous state
        self._wb = np.ones(3, np.float64)  # per-channel white-balance gains (mean 1)
        self._started = False

    @property
    def exposure_ev(self) -> float:
        """The applied exposure in EV (the loop's state rounded to `step_ev`)."""
        return float(np.round(self._ev / self.step_ev) * self.step_ev) if self.step_ev > 0 else self._ev

    @property
    def gain(self) -> np.ndarray:
        """The gain for the next frame, float32 [3] (equal in all channels without white balance)."""
        return (2.0**self.exposure_ev * self._wb).astype(np.float32)

    def update(self, value: np.ndarray) -> None:
        """Meter one frame (float [H, W, 3] in 8-bit units, taken with the current `gain`)."""
        if value.ndim != 3 or value.shape[2] != 3:
            raise ValueError(f"AutoExposure.update: expected a frame [H, W, 3], got {value.shape}")
        channel_means = np.maximum(value.reshape(-1, 3).mean(axis=0).astype(np.float64), 1e-3)
        error_ev = float(np.log2(self.target / channel_means.mean()))
        if self._wb_alpha is not None:
            desired = self._wb / (channel_means / channel_means.mean())
            desired = desired / desired.mean()
            self._wb = self._wb + (self._wb_alpha if self._started else 1.0) * (desired - self._wb)
        if not self._started:
            self._ev += error_ev
            self._started = True
        elif abs(error_ev) > self.deadband_ev:
            self._ev += self._alpha * error_ev


def head_motion_bursts(
    n_frames: int, fps: float, width: int, rng: np.random.Generator, per_minute: float = 6.0, amplitude: float = 1.0
) -> np.ndarray:
    """Occasional quick head movements to add to a session's smooth pose track: [n_frames, 4] offsets of
    (tx px, ty px, rotation deg, scale - 1).

    Bursts arrive as a Poisson process (`per_minute` on average); each is a turn or nod lasting 0.3-1.2 s
    (raised-cosine out and back) of up to 6 % of the frame width sideways, 4 % up/down, 6 degrees in-plane and
    4 % scale (leaning in), times `amplitude`; the spectrum of such a burst reaches into the pulse band, as
    talking and looking around do in real webcam video, unlike the smooth drift the default scene has.
    """
    if n_frames < 1 or fps <= 0 or width <= 0 or per_minute < 0 or amplitude < 0:
        raise ValueError(
            f"head_motion_bursts: need n_frames >= 1, fps > 0, width > 0, per_minute >= 0, amplitude >= 0, got "
            f"{n_frames}, {fps}, {width}, {per_minute}, {amplitude}"
        )
    out = np.zeros((n_frames, 4))
    duration_s = n_frames / fps
    n_bursts = rng.poisson(per_minute * duration_s / 60.0)
    t = np.arange(n_frames) / fps
    top = np.array([0.06 * width, 0.04 * width, 6.0, 0.04]) * amplitude
    for _ in range(n_bursts):
        start, length = rng.uniform(-0.5, duration_s), rng.uniform(0.3, 1.2)
        x = (t - start) / length
        shape = np.where((x > 0) & (x < 1), 0.5 * (1 - np.cos(2 * np.pi * np.clip(x, 0, 1))), 0.0)
        out += shape[:, None] * rng.uniform(-1.0, 1.0, 4) * top
    return out


def jitter_face_boxes(boxes: np.ndarray, rng: np.random.Generator, sigma: float = 0.02) -> np.ndarray:
    """Face boxes [n, 4] (x0, y0, x1, y1) as a face detector/tracker reports them: the exact box with each
    edge moved by a random amount, relative std `sigma` of the box size, correlated over about 3 frames (a
    tracker smooths), so the ROI cells slide over the skin from frame to frame as they do on real video."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"jitter_face_boxes: expected boxes [n, 4], got {boxes.shape}")
    if sigma < 0:
        raise ValueError(f"jitter_face_boxes: sigma must be >= 0, got {sigma}")
    n = len(boxes)
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)  # w, h, w, h
    noise = rng.standard_normal((n + 12, 4))
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    smooth = np.stack([np.convolve(noise[:, k], kernel / np.linalg.norm(kernel), mode="valid") for k in range(4)], 1)
    return boxes + sigma * size * smooth[:n]
