"""Residual CNN with global average pooling: the seed's "ImprovedFER2013Model" (PyTorch, FER2013).

As published: a stem of two 3x3 convs (64 channels, BN, ReLU), 2x2 max pooling and dropout 0.3; then
three "residual blocks" (64->128, 128->256, 256->512; each conv-BN-ReLU-conv-BN), with 2x2 max pooling
after the first two; global average pooling; a head of dropout 0.5, Linear(512, 256), ReLU, dropout 0.5,
Linear(256, classes). About 4.8M parameters and 0.9 GFLOPs per 48x48 face.

What we had to decide: the source calls the blocks residual but never adds the input back (its block is a
plain Sequential). We add the shortcut its name promises, a 1x1 conv + BN projection because every block
changes the width, followed by a ReLU as in ResNet (He et al. 2016); `shortcut=False` rebuilds the
source's plain block exactly. `width` scales every layer (64 as published; the CPU recipe narrows it).
"""
from torch import nn

from . import register


class ResidualBlock(nn.Module):
    def __init__(self, c_in, c_out, shortcut=True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
        )
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
                         if shortcut else None)

    def forward(self, x):
        if self.shortcut is None:
            return self.body(x)  # the source's block: no addition, no final ReLU
        return (self.body(x) + self.shortcut(x)).relu()


class ResidualGAP(nn.Module):
    def __init__(self, num_classes=7, width=64, hidden=256, shortcut=True, stem_dropout=0.3, head_dropout=0.5):
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2), nn.Dropout(stem_dropout),
        )
        self.blocks = nn.Sequential(
            ResidualBlock(w, 2 * w, shortcut), nn.MaxPool2d(2),
            ResidualBlock(2 * w, 4 * w, shortcut), nn.MaxPool2d(2),
            ResidualBlock(4 * w, 8 * w, shortcut),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(head_dropout), nn.Linear(8 * w, hidden), nn.ReLU(inplace=True),
            nn.Dropout(head_dropout), nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))))


@register
def residual_gap(num_classes=7, **kwargs):
    return ResidualGAP(num_classes=num_classes, **kwargs)
