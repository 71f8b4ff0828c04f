"""Networks of the first-version Fuse4Seg (paper 001, Fig. 2-3): dual-stream decomposition
encoder, decoder, cross-attention fusion and :class:`FusionNetV1`.

Data flow for ``M = 2`` modalities (``s`` = ``downsample``, ``h = H / s``)::

    M_m (B, 1, H, W) -> Conv3x3 [-> Conv s x s stride s] -> shared Restormer blocks
        -> low-frequency branch: Transformer blocks (spatial "Lite Transformer")  (B, C, h, w)
        -> high-frequency branch: invertible affine couplings (exact inverse)     (B, C, h, w)
    reconstruction (pre-training):  D(M_m) = Decoder(low_m, high_m)                (B, 1, H, W)
    fusion:
        low_f  = Transformer block(low_1 + low_2)
        high_f = invertible coupling(high_1 + high_2)
        Phi(M_m) = Conv1x1(cat(low_m, high_m))                                     (B, C, h, w)
        A, attn  = CrossAttention(q = Phi(M1), k, v = Phi(M2))   attn (B, heads, N_q, N_k)
        a_low, a_high = Conv1x1(A).chunk(2)
        F = Decoder(low_f + a_low, high_f + a_high)                                (B, 1, H, W)

With ``cross_attention=False`` (the paper's "w/o cross-attention mechanism" ablation) the
``Phi`` projection, the cross-attention and its output projection do not exist and
``F = Decoder(low_f, high_f)``; the output then has no attention maps.

With ``recon_decoder=False`` (the paper's "w/o Reconstruction Decoder" ablation) the
segmentation network reads the fused embedding ``cat(low_f + a_low, high_f + a_high)``
(``seg_input``, (B, 2C, H, W), bilinearly upsampled from the encoder resolution) instead of
the decoded image; the decoder still decodes ``F`` from it for eq. 13 and for display, but the
segmentation loss no longer passes through it.

The decoder is the one trained in the pre-training stage (shared between reconstruction
and fusion). The cross-attention runs on a token grid of at most ``attn_grid^2`` tokens
(see :mod:`fuse4seg.v1.attention`). Layers come from :mod:`fuse4seg.models.layers`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fuse4seg.models.layers import InvertibleSequence, RestormerBlock, TransformerBlock

from .attention import CrossAttentionFusion

__all__ = [
    "FusionV1Config",
    "FusionV1Output",
    "ReconstructionOutput",
    "DecompositionEncoder",
    "DecoderV1",
    "FusionNetV1",
    "create_fusion_net_v1",
]


@dataclass
class FusionV1Config:
    """Size of :class:`FusionNetV1` (``dataclasses.asdict`` gives the ``model.pt`` config)."""

    arch: str = "v1"  # tells the model-file loader to build FusionNetV1
    num_modalities: int = 2  # the cross-attention fuses exactly two modalities
    dim: int = 32  # channels C of the encoder branches
    heads: int = 4  # heads of the Restormer / Transformer blocks and the cross-attention
    shared_blocks: int = 2  # shared Restormer blocks
    low_blocks: int = 1  # Transformer blocks of the low-frequency branch
    high_blocks: int = 3  # affine coupling nodes of the high-frequency branch
    decoder_blocks: int = 2  # Restormer blocks of the decoder
    downsample: int = 2  # encoder resolution H / downsample (1, 2 or 4)
    attn_grid: int = 16  # max token-grid side of the cross-attention and low-branch keys
    cross_attention: bool = True  # False: ablation "w/o cross-attention mechanism"
    recon_decoder: bool = True  # False: ablation "w/o Reconstruction Decoder" (seg on embedding)

    def validate(self) -> FusionV1Config:
        if self.arch != "v1":
            raise ValueError(f"FusionV1Config.arch must be 'v1', got {self.arch!r}")
        if self.num_modalities != 2:
            raise ValueError(f"FusionNetV1 fuses exactly 2 modalities, got {self.num_modalities}")
        for key in ("dim", "heads", "shared_blocks", "low_blocks", "high_blocks"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.decoder_blocks < 0 or self.attn_grid < 1:
            raise ValueError("decoder_blocks must be >= 0 and attn_grid >= 1")
        if self.dim % 2 or self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be even and divisible by heads ({self.heads})")
        if self.downsample not in (1, 2, 4):
            raise ValueError(f"downsample must be 1, 2 or 4, got {self.downsample}")
        return self


class FusionV1Output(NamedTuple):
    """``fused`` (B, 1, H, W) in [0, 1]; ``low`` / ``high`` (B, M, C, h, w);
    ``attention`` (B, heads, N_q, N_k), rows sum to one over keys; ``attention_grid``
    (g_h, g_w) with ``N_q = N_k = g_h * g_w`` (tokens in row-major order). Both ``None``
    for a network without cross-attention (``cross_attention=False``). ``seg_input``: what
    the segmentation network reads instead of ``fused`` (the fused embedding (B, 2C, H, W)
    with ``recon_decoder=False``), else ``None``."""

    fused: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    attention: torch.Tensor | None
    attention_grid: tuple[int, int] | None
    seg_input: torch.Tensor | None = None


class ReconstructionOutput(NamedTuple):
    """``recon`` (B, M, H, W) = D(M_m) per modality; ``low`` / ``high`` (B, M, C, h, w)."""

    recon: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


class DecompositionEncoder(nn.Module):
    """Dual-stream decomposition encoder for one modality, ``(B, 1, H, W) -> (low, high)``.

    Conv3x3 (1 -> C) [-> strided Conv to H/s] -> ``shared_blocks`` Restormer blocks, then
    the low-frequency branch (``low_blocks`` spatial Transformer blocks, keys/values pooled
    to ``attn_grid^2`` tokens) and the high-frequency branch (``high_blocks`` invertible
    affine couplings). Both outputs are ``(B, C, H/s, W/s)``.
    """

    def __init__(self, cfg: FusionV1Config) -> None:
        super().__init__()
        c, s = cfg.dim, cfg.downsample
        embed: list[nn.Module] = [nn.Conv2d(1, c, 3, padding=1, padding_mode="reflect")]
        if s > 1:
            embed += [nn.GELU(), nn.Conv2d(c, c, s, stride=s)]
        self.embed = nn.Sequential(*embed)
        self.shared = nn.Sequential(
            *[RestormerBlock(c, cfg.heads) for _ in range(cfg.shared_blocks)]
        )
        self.low_branch = nn.Sequential(
            *[TransformerBlock(c, cfg.heads, kv_size=cfg.attn_grid) for _ in range(cfg.low_blocks)]
        )
        self.high_branch = InvertibleSequence(c, cfg.high_blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, H, W) -> low, high (B, C, H/s, W/s)."""
        feat = self.shared(self.embed(x))
        return self.low_branch(feat), self.high_branch(feat)


class DecoderV1(nn.Module):
    """``(low, high)`` (B, C, h, w) -> image (B, 1, h * s, w * s) in [0, 1].

    cat -> Conv1x1 (2C -> C) -> ``decoder_blocks`` Restormer blocks [-> Conv3x3 to C s^2 ->
    PixelShuffle(s)] -> Conv3x3 -> LeakyReLU -> Conv3x3 -> sigmoid.
    """

    def __init__(self, cfg: FusionV1Config) -> None:
        super().__init__()
        c, s = cfg.dim, cfg.downsample
        self.reduce = nn.Conv2d(2 * c, c, 1)
        self.blocks = nn.Sequential(
            *[RestormerBlock(c, cfg.heads) for _ in range(cfg.decoder_blocks)]
        )
        up: list[nn.Module] = []
        if s > 1:
            up = [nn.Conv2d(c, c * s * s, 3, padding=1), nn.PixelShuffle(s)]
        self.up = nn.Sequential(*up)
        self.head = nn.Sequential(
            nn.Conv2d(c, c // 2, 3, padding=1, padding_mode="reflect"),
            nn.LeakyReLU(0.1),
            nn.Conv2d(c // 2, 1, 3, padding=1, padding_mode="reflect"),
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        x = self.reduce(torch.cat([low, high], dim=1))  # (B, C, h, w)
        x = self.up(self.blocks(x))  # (B, C, H, W)
        return torch.sigmoid(self.head(x))


class FusionNetV1(nn.Module):
    """First-version Fuse4Seg fusion network for two modalities (see the module docstring).

    ``forward(x (B, 2, H, W) in [0, 1]) -> FusionV1Output``; ``reconstruct(x (B, M, H, W))``
    for the pre-training stage. Any ``H, W`` works: inputs are reflect-padded to a multiple
    of ``downsample`` and the outputs cropped back.
    """

    def __init__(self, cfg: FusionV1Config | None = None, **overrides: Any) -> None:
        super().__init__()
        cfg = dataclasses.replace(cfg or FusionV1Config(), **overrides).validate()
        self.config = cfg
        c = cfg.dim
        self.encoder = DecompositionEncoder(cfg)
        self.decoder = DecoderV1(cfg)
        self.low_fuse = TransformerBlock(c, cfg.heads, kv_size=cfg.attn_grid)
        self.high_fuse = InvertibleSequence(c, 1)
        if cfg.cross_attention:  # absent otherwise: no parameters, no attribute
            self.embed_proj = nn.Conv2d(2 * c, c, 1)
            self.cross_attention = CrossAttentionFusion(c, cfg.heads, cfg.attn_grid)
            self.attn_out = nn.Conv2d(c, 2 * c, 1)

    @property
    def seg_channels(self) -> int:
        """Channels of the segmentation network's input: 1 (the fused image), or 2C (the
        fused embedding, ``recon_decoder=False``)."""
        return 1 if self.config.recon_decoder else 2 * self.config.dim

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FusionNetV1:
        """Rebuild from ``dataclasses.asdict(net.config)`` (unknown keys are errors)."""
        known = {f.name for f in dataclasses.fields(FusionV1Config)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown FusionNetV1 config key(s) {unknown}")
        return cls(FusionV1Config(**config))

    # --- helpers --------------------------------------------------------------------
    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        s = self.config.downsample
        h, w = x.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x, h, w

    def _encode_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, M, H, W) -> low, high (B, M, C, h, w); the encoder is shared by modalities."""
        b, m = x.shape[:2]
        low, high = self.encoder(x.reshape(b * m, 1, *x.shape[2:]))  # (B*M, C, h, w)
        return low.reshape(b, m, *low.shape[1:]), high.reshape(b, m, *high.shape[1:])

    @staticmethod
    def _check(x: torch.Tensor, m: int | None) -> None:
        if x.ndim != 4 or (m is not None and x.shape[1] != m):
            want = "M" if m is None else str(m)
            raise ValueError(f"expected input (B, {want}, H, W), got shape {tuple(x.shape)}")

    # --- public API -----------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, M, H, W) -> low, high (B, M, C, h, w) (H, W multiples of ``downsample``)."""
        self._check(x, None)
        return self._encode_all(x)

    def reconstruct(self, x: torch.Tensor) -> ReconstructionOutput:
        """Pre-training path: each modality through encoder and decoder separately.

        x (B, M, H, W) -> recon (B, M, H, W), low / high (B, M, C, h, w).
        """
        self._check(x, None)
        xp, h, w = self._pad(x)
        low, high = self._encode_all(xp)
        b, m = low.shape[:2]
        recon = self.decoder(low.flatten(0, 1), high.flatten(0, 1))  # (B*M, 1, H', W')
        recon = recon.reshape(b, m, *recon.shape[2:])[..., :h, :w]
        return ReconstructionOutput(recon, low, high)

    def forward(self, x: torch.Tensor) -> FusionV1Output:
        """x (B, 2, H, W) in [0, 1] -> :class:`FusionV1Output`."""
        self._check(x, self.config.num_modalities)
        xp, h, w = self._pad(x)
        low, high = self._encode_all(xp)  # (B, 2, C, h', w')
        low_f = self.low_fuse(low[:, 0] + low[:, 1])
        high_f = self.high_fuse(high[:, 0] + high[:, 1])
        attention, grid = None, None
        if self.config.cross_attention:
            phi1 = self.embed_proj(torch.cat([low[:, 0], high[:, 0]], dim=1))  # (B, C, h', w')
            phi2 = self.embed_proj(torch.cat([low[:, 1], high[:, 1]], dim=1))
            cross = self.cross_attention(phi1, phi2)
            a_low, a_high = self.attn_out(cross.fused).chunk(2, dim=1)
            low_f, high_f = low_f + a_low, high_f + a_high
            attention, grid = cross.attention, cross.grid
        fused = self.decoder(low_f, high_f)[..., :h, :w]
        seg_input = None
        if not self.config.recon_decoder:
            emb = torch.cat([low_f, high_f], dim=1)  # (B, 2C, h', w')
            if emb.shape[-2:] != xp.shape[-2:]:
                emb = F.interpolate(emb, size=xp.shape[-2:], mode="bilinear", align_corners=False)
            seg_input = emb[..., :h, :w]  # (B, 2C, H, W)
        return FusionV1Output(fused, low, high, attention, grid, seg_input)


def create_fusion_net_v1(**overrides: Any) -> FusionNetV1:
    """``FusionNetV1`` with :class:`FusionV1Config` defaults replaced by ``overrides``."""
    return FusionNetV1(FusionV1Config(), **overrides)
