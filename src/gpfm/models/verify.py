"""``gpfm models verify``: check a weights file against its registry entry and measure half-precision parity.

What a user gets, as a small JSON they can share:

* the file's SHA-256, and whether it matches the published checksum (where one is pinned) or the one they
  expected (``--sha256``);
* proof of a strict load (every key mapped, no key left over) and the checkpoint layout found;
* fp32 vs each half dtype the device runs (bf16 everywhere, fp16 on CUDA) on real tiles: median, 1st-percentile
  and minimum cosine of the embeddings, and whether the spec's gate passes (median ≥ 0.9995 and 1st percentile
  ≥ 0.999, spec "Precision");
* an output fingerprint: the tile set's SHA-256, each tile's embedding norm and the mean embedding, so two sites
  can compare (:func:`compare_fingerprints`) that the same file gives the same features on the same tiles.

The registry's ``half_precision_ok`` is NOT changed by this: a result with real weights is the evidence a
maintainer records in the encoder's spec (``half_precision_basis``) to make a half dtype its default.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from gpfm.errors import GpfmError
from gpfm.runtime import cpu_capability

#: the spec's parity gate (encoders-and-checkpoints "Precision")
MEDIAN_COSINE_MIN = 0.9995
P1_COSINE_MIN = 0.999
FINGERPRINT_COSINE_MIN = 0.999


class VerificationError(GpfmError):
    """The weights file does not match the checksum it must have."""


def _half_dtypes(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return (["bf16"] if torch.cuda.is_bf16_supported() else []) + ["fp16"]
    return ["bf16"]


def tile_set_sha256(tiles: Sequence[Image.Image]) -> str:
    """SHA-256 over the RGB pixels of the tiles, in order (identifies the tile set of a fingerprint)."""
    h = hashlib.sha256()
    for tile in tiles:
        rgb = np.asarray(tile.convert("RGB"))
        h.update(str(rgb.shape).encode())
        h.update(rgb.tobytes())
    return h.hexdigest()


def _embed(encoder: Any, batch: torch.Tensor, precision: str, batch_size: int = 16) -> torch.Tensor:
    encoder.precision = precision
    return torch.cat([encoder.embed(batch[i:i + batch_size]).float().cpu() for i in range(0, len(batch), batch_size)])


def verify_encoder(
    name: str,
    weights: str,
    tiles: Sequence[Image.Image],
    *,
    device: str | torch.device | None = "cpu",
    expected_sha256: str | None = None,
    tile_source: str = "",
) -> dict[str, Any]:
    """Strictly load ``weights`` into encoder ``name`` and measure it on ``tiles``; returns the report.

    Raises:
        VerificationError: ``expected_sha256`` is given and differs from the file's.
        CheckpointError: the file does not load strictly (the message names the keys), or it differs from the
            published checksum (see :func:`gpfm.models.create_encoder`).
    """
    from gpfm.models.factory import create_encoder

    if not tiles:
        raise GpfmError("no tiles to verify on; pass --tiles DIR with image files")
    encoder = create_encoder(name, weights=weights, device=device, precision="fp32", verbose=False)
    sha = encoder.weights_sha256
    if expected_sha256 and sha != expected_sha256.lower():
        raise VerificationError(f"{weights}: sha256 {sha} differs from the expected {expected_sha256}; "
                                "re-download the file or check which release it is")
    spec = encoder.spec
    pinned = [(fmt, algo, digest) for fmt, algo, digest in spec.weights.pinned if fmt == encoder.checkpoint_format]
    batch = torch.stack([encoder.transform(t) for t in tiles]).to(encoder.device)
    ref = _embed(encoder, batch, "fp32")
    parity: dict[str, Any] = {}
    for dtype in _half_dtypes(encoder.device):
        cos = torch.nn.functional.cosine_similarity(ref, _embed(encoder, batch, dtype), dim=-1).double().numpy()
        median, p1 = float(np.median(cos)), float(np.percentile(cos, 1))
        parity[dtype] = {"median_cosine": median, "p1_cosine": p1, "min_cosine": float(cos.min()),
                         "passes_gate": median >= MEDIAN_COSINE_MIN and p1 >= P1_COSINE_MIN}
    encoder.precision = "fp32"
    return {
        "encoder": spec.name,
        "weights": str(weights),
        "weights_sha256": sha,
        "random_weights": sha == "random",
        "checkpoint_format": encoder.checkpoint_format,
        "strict_load": True,
        "published_checksum": ({"algorithm": pinned[0][1], "digest": pinned[0][2], "matches": True} if pinned
                               else None),  # a mismatch never gets here: create_encoder refuses the file
        "expected_sha256_matches": None if not expected_sha256 else True,
        "embed_dim": int(ref.shape[1]),
        "tiles": {"n": len(tiles), "source": tile_source, "sha256": tile_set_sha256(tiles)},
        "parity_gate": {"median_cosine_min": MEDIAN_COSINE_MIN, "p1_cosine_min": P1_COSINE_MIN},
        "parity": parity,
        "spec_half_precision_ok": sorted(spec.half_precision_ok),
        "spec_half_precision_basis": spec.half_precision_basis,
        "fingerprint": {
            "tile_norms": [round(float(v), 5) for v in ref.norm(dim=-1)],
            "mean_embedding": [round(float(v), 6) for v in ref.mean(dim=0)],
        },
        "machine": {"device": str(encoder.device), "cpu_capability": cpu_capability(), "torch": torch.__version__,
                    "python": platform.python_version(),
                    "cuda": torch.cuda.get_device_name(0) if encoder.device.type == "cuda" else None},
    }


def compare_fingerprints(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Whether two verify reports show the same features.

    Same encoder and tile set, mean-embedding cosine ≥ 0.999 and tile norms within 0.5 %.
    """
    if ours["encoder"] != theirs["encoder"] or ours["tiles"]["sha256"] != theirs["tiles"]["sha256"]:
        return {"comparable": False, "reason": "different encoder or tile set", "match": False}
    a = np.asarray(ours["fingerprint"]["mean_embedding"])
    b = np.asarray(theirs["fingerprint"]["mean_embedding"])
    cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    na, nb = np.asarray(ours["fingerprint"]["tile_norms"]), np.asarray(theirs["fingerprint"]["tile_norms"])
    rel = float(np.max(np.abs(na - nb) / np.maximum(np.abs(nb), 1e-12)))
    return {"comparable": True, "mean_embedding_cosine": cosine, "max_relative_norm_difference": rel,
            "same_file": ours["weights_sha256"] == theirs["weights_sha256"],
            "match": cosine >= FINGERPRINT_COSINE_MIN and rel <= 5e-3}
