"""The flagship family: a VGG-style net with global average pooling, sized for 40-48 px faces.

Four stages of `convs` 3x3 conv-BN-ReLU layers (widths 32/64/128/256 by default), 2x2 max pooling between
stages, global average pooling, dropout and one linear layer. Plain 3x3 convolutions because on both a CPU
(oneDNN) and a GPU they run far closer to peak than depthwise ones (Mini-Xception reaches 15% of this
machine's matmul peak), and at 48 px a VGG stack is already deep enough to see the whole face.

`residual=True` adds an identity shortcut around every conv after a stage's first one (He et al. 2016),
which lets the full recipe go deeper (`convs=3` or more) without the optimisation trouble of plain stacks.
Global average pooling makes the net resolution-agnostic: it trains on 40 px crops and is evaluated on the
centre crop or on several crops (see tta.VIEW_SETS).
"""
from torch import nn

from . import register


def conv_bn(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class VGGGap(nn.Module):
    def __init__(self, num_classes=7, widths=(32, 64, 128, 256), convs=2, dropout=0.3, residual=False):
        super().__init__()
        layers, c_in = [], 1
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.MaxPool2d(2))
            layers.append(conv_bn(c_in, width))
            for _ in range(convs - 1):
                layers.append(Residual(conv_bn(width, width)) if residual else conv_bn(width, width))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


@register
def vgg_gap(num_classes=7, widths=(32, 64, 128, 256), **kwargs):
    return VGGGap(num_classes=num_classes, widths=tuple(widths), **kwargs)
