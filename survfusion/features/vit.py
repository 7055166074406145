"""The tile encoders' networks, with their references' parameter names: one Vision Transformer
that covers every registered encoder, and CONCH v1.5's attention-pooled tower around it.

``VisionTransformer`` is timm's ``VisionTransformer`` for the options the registry uses
(``survfusion.features.encoders``): patch embedding (a ``patch`` x ``patch`` stride-``patch``
convolution), a class token, ``reg_tokens`` register tokens (Virchow2, UNI2-h, H-optimus), learned
position embeddings over class + registers + patches, or over the patches alone
(``no_embed_class``: added before the prefix tokens are concatenated), ``depth`` pre-norm blocks
``x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))`` (LayerNorm eps 1e-6, LayerScale when
``init_values`` is set), a final LayerNorm, then the pooling of the entry:

- ``cls``: the class token (UNI, UNI2-h, H-optimus, Prov-GigaPath, Phikon-v2);
- ``cls+mean``: the class token beside the mean of the patch tokens, registers excluded (Virchow2);
- ``tokens``: every token (the trunk of ``AttentionPooledViT``).

The MLP is ``gelu`` (``fc2(gelu(fc1 x))``, exact GELU) or ``swiglu``: timm's ``SwiGLUPacked``, one
``fc1`` whose output halves are ``a, b``, then ``fc2(silu(a) * b)`` with ``fc2`` taking half of
``int(dim * mlp_ratio)``. timm builds the SwiGLU entries only with ``act_layer=SiLU`` given: its
block hands its own activation (GELU by default) to the MLP, and the network runs the wrong
activation with no error. Here the activation belongs to the MLP kind, so that trap does not exist.

Why not timm itself: importing timm pulls in torchvision and torch._dynamo, 2 s of every container
start on a 2-core machine (docs/BENCHMARKS.md), for a network of 150 lines. ``test_vit.py`` proves,
for every registered encoder, the same state-dict keys and shapes as the reference build at full
size (on the meta device) and the same embeddings from the same random weights (reduced depth).

Inputs must be ``img_size`` square (the encoder resizes or crops tiles to it). Position embeddings
stored for another grid (``pos_grid``; CONCH v1.5 stores 14 x 14 and runs at 28 x 28) are resampled
as the reference does at every forward: bicubic, by the scale factor ``(grid + 0.1) / pos_grid``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOLS = ("cls", "cls+mean", "tokens")
MLPS = ("gelu", "swiglu")


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, patches, dim)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax accumulates in fp32 in fp16/bf16 kernels
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``gelu``: fc1 -> GELU -> fc2. ``swiglu``: timm's SwiGLUPacked (fc1 -> silu(a) * b -> fc2)."""

    def __init__(self, dim: int, hidden: int, kind: str) -> None:
        super().__init__()
        if kind not in MLPS:
            raise ValueError(f"mlp: expected one of {MLPS}, got {kind!r}")
        self.swiglu = kind == "swiglu"
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden // 2 if self.swiglu else hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        if self.swiglu:
            a, b = x.chunk(2, dim=-1)
            return self.fc2(F.silu(a) * b)
        return self.fc2(F.gelu(x))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, init_values: float | None, mlp: str) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), mlp)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """``(B, 3, img_size, img_size)`` normalised images -> ``(B, width)`` embeddings (``pool``)."""

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        dim: int = 1024,
        depth: int = 24,
        heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float | None = None,
        mlp: str = "gelu",
        reg_tokens: int = 0,
        no_embed_class: bool = False,
        pool: str = "cls",
        pos_grid: int | None = None,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")
        self.img_size, self.pool, self.n_reg, self.no_embed_class = img_size, pool, reg_tokens, no_embed_class
        self.grid = img_size // patch_size
        self.pos_grid = pos_grid or self.grid
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, dim)) if reg_tokens else None
        n_pos = self.pos_grid**2 + (0 if no_embed_class else 1 + reg_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, init_values, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos(self) -> torch.Tensor:
        """The position embeddings for ``img_size`` (resampled as CONCH v1.5's reference does when
        stored for another grid)."""
        if self.pos_grid == self.grid:
            return self.pos_embed
        n_prefix = 0 if self.no_embed_class else 1 + self.n_reg
        prefix, patches = self.pos_embed[:, :n_prefix], self.pos_embed[:, n_prefix:]
        d, g = patches.shape[-1], self.pos_grid
        scale = (self.grid + 0.1) / g  # DINO's offset: the output size floors to exactly self.grid
        patches = F.interpolate(
            patches.reshape(1, g, g, d).permute(0, 3, 1, 2), scale_factor=(scale, scale), mode="bicubic"
        )
        return torch.cat([prefix, patches.permute(0, 2, 3, 1).reshape(1, -1, d)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected {self.img_size}x{self.img_size} inputs, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)
        b = x.shape[0]
        prefix = [self.cls_token.expand(b, -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(b, -1, -1))
        if self.no_embed_class:
            x = torch.cat([*prefix, x + self._pos()], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + self._pos()
        x = self.norm(self.blocks(x))
        if self.pool == "tokens":
            return x
        if self.pool == "cls+mean":
            return torch.cat([x[:, 0], x[:, 1 + self.n_reg :].mean(dim=1)], dim=-1)
        return x[:, 0]


class AttentionalPooler(nn.Module):
    """One learned query attends over the trunk's tokens (CoCa's pooler, as CONCH builds it):
    ``to_out(softmax(q k^T / sqrt(dh)) v)`` with ``q = to_q(ln_q(query))``, ``k, v = to_kv(ln_k(x))``,
    no biases, LayerNorm eps 1e-5 (torch's default, as the reference)."""

    def __init__(self, dim: int, context_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.zeros(1, dim))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, dim * 2, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h = self.heads
        q = self.to_q(self.ln_q(self.query))  # (1, dim)
        k, v = self.to_kv(self.ln_k(x)).chunk(2, dim=-1)
        dh = q.shape[-1] // h
        q = q.reshape(1, 1, h, dh).transpose(1, 2).expand(b, -1, -1, -1)
        k, v = (t.reshape(b, n, h, dh).transpose(1, 2) for t in (k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # (b, h, 1, dh)
        return self.to_out(out.transpose(1, 2).reshape(b, h * dh))


class AttentionPooledViT(nn.Module):
    """CONCH v1.5's vision tower: ``ln_contrast(attn_pool_contrast(trunk tokens))``; the parameter
    names are the reference checkpoint's (``trunk.*``, ``attn_pool_contrast.*``, ``ln_contrast.*``)."""

    def __init__(self, *, pool_dim: int, pool_heads: int, **trunk) -> None:
        super().__init__()
        self.trunk = VisionTransformer(**trunk, pool="tokens")
        self.img_size = self.trunk.img_size
        self.attn_pool_contrast = AttentionalPooler(pool_dim, trunk.get("dim", 1024), pool_heads)
        self.ln_contrast = nn.LayerNorm(pool_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_contrast(self.attn_pool_contrast(self.trunk(x)))
