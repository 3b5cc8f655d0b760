"""The flagship family: a VGG-style net with global average pooling, sized for 40-48 px faces.

Four stages of `convs` 3x3 conv-BN-ReLU layers (widths 32/64/128/256 by default), 2x2 max pooling between
stages, global average pooling, dropout and one linear layer. Plain 3x3 convolutions because on both a CPU
(oneDNN) and a GPU they run far closer to peak than depthwise ones (Mini-Xception reaches 15% of this
machine's matmul peak), and at 48 px a VGG stack is already deep enough to see the whole face.

`residual=True` adds an identity shortcut around every conv after a stage's first one (He et al. 2016),
which lets the full recipe go deeper (`convs=3` or more) without the optimisation trouble of plain stacks.
Global average pooling makes the net resolution-agnostic: it trains on 40 px crops and is evaluated on the
centre crop or on several crops (see tta.VIEW_SETS).

`standardize=True` first rescales each face to zero mean and unit deviation (per-image standardization, a classic
FER preprocessing): the net then answers the same for a face and any brighter, darker or flatter copy of it, up to
clipping and rounding, without ever training on such copies. It has no weights, so a fine-tune can switch it on.
"""
from torch import nn

from . import register


def conv_bn(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


# The smallest deviation a face is divided by, on the normalized scale (about 3 grey levels): a blank or nearly
# blank frame is left nearly flat rather than its last grey level of noise blown up to full contrast.
MIN_STD = 0.05


def standardized(x):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(MIN_STD)
    return (x - mean) / std


class Residual(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class VGGGap(nn.Module):
    def __init__(self, num_classes=7, widths=(32, 64, 128, 256), convs=2, dropout=0.3, residual=False,
                 standardize=False):
        super().__init__()
        self.standardize = standardize
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
        if self.standardize:
            x = standardized(x)
        return self.head(self.features(x))


@register
def vgg_gap(num_classes=7, widths=(32, 64, 128, 256), **kwargs):
    return VGGGap(num_classes=num_classes, widths=tuple(widths), **kwargs)
