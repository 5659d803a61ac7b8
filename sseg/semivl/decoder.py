"""SemiVL's language-guided decoder (Sec. 3.4, Fig. 4) and the DeepLabV3+ head it replaces.

Language-guided decoder, per class concept k (shared weights, so any number of classes works)::

    cos(dense features, text embedding k)              [B, K, h, w]
    → 7x7 conv 1 → C  → residual ASPP (1x1, rates 6/12/18, image pooling; GroupNorm)   spatial reasoning
    → L transformer blocks across the K concepts at every position of the pool_size-pooled map, each
      token = [concept feature, projected text embedding] (text anchors), output upsampled and added
                                                                                    semantic reasoning
    → 2 upsampling blocks (2x2 transposed conv, skip from the backbone, two 3x3 GroupNorm convs)
    → 3x3 conv → 1 logit per concept

Sizes follow google-research/semivl's VLGHead (channels 128, text 512 → 128, up 64/32, skips 32/16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class ASPP(nn.Module):
    """1x1 + dilated 3x3 branches + image pooling, projected back; ``residual`` adds the input."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], norm=group_norm, residual: bool = True):
        super().__init__()
        self.branches = nn.ModuleList([nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), norm(cout), nn.ReLU(True))])
        for rate in rates:
            self.branches.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=rate, dilation=rate, bias=False),
                                               norm(cout), nn.ReLU(True)))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False),
                                  norm(cout), nn.ReLU(True))
        self.project = nn.Sequential(nn.Conv2d(cout * (len(rates) + 2), cout, 1, bias=False), norm(cout),
                                     nn.ReLU(True))
        self.residual = residual and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x) for b in self.branches]
        feats.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        y = self.project(torch.cat(feats, dim=1))
        return x + y if self.residual else y


class ClassTransformer(nn.Module):
    """Attention across the K concepts at each position of the pooled map, text embeddings as anchors."""

    def __init__(self, channels: int, text_channels: int, heads: int, pool_size: int):
        super().__init__()
        width = channels + text_channels
        self.pool_size = pool_size
        self.block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * channels, dropout=0.0,
                                                batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """x: [B, K, C, h, w]; text: [K, T] → [B, K, C, h, w]."""
        b, k, c, h, w = x.shape
        pooled = x.flatten(0, 1)
        if self.pool_size > 1:
            pooled = F.avg_pool2d(pooled, self.pool_size, ceil_mode=True)
        ph, pw = pooled.shape[-2:]
        tokens = pooled.view(b, k, c, ph, pw).permute(0, 3, 4, 1, 2).reshape(b * ph * pw, k, c)
        anchors = text.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        out = self.block(torch.cat([tokens, anchors], dim=-1))[..., :c]
        out = out.view(b, ph, pw, k, c).permute(0, 3, 4, 1, 2).reshape(b * k, c, ph, pw)
        if (ph, pw) != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return x + out.view(b, k, c, h, w)


class Up(nn.Module):
    def __init__(self, cin: int, cout: int, skip: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin - skip, kernel_size=2, stride=2)
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), group_norm(cout), nn.ReLU(True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), group_norm(cout), nn.ReLU(True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x: [B*K, cin, h, w]; skip: [B, skip, h', w'] (shared by the K concepts of an image)."""
        x = self.up(x)
        skip = F.interpolate(skip, size=x.shape[-2:], mode="bilinear", align_corners=True)
        k = x.shape[0] // skip.shape[0]
        skip = skip.repeat_interleave(k, dim=0)
        return self.conv(torch.cat([x, skip], dim=1))


class LanguageGuidedDecoder(nn.Module):
    def __init__(self, embed_dim: int, skip_in: tuple[int, int], channels: int = 128, conv1_kernel: int = 7,
                 aspp_rates: tuple[int, ...] = (6, 12, 18), layers: int = 2, heads: int = 4,
                 text_channels: int = 128, pool_size: int = 4, up_channels: tuple[int, int] = (64, 32),
                 skip_channels: tuple[int, int] = (32, 16)):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, conv1_kernel, padding=conv1_kernel // 2)
        self.aspp = ASPP(channels, channels, tuple(aspp_rates))
        self.text_proj = nn.Sequential(nn.Linear(embed_dim, text_channels), nn.ReLU())
        self.layers = nn.ModuleList(ClassTransformer(channels, text_channels, heads, pool_size)
                                    for _ in range(layers))
        self.skip_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())
                                       for cin, cout in zip(skip_in, skip_channels))
        self.up1 = Up(channels, up_channels[0], skip_channels[0])
        self.up2 = Up(up_channels[0], up_channels[1], skip_channels[1])
        self.head = nn.Conv2d(up_channels[1], 1, 3, padding=1)

    def forward(self, dense: torch.Tensor, skips: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        """dense [B, D, h, w], text [K, D] → concept logits [B, K, 4h, 4w]."""
        b, _, h, w = dense.shape
        k = text.shape[0]
        sim = torch.einsum("bdhw,kd->bkhw", F.normalize(dense, dim=1), F.normalize(text, dim=-1))
        x = self.aspp(self.conv1(sim.reshape(b * k, 1, h, w)))
        x = x.view(b, k, -1, h, w)
        anchors = self.text_proj(F.normalize(text, dim=-1))
        for layer in self.layers:
            x = layer(x, anchors)
        x = x.flatten(0, 1)
        skips = [proj(s) for proj, s in zip(self.skip_proj, skips)]
        x = self.up2(self.up1(x, skips[0]), skips[1])
        return self.head(x).view(b, k, *x.shape[-2:])


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ (UniMatch's decoder): ASPP on the deep feature, fused with a reduced low-level feature,
    two 3x3 convs, a 1x1 classifier over a fixed class list. BatchNorm as in UniMatch."""

    def __init__(self, in_channels: int, low_channels: int, num_classes: int, channels: int = 256,
                 rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        bn = nn.BatchNorm2d
        self.aspp = ASPP(in_channels, channels, tuple(rates), norm=bn, residual=False)
        low = max(8, channels * 48 // 256)
        self.reduce = nn.Sequential(nn.Conv2d(low_channels, low, 1, bias=False), bn(low), nn.ReLU(True))
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + low, channels, 3, padding=1, bias=False), bn(channels), nn.ReLU(True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), bn(channels), nn.ReLU(True))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, dense: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        low = skips[-1]
        x = self.aspp(dense)
        size = low.shape[-2:] if low.shape[-1] >= x.shape[-1] else x.shape[-2:]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        low = F.interpolate(self.reduce(low), size=size, mode="bilinear", align_corners=True)
        return self.classifier(self.fuse(torch.cat([x, low], dim=1)))
