"""Sequence protocols and their signal equations.

All five fastMRI brain contrasts (and the external set's T1TSE / T2TIRM) are spin-echo based:
T1-weighted (turbo) spin echo, T2-weighted turbo spin echo and inversion-recovery turbo spin echo
(FLAIR / TIRM "dark fluid"). The signal is the steady-state longitudinal magnetisation before
excitation times sin(flip) times transverse decay `exp(-TE/T2)`; it is *signed* (an inversion
recovery with negative Mz at TI gives a negative, i.e. pi-phase, signal, as in the raw data).

Phase evolution: in a spin echo static off-resonance is refocused at the spin-echo time. The phase
left at the k-space centre is `-2 pi df * tau`, where tau is the offset between the gradient-echo
(k = 0) and the spin-echo times (asymmetric readout, gradient delays); see `Protocol.phase_time_ms`.
For a gradient echo tau would be TE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from magphase.config.simulate import EXTERNAL_SEQUENCES, SIMULATED_SEQUENCES
from magphase.simulate.tissue import ALL_TISSUES, check_field_strength, relaxation

INTERNAL_SEQUENCES = SIMULATED_SEQUENCES
ALL_SIMULATED_SEQUENCES = INTERNAL_SEQUENCES + EXTERNAL_SEQUENCES

POST_CONTRAST_SEQUENCES = frozenset({"AXT1POST"})


@dataclass(frozen=True)
class Protocol:
    """Acquisition parameters that set contrast and phase.

    kind: "SE" (spin echo / turbo spin echo) or "IR" (inversion recovery turbo spin echo).
    tr_ms, te_ms, ti_ms (IR only), flip_deg (excitation flip angle).
    phase_time_ms: tau, the time over which static off-resonance leaves phase at the k-space
        centre (echo offset of the readout from the spin echo; = TE for a gradient echo).
    gadolinium: True after contrast injection.
    """

    sequence: str
    field_strength_t: float
    kind: str
    tr_ms: float
    te_ms: float
    ti_ms: float | None
    flip_deg: float
    phase_time_ms: float
    gadolinium: bool


# name -> field -> (kind, TR, TE, flip, tau). TI of IR protocols is computed to null CSF.
# Values are typical clinical protocols at each field strength (fastMRI headers: T1 SE TR 400-700
# TE ~10; T2 TSE TR 4000-6000 TE 90-110; FLAIR TR 9000-10000 TE 90-130 TI 2400-2600).
_PROTOCOL_TABLE: dict[str, dict[float, tuple[str, float, float, float, float]]] = {
    "AXT1": {1.5: ("SE", 500.0, 10.0, 90.0, 1.0), 3.0: ("SE", 650.0, 9.0, 90.0, 1.0)},
    "AXT1PRE": {1.5: ("SE", 500.0, 10.0, 90.0, 1.0), 3.0: ("SE", 650.0, 9.0, 90.0, 1.0)},
    "AXT1POST": {1.5: ("SE", 500.0, 10.0, 90.0, 1.0), 3.0: ("SE", 650.0, 9.0, 90.0, 1.0)},
    "AXT2": {1.5: ("SE", 4000.0, 100.0, 90.0, 1.5), 3.0: ("SE", 5000.0, 95.0, 90.0, 1.5)},
    "AXFLAIR": {1.5: ("IR", 9000.0, 110.0, 90.0, 1.5), 3.0: ("IR", 9000.0, 120.0, 90.0, 1.5)},
    "T1TSE": {1.5: ("SE", 480.0, 11.0, 90.0, 1.2), 3.0: ("SE", 700.0, 11.0, 90.0, 1.2)},
    "T2TIRM": {1.5: ("IR", 8000.0, 85.0, 90.0, 1.8), 3.0: ("IR", 8500.0, 90.0, 90.0, 1.8)},
}


def csf_null_inversion_time_ms(t1_ms: float, tr_ms: float) -> float:
    """TI at which an inversion recovery nulls a tissue of longitudinal relaxation `t1_ms`.

    From 1 - 2 exp(-TI/T1) + exp(-TR/T1) = 0:  TI = T1 ln(2 / (1 + exp(-TR/T1))).
    """
    return t1_ms * math.log(2.0 / (1.0 + math.exp(-tr_ms / t1_ms)))


def default_protocol(
    sequence: str,
    field_strength_t: float,
    tr_ms: float | None = None,
    te_ms: float | None = None,
    ti_ms: float | None = None,
    flip_deg: float | None = None,
) -> Protocol:
    """Protocol of `sequence` at `field_strength_t`; given parameters override the defaults.

    For IR sequences without `ti_ms`, TI nulls CSF for the actual TR (rounded to 10 ms, as a
    console would).
    """
    if sequence not in _PROTOCOL_TABLE:
        raise ValueError(f"sequence={sequence!r}: simulated sequences are {ALL_SIMULATED_SEQUENCES}")
    b0 = check_field_strength(field_strength_t)
    kind, tr0, te0, flip0, tau = _PROTOCOL_TABLE[sequence][b0]
    tr = tr0 if tr_ms is None else float(tr_ms)
    te = te0 if te_ms is None else float(te_ms)
    flip = flip0 if flip_deg is None else float(flip_deg)
    ti: float | None = None
    if kind == "IR":
        if ti_ms is None:
            t1_csf = ALL_TISSUES["csf"].relax[b0].t1_ms
            ti = round(csf_null_inversion_time_ms(t1_csf, tr) / 10.0) * 10.0
        else:
            ti = float(ti_ms)
    return Protocol(
        sequence=sequence,
        field_strength_t=b0,
        kind=kind,
        tr_ms=tr,
        te_ms=te,
        ti_ms=ti,
        flip_deg=flip,
        phase_time_ms=tau,
        gadolinium=sequence in POST_CONTRAST_SEQUENCES,
    )


#: Longest repetition time (ms) of a spin echo that is T1-weighted (short TR, short TE).
T1_WEIGHTED_MAX_TR_MS = 1200.0


def protocol_is_t1_weighted(protocol: Protocol) -> bool:
    """True for a T1-weighted acquisition: a spin echo with short TR (AXT1, AXT1PRE, AXT1POST, T1TSE)."""
    return protocol.kind == "SE" and protocol.tr_ms <= T1_WEIGHTED_MAX_TR_MS


def with_phase_time(protocol: Protocol, phase_time_ms: float) -> Protocol:
    """Copy of `protocol` with another phase-evolution time (scanner-specific echo offset)."""
    return replace(protocol, phase_time_ms=float(phase_time_ms))


def signal(protocol: Protocol, pd, t1_ms, t2_ms):
    """Signed steady-state signal of tissue(s) with (pd, t1_ms, t2_ms) under `protocol`.

    Inputs broadcast (floats or arrays). Returns float64 (array or scalar), in units of the fully
    relaxed signal of pure water (so values lie in about [-1, 1]).

    SE, excitation alpha, ideal 180 refocusing at TE/2:
        Mz = M0 (1 - 2 exp(-(TR - TE/2)/T1) + exp(-TR/T1)) / (1 + cos(alpha) exp(-TR/T1))
        S  = Mz sin(alpha) exp(-TE/T2)
    IR (180 - TI - 90 - TSE readout, Mz ~ 0 after the readout):
        S  = M0 (1 - 2 exp(-TI/T1) + exp(-TR/T1)) sin(alpha) exp(-TE/T2)
    """
    pd = np.asarray(pd, dtype=np.float64)
    t1 = np.maximum(np.asarray(t1_ms, dtype=np.float64), 1e-3)
    t2 = np.maximum(np.asarray(t2_ms, dtype=np.float64), 1e-3)
    alpha = math.radians(protocol.flip_deg)
    e1 = np.exp(-protocol.tr_ms / t1)
    if protocol.kind == "SE":
        mz = (1.0 - 2.0 * np.exp(-(protocol.tr_ms - protocol.te_ms / 2.0) / t1) + e1) / (
            1.0 + math.cos(alpha) * e1
        )
    elif protocol.kind == "IR":
        assert protocol.ti_ms is not None
        mz = 1.0 - 2.0 * np.exp(-protocol.ti_ms / t1) + e1
    else:
        raise ValueError(f"protocol.kind={protocol.kind!r}: expected 'SE' or 'IR'")
    return pd * mz * math.sin(alpha) * np.exp(-protocol.te_ms / t2)


def tissue_signal(protocol: Protocol, tissue: str, t2_extra_rate_s: float = 0.0) -> float:
    """Signal of a named tissue (`tissue.ALL_TISSUES`) under `protocol`, gadolinium included."""
    t = ALL_TISSUES[tissue]
    relax = relaxation(tissue, protocol.field_strength_t, t.gd_mm if protocol.gadolinium else None)
    t2 = 1.0 / (1.0 / relax.t2_ms + t2_extra_rate_s / 1000.0)
    return float(signal(protocol, t.pd, relax.t1_ms, t2))
