"""Cardiac and respiratory models for the synthetic corpus: RR-interval process, ECG and pulse (PPG) waves.

RR intervals (the tachogram) are a mean interval plus two narrow-band Gaussian processes, one around the LF
Mayer-wave frequency (~0.1 Hz) and one at the respiratory frequency (HF, respiratory sinus arrhythmia), plus a
small white beat-to-beat term; this is the bimodal-spectrum tachogram of McSharry et al. (2003, IEEE TBME 50:289,
"ECGSYN"), re-derived here. The band powers are not free parameters: they are solved from a target RMSSD and a
target LF/HF power ratio (`hrv_band_sigmas_s`), so that stress levels can be specified in the field's own terms.

The ECG is a sum of Gaussian waves (P, Q, R, S, T) placed around each R time, the morphology idea of ECGSYN
written in the time domain (QT scaled with sqrt(RR), Bazett), with respiratory baseline wander, amplitude
modulation (ECG-derived respiration) and noise. The pulse wave arrives one pulse-transit time (PTT) after each R
peak and has a systolic peak and a reflected diastolic wave, which leaves a dicrotic notch between them.

`load_pulse_source` replaces the model's beat times with those of a real recording (a one-column PPG CSV or a
WFDB record with an ECG channel); its beats come from heartpy (PPG) or `stress_lightning.signals.ecg`
(`detect_r_peaks`, ECG).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stress_lightning.data.errors import CorpusError
from stress_lightning.signals.ecg import detect_r_peaks

# Respiratory band (HF) and Mayer-wave band (LF) centres used by the tachogram, Task Force (1996) bands.
HF_BAND_HZ = (0.15, 0.40)
LF_BAND_HZ = (0.04, 0.15)


@dataclass(frozen=True)
class CardiacParams:
    """Parameters of one session's cardiac/respiratory process."""

    mean_hr_bpm: float
    rmssd_ms: float  # target RMSSD of the RR series
    lf_hf_ratio: float  # target LF/HF power ratio of the RR series
    resp_rate_hz: float  # respiration (HF peak) frequency
    lf_freq_hz: float = 0.1  # Mayer wave frequency
    white_rr_ms: float = 3.0  # beat-to-beat white jitter of RR
    ptt_s: float = 0.22  # R peak to pulse foot

    def __post_init__(self) -> None:
        if not 30.0 <= self.mean_hr_bpm <= 200.0:
            raise ValueError(f"mean_hr_bpm must be in [30, 200], got {self.mean_hr_bpm}")
        if not HF_BAND_HZ[0] <= self.resp_rate_hz <= HF_BAND_HZ[1]:
            raise ValueError(f"resp_rate_hz must lie in the HF band {HF_BAND_HZ}, got {self.resp_rate_hz}")
        if not LF_BAND_HZ[0] <= self.lf_freq_hz <= LF_BAND_HZ[1]:
            raise ValueError(f"lf_freq_hz must lie in the LF band {LF_BAND_HZ}, got {self.lf_freq_hz}")
        if self.rmssd_ms <= np.sqrt(2.0) * self.white_rr_ms:
            raise ValueError(f"rmssd_ms {self.rmssd_ms} must exceed sqrt(2) * white_rr_ms {self.white_rr_ms}")


def hrv_band_sigmas_s(params: CardiacParams) -> tuple[float, float]:
    """Standard deviations (s) of the LF and HF tachogram components that give the target RMSSD and LF/HF.

    A narrow-band component of frequency f and std s sampled once per beat (interval RR) contributes
    2 s^2 (1 - cos(2 pi f RR)) to the mean squared successive difference; white jitter w contributes 2 w^2.
    """
    rr_s = 60.0 / params.mean_hr_bpm
    g_hf = 2.0 * (1.0 - np.cos(2.0 * np.pi * params.resp_rate_hz * rr_s))
    g_lf = 2.0 * (1.0 - np.cos(2.0 * np.pi * params.lf_freq_hz * rr_s))
    target = (params.rmssd_ms / 1000.0) ** 2 - 2.0 * (params.white_rr_ms / 1000.0) ** 2
    sigma_hf = np.sqrt(target / (g_hf + params.lf_hf_ratio * g_lf))
    return float(np.sqrt(params.lf_hf_ratio) * sigma_hf), float(sigma_hf)


def _narrowband(n: int, fs_hz: float, f0_hz: float, bw_hz: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian process with a Gaussian spectral peak at f0 (random-phase Fourier synthesis)."""
    freqs = np.fft.rfftfreq(n, 1.0 / fs_hz)
    amp = np.exp(-((freqs - f0_hz) ** 2) / (4.0 * bw_hz**2))
    spectrum = amp * np.exp(2j * np.pi * rng.random(len(freqs)))
    x = np.fft.irfft(spectrum, n)
    return x / x.std()


@dataclass(frozen=True)
class CardiacSeries:
    """Beat times and the respiration signal of one session (times in seconds from the first video frame)."""

    r_times_s: np.ndarray  # R peaks, including some before 0 and after the end so waves are complete
    resp_t_s: np.ndarray  # respiration sampling grid
    resp: np.ndarray  # respiration, unit std, positive = inspiration

    def respiration(self, t_s: np.ndarray) -> np.ndarray:
        return np.interp(t_s, self.resp_t_s, self.resp)

    def rr_inside_s(self, t0_s: float, t1_s: float) -> np.ndarray:
        beats = self.r_times_s[(self.r_times_s >= t0_s) & (self.r_times_s <= t1_s)]
        return np.diff(beats)

    def mean_hr_bpm(self, t0_s: float, t1_s: float) -> float:
        """Mean HR over the beats inside [t0, t1] (beats-1 intervals over their span), as an ECG reader sees it."""
        rr = self.rr_inside_s(t0_s, t1_s)
        if len(rr) < 1:
            raise ValueError(f"fewer than 2 beats in [{t0_s}, {t1_s}] s")
        return float(60.0 / rr.mean())


def simulate_beats(
    params: CardiacParams, duration_s: float, rng: np.random.Generator, pre_roll_s: float = 3.0
) -> CardiacSeries:
    """RR-interval process -> R-peak times over [-pre_roll, duration + 2 s]."""
    grid_hz = 4.0
    span_s = duration_s + pre_roll_s + 4.0
    # Synthesise at least 120 s so the narrow bands are resolved even for short sessions.
    n = int(np.ceil(max(span_s, 120.0) * grid_hz))
    t = np.arange(n) / grid_hz - pre_roll_s
    sigma_lf, sigma_hf = hrv_band_sigmas_s(params)
    lf = _narrowband(n, grid_hz, params.lf_freq_hz, 0.01, rng)
    # Respiration is a narrow-band oscillation; RSA shortens RR during inspiration, so HF = -sigma * resp.
    resp = _narrowband(n, grid_hz, params.resp_rate_hz, 0.01, rng)
    rr_curve = 60.0 / params.mean_hr_bpm + sigma_lf * lf - sigma_hf * resp
    white = params.white_rr_ms / 1000.0
    times = [-pre_roll_s]
    while times[-1] < duration_s + 2.0:
        rr = np.interp(times[-1], t, rr_curve) + white * rng.standard_normal()
        times.append(times[-1] + max(rr, 0.25))
    return CardiacSeries(np.asarray(times), t, resp)


@dataclass(frozen=True)
class EcgMorphology:
    """Per-subject ECG wave amplitudes (mV) and widths (s) at RR = 1 s."""

    amp_mv: tuple[float, float, float, float, float]  # P, Q, R, S, T
    width_s: tuple[float, float, float, float, float]
    offset_s: tuple[float, float, float, float, float]  # relative to R at RR = 1 s

    @staticmethod
    def sample(rng: np.random.Generator) -> EcgMorphology:
        jitter = rng.uniform(0.8, 1.25, 5)
        amp = np.array([0.12, -0.10, 1.1, -0.25, 0.30]) * jitter
        width = np.array([0.025, 0.010, 0.011, 0.011, 0.055]) * rng.uniform(0.9, 1.1, 5)
        offset = np.array([-0.20, -0.032, 0.0, 0.034, 0.30]) * rng.uniform(0.92, 1.08, 5)
        offset[2] = 0.0
        return EcgMorphology(tuple(amp), tuple(width), tuple(offset))  # type: ignore[arg-type]


def synthesize_ecg(
    series: CardiacSeries,
    morphology: EcgMorphology,
    fs_hz: float,
    n_samples: int,
    rng: np.random.Generator,
    noise_mv: float = 0.012,
    wander_mv: float = 0.06,
) -> np.ndarray:
    """ECG (mV) at fs over n_samples starting at t = 0, built from the beat times."""
    t = np.arange(n_samples) / fs_hz
    ecg = np.zeros(n_samples)
    r = series.r_times_s
    rr_prev = np.diff(r, prepend=r[0] - (r[1] - r[0]))
    amp = np.asarray(morphology.amp_mv)
    width = np.asarray(morphology.width_s)
    offset = np.asarray(morphology.offset_s)
    resp_at_beats = series.respiration(r)
    for k, (rk, rrk) in enumerate(zip(r, rr_prev, strict=True)):
        scale = np.sqrt(rrk)  # Bazett: QT (and T width) scale with sqrt(RR); QRS does not
        offs = offset.copy()
        offs[4] *= scale
        offs[0] = offset[0] * (0.7 + 0.3 * rrk)  # PR interval shortens a little at high HR
        wid = width.copy()
        wid[4] *= scale
        a = amp * (1.0 + 0.05 * resp_at_beats[k]) * (1.0 + 0.02 * rng.standard_normal())
        lo = np.searchsorted(t, rk - 0.45)
        hi = np.searchsorted(t, rk + 0.75)
        if hi <= lo:
            continue
        seg = t[lo:hi, None] - rk
        ecg[lo:hi] += (a * np.exp(-((seg - offs) ** 2) / (2.0 * wid**2))).sum(axis=1)
    drift_phase = rng.uniform(0, 2 * np.pi)
    ecg += wander_mv * (series.respiration(t) + 0.5 * np.sin(2 * np.pi * 0.05 * t + drift_phase))
    ecg += noise_mv * rng.standard_normal(n_samples)
    return ecg


def synthesize_pulse(
    r_times_s: np.ndarray, ptt_s: float, t_s: np.ndarray, resp: np.ndarray | None = None
) -> np.ndarray:
    """Blood-volume pulse (PPG-like, up = more blood) at times t, normalised to zero mean, peak-to-peak 1.

    Each beat's wave starts one PTT after its R peak: a systolic Gaussian peak ~0.12 s after the foot and a
    smaller, wider reflected (diastolic) wave whose delay grows with RR; the dip between them is the dicrotic notch.
    """
    pulse = np.zeros_like(t_s, dtype=np.float64)
    rr = np.diff(r_times_s, append=r_times_s[-1] + (r_times_s[-1] - r_times_s[-2]))
    for rk, rrk in zip(r_times_s, rr, strict=True):
        foot = rk + ptt_s
        tau = t_s - foot
        near = (tau > -0.2) & (tau < 1.4 * rrk + 0.3)
        if not near.any():
            continue
        tt = tau[near]
        systolic = np.exp(-((tt - 0.12) ** 2) / (2 * 0.045**2))
        diastolic = 0.45 * np.exp(-((tt - (0.16 + 0.22 * np.sqrt(rrk))) ** 2) / (2 * 0.075**2))
        pulse[near] += systolic + diastolic
    if resp is not None:
        pulse *= 1.0 + 0.08 * resp  # respiratory amplitude modulation of the PPG
    pulse -= pulse.mean()
    span = np.ptp(pulse)
    if span <= 0:
        raise ValueError("pulse wave is flat: no beats fall inside the requested times")
    return pulse / span


@dataclass(frozen=True)
class PulseSource:
    """Beat timing from a real recording.

    `r_times_s` are R peaks; `ecg_mv` (at `ecg_fs_hz`) is set when the source had a real ECG; `ppg`
    (at `ppg_fs_hz`) when it had a PPG, whose systolic peaks are `ppg_peak_times_s`.
    """

    path: Path
    duration_s: float
    r_times_s: np.ndarray | None = None
    ecg_mv: np.ndarray | None = None
    ecg_fs_hz: float | None = None
    ppg: np.ndarray | None = None
    ppg_fs_hz: float | None = None
    ppg_peak_times_s: np.ndarray | None = None


ECG_CHANNEL_NAMES = ("ii", "mlii", "i", "iii", "v", "v1", "v2", "v5", "ecg", "avr", "avl", "avf")


def load_pulse_source(path: str | Path, csv_fs_hz: float) -> PulseSource:
    """Read a real recording: a one-column PPG CSV (sampled at csv_fs_hz) or a WFDB record with an ECG channel.

    A WFDB record is given by its path without extension (`.../a103l`, next to `a103l.hea`).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: pulse source CSV not found")
        # CorpusError (a ValueError) for a file that is no usable PPG: the CLI reports it as bad input.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data": refused below
                ppg = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise CorpusError(path, f"pulse source must be a one-column numeric PPG CSV ({exc})") from exc
        if ppg.shape[1] != 1:
            raise CorpusError(path, f"pulse source CSV must have one column, found {ppg.shape[1]}")
        ppg = ppg[:, 0]
        if len(ppg) < 2 * csv_fs_hz or not np.isfinite(ppg).all():
            raise CorpusError(
                path, f"pulse source needs at least 2 s of finite samples at {csv_fs_hz:g} Hz, has {len(ppg)} samples"
            )
        # heartpy, not signals.ppg.detect_pulse_peaks: on heartpy's own data.csv the latter counts the dicrotic
        # wave as a second beat (~102 bpm instead of heartpy's 59 bpm).
        import heartpy
        from heartpy.exceptions import BadSignalWarning

        try:
            working, _ = heartpy.process(ppg, csv_fs_hz)
        except BadSignalWarning as exc:  # heartpy's "no usable pulse" (raised, despite its name)
            raise CorpusError(path, "heartpy finds no heartbeat in the PPG (no pulse, or too noisy)") from exc
        peaks = np.asarray(working["peaklist"], dtype=np.int64)
        if len(peaks) < 4:
            raise CorpusError(path, f"found only {len(peaks)} pulse peaks in the PPG")
        return PulseSource(path, len(ppg) / csv_fs_hz, ppg=ppg, ppg_fs_hz=csv_fs_hz, ppg_peak_times_s=peaks / csv_fs_hz)
    header = path.with_suffix(".hea")
    if not header.is_file():
        raise FileNotFoundError(f"{path}: pulse source is neither a .csv file nor a WFDB record ({header} missing)")
    import wfdb  # heavy import, only needed for this option

    record = wfdb.rdrecord(str(path))
    names = [n.lower() for n in record.sig_name]
    ecg_idx = [i for i, n in enumerate(names) if n in ECG_CHANNEL_NAMES]
    if not ecg_idx:
        raise ValueError(f"{path}: WFDB record has no ECG channel among {record.sig_name}")
    ecg = record.p_signal[:, ecg_idx[0]].astype(np.float64)
    bad = ~np.isfinite(ecg)
    if bad.all():
        raise ValueError(f"{path}: ECG channel {record.sig_name[ecg_idx[0]]} has no finite samples")
    if bad.any():  # gaps in PhysioNet records are NaN; bridge them so filtering works
        idx = np.arange(len(ecg))
        ecg[bad] = np.interp(idx[bad], idx[~bad], ecg[~bad])
    fs = float(record.fs)
    peaks = detect_r_peaks(ecg, fs)
    if len(peaks) < 4:
        raise ValueError(f"{path}: found only {len(peaks)} R peaks in channel {record.sig_name[ecg_idx[0]]}")
    return PulseSource(path, len(ecg) / fs, r_times_s=peaks / fs, ecg_mv=ecg, ecg_fs_hz=fs)
